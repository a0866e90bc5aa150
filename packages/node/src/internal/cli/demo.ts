import * as Command from "@effect/cli/Command"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as http from "node:http"
import type * as net from "node:net"
import * as NodeAgent from "../../NodeAgent.js"
import { agentOptions, integer, Unsuccessful } from "./options.js"
import { Progress } from "./progress.js"
import { messageOf, percentile } from "./summary.js"

/** The options of `keepalive demo`, as parsed. */
interface DemoOptions {
  readonly requests: number
  readonly origins: number
  readonly concurrency: number
  readonly maxPerOrigin: number
  readonly maxConnections: number
}

/** What one embedded server saw in a run: connections accepted, requests, the most open at once. */
interface ServerCount {
  port: number
  accepted: number
  open: number
  maxOpen: number
  requests: number
}

/** What all servers saw together. */
interface Total {
  open: number
  maxOpen: number
}

const startServer = (total: Total) =>
  Effect.acquireRelease(
    Effect.async<{ server: http.Server; count: ServerCount }>((resume) => {
      const count: ServerCount = { port: 0, accepted: 0, open: 0, maxOpen: 0, requests: 0 }
      const server = http.createServer((req, res) => {
        count.requests++
        // A little work and a little wait, so that requests overlap.
        setTimeout(() => {
          res.setHeader("content-type", "application/json")
          res.end(JSON.stringify({ path: req.url, port: count.port }))
        }, 1)
      })
      server.keepAliveTimeout = 10_000
      server.on("connection", (socket: net.Socket) => {
        count.accepted++
        count.open++
        total.open++
        // The peak is read once this poll phase is done: a client that closes a
        // connection and then opens another (at the global cap) sends FIN before
        // SYN, but this server may see the new one before the old one's EOF.
        setImmediate(() => {
          count.maxOpen = Math.max(count.maxOpen, count.open)
          total.maxOpen = Math.max(total.maxOpen, total.open)
        })
        let gone = false
        const closed = () => {
          if (gone) return
          gone = true
          count.open--
          total.open--
        }
        // The client is done with it at its FIN; "close" comes a phase later.
        socket.on("end", closed)
        socket.on("close", closed)
      })
      server.listen(0, "127.0.0.1", () => {
        count.port = (server.address() as net.AddressInfo).port
        resume(Effect.succeed({ server, count }))
      })
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

/** One run's figures, client side and server side. */
interface RunResult {
  readonly persist: boolean
  readonly seconds: number
  readonly responses: number
  readonly failed: number
  readonly firstFailure: string | undefined
  readonly opened: number
  readonly reused: number
  readonly accepted: number
  readonly served: number
  readonly maxOpenPerOrigin: number
  readonly maxOpen: number
  readonly p50Ms: number | null
  readonly p99Ms: number | null
}

/** Waits (a second at most) for the servers to see every connection of the last run closed. */
const settle = (total: Total) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100 && total.open > 0; i++) yield* Effect.sleep("10 millis")
  })

const runOnce = (options: DemoOptions, counts: ReadonlyArray<ServerCount>, total: Total, persist: boolean) =>
  Effect.gen(function*() {
    yield* settle(total)
    for (const c of counts) Object.assign(c, { accepted: 0, requests: 0, maxOpen: c.open })
    total.maxOpen = total.open
    const latencies: Array<number> = []
    let failed = 0
    let firstFailure: string | undefined
    const progress = new Progress(
      process.stdout.isTTY === true,
      options.requests,
      undefined,
      persist ? "persistent  " : "no-persist  "
    )
    const started = performance.now()
    const stats = yield* Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      yield* Effect.forEach(
        Array.from({ length: options.requests }, (_, i) => i),
        (i) => {
          const url = `http://127.0.0.1:${counts[i % counts.length]!.port}/item/${i}`
          const begun = performance.now()
          // Half through the Agent's own path, half through @effect/platform's HttpClient.
          const request: Effect.Effect<unknown, unknown, Agent.Agent> = i % 2 === 0
            ? Agent.request(HttpClientRequest.get(url)).pipe(Effect.flatMap((res) => res.json))
            : client.get(url).pipe(Effect.flatMap((res) => res.json))
          return request.pipe(
            Effect.match({
              onFailure: (error) => {
                failed++
                firstFailure ??= messageOf(error)
              },
              onSuccess: () => latencies.push(performance.now() - begun)
            }),
            Effect.map(() => {
              progress.done++
            })
          )
        },
        { concurrency: options.concurrency, discard: true }
      ).pipe(progress.run.bind(progress))
      return yield* Agent.stats
    }).pipe(
      Effect.provide(NodeAgent.layer({
        maxConnectionsPerOrigin: options.maxPerOrigin,
        maxConnections: options.maxConnections,
        persist
      }))
    )
    const seconds = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    const round = (n: number | null) => n === null ? null : Math.round(n * 10) / 10
    return {
      persist,
      seconds,
      responses: stats.responses,
      failed,
      firstFailure,
      opened: stats.opened,
      reused: stats.reused,
      accepted: counts.reduce((n, c) => n + c.accepted, 0),
      served: counts.reduce((n, c) => n + c.requests, 0),
      maxOpenPerOrigin: Math.max(...counts.map((c) => c.maxOpen)),
      maxOpen: total.maxOpen,
      p50Ms: round(percentile(latencies, 50)),
      p99Ms: round(percentile(latencies, 99))
    } satisfies RunResult
  })

const pct = (part: number, whole: number) => `${(whole === 0 ? 0 : part / whole * 100).toFixed(1)}%`

const table = (options: DemoOptions, a: RunResult, b: RunResult): Array<string> => {
  const rows: Array<readonly [string, (r: RunResult) => string]> = [
    ["requests completed", (r) => `${r.responses}${r.failed > 0 ? ` (${r.failed} failed)` : ""}`],
    ["servers answered", (r) => `${r.served}`],
    ["time", (r) => `${r.seconds.toFixed(2)} s`],
    ["connections opened", (r) => `${r.opened}`],
    ["servers accepted", (r) => `${r.accepted}`],
    ["reuse ratio", (r) => pct(r.reused, r.responses)],
    ["most open per origin", (r) => `${r.maxOpenPerOrigin} (cap ${options.maxPerOrigin})`],
    ["most open in total", (r) => `${r.maxOpen} (cap ${options.maxConnections})`],
    ["latency p50 / p99", (r) => `${r.p50Ms ?? "-"} / ${r.p99Ms ?? "-"} ms`]
  ]
  const first = 22
  const second = Math.max(16, ...rows.map(([, f]) => f(a).length + 3))
  return [
    `${"".padEnd(first)}${"persistent".padEnd(second)}--no-persist`,
    ...rows.map(([label, f]) => `${label.padEnd(first)}${f(a).padEnd(second)}${f(b)}`)
  ]
}

/** Whether a run kept the caps and served every request, as the servers saw it. */
const held = (options: DemoOptions, r: RunResult): boolean =>
  r.failed === 0 && r.responses === options.requests && r.served === options.requests &&
  r.maxOpen <= options.maxConnections && r.maxOpenPerOrigin <= options.maxPerOrigin &&
  (r.persist
    // Below the global cap nothing is reopened; at it, origins take turns.
    ? r.accepted <= options.origins * options.maxPerOrigin ||
      options.maxConnections < options.origins * options.maxPerOrigin
    : r.accepted === options.requests)

const run = (options: DemoOptions) =>
  Effect.scoped(Effect.gen(function*() {
    const total: Total = { open: 0, maxOpen: 0 }
    const servers = yield* Effect.all(Array.from({ length: options.origins }, () => startServer(total)))
    const counts = servers.map((s) => s.count)
    const print = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))
    yield* print(
      `keepalive demo: ${options.requests} requests to ${options.origins} local origins (127.0.0.1 ports ${
        counts.map((c) => c.port).join(", ")
      }), ${options.concurrency} in flight, maxConnectionsPerOrigin ${options.maxPerOrigin}, maxConnections ${options.maxConnections}; first persistent, then the same with --no-persist`
    )
    const persistent = yield* runOnce(options, counts, total, true)
    const fresh = yield* runOnce(options, counts, total, false)
    yield* print("")
    for (const line of table(options, persistent, fresh)) yield* print(line)
    yield* print("")
    const saved = fresh.opened - persistent.opened
    const time = fresh.seconds - persistent.seconds
    yield* print(
      `persistence saved ${saved} connections (${pct(saved, fresh.opened)})${
        time > 0
          ? ` and ${time.toFixed(2)} s (${pct(time, fresh.seconds)} of the time)`
          : `; no time at this size (${time.toFixed(2)} s), which is noise`
      }`
    )
    for (const r of [persistent, fresh]) {
      if (r.firstFailure !== undefined) {
        yield* print(`${r.persist ? "persistent" : "--no-persist"}: first failure: ${r.firstFailure}`)
      }
    }
    const ok = held(options, persistent) && held(options, fresh)
    yield* print(ok ? "OK: every request served within the caps" : "FAILED: the caps or counts were not kept")
    if (!ok) return yield* new Unsuccessful()
  }))

/**
 * `keepalive demo`: the offline tour, on embedded servers on 127.0.0.1.
 *
 * @internal
 */
export const command = Command.make("demo", {
  requests: integer("requests", {
    min: 1,
    max: 1_000_000,
    fallback: 400,
    description: "requests per run"
  }),
  origins: integer("origins", { min: 1, max: 64, fallback: 3, description: "local servers to spread them over" }),
  ...agentOptions
}, run).pipe(
  Command.withDescription(
    "Start local HTTP servers, send requests through the Agent with and without persistence, and compare what the servers saw."
  )
)
