/**
 * How long a connection lives: the responses it may carry (a server's
 * `Keep-Alive: max`, `maxRequestsPerConnection`, `persist: false`) and its
 * age (`maxConnectionAge`, spread so that connections opened together do not
 * all close together).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { agentOn, settle } from "./support/agent.js"
import { heldServer, MemoryServer } from "./support/MemoryConnector.js"

/** Which connection (server-side socket id) carried each of `count` sequential requests. */
const socketsOf = (server: MemoryServer, count: number, url = "http://a.test/") =>
  Effect.gen(function*() {
    for (let i = 0; i < count; i++) yield* Agent.requestString(url)
    return server.requests.map((r) => r.socket.id)
  })

describe("Lifetimes: responses per connection", () => {
  it.effect("a server's counting-down Keep-Alive: max (as apache sends it) gets N more requests after each response", () => {
    // apache's way: `max=5` on a connection's first response, one less on each
    // after it. This server never closes by itself: only the Agent's reading
    // of `max` decides when a connection is done.
    const server = new MemoryServer((req) => {
      const before = server.requests.filter((r) => r.socket === req.socket).length - 1
      req.socket.respond("ok", { "keep-alive": `timeout=60, max=${Math.max(0, 5 - before)}` })
    })
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 8)).toEqual([1, 1, 1, 1, 1, 1, 2, 2])
      // Closed by us after its sixth response (`max=0`), not found dead by the next request.
      expect(server.sockets[0]!.destroyed).toBe(true)
      expect(yield* Agent.stats).toMatchObject({ opened: 2, reused: 6, responses: 8 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("a server's constant Keep-Alive: max=2 gives each connection three responses: the first response's promise binds", () => {
    // After the first response the server takes 2 more: 3 in all. Each later
    // `max=2` would allow more, but the lowest total the server announced stands.
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "timeout=60, max=2" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 7)).toEqual([1, 1, 1, 2, 2, 2, 3])
      expect(server.sockets.map((s) => s.destroyed)).toEqual([true, true, false])
      expect(yield* Agent.stats).toMatchObject({ opened: 3, reused: 4, responses: 7 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("Keep-Alive: max=0 means no request after the response that says it", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "timeout=60, max=0" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 3)).toEqual([1, 2, 3])
      expect(server.sockets.map((s) => s.destroyed)).toEqual([true, true, true])
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("Keep-Alive: max=1, then max=0: two responses per connection", () => {
    const server = new MemoryServer((req) => {
      const before = server.requests.filter((r) => r.socket === req.socket).length - 1
      req.socket.respond("ok", { "keep-alive": `max=${before === 0 ? 1 : 0}` })
    })
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 5)).toEqual([1, 1, 2, 2, 3])
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("maxRequestsPerConnection closes a connection after that many responses", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok"))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 5)).toEqual([1, 1, 2, 2, 3])
      expect(server.sockets.map((s) => s.destroyed)).toEqual([true, true, false])
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 2 })))
  })

  it.effect("maxRequestsPerConnection lower than the server's Keep-Alive: max wins", () => {
    // `max=3` on the first response allows 4 in all: 3 is lower.
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "max=3" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 7)).toEqual([1, 1, 1, 2, 2, 2, 3])
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 3 })))
  })

  it.effect("the server's Keep-Alive: max lower than maxRequestsPerConnection wins", () => {
    // `max=2` on the first response allows 3 in all: lower than 5.
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "max=2" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 7)).toEqual([1, 1, 1, 2, 2, 2, 3])
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 5 })))
  })

  it("maxRequestsPerConnection must be a positive integer", () => {
    expect(() => Effect.runSync(Effect.scoped(Agent.make({ maxRequestsPerConnection: 0 })).pipe(
      Effect.provide(new MemoryServer(() => {}).layer)
    ))).toThrow("maxRequestsPerConnection must be a positive integer")
  })
})

describe("Lifetimes: maxConnectionAge", () => {
  it.effect("connections opened together retire apart, each within the last tenth of maxConnectionAge", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok"))
    const origins = Array.from({ length: 10 }, (_, i) => `http://o${i}.test/`)
    const all = Effect.forEach(origins, (url) => Agent.requestString(url), { discard: true })
    return Effect.gen(function*() {
      yield* all
      expect(server.sockets.length).toBe(10)
      // Just before nine tenths of the age, every connection is reused.
      yield* TestClock.adjust("89 seconds")
      yield* all
      expect(server.sockets.length).toBe(10)
      // Then they retire a few at a time, each at its own moment, all by the full age.
      const retiredAt: Array<number> = []
      for (let second = 90; second <= 100; second++) {
        yield* TestClock.adjust("1 second")
        const before = server.sockets.length
        yield* all
        for (let i = before; i < server.sockets.length; i++) retiredAt.push(second)
        if (server.sockets.length === 20) break
      }
      expect(retiredAt.length).toBe(10)
      expect(new Set(retiredAt).size).toBeGreaterThanOrEqual(5)
      expect(Math.max(...retiredAt)).toBeLessThanOrEqual(100)
    }).pipe(Effect.provide(agentOn(server, { maxConnectionAge: "100 seconds", idleTimeout: "1 hour" })))
  })

  it.effect("a busy connection past its age finishes its exchange, then closes", () => {
    const { held, server } = heldServer()
    return Effect.gen(function*() {
      const slow = yield* Effect.fork(Agent.requestString("http://a.test/slow"))
      yield* settle
      yield* TestClock.adjust("20 seconds")
      held.shift()!.socket.respond("done")
      expect(yield* Fiber.join(slow)).toBe("done")
      expect(server.sockets[0]!.destroyed).toBe(true)
      expect(yield* Agent.stats).toMatchObject({ open: 0, responses: 1 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionAge: "10 seconds", headersTimeout: "1 minute" })))
  })
})
