/**
 * `RedisPermits` against a real redis-server (test/setup/redis.ts), through
 * the `ConnectionPermits` service with holders that record what they are
 * told: the cap, first come first served across two "processes" (two layers,
 * two clients), interruption, lost leases, `wanted`, dead waiters and holders,
 * `SCRIPT FLUSH`, and the bad configs.
 */
import { describe, expect, it } from "@effect/vitest"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scripts from "../src/internal/scripts.js"
import {
  eventually,
  freshPrefix,
  keysOf,
  origin,
  otherOrigin,
  plainClient,
  redisUrl,
  service,
  skipRedis,
  TestHolder
} from "./support/redis.js"

describe.skipIf(skipRedis)("RedisPermits", () => {
  it.scopedLive("grants up to the cap, then a waiter gets the permit given back", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 2, keyPrefix })
      const a = yield* permits.acquire(origin, new TestHolder())
      const b = yield* permits.acquire(origin, new TestHolder())
      // another origin has a cap of its own
      const other = yield* permits.acquire(otherOrigin, new TestHolder())
      const third = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
      yield* Effect.sleep(300)
      expect(third.unsafePoll()).toBeNull()
      const redis = yield* plainClient()
      expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).leases))).toBe(2)
      expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).queue))).toBe(1)
      const released = Date.now()
      yield* a.release
      const c = yield* Fiber.join(third)
      // woken by the message, not by the poll
      expect(Date.now() - released).toBeLessThan(150)
      expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).queue))).toBe(0)
      yield* b.release
      yield* c.release
      yield* other.release
      expect(yield* eventually(() => Effect.promise(() => redis.zcard(keysOf(keyPrefix).leases)).pipe(Effect.map((n) => n === 0)))).toBe(true)
    }))

  it.scopedLive("serves waiters first come, first served across processes", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const one = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix })
      const two = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix })
      const first = yield* one.acquire(origin, new TestHolder())
      const order: Array<string> = []
      const fibers: Array<Fiber.RuntimeFiber<void, unknown>> = []
      for (const [name, permits] of [["two-a", two], ["one-a", one], ["two-b", two], ["one-b", one], ["two-c", two]] as const) {
        fibers.push(yield* Effect.fork(
          permits.acquire(origin, new TestHolder(name)).pipe(
            Effect.tap(() => Effect.sync(() => order.push(name))),
            Effect.flatMap((permit) => Effect.sleep(20).pipe(Effect.zipRight(permit.release)))
          )
        ))
        // each ticket queued before the next asks
        yield* Effect.sleep(30)
      }
      yield* first.release
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual(["two-a", "one-a", "two-b", "one-b", "two-c"])
    }))

  it.scopedLive("an interrupted acquire holds nothing, a ticket or a lease granted meanwhile", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const keys = keysOf(keyPrefix)
      const redis = yield* plainClient()
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix })
      const held = yield* permits.acquire(origin, new TestHolder())
      const waiting = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
      yield* Effect.sleep(100)
      expect(yield* Effect.promise(() => redis.zcard(keys.queue))).toBe(1)
      yield* Fiber.interrupt(waiting)
      expect(yield* eventually(() => Effect.promise(() => redis.zcard(keys.queue)).pipe(Effect.map((n) => n === 0)))).toBe(true)
      expect(yield* Effect.promise(() => redis.zcard(keys.tickets))).toBe(0)
      yield* held.release
      // Interrupted at every moment of a round trip: whatever Redis granted is given back.
      for (let i = 0; i < 40; i++) {
        const fiber = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
        yield* Effect.sleep(i % 5 === 0 ? 0 : (i % 7) / 4)
        const exit = yield* Fiber.interrupt(fiber)
        // it may have finished first: then it holds the permit, and gives it back
        if (Exit.isSuccess(exit)) yield* exit.value.release
      }
      expect(yield* eventually(() =>
        Effect.promise(() => Promise.all([redis.zcard(keys.leases), redis.zcard(keys.queue)])).pipe(
          Effect.map(([leases, queue]) => leases === 0 && queue === 0)
        )
      )).toBe(true)
      // and the permit is there to take
      const again = yield* permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(1_000))
      yield* again.release
    }))

  it.scopedLive("tells a holder whose lease is gone from Redis that it is lost, and lets another take it", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const redis = yield* plainClient()
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "300 millis" })
      const holder = new TestHolder()
      const permit = yield* permits.acquire(origin, holder)
      yield* Effect.sleep(400)
      expect(holder.lostCalls).toBe(0)
      yield* Effect.promise(() => redis.del(keysOf(keyPrefix).leases))
      expect(yield* eventually(() => Effect.succeed(holder.lostCalls === 1), 500)).toBe(true)
      // the lost permit no longer counts here: another can be had
      const next = yield* permits.acquire(origin, new TestHolder()).pipe(Effect.timeout(1_000))
      yield* permit.release
      yield* next.release
    }))

  it.scopedLive("a process whose event loop stalls past the lease finds its leases lost and another takes them", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const config = { redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "300 millis" } as const
      const stalled = yield* service(config)
      const holder = new TestHolder()
      yield* stalled.acquire(origin, holder)
      const redis = yield* plainClient()
      // Another process waits; the stalled one's lease runs out in Redis.
      const other = yield* service(config)
      const waiting = yield* Effect.fork(other.acquire(origin, new TestHolder()))
      yield* Effect.sleep(50)
      const blockUntil = Date.now() + 700
      while (Date.now() < blockUntil) {
        // the event loop is blocked: no refresh, no message
      }
      // the first thing the stalled process does is notice
      expect(yield* eventually(() => Effect.succeed(holder.lostCalls === 1), 200)).toBe(true)
      const taken = yield* Fiber.join(waiting).pipe(Effect.timeout(1_500))
      expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).leases))).toBe(1)
      yield* taken.release
    }))

  it.scopedLive("calls wanted() on the holders of an origin another process waits for", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const one = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 2, keyPrefix })
      const two = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 2, keyPrefix })
      const holders = [new TestHolder(), new TestHolder()]
      const permits = [yield* one.acquire(origin, holders[0]!), yield* one.acquire(origin, holders[1]!)]
      const otherHolder = new TestHolder()
      const otherPermit = yield* two.acquire(otherOrigin, otherHolder)
      yield* Effect.sleep(50)
      expect(holders[0]!.wantedCalls).toBe(0)
      const waiting = yield* Effect.fork(two.acquire(origin, new TestHolder()))
      expect(yield* eventually(() => Effect.succeed(holders.every((h) => h.wantedCalls >= 1)), 500)).toBe(true)
      // the holder of another origin is not bothered
      expect(otherHolder.wantedCalls).toBe(0)
      // giving one back, as the Agent does with an idle connection
      yield* permits[0]!.release
      const got = yield* Fiber.join(waiting).pipe(Effect.timeout(500))
      yield* got.release
      yield* permits[1]!.release
      yield* otherPermit.release
    }))

  it.scopedLive("a dead waiter's ticket and a dead holder's lease block nobody past their TTL", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const keys = keysOf(keyPrefix)
      const redis = yield* plainClient()
      const [seconds, micros] = yield* Effect.promise(() => redis.time())
      const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
      // A crashed process: it held the only permit and another waited first; both for 400 ms more.
      yield* Effect.promise(() =>
        redis.multi()
          .zadd(keys.leases, now + 400, "dead:holder")
          .zadd(keys.queue, 1, "dead:waiter")
          .zadd(keys.tickets, now + 400, "dead:waiter")
          .set(keys.seq, 1)
          .exec()
      )
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "3 seconds" })
      const start = Date.now()
      const permit = yield* permits.acquire(origin, new TestHolder())
      const waited = Date.now() - start
      expect(waited).toBeGreaterThanOrEqual(300)
      // the TTL, plus at most one poll (1 s)
      expect(waited).toBeLessThan(400 + 1_000 + 200)
      expect(yield* Effect.promise(() => redis.zrange(keys.leases, 0, -1))).toHaveLength(1)
      expect(yield* Effect.promise(() => redis.zcard(keys.queue))).toBe(0)
      yield* permit.release
    }))

  it.scopedLive("keeps working through SCRIPT FLUSH", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const redis = yield* plainClient()
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix, leaseTtl: "300 millis" })
      const holder = new TestHolder()
      const permit = yield* permits.acquire(origin, holder)
      yield* Effect.promise(() => redis.script("FLUSH"))
      // refreshes (pipelined) and the acquire below run after the flush
      yield* Effect.sleep(350)
      const waiting = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
      yield* Effect.sleep(50)
      yield* Effect.promise(() => redis.script("FLUSH"))
      yield* permit.release
      const next = yield* Fiber.join(waiting).pipe(Effect.timeout(1_000))
      yield* Effect.sleep(350)
      expect(holder.lostCalls).toBe(0)
      expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).leases))).toBe(1)
      yield* next.release
    }))

  it.scopedLive("an acquire interrupted after SCRIPT FLUSH holds nothing, though ioredis sends it again after NOSCRIPT", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const keys = keysOf(keyPrefix)
      const redis = yield* plainClient()
      const permits = yield* service({ redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix })
      // Both scripts known to the service's connection: the next calls go as EVALSHA.
      yield* (yield* permits.acquire(origin, new TestHolder())).release
      yield* eventually(() => Effect.promise(() => redis.zcard(keys.leases)).pipe(Effect.map((n) => n === 0)))
      // Flushed, then `release` loaded again by another process: the acquire is answered NOSCRIPT and sent
      // again as EVAL, after a withdrawal sent at once would have run.
      yield* Effect.promise(() => redis.script("FLUSH"))
      yield* Effect.promise(() => redis.script("LOAD", Scripts.release))
      const fiber = yield* Effect.fork(permits.acquire(origin, new TestHolder()))
      yield* Effect.yieldNow()
      yield* Effect.yieldNow()
      const exit = yield* Fiber.interrupt(fiber)
      if (Exit.isSuccess(exit)) yield* exit.value.release
      // Every call answered by now; nothing left (a lease would be for its whole TTL).
      yield* Effect.sleep(200)
      expect(yield* Effect.promise(() => Promise.all([redis.zcard(keys.leases), redis.zcard(keys.queue)]))).toEqual([0, 0])
    }))

  it.scopedLive("acquire renews a lease already granted to the id that asks (an earlier answer it did not wait for)", () =>
    Effect.gen(function*() {
      const keys = keysOf(freshPrefix())
      const redis = yield* plainClient()
      Scripts.register(redis)
      const scripts = redis as unknown as Scripts.ScriptCommands<Promise<unknown>>
      const ask = () =>
        scripts.keepalivePermitsAcquire(keys.leases, keys.queue, keys.tickets, keys.seq, "w", 1, 1_000, "channel", origin.key, "0")
      expect(yield* Effect.promise(ask)).toEqual([1, 1])
      const first = Number(yield* Effect.promise(() => redis.zscore(keys.leases, "w")))
      yield* Effect.sleep(300)
      expect(yield* Effect.promise(ask)).toEqual([1, 1])
      // The holder counts its lease from the second answer: so must Redis.
      const second = Number(yield* Effect.promise(() => redis.zscore(keys.leases, "w")))
      expect(second - first).toBeGreaterThanOrEqual(250)
    }))

  it.scopedLive("counts the live processes with the heartbeat, and forgets one that left", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const redis = yield* plainClient()
      const config = { redis: redisUrl(), maxConnectionsPerOrigin: 1, keyPrefix }
      yield* service(config)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* service(config)
        expect(yield* Effect.promise(() => redis.zcard(`${keyPrefix}:processes`))).toBe(2)
      }))
      expect(yield* Effect.promise(() => redis.zcard(`${keyPrefix}:processes`))).toBe(1)
    }))

  it.scopedLive("uses a caller's client, and leaves it open", () =>
    Effect.gen(function*() {
      const keyPrefix = freshPrefix()
      const redis = yield* plainClient()
      yield* Effect.scoped(Effect.gen(function*() {
        const permits = yield* service({ redis, maxConnectionsPerOrigin: 1, keyPrefix })
        const permit = yield* permits.acquire(origin, new TestHolder())
        expect(yield* Effect.promise(() => redis.zcard(keysOf(keyPrefix).leases))).toBe(1)
        yield* permit.release
      }))
      expect(redis.status).toBe("ready")
      expect(yield* Effect.promise(() => redis.ping())).toBe("PONG")
    }))

  it.effect("refuses a bad config with a RedisPermitsError naming the option", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [RedisPermits.Config, string]> = [
        [{ redis: "http://127.0.0.1:6379", maxConnectionsPerOrigin: 1 }, "redis"],
        [{ redis: "not a url", maxConnectionsPerOrigin: 1 }, "redis"],
        [{ redis: {} as never, maxConnectionsPerOrigin: 1 }, "redis"],
        // The shape of an ioredis Cluster client.
        [{
          redis: { isCluster: true, defineCommand() {}, duplicate() {}, pipeline() {} } as never,
          maxConnectionsPerOrigin: 1
        }, "redis"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 0 }, "maxConnectionsPerOrigin"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1.5 }, "maxConnectionsPerOrigin"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, leaseTtl: "1 millis" }, "leaseTtl"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, leaseTtl: "soon" as never }, "leaseTtl"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, leaseTtl: Infinity }, "leaseTtl"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, keyPrefix: "" }, "keyPrefix"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, keyPrefix: "a{b}" }, "keyPrefix"],
        [{ redis: "redis://127.0.0.1:1", maxConnectionsPerOrigin: 1, onUnavailable: "ignore" as never }, "onUnavailable"]
      ]
      for (const [config, option] of cases) {
        const error = yield* Effect.flip(Effect.scoped(service(config)))
        expect(error._tag).toBe("RedisPermitsError")
        expect(error.reason).toBe("InvalidConfig")
        expect(error.option).toBe(option)
        expect(error.message).toContain(option)
      }
    }))
})
