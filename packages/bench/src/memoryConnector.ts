/**
 * A Connector with no network, for `memory` and `steps`: every connection
 * answers each request with the same 13-byte response as soon as its head has
 * arrived (a microtask later).
 */
import { Connector } from "@keepalive/agent"
import type { Transport, TransportListener } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const response = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nhello, world\n")

/** Answers each request as soon as its head has arrived (GETs only: no body). */
class AnsweringTransport implements Transport {
  #listener: TransportListener | undefined
  #destroyed = false
  readonly remoteAddress = "memory"
  listen(listener: TransportListener): void {
    this.#listener = listener
  }
  write(chunk: Uint8Array): boolean {
    // A request head ends with CRLF CRLF; the serialiser writes one head per call.
    if (chunk[chunk.length - 1] === 10 && chunk[chunk.length - 2] === 13) {
      queueMicrotask(() => this.#listener?.onData(response.slice()))
    }
    return true
  }
  pause(): void {}
  resume(): void {}
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    queueMicrotask(() => this.#listener?.onClose())
  }
}

/** The in-memory Connector. */
export const MemoryConnector = Layer.succeed(Connector.Connector, {
  connect: () => Effect.sync((): Transport => new AnsweringTransport()),
  yieldToIo: Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
})
