/**
 * An idle keep-alive connection that receives bytes or an EOF it did not ask
 * for: those bytes must never be read as the answer to the next request, and
 * the connection must not carry it.
 *
 * Each case comes in two timings: the client has seen the event while idle
 * (the test waits until the server sees the socket closed), or the event
 * reached the client's socket buffer just before the next request (the test
 * sends at once, with no turn of the event loop in between; the Agent must
 * look at the socket before trusting it). The next request is a POST, which
 * is never retried, so that a request written to the dead socket shows up as
 * a failure rather than being hidden by a retry.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import { expectClean, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"
import type { ServerSocket } from "./server.js"

const fakeResponse = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-type: text/plain\r\n\r\nfake"

interface Event {
  readonly name: string
  readonly apply: (socket: ServerSocket) => void
}

const events: ReadonlyArray<Event> = [
  { name: "a whole unsolicited response", apply: (socket) => socket.write(fakeResponse) },
  { name: "a single stray byte", apply: (socket) => socket.write("\n") },
  { name: "a FIN", apply: (socket) => socket.fin() },
  { name: "an RST", apply: (socket) => socket.reset() },
  {
    name: "an unsolicited response followed by a FIN",
    apply: (socket) => {
      socket.write(fakeResponse)
      socket.fin()
    }
  }
]

const timings = [
  { name: "seen while idle", idleMillis: 5, waitForClientClose: true },
  { name: "arriving just before reuse after 5 ms idle", idleMillis: 5, waitForClientClose: false },
  { name: "arriving just before reuse after 150 ms idle", idleMillis: 150, waitForClientClose: false }
] as const

describe("an idle connection that receives data or EOF", () => {
  for (const event of events) {
    for (const timing of timings) {
      it.scopedLive(`${event.name}, ${timing.name}: the next request gets its real answer on a new connection`, () =>
        Effect.gen(function*() {
          const server = yield* Server.make()
          yield* withAgent(server, Effect.gen(function*() {
            expect((yield* send(HttpClientRequest.get(server.url("/first")))).body).toBe("GET /first")
            expect(yield* Agent.stats).toMatchObject({ open: 1, idle: 1 })
            const first = server.sockets[0]!
            // A timer turn first: the connection has been idle a while.
            yield* Effect.sleep(timing.idleMillis)
            const before = first.bytesReceived
            yield* Effect.sync(() => event.apply(first))
            if (timing.waitForClientClose) {
              yield* Server.until(() => first.closed, () => `socket 1 still open (closedBy ${first.closedBy})`)
              // An unsolicited byte is the client's cue to close; a FIN or RST closed it from the server.
              yield* expectClean(0)
            }
            const response = yield* send(
              HttpClientRequest.post(server.url("/next")).pipe(HttpClientRequest.bodyText("next"))
            )
            expect(response).toMatchObject({ status: 200, body: "POST /next" })
            // Nothing was written to the dead socket; the request went out once, on a new one.
            expect(first.bytesReceived).toBe(before)
            expect(first.arrivals.length).toBe(1)
            expect(server.count("POST", "/next")).toBe(1)
            const next = server.arrivals.find((a) => a.path === "/next")!
            expect(next.socket).not.toBe(first)
            expect(next.index).toBe(0)
            yield* Server.until(() => first.closed, () => "socket 1 still open")
            yield* expectClean()
          }), { headersTimeout: "2 seconds" })
        }), timeout)
    }
  }

  // Kept apart from the cases above: it is about cost, not correctness.
  it.scopedLive("a connection found broken at checkout is replaced by exactly one new connection", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/first")))
        const first = server.sockets[0]!
        // Idle long enough for any reuse check, so that the FIN is found at checkout.
        yield* Effect.sleep("150 millis")
        yield* Effect.sync(() => first.fin())
        expect((yield* send(HttpClientRequest.get(server.url("/next")))).body).toBe("GET /next")
        yield* Effect.sleep("20 millis")
        expect(server.sockets.map((s) => s.arrivals.map((a) => a.path))).toEqual([["/first"], ["/next"]])
        expect(yield* Agent.stats).toMatchObject({ opened: 2 })
        yield* expectClean(1)
      }))
    }), timeout)

  it.scopedLive("unsolicited bytes on an idle connection close it from the client side", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/first")))
        const first = server.sockets[0]!
        yield* Effect.sync(() => first.write(fakeResponse))
        yield* Server.until(() => first.closed, () => "the client kept a connection that sent stray bytes")
        expect(first.closedBy).toBe("client")
        yield* expectClean(0)
      }))
    }), timeout)
})

describe("an idle connection that receives empty lines (CRLF), as some servers send after a body", () => {
  for (
    const [name, bytes] of [
      ["one CRLF", "\r\n"],
      ["a CR, then its LF in a later packet", "\r"],
      ["16 CRLFs", "\r\n".repeat(16)]
    ] as const
  ) {
    it.scopedLive(`${name}: skipped, and the connection carries the next request`, () =>
      Effect.gen(function*() {
        const server = yield* Server.make()
        yield* withAgent(server, Effect.gen(function*() {
          expect((yield* send(HttpClientRequest.get(server.url("/first")))).body).toBe("GET /first")
          const first = server.sockets[0]!
          yield* Effect.sleep("5 millis")
          yield* Effect.sync(() => first.write(bytes))
          if (bytes === "\r") {
            yield* Effect.sleep("5 millis")
            yield* Effect.sync(() => first.write("\n"))
          }
          yield* Effect.sleep("20 millis")
          expect(first.closed, "the client closed a connection that only received empty lines").toBe(false)
          const response = yield* send(HttpClientRequest.post(server.url("/next")).pipe(HttpClientRequest.bodyText("next")))
          expect(response).toMatchObject({ status: 200, body: "POST /next" })
          expect(server.sockets.length).toBe(1)
          expect(first.arrivals.map((a) => a.path)).toEqual(["/first", "/next"])
          yield* expectClean(1)
        }), { headersTimeout: "2 seconds" })
      }), timeout)
  }

  it.scopedLive("17 CRLFs: more than a server's slip, the connection is closed and never reused", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/first")))
        const first = server.sockets[0]!
        yield* Effect.sync(() => first.write("\r\n".repeat(17)))
        yield* Server.until(() => first.closed, () => "the client kept a connection that sent 17 empty lines")
        expect(first.closedBy).toBe("client")
        expect((yield* send(HttpClientRequest.get(server.url("/next")))).body).toBe("GET /next")
        expect(server.sockets.length).toBe(2)
        yield* expectClean(1)
      }))
    }), timeout)

  it.scopedLive("a CRLF written right after a 304 and a CRLF before the next status line: both responses arrive, one connection", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path === "/304") return request.socket.write("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n\r\n")
          request.socket.write("\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        expect((yield* send(HttpClientRequest.get(server.url("/304")))).status).toBe(304)
        expect((yield* send(HttpClientRequest.get(server.url("/next")))).body).toBe("ok")
        expect(server.sockets.length).toBe(1)
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds" })
    }), timeout)
})
