import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { echoServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

describe("interruption during the I/O turn before reusing an idle connection", () => {
  // Found when the pool was Effect's Pool (names below are from then); kept as a regression test.
  // takePooled: Pool.get succeeded, idle.delete(conn) and conn.busy = true ran,
  // then connector.yieldToIo is interruptible and no checkin finalizer exists
  // yet. The Pool takes the item back, but the connection stays out of the
  // Agent's idle set with busy = true: counted busy, no idle timer, not
  // evictable at the global cap, and onIdleBreak no longer fires.
  it.effect("leaves the connection idle, evictable and timed", () => {
    const server = echoServer()
    return withAgent(server, { maxConnections: 1, idleTimeout: "4 seconds" }, Effect.gen(function*() {
      expect(yield* Agent.requestString("http://a.test/1")).toBe("GET /1")
      // Idle for more than 1 ms: the next checkout takes the I/O turn.
      yield* TestClock.adjust("10 millis")
      const fiber = yield* Effect.fork(Agent.requestString("http://a.test/2"))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
      yield* Fiber.interrupt(fiber)
      yield* settle
      expect(server.requests.length).toBe(1) // nothing was sent for the interrupted request
      const stats = yield* Agent.stats
      // At maxConnections 1, a request to another origin must evict a's idle connection.
      const other = yield* Effect.fork(Effect.either(Agent.requestString("http://b.test/")))
      yield* settle
      const otherDone = yield* Fiber.poll(other)
      // The idle timeout must close a's connection.
      yield* TestClock.adjust("5 seconds")
      yield* settle
      const stillOpen = server.openSockets.filter((s) => s.origin.host === "a.test").length
      expect({ otherDone: otherDone._tag, stats, stillOpen }).toMatchObject({
        otherDone: "Some",
        stats: { open: 1, idle: 1, busy: 0 },
        stillOpen: 0
      })
    }))
  })
})
