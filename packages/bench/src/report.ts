/**
 * Turns the rounds of one scenario into rows (median and spread per client,
 * ratios to keepalive) and renders them as a Markdown table.
 *
 * A ratio to keepalive is taken within each round, then the median over
 * rounds: every client of a round ran within a few windows of keepalive, so
 * a change in the machine's speed between rounds cancels out of the round's
 * ratio, where it would not out of a ratio of two medians.
 */
import type { Scenario } from "./scenarios.js"

/**
 * What a client's run measured beyond its rate; a row shows the median of
 * each over the rounds that measured it.
 */
export interface Measures {
  /** The client's user + system CPU over the window ÷ the responses completed in it, in µs; absent when nothing completed. */
  readonly cpuMicrosPerResponse?: number
  /** Absent for wrk, whose memory is not the question. */
  readonly peakRssMB?: number
  /**
   * Connections the client opened during the run, warm-up included: those
   * the server accepted, or in a proxied scenario those squid accepted.
   */
  readonly connectionsOpened?: number
  /** `connectionsOpened` ÷ every response the client completed in its run (warm-up included) × 1,000. */
  readonly connectionsPerThousandResponses?: number
  /** Proxied scenarios: the CONNECT requests squid answered during the run. */
  readonly connectsSent?: number
  /** Proxied scenarios: `connectsSent` ÷ every response the client completed in its run × 1,000. */
  readonly connectsPerThousandResponses?: number
  /** Proxied scenarios: connections the server accepted from squid during the run. */
  readonly originConnectionsOpened?: number
  /** Proxied scenarios: squid's user + system CPU over the whole run ÷ every response of the run, in µs. */
  readonly proxyCpuMicrosPerResponse?: number
  /** keepalive clients: connections the Agent says it opened (`Agent.stats.opened`), warm-up included. */
  readonly agentConnectionsOpened?: number
  /** Fleet scenarios, `keepalive-fleet`: `ConnectionPermits.acquire` calls during the run, warm-up included. */
  readonly permitAcquires?: number
  /** Of `permitAcquires`, those granted; the others were called off by the Agent (their requests served by other connections). */
  readonly permitsGranted?: number
  /** `permitAcquires` ÷ every response the client completed in its run × 1,000. */
  readonly permitAcquiresPerThousandResponses?: number
  /** The time from call to grant of the acquires called inside the window, in ms: p50, p99 and max, and how many. */
  readonly permitWaitP50Ms?: number
  readonly permitWaitP99Ms?: number
  readonly permitWaitMaxMs?: number
  readonly permitWaitsInWindow?: number
  /** Fleet scenarios: redis-server's user + system CPU over the whole run ÷ every response of the run, in µs. */
  readonly redisCpuMicrosPerResponse?: number
}

const measureKeys = Object.keys(
  {
    cpuMicrosPerResponse: true,
    peakRssMB: true,
    connectionsOpened: true,
    connectionsPerThousandResponses: true,
    connectsSent: true,
    connectsPerThousandResponses: true,
    originConnectionsOpened: true,
    proxyCpuMicrosPerResponse: true,
    agentConnectionsOpened: true,
    permitAcquires: true,
    permitsGranted: true,
    permitAcquiresPerThousandResponses: true,
    permitWaitP50Ms: true,
    permitWaitP99Ms: true,
    permitWaitMaxMs: true,
    permitWaitsInWindow: true,
    redisCpuMicrosPerResponse: true
  } satisfies { readonly [Key in keyof Measures]-?: true }
) as ReadonlyArray<keyof Measures>

/** The suffix of a row measured on the `BENCH_BASELINE` checkout. */
export const baselineSuffix = "@baseline"

/** One client's result in one round. */
export type Run =
  | Measures & {
    readonly outcome: "measured"
    readonly requestsPerSecond: number
    /** The same over the whole process, warm-up included (its first burst of acquires, the scripts loaded). */
    readonly permitWaitAllMs?: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number }
    readonly errors: number
    readonly firstError?: string
  }
  | { readonly outcome: "unavailable" | "failed"; readonly reason: string }

/** A run with its ratios to keepalive's run of the same round, where both were measured. */
export type RoundRun = Run & {
  /** This run's req/s ÷ keepalive's req/s in the same round. */
  readonly ratioToKeepalive?: number
  /** This run's CPU µs per response ÷ keepalive's in the same round. */
  readonly cpuRatioToKeepalive?: number
}

export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

/** One client's rounds summed up: each of its `Measures` the median over rounds. */
export interface Row extends Measures {
  readonly client: string
  readonly requestsPerSecond?: Spread
  /** The median over rounds of this client's req/s ÷ keepalive's req/s in the same round. */
  readonly ratioToKeepalive?: number
  /** The median over rounds of this client's CPU µs per response ÷ keepalive's in the same round. */
  readonly cpuRatioToKeepalive?: number
  /** A `BENCH_BASELINE` row: the median over rounds of its req/s ÷ this checkout's same client's in the same round. */
  readonly ratioToThisBuild?: number
  /** A `BENCH_BASELINE` row: the same of CPU µs per response. */
  readonly cpuRatioToThisBuild?: number
  readonly errors: number
  readonly notes: ReadonlyArray<string>
  /** One per round, in round order. */
  readonly runs: ReadonlyArray<RoundRun>
}

export interface ScenarioResult {
  readonly id: string
  readonly title: string
  /** Through squid: the connection columns count connections to squid, and CONNECTs and squid's CPU are added. */
  readonly proxied: boolean
  /** With the harness's Redis: the permits' acquires, their wait and Redis's CPU are added. */
  readonly fleet: boolean
  readonly rows: ReadonlyArray<Row>
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const medianOf = (values: ReadonlyArray<number | undefined>): number | undefined => {
  const present = values.filter((value): value is number => value !== undefined)
  return present.length === 0 ? undefined : median(present)
}

/** `value` ÷ `reference`, when both are there and the reference is not 0. */
const ratio = (value: number | undefined, reference: number | undefined): number | undefined =>
  value === undefined || reference === undefined || reference === 0 ? undefined : value / reference

/** `of` of `run` ÷ `of` of `reference`, its reference's run in the same round, when both were measured. */
const roundRatio = (run: Run, reference: Run | undefined, of: (run: Measured) => number | undefined): number | undefined =>
  run.outcome === "measured" && reference?.outcome === "measured" ? ratio(of(run), of(reference)) : undefined

type Measured = Run & { readonly outcome: "measured" }
const rateOf = (run: Measured) => run.requestsPerSecond
const cpuOf = (run: Measured) => run.cpuMicrosPerResponse

/**
 * `runsByClient` holds one run per round for every client, in round order,
 * so that index r of two clients' runs is the same round.
 */
export const summarize = (
  scenario: Scenario,
  runsByClient: ReadonlyMap<string, ReadonlyArray<Run>>,
  notesByClient: ReadonlyMap<string, ReadonlyArray<string>>
): ScenarioResult => {
  const keepaliveRuns = runsByClient.get("keepalive") ?? []
  const rows = [...runsByClient].map(([client, rawRuns]): Row => {
    const runs = rawRuns.map((run, round): RoundRun => {
      const reference = keepaliveRuns[round]
      if (run.outcome !== "measured") return run
      const rate = roundRatio(run, reference, rateOf)
      const cpu = roundRatio(run, reference, cpuOf)
      return {
        ...run,
        ...(rate === undefined ? {} : { ratioToKeepalive: rate }),
        ...(cpu === undefined ? {} : { cpuRatioToKeepalive: cpu })
      }
    })
    const measured = runs.flatMap((run) => (run.outcome === "measured" ? [run] : []))
    const problems = runs.flatMap((run) => (run.outcome === "measured" ? [] : [run]))
    const errors = measured.reduce((sum, run) => sum + run.errors, 0)
    const firstError = measured.find((run) => run.firstError !== undefined)?.firstError
    const notes = [
      ...(notesByClient.get(client) ?? []),
      ...(problems.length > 0 ? [`${problems.length} of ${runs.length} runs ${problems[0]!.outcome}: ${problems[0]!.reason}`] : []),
      ...(errors > 0 ? [`${errors} failed requests (first: ${firstError})`] : [])
    ]
    const rates = measured.map((run) => run.requestsPerSecond)
    const rateRatio = medianOf(measured.map((run) => run.ratioToKeepalive))
    const cpuRatio = medianOf(measured.map((run) => run.cpuRatioToKeepalive))
    // A baseline row against this checkout's same client, round by round.
    const ownRuns = client.endsWith(baselineSuffix) ? runsByClient.get(client.slice(0, -baselineSuffix.length)) : undefined
    const toThisBuild = (of: (run: Measured) => number | undefined) =>
      ownRuns === undefined ? undefined : medianOf(rawRuns.map((run, round) => roundRatio(run, ownRuns[round], of)))
    const rateToThisBuild = toThisBuild(rateOf)
    const cpuToThisBuild = toThisBuild(cpuOf)
    if (rateToThisBuild !== undefined) {
      notes.push(
        `vs this checkout's ${client.slice(0, -baselineSuffix.length)}: ${rateToThisBuild.toFixed(2)} req/s, ${
          cpuToThisBuild?.toFixed(2) ?? "—"
        } CPU µs/resp (medians of per-round ratios)`
      )
    }
    const medians = Object.fromEntries(measureKeys.flatMap((key) => {
      const value = medianOf(measured.map((run) => run[key]))
      return value === undefined ? [] : [[key, value]]
    }))
    return {
      client,
      ...(rates.length === 0 ? {} : { requestsPerSecond: { median: median(rates), min: Math.min(...rates), max: Math.max(...rates) } }),
      ...(rateRatio === undefined ? {} : { ratioToKeepalive: rateRatio }),
      ...(cpuRatio === undefined ? {} : { cpuRatioToKeepalive: cpuRatio }),
      ...(rateToThisBuild === undefined ? {} : { ratioToThisBuild: rateToThisBuild }),
      ...(cpuToThisBuild === undefined ? {} : { cpuRatioToThisBuild: cpuToThisBuild }),
      ...medians,
      errors,
      notes,
      runs
    }
  })
  return { id: scenario.id, title: scenario.title, proxied: scenario.proxy === true, fleet: scenario.fleet === true, rows }
}

const integer = (value: number) => Math.round(value).toLocaleString("en-US")

/** Two significant decimals for small values, whole numbers from 100 up. */
const short = (value: number) => (value >= 100 ? integer(value) : value >= 10 ? value.toFixed(1) : value.toFixed(2))

export const renderTable = (result: ScenarioResult): string => {
  const header = [
    "client",
    "req/s (median)",
    "spread (min–max)",
    "vs keepalive",
    "CPU µs/resp",
    "CPU vs keepalive",
    "peak RSS MB",
    result.proxied ? "conns to proxy" : "conns opened",
    "conns/1k resp",
    ...(result.proxied ? ["CONNECTs/1k resp", "squid µs/resp"] : []),
    ...(result.fleet ? ["acquires/1k resp", "acquires in window: p50 / p99 / max ms (n)", "redis µs/resp"] : []),
    "notes"
  ]
  const lines = result.rows.map((row) => {
    const rate = row.requestsPerSecond
    const proxyCells = result.proxied
      ? [
        row.connectsPerThousandResponses === undefined ? "—" : short(row.connectsPerThousandResponses),
        row.proxyCpuMicrosPerResponse === undefined ? "—" : row.proxyCpuMicrosPerResponse.toFixed(1)
      ]
      : []
    const ms = (value: number | undefined) => (value === undefined ? "—" : value.toFixed(2))
    const fleetCells = result.fleet
      ? [
        row.permitAcquiresPerThousandResponses === undefined ? "—" : short(row.permitAcquiresPerThousandResponses),
        row.permitWaitP50Ms === undefined ? "—" : `${ms(row.permitWaitP50Ms)} / ${ms(row.permitWaitP99Ms)} / ${ms(row.permitWaitMaxMs)} (${integer(row.permitWaitsInWindow ?? 0)})`,
        row.redisCpuMicrosPerResponse === undefined ? "—" : row.redisCpuMicrosPerResponse.toFixed(2)
      ]
      : []
    return [
      row.client,
      rate === undefined ? (row.runs.some((run) => run.outcome === "unavailable") ? "not available yet" : "failed") : integer(rate.median),
      rate === undefined ? "—" : `${integer(rate.min)}–${integer(rate.max)}`,
      row.ratioToKeepalive === undefined ? "—" : row.ratioToKeepalive.toFixed(2),
      row.cpuMicrosPerResponse === undefined ? "—" : row.cpuMicrosPerResponse.toFixed(1),
      row.cpuRatioToKeepalive === undefined ? "—" : row.cpuRatioToKeepalive.toFixed(2),
      row.peakRssMB === undefined ? "—" : row.peakRssMB.toFixed(0),
      row.connectionsOpened === undefined ? "—" : integer(row.connectionsOpened),
      row.connectionsPerThousandResponses === undefined ? "—" : short(row.connectionsPerThousandResponses),
      ...proxyCells,
      ...fleetCells,
      row.notes.join("; ")
    ]
  })
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => line[column]!.length)))
  // Every column but the first (client) and the last (notes).
  const numeric = new Set(header.map((_, column) => column).slice(1, -1))
  const render = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((cell, column) => (numeric.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join(" | ")} |`
  const rule = `|${widths.map((width, column) => (numeric.has(column) ? `${"-".repeat(width + 1)}:` : "-".repeat(width + 2))).join("|")}|`
  return [`### ${result.id}) ${result.title}`, "", render(header), rule, ...lines.map(render)].join("\n")
}
