import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as MetricHook from "effect/MetricHook"
import * as MetricKey from "effect/MetricKey"
import type * as MetricLabel from "effect/MetricLabel"
import * as MetricLabelModule from "effect/MetricLabel"
import type { Origin } from "../Origin.js"
import type { Routes } from "./routes.js"
import type { CloseReason } from "./connection.js"

/**
 * The Agent's metric names: OpenTelemetry's HTTP client semantic conventions
 * where they have one, `keepalive.*` for the rest. @internal
 */
export const names = {
  requestDuration: "http.client.request.duration",
  openConnections: "http.client.open_connections",
  connectionDuration: "http.client.connection.duration",
  activeRequests: "http.client.active_requests",
  connectionsOpened: "keepalive.connections.opened",
  connectionsClosed: "keepalive.connections.closed",
  requestsReused: "keepalive.requests.reused",
  queueDuration: "keepalive.queue.duration",
  requestsWaiting: "keepalive.requests.waiting"
} as const

/** OpenTelemetry's advised boundaries for HTTP durations, in seconds. */
const durationBoundaries = MetricBoundaries.fromIterable([
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10
])
/** Connections live longer: up to an hour. */
const connectionBoundaries = MetricBoundaries.fromIterable([
  0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600
])

const upDown = (name: string, description: string) => MetricKey.counter(name, { description })
const counter = (name: string, description: string) => MetricKey.counter(name, { description, incremental: true })
const histogram = (name: string, boundaries: MetricBoundaries.MetricBoundaries, description: string) =>
  MetricKey.tagged(MetricKey.histogram(name, boundaries, description), "unit", "s")

const keys = {
  requestDuration: histogram(names.requestDuration, durationBoundaries, "Duration of HTTP client requests, from the call to the response head or the failure"),
  openConnections: upDown(names.openConnections, "Open connections, by state (active: carrying a request; idle)"),
  connectionDuration: histogram(names.connectionDuration, connectionBoundaries, "How long connections lived, from connected to closed"),
  activeRequests: upDown(names.activeRequests, "Requests waiting for a connection or holding one"),
  connectionsOpened: counter(names.connectionsOpened, "Connections opened"),
  connectionsClosed: counter(names.connectionsClosed, "Connections closed, by reason"),
  requestsReused: counter(names.requestsReused, "Requests answered on a connection that had carried a response before"),
  queueDuration: histogram(names.queueDuration, durationBoundaries, "Time requests waited for a connection"),
  requestsWaiting: upDown(names.requestsWaiting, "Requests waiting for a connection")
}

/** Origins with series of their own; the others share one series marked `otel.metric.overflow`. */
const originLimit = 1000

const label = MetricLabelModule.make

/**
 * One origin's series of the Agent's metrics. Each series' hook is looked up
 * in Effect's global metric registry once, on first use; an update is then a
 * direct call. Every method is a no-op when metrics are off (`NoMetrics`).
 *
 * @internal
 */
export class OriginMetrics {
  readonly #labels: ReadonlyArray<MetricLabel.MetricLabel>
  #idle: MetricHook.MetricHook<number, unknown> | undefined
  #active: MetricHook.MetricHook<number, unknown> | undefined
  #requests: MetricHook.MetricHook<number, unknown> | undefined
  #waiting: MetricHook.MetricHook<number, unknown> | undefined
  #opened: MetricHook.MetricHook<number, unknown> | undefined
  #reused: MetricHook.MetricHook<number, unknown> | undefined
  #lifetime: MetricHook.MetricHook<number, unknown> | undefined
  #queue: MetricHook.MetricHook<number, unknown> | undefined
  #closed: Map<CloseReason, MetricHook.MetricHook<number, unknown>> | undefined
  #durations: Map<string, MetricHook.MetricHook<number, unknown>> | undefined
  #lastMethod = ""
  #lastStatus = -1
  #lastError = ""
  #lastDuration: MetricHook.MetricHook<number, unknown> | undefined

  constructor(labels: ReadonlyArray<MetricLabel.MetricLabel>) {
    this.#labels = labels
  }

  #hook<In>(key: MetricKey.MetricKey<any>, extra?: ReadonlyArray<MetricLabel.MetricLabel>): MetricHook.MetricHook<In, unknown> {
    const tags = extra === undefined ? this.#labels : [...this.#labels, ...extra]
    return Metric.globalMetricRegistry.get(MetricKey.taggedWithLabels(key, tags)) as MetricHook.MetricHook<In, unknown>
  }

  /** A connection opened: it is active until the pool marks it idle. */
  opened(): void {
    ;(this.#opened ??= this.#hook(keys.connectionsOpened)).update(1)
    this.#activeBy(1)
  }

  /** A connection closed (`wasIdle`: from the idle ones), after `seconds` of life. */
  closed(reason: CloseReason, seconds: number, wasIdle: boolean): void {
    if (wasIdle) (this.#idle ??= this.#idleHook()).update(-1)
    else this.#activeBy(-1)
    const closed = this.#closed ??= new Map()
    let hook = closed.get(reason)
    if (hook === undefined) {
      hook = this.#hook(keys.connectionsClosed, [label("reason", reason)])
      closed.set(reason, hook)
    }
    hook.update(1)
    ;(this.#lifetime ??= this.#hook(keys.connectionDuration)).update(seconds)
  }

  /** A connection went idle. */
  idle(): void {
    ;(this.#idle ??= this.#idleHook()).update(1)
    this.#activeBy(-1)
  }

  /** An idle connection was taken. */
  taken(): void {
    ;(this.#idle ??= this.#idleHook()).update(-1)
    this.#activeBy(1)
  }

  /** A request queued for a connection (+1) or left the queue (-1). */
  waiting(delta: number): void {
    ;(this.#waiting ??= this.#hook(keys.requestsWaiting)).update(delta)
    ;(this.#requests ??= this.#hook(keys.activeRequests)).update(delta)
  }

  /** A request left the queue with a connection after `seconds`. */
  waited(seconds: number): void {
    ;(this.#queue ??= this.#hook(keys.queueDuration)).update(seconds)
  }

  /** A request went out on a reused connection. */
  reused(): void {
    ;(this.#reused ??= this.#hook(keys.requestsReused)).update(1)
  }

  /** A request ended: its response head came (`status`), or it failed (`errorType`, the AgentError's reason). */
  request(method: string, status: number, errorType: string, seconds: number): void {
    // The common case, the same method and status as the last request, makes no key string.
    if (method === this.#lastMethod && status === this.#lastStatus && errorType === this.#lastError) {
      return this.#lastDuration!.update(seconds)
    }
    const durations = this.#durations ??= new Map()
    const key = `${method} ${status} ${errorType}`
    let hook = durations.get(key)
    if (hook === undefined) {
      const extra = [label("http.request.method", method)]
      if (status !== 0) extra.push(label("http.response.status_code", String(status)))
      if (errorType !== "") extra.push(label("error.type", errorType))
      hook = this.#hook<number>(keys.requestDuration, extra)
      durations.set(key, hook)
    }
    this.#lastMethod = method
    this.#lastStatus = status
    this.#lastError = errorType
    this.#lastDuration = hook
    hook.update(seconds)
  }

  /** Active connections also count as active requests: a busy connection carries one. */
  #activeBy(delta: number): void {
    ;(this.#active ??= this.#hook(keys.openConnections, [label("http.connection.state", "active")])).update(delta)
    ;(this.#requests ??= this.#hook(keys.activeRequests)).update(delta)
  }

  #idleHook(): MetricHook.MetricHook<number, unknown> {
    return this.#hook(keys.openConnections, [label("http.connection.state", "idle")])
  }
}

/** Metrics off: nothing is recorded. @internal */
export class NoMetrics extends OriginMetrics {
  constructor() {
    super([])
  }
  override opened(): void {}
  override closed(): void {}
  override idle(): void {}
  override taken(): void {}
  override waiting(): void {}
  override waited(): void {}
  override reused(): void {}
  override request(): void {}
}

const noMetrics = new NoMetrics()

/**
 * The Agent's metrics, by origin: each origin's series, made on first sight
 * and kept (Effect's metric registry keeps every series it ever saw), for up
 * to `originLimit` origins; the origins beyond share one overflow series, as
 * OpenTelemetry's SDK does past its cardinality limit.
 *
 * @internal
 */
export class AgentMetrics {
  readonly #origins = new Map<string, OriginMetrics>()
  #overflow: OriginMetrics | undefined

  /** `routes`: labels the series of an origin reached through a proxy with it (`keepalive.proxy`). */
  constructor(readonly enabled: boolean, readonly routes?: Routes | undefined) {}

  /** The series of an origin. */
  of(origin: Origin): OriginMetrics {
    if (!this.enabled) return noMetrics
    let metrics = this.#origins.get(origin.key)
    if (metrics !== undefined) return metrics
    if (this.#origins.size >= originLimit) {
      return this.#overflow ??= new OriginMetrics([label("otel.metric.overflow", "true")])
    }
    const labels = [
      label("server.address", origin.host),
      label("server.port", String(origin.port)),
      label("url.scheme", origin.scheme)
    ]
    const proxy = this.routes?.of(origin).proxy
    if (proxy !== undefined) labels.push(label("keepalive.proxy", proxy.key))
    metrics = new OriginMetrics(labels)
    this.#origins.set(origin.key, metrics)
    return metrics
  }
}
