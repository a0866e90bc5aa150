/**
 * What a fleet permit costs, uncontended, on a local Redis:
 * `pnpm --filter @keepalive/bench permits` starts the bench's server (nginx,
 * else node:http) and a redis-server, both on the server's core, then in a
 * process of its own on the client's core (as `pnpm bench` pins them) times,
 * one at a time:
 *
 * 1. a PING on a raw socket to the same Redis: the floor of any round trip;
 * 2. `acquire` and `acquire` + `release` through `RedisPermits.layer`
 *    (the fleet's cap well above 1, so nothing ever waits for a permit);
 * 3. a whole `Agent.request` (body read) that opens a connection each time
 *    (`persist: false`), on `NodeAgent.layer` with and without
 *    `RedisPermits.layer`, in alternating blocks, each block to the next of
 *    the server's ports (the connections each leaves in TIME_WAIT stay off
 *    the next block's). The fleet's acquires in it are timed as well.
 *
 * Each after a warm-up; p50, p99 and max in ms. PERMITS_PAIRS (default
 * 2,000) sets the number of timed pairs and of timed requests per variant.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import type { PermitHolder } from "@keepalive/agent/ConnectionPermits"
import * as Origin from "@keepalive/agent/Origin"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import { RedisPermits } from "@keepalive/redis"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { randomBytes } from "node:crypto"
import { countedPermits, PermitCounts } from "./clients/keepaliveFleet.js"
import { choosePinning, onCore, ownAffinity } from "./pinning.js"
import { obtainRedis, startRedis } from "./redis.js"
import type { RedisServer } from "./redis.js"
import { nginxVersion, startServer } from "./server.js"
import type { Server } from "./server.js"

const pairs = Number(process.env["PERMITS_PAIRS"] ?? 2_000)
const warmup = 200
/** Blocks per variant of the request measurement: with and without alternate, block by block. */
const blocks = 10
const log = (line: string) => process.stderr.write(line + "\n")

interface Summary {
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly count: number
}

const summary = (samples: ReadonlyArray<number>): Summary => {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!
  return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1)!, count: sorted.length }
}

const line = (name: string, s: Summary) =>
  `| ${name.padEnd(46)} | ${s.p50.toFixed(3).padStart(7)} | ${s.p99.toFixed(3).padStart(7)} | ${s.max.toFixed(3).padStart(7)} | ${String(s.count).padStart(5)} |`

/** A Redis PING on one raw socket, `count` times one after another: ms each. */
const pings = (port: number, count: number): Promise<Array<number>> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.setNoDelay(true)
    const times: Array<number> = []
    let start = 0
    const send = () => {
      start = performance.now()
      socket.write("PING\r\n")
    }
    socket.once("error", reject)
    socket.once("connect", send)
    socket.on("data", () => {
      times.push(performance.now() - start)
      if (times.length === count) {
        socket.destroy()
        resolve(times)
      } else {
        send()
      }
    })
  })

const holder: PermitHolder = { lost: () => {}, wanted: () => {} }

/** The child: every measurement, on the client's core. */
const measure = async (redisUrl: string, redisPort: number, basePort: number) => {
  const cores = ownAffinity()
  const ping = (await pings(redisPort, warmup + pairs)).slice(warmup)

  // acquire and release through the layer, nothing else.
  const origin = Origin.make("http", "127.0.0.1", basePort)
  const { acquire, pair } = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(RedisPermits.layer({
      redis: redisUrl,
      maxConnectionsPerOrigin: 8,
      keyPrefix: `keepalive-bench-permits:${randomBytes(4).toString("hex")}`
    }))
    const permits = Context.get(context, ConnectionPermits)
    const acquire: Array<number> = []
    const pair: Array<number> = []
    for (let i = 0; i < warmup + pairs; i++) {
      const start = performance.now()
      const permit = yield* permits.acquire(origin, holder)
      const granted = performance.now()
      yield* permit.release
      const released = performance.now()
      if (i >= warmup) {
        acquire.push(granted - start)
        pair.push(released - start)
      }
    }
    return { acquire, pair }
  })))

  // A whole request on a new connection each time, with and without the fleet's permits.
  const config = { maxConnectionsPerOrigin: 8, maxConnections: 8, persist: false, idleTimeout: "4 seconds" } as const
  const counts = new PermitCounts()
  const plain = ManagedRuntime.make(NodeAgent.layer(config))
  const fleet = ManagedRuntime.make(NodeAgent.layer(config).pipe(Layer.provide(countedPermits(redisUrl, 8, counts))))
  await plain.runtime()
  await fleet.runtime()
  const once = (port: number) =>
    Effect.flatMap(Agent.request(HttpClientRequest.get(`http://127.0.0.1:${port}/small`)), (response) => response.arrayBuffer)
  const block = async (runtime: typeof plain | typeof fleet, port: number, count: number, into?: Array<number>) => {
    for (let i = 0; i < count; i++) {
      const start = performance.now()
      const body = await runtime.runPromise(once(port))
      into?.push(performance.now() - start)
      if (body.byteLength !== 13) throw new Error(`body was ${body.byteLength} bytes, expected 13`)
    }
  }
  const withoutFleet: Array<number> = []
  const withFleet: Array<number> = []
  await block(plain, basePort, warmup)
  await block(fleet, basePort + 1, warmup)
  const waitsBefore = counts.waitsMs.length
  const perBlock = Math.ceil(pairs / blocks)
  for (let b = 0; b < blocks; b++) {
    // Alternated, and which goes first alternates too.
    const port = basePort + 2 + 2 * b
    if (b % 2 === 0) {
      await block(plain, port, perBlock, withoutFleet)
      await block(fleet, port + 1, perBlock, withFleet)
    } else {
      await block(fleet, port, perBlock, withFleet)
      await block(plain, port + 1, perBlock, withoutFleet)
    }
  }
  const fleetAcquires = counts.waitsMs.slice(waitsBefore)
  await plain.dispose()
  await fleet.dispose()

  const rows = {
    ping: summary(ping),
    acquire: summary(acquire),
    pair: summary(pair),
    requestWithout: summary(withoutFleet),
    requestWith: summary(withFleet),
    acquireInRequest: summary(fleetAcquires)
  }
  console.log([
    `Uncontended, 1 at a time, on the client's core (${cores ?? "unpinned"}); Redis on the server's core; ${warmup} warm-up each; ms`,
    "",
    "| measure                                        |     p50 |     p99 |     max | count |",
    "|------------------------------------------------|--------:|--------:|--------:|------:|",
    line("Redis PING, raw socket (a round trip's floor)", rows.ping),
    line("RedisPermits acquire", rows.acquire),
    line("RedisPermits acquire + release", rows.pair),
    line("Agent.request, persist: false, no fleet", rows.requestWithout),
    line("Agent.request, persist: false, RedisPermits", rows.requestWith),
    line("  its acquires (call to grant)", rows.acquireInRequest),
    "",
    `the permit adds to opening a connection: p50 ${(rows.requestWith.p50 - rows.requestWithout.p50).toFixed(3)} ms, ` +
    `p99 ${(rows.requestWith.p99 - rows.requestWithout.p99).toFixed(3)} ms ` +
    `(p50 ratio ${(rows.requestWith.p50 / rows.requestWithout.p50).toFixed(2)})`
  ].join("\n"))
  if (process.env["PERMITS_JSON"] === "1") console.log(JSON.stringify({ cores, ...rows }))
}

/** The parent: the server and Redis on the server's core, the child on the client's. */
const main = async () => {
  const pinning = choosePinning()
  const kind = process.env["BENCH_SERVER"] === "node" || nginxVersion() === undefined ? "node" : "nginx"
  const found = obtainRedis(log)
  if ("unavailable" in found) throw new Error(found.unavailable)
  let server: Server | undefined
  let redis: RedisServer | undefined
  try {
    server = await startServer({ kind, basePort: Number(process.env["BENCH_PORT"] ?? 18080), ports: 50, tls: false, pinning })
    redis = await startRedis({ ...found, pinning })
    log(`server: ${server.description} on 127.0.0.1:${server.basePort}…; ${redis.description} on ${redis.url}; ${pinning.pinned ? `server side on core ${pinning.serverCore}, measuring on core ${pinning.clientCore}` : `not pinned (${pinning.reason})`}`)
    const command = onCore(pinning, "client", {
      command: process.execPath,
      args: [path.join(import.meta.dirname, "permits.js"), "child", redis.url, String(redis.port), String(server.basePort)]
    })
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(command.command, command.args, { stdio: ["ignore", "inherit", "inherit"], env: process.env })
      child.on("close", resolve)
    })
    if (code !== 0) throw new Error(`the measuring process exited with ${code}`)
  } finally {
    await redis?.stop()
    await server?.stop()
  }
}

const [mode, redisUrl, redisPort, basePort] = process.argv.slice(2)
const run = mode === "child"
  // Exits when done: nothing left open may hold the measuring process up.
  ? measure(redisUrl!, Number(redisPort), Number(basePort)).then(() => process.exit(0))
  : main()
await run.catch((cause: unknown) => {
  log(`permits: ${cause instanceof Error ? cause.stack ?? cause.message : String(cause)}`)
  process.exit(1)
})
