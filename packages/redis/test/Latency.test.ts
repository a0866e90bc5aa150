/**
 * The cost of a permit on a local Redis, uncontended: an acquire and its
 * release, timed one after another; and the metric series the service keeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { freshPrefix, origin, redisUrl, service, skipRedis, TestHolder } from "./support/redis.js"

describe.skipIf(skipRedis)("RedisPermits, uncontended", () => {
  it.scopedLive("an acquire takes one round trip; its metrics carry the origin's labels", () =>
    Effect.gen(function*() {
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 4, keyPrefix: freshPrefix() })
      const times: Array<number> = []
      for (let i = 0; i < 1_000; i++) {
        const start = performance.now()
        const permit = yield* permits.acquire(origin, new TestHolder())
        times.push(performance.now() - start)
        yield* permit.release
      }
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
