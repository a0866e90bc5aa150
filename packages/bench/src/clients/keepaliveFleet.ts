/**
 * `keepalive-fleet` (scenarios bf, df): `Agent.request` on the layer of
 * `keepalive`, given `RedisPermits.layer` on the harness's Redis, the fleet's
 * cap the scenario's per-origin cap, its acquires counted and timed. In a
 * file of its own so that no other client loads `@keepalive/redis` (nor a
 * baseline checkout without it).
 */
import { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { randomBytes } from "node:crypto"
import type { ClientCounts, Runner } from "../closedLoop.js"
import { redisUrl, type Scenario } from "../scenarios.js"
import { effectRunner } from "./effectRunner.js"
import { agentGet, layerFor, withCounts } from "./keepalive.js"

/** The permits' acquires of one process: how many, how many granted, and how long each granted one took. */
export class PermitCounts {
  acquires = 0
  granted = 0
  /** The granted acquires' wait in ms, and when each was called (`performance.now()`). */
  readonly waitsMs: Array<number> = []
  readonly calledAt: Array<number> = []
  /** `since`: when the measured window opened; the waits of acquires called from then on are `permitWaitMs`. */
  summary(since: number): ClientCounts {
    const percentiles = (waits: ReadonlyArray<number>) => {
      const sorted = [...waits].sort((a, b) => a - b)
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!
      return sorted.length === 0 ? undefined : { p50: at(0.5), p99: at(0.99), max: sorted.at(-1)!, count: sorted.length }
    }
    const inWindow = percentiles(this.waitsMs.filter((_, i) => since > 0 && this.calledAt[i]! >= since))
    const all = percentiles(this.waitsMs)
    return {
      permitAcquires: this.acquires,
      permitsGranted: this.granted,
      ...(inWindow === undefined ? {} : { permitWaitMs: inWindow }),
      ...(all === undefined ? {} : { permitWaitAllMs: all })
    }
  }
}

/**
 * `RedisPermits.layer` on the harness's Redis, the fleet's cap the scenario's
 * per-origin cap (so it never binds with one process), under a key prefix of
 * this process alone (a killed run's leases cannot bind the next); each
 * acquire counted and timed (a counter and two clock reads per connection
 * opened, nothing per request).
 */
export const countedPermits = (redis: string, maxConnectionsPerOrigin: number, counts: PermitCounts) =>
  Layer.effect(
    ConnectionPermits,
    Effect.map(ConnectionPermits, (permits) =>
      ConnectionPermits.of({
        acquire: (origin, holder) =>
          Effect.suspend(() => {
            counts.acquires++
            const start = performance.now()
            return Effect.tap(permits.acquire(origin, holder), () =>
              Effect.sync(() => {
                counts.granted++
                counts.waitsMs.push(performance.now() - start)
                counts.calledAt.push(start)
              }))
          })
      }))
  ).pipe(Layer.provide(RedisPermits.layer({
    redis,
    maxConnectionsPerOrigin,
    keyPrefix: `keepalive-bench:${process.pid}:${randomBytes(4).toString("hex")}`
  })))

/** `Agent.request` with the fleet's permits: `agentRequest` on the same layer, given `RedisPermits.layer`. */
export const agentRequestFleet = async (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> => {
  const redis = redisUrl(scenario)
  if (redis === undefined) throw new Error("keepalive-fleet runs in the fleet scenarios only (bf, df)")
  const counts = new PermitCounts()
  const layer = layerFor(scenario, true).pipe(Layer.provide(countedPermits(redis, scenario.connectionsPerOrigin, counts)))
  return withCounts(await effectRunner(layer, urls, agentGet(scenario.read)), (window) => counts.summary(window.startedAt))
}

