import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { Connector } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import type { SeenRequest } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// Regression: with Effect's Pool, Pool.get waited for the Pool's own fiber to
// open a connection inside an uninterruptible region, so a request waiting for
// its connection could not be interrupted until that open ended. The Agent's
// own pool waits interruptibly; these keep it so.

describe("interrupting a request whose connection is being opened", () => {
  it.effect("a 1 s timeout fires after 1 s while the connect hangs (connectTimeout 10 s)", () => {
    const hanging = Layer.succeed(Connector, { connect: () => Effect.never, yieldToIo: Effect.void })
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(
        Effect.timeout(Agent.requestString("http://a.test/"), "1 second").pipe(
          Effect.provide(Agent.layer({ connectTimeout: "10 seconds" }).pipe(Layer.provide(hanging)))
        )
      )
      yield* settle
      yield* TestClock.adjust("2 seconds")
      yield* settle
      const early = yield* Fiber.poll(fiber)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.await(fiber)
      expect(early._tag).toBe("Some")
    })
  })

  it.effect("at the global cap, a 1 s timeout fires after 1 s while another origin holds the only permit", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => req.path === "/slow" ? held.push(req) : req.socket.respond("ok"))
    return withAgent(server, { maxConnections: 1, headersTimeout: "60 seconds" }, Effect.gen(function*() {
      const slow = yield* Effect.fork(Agent.requestString("http://a.test/slow"))
      yield* settle
      const other = yield* Effect.fork(
        Effect.either(Effect.timeout(Agent.requestString("http://b.test/"), "1 second"))
      )
      yield* settle
      yield* TestClock.adjust("2 seconds")
      yield* settle
      const early = yield* Fiber.poll(other)
      const stats = yield* Agent.stats
      held.shift()!.socket.respond("done")
      yield* Fiber.join(slow)
      yield* Fiber.await(other)
      expect({ timedOut: early._tag, waiting: stats.waiting }).toEqual({ timedOut: "Some", waiting: 0 })
    }))
  })

})
