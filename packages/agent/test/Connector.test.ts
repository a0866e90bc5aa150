/**
 * What the Agent gives a Connector: `connect` runs in the connection's own
 * Scope, which lives as long as the connection and is closed however the
 * connection, or its opening, ends.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { Connector } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { settle } from "./support/agent.js"
import { echoServer, MemoryServer, ServerSocket } from "./support/MemoryConnector.js"

// A connector may fork helper fibers into the connection's scope with
// Effect.forkScoped / Effect.forkIn (a TLS or proxy handshake watcher, a
// keep-alive pinger). That scope is not one made by Scope.make, and those
// functions must work on it all the same.
describe("Connector: a connector that forks into the connection's scope", () => {
  it.effect("Effect.forkScoped inside connect works, and the fiber is interrupted when the connection closes, not with the Agent", () =>
    Effect.gen(function*() {
      const server = echoServer()
      let helperInterrupted = 0
      const forking = Layer.effect(
        Connector,
        Effect.map(Connector, (inner) => ({
          connect: (origin, options) =>
            Effect.zipRight(
              Effect.forkScoped(Effect.onInterrupt(Effect.never, () => Effect.sync(() => void helperInterrupted++))),
              inner.connect(origin, options)
            ),
          yieldToIo: inner.yieldToIo
        }))
      ).pipe(Layer.provide(server.layer))
      const scope = yield* Scope.make()
      // persist: false: the connection closes after its response, long before the Agent.
      const context = yield* Layer.buildWithScope(Agent.layer({ persist: false }).pipe(Layer.provide(forking)), scope)
      const result = yield* Effect.exit(Effect.provide(Agent.requestString("http://a.test/x"), context))
      expect(result).toEqual(Exit.succeed("GET /x"))
      // The fiber was forked into the connection's own scope: closed with the connection.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      expect(helperInterrupted).toBe(1)
      yield* Scope.close(scope, Exit.void)
      expect(helperInterrupted).toBe(1)
    }))
})

// The Connector contract: connect registers what it creates in the
// connection's scope before it waits (NodeConnector does), and the pool closes
// that scope however the opening ends. A connect that resumes with a transport
// in the same tick as its opening is called off has completed its async
// already (its canceler does not run), so the scope is the only thing that
// can close that transport.
describe("Connector: a connect that completes in the tick its opening is called off", () => {
  const scenario = (ending: "shutdown" | "give up") =>
    Effect.gen(function*() {
      const server = new MemoryServer(() => {})
      let pending: (() => void) | undefined
      let origin: Origin | undefined
      let socket: ServerSocket | undefined
      const connector = Layer.succeed(Connector, {
        connect: (o) =>
          Effect.flatMap(
            Effect.acquireRelease(
              Effect.sync(() => {
                origin = o
                return socket = new ServerSocket(o, 1, server)
              }),
              (s) => Effect.sync(() => s.destroy())
            ),
            (s) =>
              Effect.async<ServerSocket>((resume) => {
                pending = () => resume(Effect.succeed(s))
                return Effect.void
              })
          ),
        yieldToIo: Effect.void
      })
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Agent.layer({}).pipe(Layer.provide(connector)), scope)
      const request = yield* Effect.fork(Effect.provide(Agent.requestString("http://a.test/"), context))
      yield* settle
      expect(pending).toBeDefined()
      expect(origin).toBeDefined()
      // The socket connects, and in the same tick the Agent shuts down
      // (the same happens when the only waiting request gives up).
      pending!()
      if (ending === "shutdown") yield* Scope.close(scope, Exit.void)
      else yield* Fiber.interrupt(request)
      yield* Fiber.await(request)
      yield* settle
      // The transport is never lost. A shutdown closes it at once; when the
      // only request gives up, the connect that completed in the same tick
      // hands the transport to the pool, idle, and it is closed with the Agent.
      const stats = yield* Effect.provide(Agent.stats, context)
      expect({ destroyed: socket!.destroyed, open: stats.open, idle: stats.idle }).toEqual(
        ending === "shutdown" ? { destroyed: true, open: 0, idle: 0 } : { destroyed: false, open: 1, idle: 1 }
      )
      yield* Scope.close(scope, Exit.void)
      yield* settle
      expect(socket!.destroyed).toBe(true)
    })

  it.effect("destroys the transport it made when the Agent shuts down", () => scenario("shutdown"))
  it.effect("keeps the transport it made idle when the only request gives up, and destroys it with the Agent", () => scenario("give up"))
})
