/**
 * Responses whose framing the Agent must reject: each fails the request with
 * a typed AgentError, the client closes the socket, and the next request goes
 * out on a new socket. Ambiguous framing is the stuff of response smuggling,
 * so "close and never reuse" matters as much as the error itself.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import type { Reason } from "@keepalive/agent/AgentError"
import * as Effect from "effect/Effect"
import { expectClean, expectFailure, failure, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"

interface Case {
  readonly name: string
  /** Written in one piece in answer to GET /bad. */
  readonly response: string
  readonly reason: Reason
  /** The server closes the socket itself after writing (FIN). */
  readonly serverCloses?: boolean
}

const ok = "HTTP/1.1 200 OK\r\n"

const cases: ReadonlyArray<Case> = [
  {
    name: "both Content-Length and Transfer-Encoding",
    response: `${ok}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "Transfer-Encoding before Content-Length",
    response: `${ok}transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "a duplicate Content-Length with the same value",
    response: `${ok}content-length: 5\r\ncontent-length: 5\r\n\r\nhello`,
    reason: "Protocol"
  },
  {
    name: "two differing Content-Lengths",
    response: `${ok}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!`,
    reason: "Protocol"
  },
  { name: "a Content-Length list", response: `${ok}content-length: 5, 5\r\n\r\nhello`, reason: "Protocol" },
  { name: "a non-numeric Content-Length", response: `${ok}content-length: abc\r\n\r\nhello`, reason: "Protocol" },
  { name: "a Content-Length of +5", response: `${ok}content-length: +5\r\n\r\nhello`, reason: "Protocol" },
  { name: "a Content-Length of -1", response: `${ok}content-length: -1\r\n\r\nhello`, reason: "Protocol" },
  { name: "a hex Content-Length", response: `${ok}content-length: 0x5\r\n\r\nhello`, reason: "Protocol" },
  {
    name: "an overflowing Content-Length",
    response: `${ok}content-length: 99999999999999999999\r\n\r\nhello`,
    reason: "Protocol"
  },
  {
    name: "a chunk size zz",
    response: `${ok}transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "an empty chunk size",
    response: `${ok}transfer-encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "a signed chunk size",
    response: `${ok}transfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "an overflowing chunk size",
    response: `${ok}transfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "a chunk size line ending in a bare LF",
    response: `${ok}transfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "chunk data not followed by CRLF",
    response: `${ok}transfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "chunked applied twice",
    response: `${ok}transfer-encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    reason: "Protocol"
  },
  {
    name: "Transfer-Encoding in an HTTP/1.0 response",
    response: "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    reason: "Protocol"
  },
  { name: "a bare CR inside a header line", response: `${ok}x-a: b\rc\r\ncontent-length: 0\r\n\r\n`, reason: "Protocol" },
  { name: "a header line ending in a bare LF", response: `${ok}x-a: b\ncontent-length: 0\r\n\r\n`, reason: "Protocol" },
  { name: "a NUL in a header value", response: `${ok}x-a: b\u0000c\r\ncontent-length: 0\r\n\r\n`, reason: "Protocol" },
  { name: "whitespace before the colon", response: `${ok}content-length : 5\r\n\r\nhello`, reason: "Protocol" },
  { name: "obs-fold", response: `${ok}x-a: b\r\n c\r\ncontent-length: 0\r\n\r\n`, reason: "Protocol" },
  { name: "a header line without a colon", response: `${ok}x-a\r\ncontent-length: 0\r\n\r\n`, reason: "Protocol" },
  {
    name: "a head over 16 KiB",
    response: `${ok}x-big: ${"a".repeat(17 * 1024)}\r\ncontent-length: 0\r\n\r\n`,
    reason: "HeadersTooLarge"
  },
  {
    name: "a head with 101 fields",
    response: `${ok}${Array.from({ length: 101 }, (_, i) => `x-f${i}: v\r\n`).join("")}content-length: 0\r\n\r\n`,
    reason: "HeadersTooLarge"
  },
  { name: "a status line HTTP/2.0 200 OK", response: "HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n", reason: "Protocol" },
  { name: "a status line ICY 200 OK", response: "ICY 200 OK\r\ncontent-length: 0\r\n\r\n", reason: "Protocol" },
  { name: "a two-digit status", response: "HTTP/1.1 20 OK\r\ncontent-length: 0\r\n\r\n", reason: "Protocol" },
  { name: "lower-case http/1.1", response: "http/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", reason: "Protocol" },
  {
    name: "101 Switching Protocols nobody asked for",
    response: "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    reason: "Protocol"
  },
  {
    name: "a body shorter than its Content-Length, then close",
    response: `${ok}content-length: 10\r\n\r\nhello`,
    reason: "Truncated",
    serverCloses: true
  },
  {
    name: "a chunked body cut off, then close",
    response: `${ok}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n`,
    reason: "Truncated",
    serverCloses: true
  },
  {
    name: "a head cut off, then close",
    response: `${ok}content-le`,
    reason: "Truncated",
    serverCloses: true
  }
]

/** A server that answers GET /bad with `bad` (and optionally a FIN), everything else normally. */
const serverFor = (bad: string, serverCloses: boolean) =>
  Server.make({
    onRequest: (request) => {
      if (request.path !== "/bad") return request.socket.respond(request)
      request.socket.write(bad)
      if (serverCloses) request.socket.fin()
    }
  })

describe("framing the Agent must reject", () => {
  for (const c of cases) {
    it.scopedLive(`${c.name}: ${c.reason}, the connection is closed and never reused`, () =>
      Effect.gen(function*() {
        const server = yield* serverFor(c.response, c.serverCloses === true)
        yield* withAgent(server, Effect.gen(function*() {
          // A warm connection first, so that the bad response comes on a reused one as well.
          expect((yield* send(HttpClientRequest.get(server.url("/warm")))).body).toBe("GET /warm")
          yield* expectFailure(send(HttpClientRequest.get(server.url("/bad"))), c.reason)
          const first = server.sockets[0]!
          yield* Server.until(() => first.closedBy !== undefined, () => "the bad socket is still open")
          expect(first.closedBy).toBe(c.serverCloses === true ? "server" : "client")
          expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
          expect(server.sockets.length).toBe(2)
          expect(server.sockets[1]!.arrivals.map((a) => a.path)).toEqual(["/ok"])
          expect(first.arrivals.map((a) => a.path)).toEqual(["/warm", "/bad"])
          yield* expectClean(1)
        }), { headersTimeout: "2 seconds", bodyTimeout: "2 seconds" })
      }), timeout)
  }

})

describe("a complete response with stray bytes after it, or an odd coding: delivered, its connection never reused", () => {
  for (
    const [what, extra] of [
      ["a second response", `${ok}content-length: 5\r\n\r\nextra`],
      ["garbage", "\u0000garbage\r\n"],
      ["a CRLF, then garbage", "\r\nHTTP/9"]
    ] as const
  ) {
    it.scopedLive(`${what} in the same write as a complete response: the response is delivered, its connection closed, the next request served on a new one`, () =>
      Effect.gen(function*() {
        const server = yield* serverFor(`${ok}content-length: 5\r\n\r\nhello` + extra, false)
        yield* withAgent(server, Effect.gen(function*() {
          for (let i = 0; i < 10; i++) {
            expect((yield* send(HttpClientRequest.get(server.url("/bad")))).body).toBe("hello")
          }
          expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
          // A connection each: none that saw the stray bytes carried another request.
          expect(server.sockets.length).toBe(11)
          for (const socket of server.sockets.slice(0, 10)) expect(socket.arrivals.length).toBe(1)
          yield* expectClean(1)
        }), { headersTimeout: "2 seconds" })
      }), timeout)
  }

  it.scopedLive("an HTTP/1.0 HEAD response followed by body bytes, then a close: complete at the end of its head, its connection never reused", () =>
    Effect.gen(function*() {
      // What Python's http.server does for a CGI script.
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path !== "/head") return request.socket.respond(request)
          request.socket.write("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n")
          setTimeout(() => {
            request.socket.write("hello")
            request.socket.fin()
          }, 1)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        for (let i = 0; i < 10; i++) {
          const response = yield* send(HttpClientRequest.head(server.url("/head")))
          expect(response.status).toBe(200)
          expect(response.body).toBe("")
        }
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        for (const socket of server.sockets.slice(0, 10)) expect(socket.arrivals.length).toBe(1)
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds" })
    }), timeout)

  it.scopedLive("a HEAD response and body bytes in one write: the response is returned with an empty body, its connection closed", () =>
    Effect.gen(function*() {
      const server = yield* serverFor(`${ok}content-length: 5\r\n\r\nhello`, false)
      yield* withAgent(server, Effect.gen(function*() {
        for (let i = 0; i < 10; i++) {
          const response = yield* send(HttpClientRequest.head(server.url("/bad")))
          expect(response.status).toBe(200)
          expect(response.body).toBe("")
        }
        expect(server.sockets.length).toBe(10)
        yield* expectClean(0)
      }), { headersTimeout: "2 seconds" })
    }), timeout)

  it.scopedLive("a second response in the same write: the first succeeds, the connection is never reused", () =>
    Effect.gen(function*() {
      const first = `${ok}content-length: 5\r\n\r\nhello`
      const extra = `${ok}content-length: 5\r\n\r\nextra`
      const server = yield* serverFor(first + extra, false)
      yield* withAgent(server, Effect.gen(function*() {
        expect((yield* send(HttpClientRequest.get(server.url("/bad")))).body).toBe("hello")
        const bad = server.sockets[0]!
        yield* Server.until(() => bad.closedBy !== undefined, () => "the socket that sent two responses is still open")
        expect(bad.closedBy).toBe("client")
        const next = yield* send(HttpClientRequest.get(server.url("/ok")))
        expect(next.body).toBe("GET /ok")
        expect(server.sockets.length).toBe(2)
        expect(bad.arrivals.length).toBe(1)
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds" })
    }), timeout)

  it.scopedLive("a second response in a later packet, before the first was read, is never read as the next answer", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path !== "/bad") return request.socket.respond(request)
          request.socket.write(`${ok}content-length: 5\r\n\r\nhello`)
          setTimeout(() => request.socket.write(`${ok}content-length: 5\r\n\r\nextra`), 5)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        expect((yield* send(HttpClientRequest.get(server.url("/bad")))).body).toBe("hello")
        const bad = server.sockets[0]!
        yield* Server.until(() => bad.closedBy !== undefined, () => "the socket that sent two responses is still open")
        expect(bad.closedBy).toBe("client")
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(bad.arrivals.length).toBe(1)
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds" })
    }), timeout)

  for (const coding of ["chunked, gzip", "chunked, identity"]) {
    it.scopedLive(`Transfer-Encoding: ${coding} (chunked not last): the body is read to EOF, the connection not reused`, () =>
      Effect.gen(function*() {
        const payload = "2\r\nab\r\n0\r\n\r\n" + "rest of the body".repeat(50)
        const server = yield* Server.make({
          onRequest: (request) => {
            if (request.path !== "/coded") return request.socket.respond(request)
            request.socket.write(`${ok}transfer-encoding: ${coding}\r\n\r\n${payload.slice(0, 100)}`)
            setTimeout(() => {
              request.socket.write(payload.slice(100))
              request.socket.fin()
            }, 5)
          }
        })
        yield* withAgent(server, Effect.gen(function*() {
          const response = yield* send(HttpClientRequest.get(server.url("/coded")))
          expect(response.body).toBe(payload)
          expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
          expect(server.sockets.length).toBe(2)
          yield* expectClean(1)
        }), { headersTimeout: "2 seconds", bodyTimeout: "2 seconds" })
      }), timeout)
  }

  it.scopedLive("Transfer-Encoding: gzip (last coding not chunked): the body is read to EOF and the connection not reused", () =>
    Effect.gen(function*() {
      // Not actually gzip: the Agent does not decode, it only frames.
      const payload = "pretend-gzip-bytes\u0000\u00ff".repeat(100)
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path !== "/gzip") return request.socket.respond(request)
          request.socket.write(`${ok}transfer-encoding: gzip\r\n\r\n${payload.slice(0, 500)}`)
          setTimeout(() => {
            request.socket.write(payload.slice(500))
            request.socket.fin()
          }, 20)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/warm")))
        const response = yield* send(HttpClientRequest.get(server.url("/gzip")))
        expect(response.headers["transfer-encoding"]).toBe("gzip")
        expect(response.body).toBe(payload)
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(server.sockets.length).toBe(2)
        expect(server.sockets[1]!.arrivals.map((a) => a.path)).toEqual(["/ok"])
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds", bodyTimeout: "2 seconds" })
    }), timeout)

  it.scopedLive("a close-delimited body whose server keeps the socket open is cut off by bodyTimeout, never reused", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path !== "/open-ended") return request.socket.respond(request)
          request.socket.write(`${ok}transfer-encoding: gzip\r\n\r\nsome bytes and then silence`)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        const error = yield* failure(send(HttpClientRequest.get(server.url("/open-ended"))))
        expect({ reason: error.reason, phase: error.phase }).toEqual({ reason: "Timeout", phase: "body" })
        yield* Server.until(() => server.sockets[0]!.closedBy === "client", () => "the socket is still open")
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(server.sockets.length).toBe(2)
        yield* expectClean(1)
      }), { bodyTimeout: "150 millis" })
    }), timeout)
})
