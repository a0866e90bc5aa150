/**
 * What the tests of `@keepalive/redis` share: the test Redis, a service built
 * from a layer, holders that record what they were told, a plain client to
 * look at the keys.
 */
import { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import type { PermitHolder } from "@keepalive/agent/ConnectionPermits"
import * as Origin from "@keepalive/agent/Origin"
import { RedisPermits } from "@keepalive/redis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import { inject } from "vitest"

export const redisPort = inject("redisPort")
const unavailable = inject("redisUnavailable")
const inCi = process.env.CI === "true"
/** True when the test Redis is missing and we are not under CI (which fails instead). */
export const skipRedis = redisPort === 0 && !inCi
if (skipRedis) console.warn(`redis tests skipped: ${unavailable}`)

export const redisUrl = (port: number = redisPort): string => {
  if (port === 0) throw new Error(`redis-server is required under CI but unavailable: ${unavailable}`)
  return `redis://127.0.0.1:${port}`
}

/** A key prefix no other test uses. */
export const freshPrefix = (): string => `test:${randomBytes(6).toString("hex")}`

export type Service = ConnectionPermits["Type"]

/** The service of a layer, built in the test's scope (one "process" of a fleet). */
export const service = (config: RedisPermits.Config): Effect.Effect<Service, RedisPermits.RedisPermitsError, Scope.Scope> =>
  Effect.map(Layer.build(RedisPermits.layer(config)), Context.get(ConnectionPermits))

/** A holder that counts what it was told. */
export class TestHolder implements PermitHolder {
  lostCalls = 0
  wantedCalls = 0
  constructor(readonly name = "") {}
  lost(): void {
    this.lostCalls++
  }
  wanted(): void {
    this.wantedCalls++
  }
}

export const origin = Origin.make("http", "127.0.0.1", 8080)
export const otherOrigin = Origin.make("http", "127.0.0.1", 8081)

/** A plain client, closed with the scope, to look at and meddle with the keys. */
export const plainClient = (port: number = redisPort): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const client = new Redis(port, "127.0.0.1", { lazyConnect: false, maxRetriesPerRequest: 1 })
      // Its calls fail when its Redis is stopped; without a listener ioredis would also print each reconnect's error.
      client.on("error", () => {})
      return client
    }),
    (client) => Effect.sync(() => client.disconnect())
  )

/** The names of an origin's keys under `prefix`, as the package makes them. */
export const keysOf = (prefix: string, originKey: string = origin.key) => {
  const tag = `{${prefix}:${originKey}}`
  return { leases: `${tag}:leases`, queue: `${tag}:queue`, tickets: `${tag}:tickets`, seq: `${tag}:seq` }
}

/** Polls `check` every 10 ms until it holds, for up to `ms`. */
export const eventually = (check: () => Effect.Effect<boolean>, ms = 3_000): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      if (yield* check()) return true
      yield* Effect.sleep(10)
    }
    return yield* check()
  })
