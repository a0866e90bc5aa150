import { AgentError } from "@keepalive/agent/AgentError"
import type { ConnectOptions, Transport, TransportListener } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import * as tls from "node:tls"
import type * as NodeConnector from "../NodeConnector.js"

type Event =
  | { readonly _tag: "data"; readonly chunk: Uint8Array }
  | { readonly _tag: "end" | "close" | "drain" }
  | { readonly _tag: "error"; readonly cause: unknown }

/** A net.Socket as a Transport; events before `listen` are queued. */
class SocketTransport implements Transport {
  #listener: TransportListener | undefined = undefined
  #queued: Array<Event> | undefined = []

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.#listener ? this.#listener.onData(chunk) : this.#queue({ _tag: "data", chunk }))
    socket.on("end", () => this.#listener ? this.#listener.onEnd() : this.#queue({ _tag: "end" }))
    socket.on("error", (cause) => this.#listener ? this.#listener.onError(cause) : this.#queue({ _tag: "error", cause }))
    socket.on("close", () => this.#listener ? this.#listener.onClose() : this.#queue({ _tag: "close" }))
    socket.on("drain", () => this.#listener ? this.#listener.onDrain() : this.#queue({ _tag: "drain" }))
  }

  #queue(event: Event): void {
    this.#queued?.push(event)
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress
  }

  listen(listener: TransportListener): void {
    this.#listener = listener
    const queued = this.#queued
    this.#queued = undefined
    for (const event of queued ?? []) {
      switch (event._tag) {
        case "data":
          listener.onData(event.chunk)
          break
        case "end":
          listener.onEnd()
          break
        case "error":
          listener.onError(event.cause)
          break
        case "close":
          listener.onClose()
          break
        case "drain":
          listener.onDrain()
          break
      }
    }
  }

  write(chunk: Uint8Array): boolean {
    return this.socket.write(chunk)
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** @internal */
export const connect = (options: NodeConnector.Options) =>
(origin: Origin, connectOptions: ConnectOptions): Effect.Effect<Transport, AgentError, Scope.Scope> =>
  Effect.flatMap(
    // The socket belongs to the connection's scope from the start: however
    // the wait below ends (even interrupted just as it connected), closing
    // the scope destroys it.
    Effect.acquireRelease(
      Effect.sync((): net.Socket => {
        const host = origin.host
        const socket: net.Socket = origin.scheme === "https"
          ? tls.connect({
            ...options.tls,
            host,
            port: origin.port,
            servername: connectOptions.servername ?? (net.isIP(host) ? "" : host),
            ALPNProtocols: ["http/1.1"]
          })
          : net.connect({ host, port: origin.port })
        socket.setNoDelay(true)
        return socket
      }),
      (socket) => Effect.sync(() => socket.destroy())
    ),
    (socket) =>
      Effect.async<Transport, AgentError>((resume) => {
        const onError = (cause: unknown) => {
          socket.destroy()
          resume(Effect.fail(
            new AgentError({ reason: "Connect", origin: origin.key, detail: String((cause as Error)?.message ?? cause), cause })
          ))
        }
        socket.once("error", onError)
        socket.once(origin.scheme === "https" ? "secureConnect" : "connect", () => {
          socket.off("error", onError)
          resume(Effect.succeed(new SocketTransport(socket)))
        })
        return Effect.sync(() => {
          socket.destroy()
        })
      })
  )

/** @internal */
export const yieldToIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
