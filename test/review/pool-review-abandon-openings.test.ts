import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// KeyedPool.#abandon interrupts "the newest" fiber of site.openings. Two
// waiters that give up in the same scheduler turn both pick the same newest
// opening (it leaves site.openings only when its fiber has finished), so the
// older opening is never interrupted: it keeps its global permit until
// connectTimeout although nobody waits for it.
describe("requests that give up together while their connections are being opened", () => {
  it.effect("every opening nobody waits for is interrupted and frees its permit", () => {
    const server = new MemoryServer(() => {}) // never answers: b's two requests each hold a connection
    server.hang = true
    return withAgent(server, { maxConnections: 2, maxConnectionsPerOrigin: 2, connectTimeout: "60 seconds" }, Effect.gen(function*() {
      const a1 = yield* Effect.fork(Agent.requestString("http://a.test/1"))
      const a2 = yield* Effect.fork(Agent.requestString("http://a.test/2"))
      yield* settle
      expect(server.connects).toBe(2)
      yield* Fiber.interruptAll([a1, a2])
      yield* settle
      const aborted = server.abortedConnects
      // Both global permits must be free again: two requests to b get a connection each.
      server.hang = false
      const b1 = yield* Effect.fork(Agent.requestString("http://b.test/1"))
      const b2 = yield* Effect.fork(Agent.requestString("http://b.test/2"))
      yield* settle
      const bSent = server.requests.filter((r) => r.socket.origin.host === "b.test").length
      yield* Fiber.interruptAll([b1, b2])
      expect({ aborted, bSent }).toEqual({ aborted: 2, bSent: 2 })
    }))
  })
})
