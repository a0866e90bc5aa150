/**
 * The Agent's request API as a whole: requests it refuses, persist: false,
 * and shutdown. How connections are pooled, given back, read and timed out is
 * in Pool, Release, Body and Timeouts.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { AgentError } from "@keepalive/agent/AgentError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { agentOn, settle } from "./support/agent.js"
import { echoServer, heldServer, MemoryServer } from "./support/MemoryConnector.js"

describe("Agent: requests", () => {
  it.effect("a URL that does not parse fails with InvalidRequest, through request and requestWith, and opens nothing", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const request = HttpClientRequest.get("not a url")
      const viaRequest = yield* Effect.flip(Agent.request(request))
      const viaWith = yield* Effect.flip(Agent.requestWith(request, (r) => r.text))
      for (const error of [viaRequest, viaWith]) expect(error).toMatchObject({ _tag: "AgentError", reason: "InvalidRequest" })
      expect(server.connects).toBe(0)
    }).pipe(Effect.provide(agentOn(server)))
  })
})

describe("Agent: persist: false", () => {
  it.effect("persist: false opens a fresh connection per request and closes it", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      for (let i = 0; i < 3; i++) yield* Agent.requestString("http://a.test/")
      yield* settle
      expect(server.sockets.length).toBe(3)
      expect(server.openSockets.length).toBe(0)
      expect(server.requests.every((r) => r.headers["connection"] === "close")).toBe(true)
      expect(yield* Agent.stats).toMatchObject({ open: 0, opened: 3, reused: 0, responses: 3 })
    }).pipe(Effect.provide(agentOn(server, { persist: false })))
  })
})

describe("Agent: shutdown", () => {
  it.effect("at shutdown new requests and waiting ones fail Closed at once, idle connections close at once, and requests in flight finish", () => {
    const { held, server } = heldServer((req) => req.path !== "/quick")
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ maxConnectionsPerOrigin: 1 }), server.layer).pipe(Scope.extend(scope))
      yield* agent.requestWith(HttpClientRequest.get("http://idle.test/quick"), (r) => r.text)
      const inFlight = yield* Effect.fork(agent.requestWith(HttpClientRequest.get("http://a.test/slow"), (r) => r.text))
      yield* settle
      const waiting = yield* Effect.fork(Effect.flip(agent.requestWith(HttpClientRequest.get("http://a.test/next"), (r) => r.text)))
      yield* settle
      expect(yield* agent.stats).toMatchObject({ open: 2, idle: 1, busy: 1, waiting: 1 })

      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* settle
      expect(yield* Fiber.join(waiting)).toMatchObject({ reason: "Closed", requestSent: false })
      expect(yield* agent.stats).toMatchObject({ open: 1, idle: 0, busy: 1, waiting: 0 })
      expect(server.openSockets.map((s) => s.origin.key)).toEqual(["http://a.test:80"])
      const late = yield* Effect.flip(agent.requestWith(HttpClientRequest.get("http://a.test/late"), (r) => r.text))
      expect(late).toMatchObject({ reason: "Closed", requestSent: false })

      // The request in flight gets its response while the Agent drains, and its connection closes.
      held.shift()!.socket.respond("slow")
      expect(yield* Fiber.join(inFlight)).toBe("slow")
      yield* Fiber.join(closing)
      expect(server.openSockets.length).toBe(0)
      expect(server.sockets.length).toBe(2)
    })
  })

  it.effect("at shutdown requests still in flight after shutdownTimeout fail Closed, their connections closed", () => {
    // Nobody answers: both connections are busy when the Agent's scope closes.
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ shutdownTimeout: "3 seconds" }), server.layer).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach(["http://a.test/", "http://b.test/"], (url) =>
        Effect.fork(Effect.flip(agent.requestWith(HttpClientRequest.get(url), (r) => r.text))))
      yield* settle
      expect(server.openSockets.length).toBe(2)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* settle
      yield* TestClock.adjust("2999 millis")
      yield* settle
      expect(server.openSockets.length).toBe(2)
      expect(closing.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(closing)
      yield* settle
      expect(server.openSockets.length).toBe(0)
      for (const request of requests) {
        expect(yield* Fiber.join(request)).toMatchObject({ reason: "Closed", requestSent: true })
      }
      // A request after the shutdown opens nothing.
      const late = yield* Effect.exit(agent.requestWith(HttpClientRequest.get("http://c.test/"), (r) => r.text))
      expect(late).toMatchObject({ _tag: "Failure" })
      expect(server.sockets.length).toBe(2)
    })
  })

  it.effect("at shutdown every busy connection closes, even when one transport's destroy throws", () => {
    const server = new MemoryServer(() => {})
    server.destroyThrowsOnce(1)
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ shutdownTimeout: 0 }), server.layer).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach(["http://a.test/", "http://b.test/"], (url) =>
        Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get(url), (r) => r.text))))
      yield* settle
      expect(server.openSockets.length).toBe(2)
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      yield* settle
      // The defect is reported, and nothing is left open or hanging.
      expect(Exit.isFailure(closed)).toBe(true)
      expect(server.openSockets.length).toBe(0)
      expect(requests.map((request) => request.unsafePoll() !== null)).toEqual([true, true])
    })
  })

  it.effect("at shutdown a request waiting for another origin fails with Closed, even when an idle connection's destroy throws", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/ok") req.socket.respond("ok")
    })
    server.destroyThrowsOnce(1)
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ maxConnectionsPerOrigin: 1, shutdownTimeout: 0 }), server.layer).pipe(
        Scope.extend(scope)
      )
      // Socket 1 idle at a.test (its origin comes first), socket 2 busy at b.test, one request waiting behind it.
      yield* agent.requestWith(HttpClientRequest.get("http://a.test/ok"), (r) => r.text)
      const busy = yield* Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get("http://b.test/hang"), (r) => r.text)))
      yield* settle
      const waiting = yield* Effect.fork(agent.requestWith(HttpClientRequest.get("http://b.test/ok"), (r) => r.text))
      yield* settle
      expect((yield* agent.stats).waiting).toBe(1)
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      yield* settle
      expect(Exit.isFailure(closed)).toBe(true)
      expect(server.openSockets.length).toBe(0)
      expect(busy.unsafePoll()).not.toBeNull()
      const waited = waiting.unsafePoll()
      expect(waited).not.toBeNull()
      expect(waited).toMatchObject({ _tag: "Failure", cause: { _tag: "Fail", error: { reason: "Closed" } } })
    })
  })

  it.effect("at shutdown a busy connection closes, even when an idle one's destroy throws", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/ok") req.socket.respond("ok")
    })
    server.destroyThrowsOnce(1)
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ shutdownTimeout: 0 }), server.layer).pipe(Scope.extend(scope))
      // Socket 1 idle, socket 2 busy.
      yield* agent.requestWith(HttpClientRequest.get("http://a.test/ok"), (r) => r.text)
      const busy = yield* Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get("http://b.test/hang"), (r) => r.text)))
      yield* settle
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      yield* settle
      expect(Exit.isFailure(closed)).toBe(true)
      expect(server.openSockets.length).toBe(0)
      expect(busy.unsafePoll()).not.toBeNull()
    })
  })
})

describe("Agent: whether a failed request may have reached the server", () => {
  it.effect("requestSent is false when nothing was written, true once any byte may have been", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/truncated") req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhal")
      if (req.path === "/truncated") req.socket.end()
    })
    return Effect.gen(function*() {
      const invalid = yield* Effect.flip(Agent.request(
        HttpClientRequest.get("http://a.test/").pipe(HttpClientRequest.setHeader("x-bad", "a\r\nb"))
      ))
      expect(invalid).toMatchObject({ reason: "InvalidRequest", requestSent: false })
      const truncated = yield* Effect.flip(Agent.requestString("http://a.test/truncated"))
      expect(truncated).toMatchObject({ reason: "Truncated", requestSent: true })
      // A streamed body longer than it said: the head went out.
      const tooLong = yield* Effect.flip(Agent.request(
        HttpClientRequest.post("http://a.test/upload").pipe(
          HttpClientRequest.bodyStream(Stream.make(new Uint8Array(4)), { contentLength: 2 })
        )
      ))
      expect(tooLong).toMatchObject({ reason: "InvalidRequest", requestSent: true })
      server.refuse = true
      const refused = yield* Effect.flip(Agent.requestString("http://b.test/"))
      expect(refused).toMatchObject({ reason: "Connect", requestSent: false })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it("an AgentError says requestSent by its reason and phase unless told", () => {
    const error = (reason: AgentError["reason"], phase?: AgentError["phase"]) =>
      new AgentError({ reason, origin: "o", detail: "d", ...(phase ? { phase } : {}) }).requestSent
    expect([error("Connect"), error("InvalidRequest"), error("Closed"), error("Timeout", "queue"), error("Timeout", "connect")])
      .toEqual([false, false, false, false, false])
    expect([error("Stale"), error("Protocol"), error("Truncated"), error("Transport"), error("Timeout", "headers"), error("HeadersTooLarge")])
      .toEqual([true, true, true, true, true, true])
    expect(new AgentError({ reason: "Closed", origin: "o", detail: "d", requestSent: true }).requestSent).toBe(true)
  })
})
