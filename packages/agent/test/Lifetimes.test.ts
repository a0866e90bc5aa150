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
import { MemoryServer, type SeenRequest } from "./support/MemoryConnector.js"

/** Which connection (server-side socket id) carried each of `count` sequential requests. */
const socketsOf = (server: MemoryServer, count: number, url = "http://a.test/") =>
  Effect.gen(function*() {
    for (let i = 0; i < count; i++) yield* Agent.requestString(url)
    return server.requests.map((r) => r.socket.id)
  })

describe("Lifetimes: responses per connection", () => {
  it.effect("a server's constant Keep-Alive: max=3 gives each connection three responses", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "timeout=60, max=3" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 7)).toEqual([1, 1, 1, 2, 2, 2, 3])
      // Closed by us after its third response, not found dead by the next request.
      expect(server.sockets[0]!.destroyed).toBe(true)
      expect(yield* Agent.stats).toMatchObject({ opened: 3, reused: 4, responses: 7 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("a server's counting-down Keep-Alive: max (as Apache sends it) is followed to its end", () => {
    // Apache's way: `max=4` on a connection's first response, one less on each after it.
    const server = new MemoryServer((req) => {
      const served = server.requests.filter((r) => r.socket === req.socket).length
      req.socket.respond("ok", { "keep-alive": `timeout=60, max=${5 - served}` })
    })
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 6)).toEqual([1, 1, 1, 1, 2, 2])
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("maxRequestsPerConnection closes a connection after that many responses", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok"))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 5)).toEqual([1, 1, 2, 2, 3])
      expect(server.sockets.map((s) => s.destroyed)).toEqual([true, true, false])
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 2 })))
  })

  it.effect("the lower of maxRequestsPerConnection and the server's Keep-Alive: max wins", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "max=10" }))
    return Effect.gen(function*() {
      expect(yield* socketsOf(server, 4)).toEqual([1, 1, 1, 2])
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 3 })))
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
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => held.push(req))
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
