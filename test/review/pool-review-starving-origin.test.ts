import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// #mustMakeRoom gives a released connection's permit to a starving origin
// only when the releasing origin has more than one connection or nobody of
// its own waiting. With origins holding one connection each and a queue of
// their own (maxConnectionsPerOrigin 1, or simply many busy origins at the
// cap), a starving origin is never served until their queues drain: the
// "origin with no connection gets priority at the cap" rule does not hold.
describe("at the global cap, origins with one connection each and their own queues", () => {
  it.live("let an origin with no connection at all in soon", () => {
    const server = new MemoryServer((req) => setTimeout(() => req.socket.respond(req.path), 0))
    return withAgent(server, { maxConnections: 2, maxConnectionsPerOrigin: 1 }, Effect.gen(function*() {
      let served = 0
      const worker = (origin: string) =>
        Effect.forEach(Array.from({ length: 30 }), () =>
          Effect.map(Agent.requestString(`http://${origin}.test/`), () => void served++), { discard: true })
      const load = yield* Effect.fork(Effect.all([worker("a"), worker("a"), worker("b"), worker("b")], { concurrency: "unbounded", discard: true }))
      yield* settle
      let servedBeforeC = -1
      const servedWhenCArrived = served
      const c = yield* Effect.fork(Effect.map(Agent.requestString("http://c.test/"), () => void (servedBeforeC = served)))
      yield* Fiber.join(load)
      yield* Fiber.join(c)
      // c should get in after a few of the 120 other requests, not after (nearly) all of them:
      // a and b each give their only connection away after a turn of 8 requests
      // (lastConnectionTurn in the pool), so at most 2 turns, the 2 in flight
      // and what completes while c connects pass before c. Counted from c's
      // arrival: how many complete during the settle above depends on how fast
      // a request is, not on the rule under test.
      expect(servedBeforeC - servedWhenCArrived).toBeLessThan(24)
    }))
  }, 20_000)
})
