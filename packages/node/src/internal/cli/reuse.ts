import { Connector, type Transport } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/** One transport as the tracker knows it: the fiber that wrote on it first. */
interface Tracked {
  firstWriter: unknown
}

/**
 * Tells, per request, whether it went out on a reused connection.
 *
 * A response does not say which connection carried it, and `Agent.stats`
 * deltas are racy when requests overlap. What is exact: the Agent writes a
 * request's head from inside the fiber that sent the request, synchronously
 * (`Connection.send`), so a Connector that wraps each transport sees, at each
 * write, which fiber wrote. A request whose fiber was not the first to write
 * on its transport was sent on a connection that had carried a request before.
 * This needs one fiber per request, which the commands give it; a retry on a
 * fresh connection moves the request to that transport, as it should.
 *
 * @internal
 */
export class ReuseTracker {
  readonly #lastTransport = new WeakMap<object, Tracked>()

  /** The Connector, wrapping what `inner` opens. */
  layer(inner: Layer.Layer<Connector>): Layer.Layer<Connector> {
    return Layer.effect(
      Connector,
      Effect.map(Connector, (connector) => ({
        yieldToIo: connector.yieldToIo,
        connect: (origin, options) => Effect.map(connector.connect(origin, options), (transport) => this.#wrap(transport))
      }))
    ).pipe(Layer.provide(inner))
  }

  /** Whether the current fiber's last request went out on a connection that had carried one before. */
  readonly reused: Effect.Effect<boolean> = Effect.withFiberRuntime((fiber) => {
    const tracked = this.#lastTransport.get(fiber)
    return Effect.succeed(tracked !== undefined && tracked.firstWriter !== fiber)
  })

  /** Runs a request in a fiber of its own, and tells with its result whether it went out on a reused connection. */
  readonly track = <A, E, R>(request: Effect.Effect<A, E, R>): Effect.Effect<readonly [A, boolean], E, R> =>
    Effect.flatMap(Effect.fork(Effect.zip(request, this.reused)), Fiber.join)

  #wrap(transport: Transport): Transport {
    const tracked: Tracked = { firstWriter: undefined }
    const lastTransport = this.#lastTransport
    return {
      listen: (listener) => transport.listen(listener),
      write: (chunk) => {
        const fiber = Option.getOrUndefined(Fiber.getCurrentFiber())
        if (fiber !== undefined) {
          tracked.firstWriter ??= fiber
          lastTransport.set(fiber, tracked)
        }
        return transport.write(chunk)
      },
      pause: () => transport.pause(),
      resume: () => transport.resume(),
      destroy: () => transport.destroy(),
      get remoteAddress() {
        return transport.remoteAddress
      }
    }
  }
}
