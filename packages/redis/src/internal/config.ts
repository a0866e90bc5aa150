/**
 * The defaults of `RedisPermits.Config` and their checks, and the timings
 * derived from `leaseTtl`.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { Redis } from "ioredis"
import type * as RedisPermits from "../RedisPermits.js"
import { RedisPermitsError } from "./error.js"

/** Every default, in one place. */
export const defaults = {
  leaseTtl: "10 seconds",
  keyPrefix: "keepalive:permits",
  onUnavailable: "local"
} as const

/** The shortest lease: refreshed every third of it, a shorter one would be refreshed faster than Redis answers. */
const minLeaseTtlMillis = 30

/** The config with its defaults applied, and the timings derived from it. */
export interface Resolved {
  /** A URL (ours to make and close) or the caller's client. */
  readonly redis: string | Redis
  readonly maxConnectionsPerOrigin: number
  readonly leaseTtlMillis: number
  /** How often every lease, ticket and the heartbeat are renewed: a third of `leaseTtl`. */
  readonly refreshMillis: number
  /** How often a waiter asks again when no message woke it: a lost message costs at most this. */
  readonly pollMillis: number
  /** How long a call to Redis may take before Redis counts as unavailable. */
  readonly storeTimeoutMillis: number
  readonly keyPrefix: string
  readonly onUnavailable: "local" | "fail"
}

const invalid = (option: string, detail: string) =>
  Either.left(new RedisPermitsError({ reason: "InvalidConfig", option, detail }))

const looksLikeClient = (u: unknown): u is Redis =>
  typeof u === "object" && u !== null && typeof (u as Redis).defineCommand === "function" &&
  typeof (u as Redis).duplicate === "function" && typeof (u as Redis).pipeline === "function"

/** Applies the defaults and checks every option: a bad one is a `RedisPermitsError` naming it. */
export const resolve = (config: RedisPermits.Config): Either.Either<Resolved, RedisPermitsError> => {
  if (typeof config !== "object" || config === null) return invalid("config", "expected an object")
  const { redis } = config
  if (typeof redis === "string") {
    let url: URL
    try {
      url = new URL(redis)
    } catch {
      return invalid("redis", "not a URL (expected redis://host:port or rediss://host:port)")
    }
    if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
      return invalid("redis", `unsupported scheme ${url.protocol} (expected redis: or rediss:)`)
    }
  } else if (!looksLikeClient(redis)) {
    return invalid("redis", "expected a redis:// URL or an ioredis client")
  } else if ((redis as { readonly isCluster?: unknown }).isCluster === true) {
    // Each origin's keys share a slot, but one refresh pipeline spans several origins' slots.
    return invalid("redis", "a Redis Cluster client is not supported: give a client of one Redis (or its primary)")
  }
  const max = config.maxConnectionsPerOrigin
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1) {
    return invalid("maxConnectionsPerOrigin", `must be a positive integer, got ${String(max)}`)
  }
  const ttlInput = config.leaseTtl ?? defaults.leaseTtl
  const ttl = Duration.decodeUnknown(ttlInput)
  if (ttl._tag === "None" || !Duration.isFinite(ttl.value) || Duration.toMillis(ttl.value) < minLeaseTtlMillis) {
    return invalid("leaseTtl", `must be a finite duration of at least ${minLeaseTtlMillis} ms, got ${String(ttlInput)}`)
  }
  const keyPrefix = config.keyPrefix ?? defaults.keyPrefix
  if (typeof keyPrefix !== "string" || keyPrefix === "" || /[{}\s]/.test(keyPrefix)) {
    return invalid("keyPrefix", "must be a non-empty string without braces or white space")
  }
  const onUnavailable = config.onUnavailable ?? defaults.onUnavailable
  if (onUnavailable !== "local" && onUnavailable !== "fail") {
    return invalid("onUnavailable", `must be "local" or "fail", got ${String(onUnavailable)}`)
  }
  const leaseTtlMillis = Math.round(Duration.toMillis(ttl.value))
  const refreshMillis = Math.max(1, Math.floor(leaseTtlMillis / 3))
  return Either.right({
    redis,
    maxConnectionsPerOrigin: max,
    leaseTtlMillis,
    refreshMillis,
    pollMillis: Math.min(1_000, refreshMillis),
    storeTimeoutMillis: Math.min(2_000, refreshMillis),
    keyPrefix,
    onUnavailable
  })
}

/**
 * Each process's cap on an origin while Redis is unavailable (policy
 * `local`): its share of the fleet's cap among the processes last seen alive,
 * at least one connection.
 */
export const localCap = (maxConnectionsPerOrigin: number, liveProcesses: number): number =>
  Math.max(1, Math.floor(maxConnectionsPerOrigin / Math.max(1, liveProcesses)))
