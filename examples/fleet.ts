/**
 * Two processes share one per-origin connection cap on Redis. The parent
 * starts a local server that counts the connections open to it at once, then
 * runs two worker processes (this file again); each sends 200 requests, 16 at
 * a time, with an Agent that alone would open 8 connections to the server,
 * under a fleet cap of 3. It prints what each worker did and the server's
 * peak. Run: `pnpm example:fleet redis://127.0.0.1:6379` (a redis-server must
 * listen there; `apt-get install redis-server` gives one).
 */
import { HttpClientRequest } from "@effect/platform"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import { RedisPermits } from "@keepalive/redis"
import { Effect, Layer } from "effect"
import { fork } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

const [redis = "redis://127.0.0.1:6379", role = "parent", target = ""] = process.argv.slice(2)
/** Fresh keys per run, so that runs never share their permits. */
const keyPrefix = process.env.FLEET_KEY_PREFIX ?? `keepalive:example:${process.pid}`

/** A worker: 200 requests through an Agent under the fleet's cap. */
const worker = Effect.gen(function*() {
  yield* Effect.forEach(
    Array.from({ length: 200 }, (_, i) => `${target}/${i}`),
    (url) => Agent.requestWith(HttpClientRequest.get(url), (response) => response.text),
    { concurrency: 16, discard: true }
  )
  const stats = yield* Agent.stats
  console.log(`worker ${process.pid}: ${stats.responses} responses over ${stats.opened} connections`)
}).pipe(
  Effect.provide(
    NodeAgent.layer({ maxConnectionsPerOrigin: 8 }).pipe(
      Layer.provide(RedisPermits.layer({ redis, maxConnectionsPerOrigin: 3, keyPrefix }))
    )
  )
)

/** The parent: a counting server, two workers, the server's peak. */
const parent = Effect.gen(function*() {
  let open = 0
  let peak = 0
  const server = http.createServer((_req, res) => setTimeout(() => res.end("ok"), 2))
  server.on("connection", (socket) => {
    peak = Math.max(peak, ++open)
    socket.on("close", () => open--)
  })
  yield* Effect.async<void>((resume) => {
    server.listen(0, "127.0.0.1", () => resume(Effect.void))
  })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const run = () =>
    Effect.async<number>((resume) => {
      const child = fork(import.meta.filename, [redis, "worker", url], {
        env: { ...process.env, FLEET_KEY_PREFIX: keyPrefix },
        execArgv: process.execArgv
      })
      child.on("exit", (code) => resume(Effect.succeed(code ?? 1)))
    })
  const codes = yield* Effect.all([run(), run()], { concurrency: 2 })
  server.close()
  console.log(`server: at most ${peak} connections open at once (fleet cap 3, each Agent alone 8)`)
  if (codes.some((code) => code !== 0)) yield* Effect.die(new Error(`a worker failed: ${codes.join(", ")}`))
})

Effect.runPromise(role === "worker" ? worker : parent).catch((error) => {
  console.error(error)
  process.exit(1)
})
