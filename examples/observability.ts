/**
 * Runs traffic through an Agent against three local HTTP servers, then prints
 * what an operator sees: the Agent's metrics (as any Effect metrics exporter
 * reads them) and `Agent.stats` per origin. Run: `pnpm example:observability`.
 */
import { HttpClientRequest } from "@effect/platform"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import { Effect, Metric, MetricState } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/** A server on 127.0.0.1 that answers every request after `delayMillis`, and closes a connection after `maxRequests` (0: never). */
const server = (delayMillis: number, maxRequests: number) =>
  Effect.acquireRelease(
    Effect.async<http.Server>((resume) => {
      const s = http.createServer((req, res) => setTimeout(() => res.end(`hello from ${req.url}`), delayMillis))
      s.maxRequestsPerSocket = maxRequests
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) => Effect.sync(() => s.close())
  )

/** One line per series of the Agent's metrics: its name, its attributes, its value. */
const printMetrics = Effect.gen(function*() {
  const ours = new Set<string>(Object.values(Agent.metricNames))
  const pairs = (yield* Metric.snapshot).filter((pair) => ours.has(pair.metricKey.name))
  pairs.sort((a, b) => a.metricKey.name.localeCompare(b.metricKey.name))
  for (const { metricKey, metricState } of pairs) {
    const tags = metricKey.tags
      .filter((t) => t.key !== "url.scheme" && t.key !== "server.address" && t.key !== "unit")
      .map((t) => `${t.key}=${t.value}`)
      .join(" ")
    let value: string
    if (MetricState.isHistogramState(metricState)) {
      value = `count ${metricState.count}, mean ${(metricState.sum / Math.max(1, metricState.count) * 1000).toFixed(1)} ms`
    } else if (MetricState.isCounterState(metricState)) {
      value = String(metricState.count)
    } else {
      continue
    }
    console.log(`${metricKey.name.padEnd(32)} ${tags.padEnd(72)} ${value}`)
  }
})

const program = Effect.gen(function*() {
  // A quick server, one that closes each connection after 5 requests, and a slow one.
  const servers = yield* Effect.all([server(1, 0), server(1, 5), server(20, 0)])
  const urls = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}/`)
  // 300 requests, 16 at a time, spread over the three servers.
  yield* Effect.forEach(
    Array.from({ length: 300 }, (_, i) => urls[i % 3]! + i),
    (url) => Agent.requestWith(HttpClientRequest.get(url), (response) => response.text),
    { concurrency: 16, discard: true }
  )
  yield* printMetrics
  const stats = yield* Agent.stats
  console.log(`\nAgent.stats: ${stats.responses} responses, ${stats.opened} connections opened, ${stats.reused} requests on a reused one`)
  for (const [origin, o] of Object.entries(stats.origins)) {
    console.log(`  ${origin}  open ${o.open} (idle ${o.idle}, busy ${o.busy}), waiting ${o.waiting}, opened ${o.opened}, reused ${o.reused}`)
  }
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(NodeAgent.layer({ maxConnectionsPerOrigin: 2 }))))
