/**
 * The cost of a permit on a local Redis, uncontended: an acquire and its
 * release, timed one after another; and the metric series the service keeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { freshPrefix, origin, plainClient, service, skipRedis, TestHolder } from "./support/redis.js"

describe.skipIf(skipRedis)("RedisPermits, uncontended", () => {
  it.scopedLive("an acquire takes one round trip; its metrics carry the origin's labels", () =>
    Effect.gen(function*() {
      // The caller's client, to count the commands each acquire sends.
      const redis = yield* plainClient()
      let sent = 0
      const sendCommand = redis.sendCommand.bind(redis)
      redis.sendCommand = (...args) => {
        sent++
        return sendCommand(...args)
      }
      const permits = yield* service({ redis, maxConnectionsPerOrigin: 4, keyPrefix: freshPrefix() })
      const times: Array<number> = []
      const commands: Array<number> = []
      for (let i = 0; i < 1_000; i++) {
        const before = sent
        const start = performance.now()
        const permit = yield* permits.acquire(origin, new TestHolder())
        times.push(performance.now() - start)
        commands.push(sent - before)
        yield* permit.release
      }
      // A refresh may fall within one, and the first loads the script: most send exactly one command.
      expect(commands.filter((n) => n === 1).length).toBeGreaterThan(990)
      times.sort((a, b) => a - b)
      const p50 = times[Math.floor(times.length * 0.5)]!
      const p99 = times[Math.floor(times.length * 0.99)]!
      console.log(`acquire, uncontended, local Redis: p50 ${p50.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms`)
      expect(p50).toBeLessThan(20)
      const pairs = yield* Metric.snapshot
      const wait = pairs.find((p) => p.metricKey.name === RedisPermits.metricNames.waitDuration &&
        [...p.metricKey.tags].some((t) => t.key === "server.port" && t.value === String(origin.port)))
      expect(wait).toBeDefined()
      expect([...wait!.metricKey.tags].map((t) => t.key)).toEqual(expect.arrayContaining(["server.address", "server.port", "url.scheme", "unit"]))
      const held = pairs.find((p) => p.metricKey.name === RedisPermits.metricNames.held &&
        [...p.metricKey.tags].some((t) => t.key === "server.port" && t.value === String(origin.port)))
      expect(held).toBeDefined()
    }))
})
