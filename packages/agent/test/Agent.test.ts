/**
 * The Agent's request API as a whole: requests it refuses, persist: false,
 * and shutdown. How connections are pooled, given back, read and timed out is
 * in Pool, Release, Body and Timeouts.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import { agentOn, settle } from "./support/agent.js"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"

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
  it.effect("shutting the Agent down closes the connections still in use, and nothing opens after", () => {
    // Nobody answers: both connections are busy when the Agent's scope closes.
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ persist: true }), server.layer).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach(["http://a.test/", "http://b.test/"], (url) =>
        Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get(url), (r) => r.text))))
      yield* settle
      expect(server.openSockets.length).toBe(2)
      yield* Scope.close(scope, Exit.void)
      yield* settle
      expect(server.openSockets.length).toBe(0)
      for (const request of requests) expect(Exit.isFailure(yield* Fiber.join(request))).toBe(true)
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
      const agent = yield* Effect.provide(Agent.make(), server.layer).pipe(Scope.extend(scope))
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
      const agent = yield* Effect.provide(Agent.make({ maxConnectionsPerOrigin: 1 }), server.layer).pipe(
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
      const agent = yield* Effect.provide(Agent.make(), server.layer).pipe(Scope.extend(scope))
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
