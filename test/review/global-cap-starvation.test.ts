import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type { SeenRequest } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

describe("at the global cap, a request waiting in its origin's Pool", () => {
  // Found when the pool was Effect's Pool (names below are from then); kept as a regression test.
  // a2 waits inside Pool.get on the Pool's availableLatch for the Pool's own
  // fiber, which waits in acquirePermit for a global permit. a1's connection
  // is checked in as idle (owner.waiting > 0) and handed back to the Pool's
  // `available` set, but Pool release does not open the latch: a2 sleeps on
  // while the idle connection holds the only permit, until the idle timer
  // closes it (idleTimeout later) and the Pool opens a new one.
  it.effect("gets the connection its origin just released, without waiting for idleTimeout", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => req.path === "/1" ? held.push(req) : req.socket.respond("ok"))
    return withAgent(server, { maxConnections: 1, maxConnectionsPerOrigin: 2, idleTimeout: "60 seconds" }, Effect.gen(function*() {
      const a1 = yield* Effect.fork(Agent.requestString("http://a.test/1"))
      yield* settle
      const a2 = yield* Effect.fork(Agent.requestString("http://a.test/2"))
      yield* settle
      held.shift()!.socket.respond("one")
      expect(yield* Fiber.join(a1)).toBe("one")
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      const soon = yield* Fiber.poll(a2)
      const stats = yield* Agent.stats
      yield* TestClock.adjust("60 seconds")
      yield* settle
      const late = yield* Fiber.poll(a2)
      expect({ soon: soon._tag, late: late._tag, stats, sockets: server.sockets.length }).toMatchObject({
        soon: "Some"
      })
    }))
  })
})
