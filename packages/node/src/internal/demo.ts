import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Agent from "@keepalive/agent/Agent"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as http from "node:http"
import type * as net from "node:net"
import * as NodeAgent from "../NodeAgent.js"

/** @internal */
export interface DemoOptions {
  readonly requests: number
  readonly origins: number
  readonly concurrency: number
  readonly maxConnectionsPerOrigin: number
  readonly maxConnections: number
  readonly persist: boolean
}

/** What one embedded server saw: connections accepted and the most open at once. */
interface ServerCount {
  readonly port: number
  accepted: number
  open: number
  maxOpen: number
  requests: number
}

const startServer = (total: { open: number; maxOpen: number }) => Effect.acquireRelease(
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
      ;(count as { port: number }).port = (server.address() as net.AddressInfo).port
      resume(Effect.succeed({ server, count }))
    })
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

/**
 * Starts a few local HTTP servers, fires requests at them through the Agent
 * (half through `Agent.request`, half through `HttpClient`) and reports what
 * the servers saw.
 *
 * @internal
 */
export const demo = (options: DemoOptions) =>
  Effect.scoped(Effect.gen(function*() {
    const total = { open: 0, maxOpen: 0 }
    const servers = yield* Effect.all(Array.from({ length: options.origins }, () => startServer(total)))
    const counts = servers.map((s) => s.count)
    yield* Console.log(
      `keepalive demo: ${options.requests} requests to ${options.origins} local origins (ports ${
        counts.map((c) => c.port).join(", ")
      }), ${options.concurrency} in flight, maxConnectionsPerOrigin ${options.maxConnectionsPerOrigin}, maxConnections ${options.maxConnections}, persist ${options.persist}`
    )
    const started = Date.now()
    const run = Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      yield* Effect.forEach(
        Array.from({ length: options.requests }, (_, i) => i),
        (i): Effect.Effect<unknown, unknown, Agent.Agent> => {
          const url = `http://127.0.0.1:${counts[i % counts.length]!.port}/item/${i}`
          const viaAgent = Agent.request(HttpClientRequest.get(url)).pipe(Effect.flatMap((res) => res.json))
          const viaHttpClient = client.get(url).pipe(Effect.flatMap((res) => res.json))
          return i % 2 === 0 ? viaAgent : viaHttpClient
        },
        { concurrency: options.concurrency, discard: true }
      )
      return yield* Agent.stats
    })
    const stats = yield* run.pipe(
      Effect.provide(NodeAgent.layer({
        maxConnectionsPerOrigin: options.maxConnectionsPerOrigin,
        maxConnections: options.maxConnections,
        persist: options.persist
      }))
    )
    const elapsed = (Date.now() - started) / 1000
    const accepted = counts.reduce((n, c) => n + c.accepted, 0)
    const served = counts.reduce((n, c) => n + c.requests, 0)
    yield* Console.log(`requests completed   ${stats.responses} (servers answered ${served}) in ${elapsed.toFixed(2)} s`)
    yield* Console.log(`connections opened   ${stats.opened} (servers accepted ${accepted})`)
    yield* Console.log(
      `reuse ratio          ${(stats.reused / Math.max(1, stats.responses) * 100).toFixed(1)}% of requests on a reused connection`
    )
    for (const c of counts) {
      yield* Console.log(
        `origin :${c.port}  requests ${c.requests}, connections accepted ${c.accepted}, most open at once ${c.maxOpen} (cap ${options.maxConnectionsPerOrigin})`
      )
    }
    yield* Console.log(`all origins          most open at once ${total.maxOpen} (cap ${options.maxConnections})`)
    const ok = stats.responses === options.requests && total.maxOpen <= options.maxConnections &&
      counts.every((c) => c.maxOpen <= options.maxConnectionsPerOrigin) &&
      (options.persist
        // Below the global cap nothing is reopened; at it, origins take turns.
        ? accepted <= options.origins * options.maxConnectionsPerOrigin ||
          options.maxConnections < options.origins * options.maxConnectionsPerOrigin
        : accepted === options.requests)
    yield* Console.log(ok ? "OK: every request served within the caps" : "FAILED: the caps or counts were not kept")
    return ok
  }))
