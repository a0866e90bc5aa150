/**
 * A fleet-wide cap on connections per origin, on Redis: the
 * `ConnectionPermits` service of `@keepalive/agent`, shared by every process
 * that points at the same Redis and key prefix.
 *
 * @since 0.1.0
 */
import type { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import type * as Duration from "effect/Duration"
import type * as Layer from "effect/Layer"
import type { Redis } from "ioredis"
import * as internalError from "./internal/error.js"
import * as internalMetrics from "./internal/metrics.js"
import * as internal from "./internal/permits.js"

/**
 * What the fleet does when Redis cannot be reached (at start or mid-run):
 * - `local`: each process caps each origin on its own at its share of
 *   `maxConnectionsPerOrigin` among the processes it last saw alive (at
 *   least one; the whole cap for a process that never reached Redis), logs
 *   it once, and goes back to the fleet's cap when Redis answers again,
 *   registering the permits it holds within the cap (those beyond it are
 *   lost).
 * - `fail`: an acquire fails with an `AgentError` of reason `Unavailable`.
 *
 * @since 0.1.0
 * @category models
 */
export type UnavailablePolicy = "local" | "fail"

/**
 * The settings of `layer`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /**
   * A `redis://` or `rediss://` URL (the layer makes its client and closes it)
   * or an ioredis client (the layer registers its scripts on it and never
   * closes it). A second connection, for the fleet's messages, is made with
   * `duplicate()` either way.
   */
  readonly redis: string | Redis
  /** The fleet's cap: connections open to one origin across every process. */
  readonly maxConnectionsPerOrigin: number
  /**
   * How long a permit outlives its process's last sign of life (default 10
   * seconds). Every process renews its leases every third of it, in one
   * pipelined call; a process that dies or stalls longer loses them.
   */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** The prefix of every key and of the channel (default `keepalive:permits`). */
  readonly keyPrefix?: string | undefined
  /** What happens while Redis is unavailable (default `local`). */
  readonly onUnavailable?: UnavailablePolicy | undefined
}

/**
 * A `Config` that cannot be used: `reason` `InvalidConfig`, the `option` at
 * fault and a `detail`. The layer fails with it when it is built.
 *
 * @since 0.1.0
 * @category errors
 */
export const RedisPermitsError: typeof internalError.RedisPermitsError = internalError.RedisPermitsError

/**
 * @since 0.1.0
 * @category errors
 */
export type RedisPermitsError = internalError.RedisPermitsError

/**
 * The `ConnectionPermits` service on Redis. It fails to build only on a bad
 * config; an unreachable Redis is handled by `onUnavailable`.
 *
 * @since 0.1.0
 * @category layers
 * @example
 * import { NodeAgent } from "@keepalive/node"
 * import { RedisPermits } from "@keepalive/redis"
 * import { Layer } from "effect"
 * const AgentLive = NodeAgent.layer({ maxConnectionsPerOrigin: 8 }).pipe(
 *   Layer.provide(RedisPermits.layer({ redis: "redis://127.0.0.1:6379", maxConnectionsPerOrigin: 4 }))
 * )
 */
export const layer: (config: Config) => Layer.Layer<ConnectionPermits, RedisPermitsError> = internal.layer

/**
 * The metric names:
 * - `waitDuration`: histogram (seconds) of the time an acquire waited, per origin;
 * - `held`: up-down counter of the permits this process holds, per origin;
 * - `lost`: counter of the permits found lost, per origin;
 * - `storeErrors`: counter of the calls to Redis that failed, by `keepalive.permits.operation`;
 * - `fallback`: gauge, 1 while Redis is unavailable, else 0.
 *
 * Origin series carry `server.address`, `server.port` and `url.scheme`, as
 * the Agent's do.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metricNames: {
  readonly waitDuration: "keepalive.permits.wait.duration"
  readonly held: "keepalive.permits.held"
  readonly lost: "keepalive.permits.lost"
  readonly storeErrors: "keepalive.permits.store.errors"
  readonly fallback: "keepalive.permits.fallback"
} = internalMetrics.names
