import type * as Agent from "@keepalive/agent/Agent"
import { isAgentError } from "@keepalive/agent/AgentError"

/**
 * One request's outcome, as `fetch --json` prints it. `proxy` is the key
 * (`scheme://host:port`, never credentials) of the proxy it went through,
 * null when it went direct.
 *
 * @internal
 */
export type Outcome =
  | {
    readonly url: string
    readonly proxy: string | null
    readonly status: number
    readonly bytes: number
    readonly ms: number
    readonly reused: boolean
  }
  | {
    readonly url: string
    readonly proxy: string | null
    readonly error: { readonly reason: string; readonly message: string }
  }

/**
 * The end of a run, as `fetch --json` prints it in its last line.
 *
 * @internal
 */
export interface Summary {
  readonly requests: number
  /**
   * The key of the proxy the requests went through (`scheme://host:port`,
   * never credentials); null when every one went direct; the keys separated
   * by `, `, in the order first used, when they went through several.
   */
  readonly proxy: string | null
  readonly failed: number
  readonly failuresByReason: Record<string, number>
  readonly connectionsOpened: number
  /** Responses that came on a reused connection, over all responses (0 when none). */
  readonly reuseRatio: number
  readonly maxOpen: number
  readonly maxOpenPerOrigin: number
  readonly bytes: number
  readonly p50Ms: number | null
  readonly p90Ms: number | null
  readonly p99Ms: number | null
  /** The fleet's permits (`--fleet`), null without one. */
  readonly fleet: FleetSummary | null
}

/**
 * A permit granted on the spot costs a round trip to Redis, which a busy
 * event loop can stretch to a few milliseconds; an acquire longer than this
 * waited for a permit to come free.
 *
 * @internal
 */
export const permitWaitedMillis = 10

/**
 * How long connections waited for the fleet's permits (`--fleet`), timed
 * around each `acquire` of `ConnectionPermits`. The waits are those of the
 * permits granted; `waited` counts those over `permitWaitedMillis`.
 *
 * @internal
 */
export interface FleetSummary {
  /** The Redis, `scheme://host:port` (never credentials). */
  readonly redis: string
  /** The fleet's cap on connections to one origin, across its processes. */
  readonly maxPerOrigin: number
  /** Permits granted: connections opened under the fleet's cap. */
  readonly permits: number
  readonly waited: number
  /** Acquires that ended without a permit: the Agent no longer needed the connection. */
  readonly calledOff: number
  readonly waitTotalMs: number
  readonly waitP50Ms: number | null
  readonly waitP99Ms: number | null
  readonly waitMaxMs: number | null
}

/**
 * The reason a failure is counted under: an `AgentError`'s `reason`, else
 * the error's `_tag`, else its constructor's name.
 *
 * @internal
 */
export const reasonOf = (error: unknown): string => {
  if (isAgentError(error)) return error.reason
  if (typeof error === "object" && error !== null) {
    const tag = (error as { readonly _tag?: unknown })._tag
    if (typeof tag === "string") return tag
    if (error instanceof Error) return error.name
  }
  return "Unknown"
}

/**
 * A failure's message, on one line.
 *
 * @internal
 */
export const messageOf = (error: unknown): string => {
  const text = error instanceof Error || (typeof error === "object" && error !== null && "message" in error)
    ? String((error as { readonly message: unknown }).message)
    : String(error)
  return text.replace(/\s*\n\s*/g, " ").trim()
}

/**
 * The nearest-rank percentile of sorted values; null when there are none.
 *
 * @internal
 */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number | null => {
  if (sorted.length === 0) return null
  const rank = Math.max(1, Math.ceil(p / 100 * sorted.length))
  return sorted[rank - 1]!
}

/**
 * Collects outcomes and samples of `Agent.stats` during a run, and makes the
 * summary. The peaks of open connections are sampled (at each completed
 * request and each progress tick), not exact: a connection opened and closed
 * between two samples is not seen.
 *
 * @internal
 */
export class Recorder {
  readonly outcomes: Array<Outcome> = []
  maxOpen = 0
  /** The most open at once, per origin key. */
  readonly maxOpenByOrigin = new Map<string, number>()
  #opened = 0

  record(outcome: Outcome): void {
    this.outcomes.push(outcome)
  }

  sample(stats: Agent.Stats): void {
    this.#opened = stats.opened
    if (stats.open > this.maxOpen) this.maxOpen = stats.open
    for (const key in stats.origins) {
      const open = stats.origins[key]!.open
      if (open > (this.maxOpenByOrigin.get(key) ?? 0)) this.maxOpenByOrigin.set(key, open)
    }
  }

  summary(fleet: FleetSummary | null): Summary {
    const failuresByReason: Record<string, number> = {}
    const ms: Array<number> = []
    let bytes = 0
    let reused = 0
    let failed = 0
    for (const outcome of this.outcomes) {
      if ("error" in outcome) {
        failed++
        failuresByReason[outcome.error.reason] = (failuresByReason[outcome.error.reason] ?? 0) + 1
      } else {
        ms.push(outcome.ms)
        bytes += outcome.bytes
        if (outcome.reused) reused++
      }
    }
    ms.sort((a, b) => a - b)
    const responses = this.outcomes.length - failed
    const proxies = [...proxyCounts(this.outcomes).keys()]
    return {
      requests: this.outcomes.length,
      proxy: proxies.length === 0 ? null : proxies.join(", "),
      failed,
      failuresByReason,
      connectionsOpened: this.#opened,
      reuseRatio: responses === 0 ? 0 : Math.round(reused / responses * 1000) / 1000,
      maxOpen: this.maxOpen,
      maxOpenPerOrigin: Math.max(0, ...this.maxOpenByOrigin.values()),
      bytes,
      p50Ms: percentile(ms, 50),
      p90Ms: percentile(ms, 90),
      p99Ms: percentile(ms, 99),
      fleet
    }
  }
}

/** The requests that went through each proxy, by its key. */
const proxyCounts = (outcomes: ReadonlyArray<Outcome>): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const { proxy } of outcomes) if (proxy !== null) counts.set(proxy, (counts.get(proxy) ?? 0) + 1)
  return counts
}

const formatBytes = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

const formatMs = (n: number | null): string => n === null ? "-" : `${n} ms`

/**
 * The summary as readable lines.
 *
 * @internal
 */
export const summaryLines = (summary: Summary, seconds: number, recorder: Recorder): Array<string> => {
  const rate = seconds > 0 ? Math.round(summary.requests / seconds) : summary.requests
  const busiest = [...recorder.maxOpenByOrigin].sort((a, b) => b[1] - a[1])[0]
  const lines = [
    `requests      ${summary.requests} in ${seconds.toFixed(2)} s (${rate} req/s), ${summary.failed} failed`,
    `connections   ${summary.connectionsOpened} opened; ${(summary.reuseRatio * 100).toFixed(1)}% of responses on a reused connection`,
    `most open     ${summary.maxOpen} at once in total, ${summary.maxOpenPerOrigin} per origin${
      busiest === undefined ? "" : ` (${busiest[0]})`
    }`,
    `bytes         ${formatBytes(summary.bytes)} of response bodies`,
    `latency       p50 ${formatMs(summary.p50Ms)}, p90 ${formatMs(summary.p90Ms)}, p99 ${formatMs(summary.p99Ms)}`
  ]
  const proxied = proxyCounts(recorder.outcomes)
  if (proxied.size > 0) {
    const through = [...proxied].map(([key, n]) => `${key} for ${n} of ${summary.requests}`).join(", ")
    lines.splice(1, 0, `proxy         ${through} ${summary.requests === 1 ? "request" : "requests"}`)
  }
  const fleet = summary.fleet
  if (fleet !== null) {
    lines.push(
      `fleet         ${fleet.redis}, at most ${fleet.maxPerOrigin} per origin in all: ${fleet.permits} ${
        fleet.permits === 1 ? "permit" : "permits"
      } (${fleet.waited} waited over ${permitWaitedMillis} ms), ${fleet.calledOff} called off`,
      `permit waits  ${formatMs(fleet.waitTotalMs)} in total; p50 ${formatMs(fleet.waitP50Ms)}, p99 ${
        formatMs(fleet.waitP99Ms)
      }, max ${formatMs(fleet.waitMaxMs)}`
    )
  }
  const reasons = Object.entries(summary.failuresByReason)
  if (reasons.length > 0) {
    lines.push(`failures      ${reasons.map(([reason, n]) => `${reason} ${n}`).join(", ")}`)
  }
  return lines
}
