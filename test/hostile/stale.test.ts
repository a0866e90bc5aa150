/**
 * Stale connections: a server closes an idle keep-alive socket just as the
 * client reuses it. The race is made deterministic by closing (FIN or RST)
 * right after the second request's head arrives, before any response byte.
 * Only requests that are safe to send twice are sent twice, and only after a
 * reused connection died.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { expectClean, expectFailure, failure, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"
import type { Arrival } from "./server.js"

type Close = "FIN" | "RST"

const close = (how: Close, request: Arrival): void => how === "FIN" ? request.socket.fin() : request.socket.reset()

/** A server that answers everything except /target on a socket that served before: that socket it closes unanswered. */
const staleOnReuse = (how: Close) =>
  Server.make({
    onHead: (request) => {
      if (request.path === "/target" && request.index > 0) close(how, request)
    }
  })

const body = "the request body, sent twice only when that is safe"

interface Case {
  readonly name: string
  readonly request: (url: string) => HttpClientRequest.HttpClientRequest
  readonly method: string
  /** The body the server must see on the retry. */
  readonly body?: string
}

const retried: ReadonlyArray<Case> = [
  { name: "GET", method: "GET", request: (url) => HttpClientRequest.get(url) },
  { name: "HEAD", method: "HEAD", request: (url) => HttpClientRequest.head(url) },
  {
    name: "PUT",
    method: "PUT",
    request: (url) => HttpClientRequest.put(url).pipe(HttpClientRequest.bodyText(body)),
    body
  },
  { name: "DELETE", method: "DELETE", request: (url) => HttpClientRequest.del(url) },
  {
    name: "POST with an Idempotency-Key",
    method: "POST",
    request: (url) =>
      HttpClientRequest.post(url).pipe(
        HttpClientRequest.setHeader("Idempotency-Key", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        HttpClientRequest.bodyText(body)
      ),
    body
  }
]

const streamBody = () => Stream.make(new TextEncoder().encode("streamed "), new TextEncoder().encode(body))

const notRetried: ReadonlyArray<Case> = [
  {
    name: "POST without an Idempotency-Key",
    method: "POST",
    request: (url) => HttpClientRequest.post(url).pipe(HttpClientRequest.bodyText(body))
  },
  {
    name: "PATCH without an Idempotency-Key",
    method: "PATCH",
    request: (url) => HttpClientRequest.patch(url).pipe(HttpClientRequest.bodyText(body))
  },
  {
    name: "POST with a Stream body",
    method: "POST",
    request: (url) => HttpClientRequest.post(url).pipe(HttpClientRequest.bodyStream(streamBody()))
  },
  {
    name: "PUT with a Stream body",
    method: "PUT",
    request: (url) => HttpClientRequest.put(url).pipe(HttpClientRequest.bodyStream(streamBody()))
  },
  {
    name: "POST with an Idempotency-Key and a Stream body",
    method: "POST",
    request: (url) =>
      HttpClientRequest.post(url).pipe(
        HttpClientRequest.setHeader("Idempotency-Key", "0b7c5a54-5f0f-4d3e-9a55-4f5d8d7a1c2e"),
        HttpClientRequest.bodyStream(streamBody())
      )
  }
]

for (const how of ["FIN", "RST"] as const) {
  describe(`a reused connection closed by the server (${how}) after the request head`, () => {
    for (const c of retried) {
      it.scopedLive(`${c.name} is retried once on a fresh connection and succeeds`, () =>
        Effect.gen(function*() {
          const server = yield* staleOnReuse(how)
          yield* withAgent(server, Effect.gen(function*() {
            expect((yield* send(HttpClientRequest.get(server.url("/warm")))).body).toBe("GET /warm")
            const response = yield* send(c.request(server.url("/target")))
            expect(response.status).toBe(200)
            expect(response.body).toBe(c.method === "HEAD" ? "" : `${c.method} /target`)
            // Once on the dead socket, once on the new one.
            expect(server.count(c.method, "/target")).toBe(2)
            expect(server.sockets.length).toBe(2)
            const [dead, fresh] = server.sockets
            expect(dead!.arrivals.map((a) => a.path)).toEqual(["/warm", "/target"])
            expect(fresh!.arrivals.map((a) => [a.path, a.index])).toEqual([["/target", 0]])
            if (c.body !== undefined) expect(fresh!.arrivals[0]!.body.toString("latin1")).toBe(c.body)
            expect(yield* Agent.stats).toMatchObject({ opened: 2 })
            yield* expectClean(1)
          }), { headersTimeout: "2 seconds" })
        }), timeout)
    }

    for (const c of notRetried) {
      it.scopedLive(`${c.name} fails with Stale and is sent exactly once`, () =>
        Effect.gen(function*() {
          const server = yield* staleOnReuse(how)
          yield* withAgent(server, Effect.gen(function*() {
            yield* send(HttpClientRequest.get(server.url("/warm")))
            yield* expectFailure(send(c.request(server.url("/target"))), "Stale")
            // Give a wrongful retry time to reach the server.
            yield* Effect.sleep("50 millis")
            expect(server.count(c.method, "/target")).toBe(1)
            expect(server.sockets.length).toBe(1)
            yield* expectClean(0)
          }), { headersTimeout: "2 seconds" })
        }), timeout)
    }

    it.scopedLive("the first request on a fresh connection closed unanswered is not Stale and not retried", () =>
      Effect.gen(function*() {
        const server = yield* Server.make({
          onHead: (request) => {
            if (request.path === "/target") close(how, request)
          }
        })
        yield* withAgent(server, Effect.gen(function*() {
          const error = yield* failure(send(HttpClientRequest.get(server.url("/target"))))
          expect(error.reason, error.message).not.toBe("Stale")
          yield* Effect.sleep("50 millis")
          expect(server.count("GET", "/target")).toBe(1)
          expect(server.sockets.length).toBe(1)
          yield* expectClean(0)
        }), { headersTimeout: "2 seconds" })
      }), timeout)
  })
}

describe("the one retry", () => {
  it.scopedLive("goes to a fresh connection, not to another pooled connection that may be stale too", () =>
    Effect.gen(function*() {
      // Two warm sockets; the server dropped both (as on a restart), which the
      // client learns only by sending on each.
      const server = yield* Server.make({
        onHead: (request) => {
          if (request.path === "/target" && request.index > 0) request.socket.fin()
        },
        onRequest: (request) => {
          if (request.path === "/warm") setTimeout(() => request.socket.respond(request), 30)
          else request.socket.respond(request)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* Effect.all([send(HttpClientRequest.get(server.url("/warm"))), send(HttpClientRequest.get(server.url("/warm")))], {
          concurrency: 2
        })
        expect(server.sockets.length).toBe(2)
        expect(yield* Agent.stats).toMatchObject({ open: 2, idle: 2 })
        const response = yield* send(HttpClientRequest.get(server.url("/target")))
        expect(response.body).toBe("GET /target")
        expect(server.count("GET", "/target")).toBe(2)
        const last = server.arrivals[server.arrivals.length - 1]!
        expect({ path: last.path, index: last.index }).toEqual({ path: "/target", index: 0 })
        yield* expectClean()
      }), { headersTimeout: "2 seconds" })
    }), timeout)
})

describe("empty lines before the close", () => {
  it.scopedLive("a reused connection that sends only a CRLF, then closes, is stale: a GET is retried once and succeeds", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onHead: (request) => {
          if (request.path === "/target" && request.index > 0) {
            request.socket.write("\r\n")
            request.socket.fin()
          }
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/warm")))
        const response = yield* send(HttpClientRequest.get(server.url("/target")))
        expect(response.body).toBe("GET /target")
        expect(server.count("GET", "/target")).toBe(2)
        yield* expectClean()
      }), { headersTimeout: "2 seconds" })
    }), timeout)
})
