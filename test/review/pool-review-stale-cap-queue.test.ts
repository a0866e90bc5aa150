import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type { SeenRequest } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// KeyedPool.#abandon removes the waiter but leaves its origin in #starving /
// #capQueue (queued stays true, so #forgetIfUnused keeps the record too).
// #mustMakeRoom then sees "someone waits at the cap" and release() closes a
// perfectly reusable connection to hand its permit to an origin nobody waits
// for any more.
describe("an origin whose only request gave up while queued at the global cap", () => {
  it.effect("does not make other origins close reusable connections", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => req.path === "/slow" ? held.push(req) : req.socket.respond("ok"))
    return withAgent(server, { maxConnections: 1 }, Effect.gen(function*() {
      const a = yield* Effect.fork(Agent.requestString("http://a.test/slow"))
      yield* settle
      const b = yield* Effect.fork(Effect.either(Effect.timeout(Agent.requestString("http://b.test/"), "1 second")))
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(b)
      const whileAWorks = yield* Agent.stats
      held.shift()!.socket.respond("done")
      expect(yield* Fiber.join(a)).toBe("done")
      yield* settle
      const after = yield* Agent.stats
      expect(yield* Agent.requestString("http://a.test/again")).toBe("ok")
      expect({ waiting: whileAWorks.waiting, after: { open: after.open, idle: after.idle }, sockets: server.sockets.length })
        .toEqual({ waiting: 0, after: { open: 1, idle: 1 }, sockets: 1 })
    }))
  })
})
