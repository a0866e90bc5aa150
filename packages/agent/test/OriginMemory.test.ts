import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import { agentOn } from "./support/agent.js"
import { gc } from "./support/gc.js"
import { MemoryServer } from "./support/MemoryConnector.js"

const heapMB = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed / 1e6
}

describe("origins left idle", () => {
  // Each origin gets a record in the pool, a connection with its scope and
  // fibers while in use. Once idle past the timeout all of it must go, or a
  // client visiting many hosts grows without bound.
  it.live("100,000 origins visited once leave the heap within 10 MB once they expire", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok"))
    return Effect.gen(function*() {
      // Warm up with a few thousand origins, so that code, inline caches and
      // the pool's maps have their working size before the measurement.
      for (let i = 0; i < 3000; i++) yield* Agent.requestString(`http://warm-${i}.test/`)
      server.sockets.length = server.requests.length = server.closedIds.length = 0
      yield* Effect.sleep("200 millis")
      const before = heapMB()
      for (let i = 0; i < 100_000; i++) {
        yield* Agent.requestString(`http://origin-${i}.test/`)
        if (i % 1000 === 999) server.sockets.length = server.requests.length = server.closedIds.length = 0
      }
      yield* Effect.sleep("400 millis")
      const stats = yield* Agent.stats
      expect(stats).toMatchObject({ open: 0, idle: 0, busy: 0, waiting: 0, opened: 103_000, responses: 103_000 })
      const grown = heapMB() - before
      // A record of ~200 bytes kept per origin would be 20 MB.
      expect(grown, `the heap grew by ${grown.toFixed(1)} MB`).toBeLessThan(10)
    }).pipe(Effect.provide(agentOn(server, { idleTimeout: "50 millis" })))
  }, 120_000)
})
