/**
 * `RedisPermits` when Redis cannot be reached, at start or mid-run, under
 * each policy: `local` caps each process at its share and goes back to the
 * fleet's cap (its permits registered again) when Redis returns; `fail` fails
 * acquires with `Unavailable`. Each test that stops Redis runs its own
 * redis-server, leaving the shared one alone.
 */
import { describe, expect, it } from "@effect/vitest"
import { AgentError } from "@keepalive/agent/AgentError"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import { freePort } from "../../../test/setup/servers.js"
import { startRedis } from "../../../test/setup/redis.js"
import { eventually, freshPrefix, keysOf, origin, plainClient, redisUrl, service, skipRedis, TestHolder } from "./support/redis.js"

/** A redis-server of the test's own, stopped with the scope. */
const ownRedis = Effect.acquireRelease(
  Effect.promise(() => startRedis()).pipe(
    Effect.flatMap((started) => "error" in started ? Effect.die(new Error(started.error)) : Effect.succeed(started))
  ),
  (started) => Effect.promise(() => started.teardown())
)

/** Collects the log lines written while the service is built and runs. */
const collectLogs = () => {
  const lines: Array<string> = []
  const layer = Logger.replace(Logger.defaultLogger, Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  }))
  return { lines, layer }
}

/** The value of the fallback gauge. */
const fallback = Metric.snapshot.pipe(
  Effect.map((pairs) => {
    const pair = pairs.find((p) => p.metricKey.name === RedisPermits.metricNames.fallback)
    return pair === undefined ? undefined : (pair.metricState as unknown as { readonly value: number }).value
  })
)

describe.skipIf(skipRedis)("RedisPermits, Redis unavailable", () => {
  it.scopedLive("unreachable at start, policy local: a local cap, logged once", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => freePort())
      const logs = collectLogs()
      const permits = yield* service({ redis: `redis://127.0.0.1:${port}`, maxConnectionsPerOrigin: 2, leaseTtl: "300 millis" }).pipe(
        Effect.provide(logs.layer)
      )
      // Only this process was ever seen: its share is the whole cap.
      const a = yield* permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(1_000))
      const b = yield* permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(1_000))
      const third = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
      yield* Effect.sleep(500)
      expect(third.unsafePoll()).toBeNull()
      yield* a.release
      const c = yield* Fiber.join(third).pipe(Effect.timeout(500))
      yield* b.release
      yield* c.release
      const warnings = logs.lines.filter((line) => line.startsWith("WARN"))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("Redis is unavailable")
      expect(warnings[0]).toContain("capped at 2")
      expect(yield* fallback).toBe(1)
    }))

  it.scopedLive("unreachable at start, policy fail: acquire fails with Unavailable, on one line", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => freePort())
      const permits = yield* service({ redis: `redis://127.0.0.1:${port}`, maxConnectionsPerOrigin: 2, onUnavailable: "fail" })
      const error = yield* Effect.flip(permits.acquire(origin, new TestHolder()))
      expect(error).toBeInstanceOf(AgentError)
      expect(error.reason).toBe("Unavailable")
      expect(error.requestSent).toBe(false)
      expect(error.origin).toBe(origin.key)
      expect(error.message).toContain("onUnavailable is \"fail\"")
      expect(error.message).not.toContain("\n")
    }))

  it.scopedLive("restarted mid-run, policy local: each process's share meanwhile, then the fleet's cap with the permits registered again", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedis
      const keyPrefix = freshPrefix()
      const logs = collectLogs()
      const config = { redis: redisUrl(redis.port), maxConnectionsPerOrigin: 2, keyPrefix, leaseTtl: "600 millis" } as const
      const one = yield* service(config).pipe(Effect.provide(logs.layer))
      const two = yield* service(config)
      const holderOne = new TestHolder()
      const permitOne = yield* one.acquire(origin, holderOne)
      // a refresh of each counts both processes alive
      yield* Effect.sleep(300)
      yield* Effect.promise(() => redis.stop())
      yield* Effect.sleep(500)
      // Two processes were seen alive: each may have one connection.
      const waitingOne = yield* Effect.fork(one.acquire(origin, new TestHolder()))
      const holderTwo = new TestHolder()
      const permitTwo = yield* two.acquire(origin, holderTwo).pipe(Effect.timeout(1_000))
      yield* Effect.sleep(300)
      expect(waitingOne.unsafePoll()).toBeNull()
      expect(yield* Effect.promise(() => redis.start())).toBe(true)
      const client = yield* plainClient(redis.port)
      // Both permits held through the outage are registered again; nobody was told it lost one.
      expect(yield* eventually(() => Effect.promise(() => client.zcard(keysOf(keyPrefix).leases)).pipe(Effect.map((n) => n === 2)), 3_000)).toBe(true)
      expect(holderOne.lostCalls + holderTwo.lostCalls).toBe(0)
      // At the fleet's cap: the waiter waits for a permit given back.
      yield* Effect.sleep(300)
      expect(waitingOne.unsafePoll()).toBeNull()
      yield* permitTwo.release
      const got = yield* Fiber.join(waitingOne).pipe(Effect.timeout(1_500))
      yield* got.release
      yield* permitOne.release
      expect(logs.lines.filter((line) => line.startsWith("WARN"))).toHaveLength(1)
      expect(logs.lines.some((line) => line.includes("answers again"))).toBe(true)
    }), 20_000)

  it.scopedLive("restarted mid-run, policy local: what was admitted beyond the cap meanwhile is lost once Redis rules again", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedis
      const keyPrefix = freshPrefix()
      const config = { redis: redisUrl(redis.port), maxConnectionsPerOrigin: 2, keyPrefix, leaseTtl: "600 millis" } as const
      const one = yield* service(config)
      const two = yield* service(config)
      // One process holds the whole cap when Redis goes; the other takes its share meanwhile.
      const holders = [new TestHolder(), new TestHolder(), new TestHolder()] as const
      yield* one.acquire(origin, holders[0])
      yield* one.acquire(origin, holders[1])
      yield* Effect.sleep(300)
      yield* Effect.promise(() => redis.stop())
      yield* Effect.sleep(500)
      yield* two.acquire(origin, holders[2]).pipe(Effect.timeout(1_000))
      expect(yield* Effect.promise(() => redis.start())).toBe(true)
      const client = yield* plainClient(redis.port)
      const held = () => holders.filter((holder) => holder.lostCalls === 0).length
      // Back under the fleet's cap: one permit is lost (its connection closes), the others are registered.
      expect(yield* eventually(() => Effect.succeed(held() === 2), 3_000)).toBe(true)
      yield* Effect.sleep(400)
      expect(held()).toBe(2)
      expect(yield* Effect.promise(() => client.zcard(keysOf(keyPrefix).leases))).toBe(2)
    }), 20_000)

  it.scopedLive("restarted: the fleet's messages are subscribed to again", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedis
      const keyPrefix = freshPrefix()
      yield* service({ redis: redisUrl(redis.port), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "600 millis" })
      const client = yield* plainClient(redis.port)
      const subscribers = () =>
        Effect.promise(() => client.pubsub("NUMSUB", `${keyPrefix}:events`)).pipe(
          Effect.map((reply) => Number((reply as ReadonlyArray<unknown>)[1]))
        )
      expect(yield* eventually(() => Effect.map(subscribers(), (n) => n === 1))).toBe(true)
      yield* Effect.promise(() => redis.stop())
      yield* Effect.sleep(300)
      expect(yield* Effect.promise(() => redis.start())).toBe(true)
      expect(yield* eventually(() => Effect.map(subscribers(), (n) => n === 1))).toBe(true)
    }), 20_000)

  it.scopedLive("stopped mid-run, policy fail: acquires fail until Redis answers again", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedis
      const permits = yield* service({
        redis: redisUrl(redis.port),
        maxConnectionsPerOrigin: 2,
        keyPrefix: freshPrefix(),
        leaseTtl: "600 millis",
        onUnavailable: "fail"
      })
      const held = new TestHolder()
      const permit = yield* permits.acquire(origin, held)
      yield* Effect.promise(() => redis.stop())
      const error = yield* Effect.flip(permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(2_000)))
      expect(error._tag === "AgentError" && error.reason).toBe("Unavailable")
      expect(yield* Effect.promise(() => redis.start())).toBe(true)
      const got = yield* Effect.eventually(
        permits.acquire(origin, new TestHolder()).pipe(Effect.tapError(() => Effect.sleep(100)))
      ).pipe(Effect.timeout(5_000))
      expect(held.lostCalls).toBe(0)
      yield* got.release
      yield* permit.release
    }), 20_000)

  it.scopedLive("unreachable at start, then up: goes to the fleet's cap", () =>
    Effect.gen(function*() {
      const redis = yield* ownRedis
      yield* Effect.promise(() => redis.stop())
      const keyPrefix = freshPrefix()
      const permits = yield* service({ redis: redisUrl(redis.port), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "600 millis" })
      const permit = yield* permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(1_000))
      expect(yield* Effect.promise(() => redis.start())).toBe(true)
      const client = yield* plainClient(redis.port)
      expect(yield* eventually(() => Effect.promise(() => client.zcard(keysOf(keyPrefix).leases)).pipe(Effect.map((n) => n === 1)), 3_000)).toBe(true)
      yield* permit.release
      expect(yield* eventually(() => Effect.promise(() => client.zcard(keysOf(keyPrefix).leases)).pipe(Effect.map((n) => n === 0)))).toBe(true)
    }), 20_000)
})

