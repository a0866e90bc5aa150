/**
 * A server that answers before the request body was sent (a 413 after
 * reading only the head of a large upload): the Agent returns that response,
 * stops sending, and never reuses the connection, whose request framing is
 * now unfinished whatever the server said about keep-alive.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { expectClean, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"
import type { Arrival } from "./server.js"

const chunk = new Uint8Array(64 * 1024).fill(0x61)
const chunks = 1024
/** 64 MiB: far more than the socket buffers hold, so an upload that is not stopped keeps going for a while. */
const total = chunk.length * chunks
const upload = () => Stream.repeatValue(chunk).pipe(Stream.take(chunks))

interface Variant {
  readonly name: string
  readonly answer: (request: Arrival) => void
  /** Send the body with a Content-Length instead of chunked. */
  readonly withLength?: boolean
}

const tooLarge = "HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n"

const variants: ReadonlyArray<Variant> = [
  {
    name: "413 with Connection: close, then FIN",
    answer: (request) => {
      request.socket.write(`${tooLarge}connection: close\r\n\r\ntoo large`)
      request.socket.fin()
    }
  },
  {
    name: "413 keep-alive, the server keeps reading and discarding",
    answer: (request) => request.socket.write(`${tooLarge}\r\ntoo large`)
  },
  {
    name: "413 keep-alive to a body with a Content-Length",
    answer: (request) => request.socket.write(`${tooLarge}\r\ntoo large`),
    withLength: true
  },
  {
    name: "413 keep-alive, the server stops reading",
    answer: (request) => {
      request.socket.pause()
      request.socket.write(`${tooLarge}\r\ntoo large`)
    }
  }
]

describe("a response that arrives before the request body was sent", () => {
  for (const variant of variants) {
    it.scopedLive(`${variant.name}: the 413 is returned, sending stops, the connection is not reused`, () =>
      Effect.gen(function*() {
        const server = yield* Server.make({
          onHead: (request) => {
            if (request.path === "/upload") variant.answer(request)
          },
          onRequest: (request) => {
            if (request.path !== "/upload") request.socket.respond(request)
          }
        })
        yield* withAgent(server, Effect.gen(function*() {
          yield* send(HttpClientRequest.get(server.url("/warm")))
          const request = HttpClientRequest.post(server.url("/upload")).pipe(
            HttpClientRequest.bodyStream(upload(), {
              contentType: "application/octet-stream",
              ...(variant.withLength === true ? { contentLength: total } : {})
            })
          )
          const response = yield* send(request)
          expect(response).toMatchObject({ status: 413, body: "too large" })
          const first = server.sockets[0]!
          // A paused server reads on now, to drain what is buffered and to see the client's FIN.
          first.resume()
          // Sending stopped: the byte count settles well short of the upload, and the client closes the socket.
          yield* Server.until(() => first.closed, () => `the upload socket is still open after ${first.bytesReceived} bytes`)
          const settled = first.bytesReceived
          yield* Effect.sleep("50 millis")
          expect(first.bytesReceived).toBe(settled)
          expect(settled).toBeLessThan(total / 2)
          expect(first.arrivals.map((a) => a.path)).toEqual(["/warm", "/upload"])
          expect(first.arrivals[1]!.bodyComplete).toBe(false)
          // The next request goes out on a new socket.
          expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
          expect(server.sockets.length).toBe(2)
          expect(server.sockets[1]!.arrivals.map((a) => a.path)).toEqual(["/ok"])
          expect(yield* Agent.stats).toMatchObject({ opened: 2 })
          yield* expectClean(1)
        }), { headersTimeout: "2 seconds", bodyTimeout: "2 seconds" })
      }), timeout)
  }

  it.scopedLive("control: a 200 after the whole upload leaves the connection reusable", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        const small = Stream.repeatValue(chunk).pipe(Stream.take(16))
        const response = yield* send(HttpClientRequest.post(server.url("/upload")).pipe(HttpClientRequest.bodyStream(small)))
        expect(response).toMatchObject({ status: 200, body: "POST /upload" })
        expect(server.arrivals[0]!.bodyComplete).toBe(true)
        expect(server.arrivals[0]!.body.length).toBe(16 * chunk.length)
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(server.sockets.length).toBe(1)
        yield* expectClean(1)
      }))
    }), timeout)
})
