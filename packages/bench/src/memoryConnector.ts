/**
 * Connectors with no network, for `memory` and `steps`: every connection
 * answers each request with the same response as soon as its head has arrived
 * (a microtask later): 13 bytes in one piece, or (`MemoryConnectorInPieces`)
 * a 64 KiB body whose pieces arrive one I/O turn apart.
 */
import { Connector } from "@keepalive/agent"
import type { Transport, TransportListener } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const response = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nhello, world\n")

const bigBodySize = 64 * 1024
const bigHead = new TextEncoder().encode(`HTTP/1.1 200 OK\r\ncontent-length: ${bigBodySize}\r\n\r\n`)
const bigBody = new Uint8Array(bigBodySize).fill(120)
/** The head with the first quarter of the body, then the other three quarters. */
const inPieces: ReadonlyArray<Uint8Array> = [
  new Uint8Array([...bigHead, ...bigBody.subarray(0, bigBodySize / 4)]),
  ...[1, 2, 3].map((i) => bigBody.subarray((i * bigBodySize) / 4, ((i + 1) * bigBodySize) / 4))
]

/**
 * Answers each request as soon as its head has arrived (GETs only: no body):
 * the first piece a microtask later, each next one after a `setImmediate`.
 */
class AnsweringTransport implements Transport {
  #listener: TransportListener | undefined
  #destroyed = false
  readonly remoteAddress = "memory"
  constructor(readonly pieces: ReadonlyArray<Uint8Array>) {}
  listen(listener: TransportListener): void {
    this.#listener = listener
  }
  write(chunk: Uint8Array): boolean {
    // A request head ends with CRLF CRLF; the serialiser writes one head per call.
    if (chunk[chunk.length - 1] === 10 && chunk[chunk.length - 2] === 13) {
      // Nothing arrives on a transport once destroyed, as with a socket.
      const send = (i: number) => {
        if (this.#destroyed) return
        this.#listener?.onData(this.pieces[i]!.slice())
        if (i + 1 < this.pieces.length) setImmediate(() => send(i + 1))
      }
      queueMicrotask(() => send(0))
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

const answering = (pieces: ReadonlyArray<Uint8Array>) =>
  Layer.succeed(Connector.Connector, {
    connect: () => Effect.sync((): Transport => new AnsweringTransport(pieces)),
    yieldToIo: Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
  })

/** The in-memory Connector: a 13-byte body, with its head. */
export const MemoryConnector = answering([response])

/** An in-memory Connector whose 64 KiB bodies arrive in four pieces, one I/O turn apart. */
export const MemoryConnectorInPieces = answering(inPieces)
