/**
 * The metrics of the permits, under the Agent's conventions: Effect `Metric`,
 * OpenTelemetry-like names, origin series labelled `server.address`,
 * `server.port` and `url.scheme`, each series' hook looked up once and kept.
 *
 * @internal
 */
import type { Origin } from "@keepalive/agent/Origin"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as MetricHook from "effect/MetricHook"
import * as MetricKey from "effect/MetricKey"
import type * as MetricLabel from "effect/MetricLabel"
import * as MetricLabelModule from "effect/MetricLabel"

/** The metric names. */
export const names = {
  waitDuration: "keepalive.permits.wait.duration",
  held: "keepalive.permits.held",
  lost: "keepalive.permits.lost",
  storeErrors: "keepalive.permits.store.errors",
  fallback: "keepalive.permits.fallback"
} as const

/** Waits for a permit range from a round trip to Redis to a long queue. */
const waitBoundaries = MetricBoundaries.fromIterable([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
])

const keys = {
  waitDuration: MetricKey.tagged(
    MetricKey.histogram(names.waitDuration, waitBoundaries, "Time an acquire waited for a fleet permit, granted or not"),
    "unit",
    "s"
  ),
  held: MetricKey.counter(names.held, { description: "Permits held by this process" }),
  lost: MetricKey.counter(names.lost, { description: "Permits found lost (their lease ran out)", incremental: true }),
  storeErrors: MetricKey.counter(names.storeErrors, {
    description: "Calls to Redis that failed or timed out, by operation",
    incremental: true
  }),
  fallback: MetricKey.gauge(names.fallback, { description: "1 while Redis is unavailable and the fallback policy rules, else 0" })
}

const label = MetricLabelModule.make

/** Origins with series of their own; the others share one series marked `otel.metric.overflow`. */
const originLimit = 1000

type Hook = MetricHook.MetricHook<number, unknown>

const hook = (key: MetricKey.MetricKey<any>, tags: ReadonlyArray<MetricLabel.MetricLabel>): Hook =>
  Metric.globalMetricRegistry.get(MetricKey.taggedWithLabels(key, tags)) as Hook

/** One origin's series. */
export class OriginMetrics {
  readonly #labels: ReadonlyArray<MetricLabel.MetricLabel>
  #wait: Hook | undefined
  #held: Hook | undefined
  #lost: Hook | undefined

  constructor(labels: ReadonlyArray<MetricLabel.MetricLabel>) {
    this.#labels = labels
  }

  /** An acquire ended (granted, failed or interrupted) after `seconds`. */
  waited(seconds: number): void {
    ;(this.#wait ??= hook(keys.waitDuration, this.#labels)).update(seconds)
  }

  /** A permit was granted (+1) or given back or lost (−1). */
  held(delta: number): void {
    ;(this.#held ??= hook(keys.held, this.#labels)).update(delta)
  }

  /** A permit was found lost. */
  lost(): void {
    ;(this.#lost ??= hook(keys.lost, this.#labels)).update(1)
  }
}

/** The metrics of one `RedisPermits` service. */
export class PermitsMetrics {
  readonly #origins = new Map<string, OriginMetrics>()
  #overflow: OriginMetrics | undefined
  readonly #storeErrors = new Map<string, Hook>()
  readonly #fallback = hook(keys.fallback, [])

  /** The series of an origin. */
  of(origin: Origin): OriginMetrics {
    let metrics = this.#origins.get(origin.key)
    if (metrics !== undefined) return metrics
    if (this.#origins.size >= originLimit) {
      return this.#overflow ??= new OriginMetrics([label("otel.metric.overflow", "true")])
    }
    metrics = new OriginMetrics([
      label("server.address", origin.host),
      label("server.port", String(origin.port)),
      label("url.scheme", origin.scheme)
    ])
    this.#origins.set(origin.key, metrics)
    return metrics
  }

  /** A call to Redis failed: `operation` is acquire, release, refresh or connect. */
  storeError(operation: string): void {
    let h = this.#storeErrors.get(operation)
    if (h === undefined) {
      h = hook(keys.storeErrors, [label("keepalive.permits.operation", operation)])
      this.#storeErrors.set(operation, h)
    }
    h.update(1)
  }

  /** Whether the fallback policy rules now. */
  fallback(on: boolean): void {
    this.#fallback.update(on ? 1 : 0)
  }
}
