import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type { SeenRequest } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// KeyedPool.putBack (used when the request a connection was handed to is
// interrupted: #abandon after a grant, or agent.ts checkout's onInterrupt
// around yieldToIo) goes straight to #handOff -> #markIdle. Unlike release()
// it neither checks #mustMakeRoom nor calls #permitFreed, so an origin queued
// at the global cap (b, in #starving) is not served: the connection sits idle
// holding the only permit until its idleTimeout closes it.
describe("a connection given back by an interrupted request at the global cap", () => {
  it.effect("serves the origin waiting at the cap at once, not after idleTimeout", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => req.path === "/1" ? held.push(req) : req.socket.respond("ok"))
    return withAgent(server, { maxConnections: 1, idleTimeout: "60 seconds" }, Effect.gen(function*() {
      // Past 1 ms of clock: a connection that served a request takes the I/O turn before reuse.
      yield* TestClock.adjust("10 millis")
      const a1 = yield* Effect.fork(Agent.requestString("http://a.test/1"))
      yield* settle
      const a2 = yield* Effect.fork(Agent.requestString("http://a.test/2"))
      yield* settle
      const b = yield* Effect.fork(Agent.requestString("http://b.test/"))
      yield* settle
      expect((yield* Agent.stats).waiting).toBe(2)
      held.shift()!.socket.respond("one")
      expect(yield* Fiber.join(a1)).toBe("one")
      // a's connection was handed to a2, now in connector.yieldToIo: a2 gives up.
      yield* Fiber.interrupt(a2)
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      const bDone = (yield* Fiber.poll(b))._tag
      const stats = yield* Agent.stats
      yield* TestClock.adjust("60 seconds")
      yield* settle
      const bLate = (yield* Fiber.poll(b))._tag
      expect({ bDone, bLate, stats }).toMatchObject({ bDone: "Some", bLate: "Some" })
    }))
  })
})
