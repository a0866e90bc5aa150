/**
 * `pnpm bench`: starts the server, then for each scenario runs every client
 * in a fresh process, round-robin (A B C … A B C …) for BENCH_ROUNDS rounds,
 * and prints one table per scenario (or, with `--json`, one JSON document).
 *
 *   pnpm bench [--json] [--only a,b] [--clients keepalive,undici-pool,wrk]
 *   BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_SERVER=nginx|node BENCH_PORT=18080 BENCH_PIN=0
 *   BENCH_BASELINE=../other-checkout (its keepalive clients as extra rows, same rounds)
 *   BENCH_TOGETHER=1 (with BENCH_BASELINE: each keepalive client at the same time as its baseline row)
 *
 * The proxied scenarios (bp, gp) also start squid (`squid.ts`), installing it
 * with apt-get when it is missing and we are root; the fleet scenarios (bf,
 * df) a redis-server (`redis.ts`), likewise.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { missingBuild, prepareBaseline } from "./baseline.js"
import type { BaselineHarness } from "./baseline.js"
import type { ClientReport } from "./client.js"
import { affinityOf, choosePinning, onCore } from "./pinning.js"
import type { Pinning } from "./pinning.js"
import { baselineSuffix, renderTable, summarize } from "./report.js"
import type { Run, ScenarioResult } from "./report.js"
import { obtainRedis, startRedis } from "./redis.js"
import type { RedisServer } from "./redis.js"
import { capSupport, proxyEnv, redisEnv, scenarios, tlsCaEnv, tlsPortOffset } from "./scenarios.js"
import type { ClientName, Scenario } from "./scenarios.js"
import { nginxVersion, startServer } from "./server.js"
import type { Server } from "./server.js"
import { obtainSquid, startSquid } from "./squid.js"
import type { Squid } from "./squid.js"
import { runWrk, wrkVersion } from "./wrk.js"

interface Options {
  readonly json: boolean
  readonly scenarios: ReadonlyArray<Scenario>
  /** Undefined: every client of each scenario, and wrk where it applies. */
  readonly clients: ReadonlySet<string> | undefined
  readonly seconds: number
  readonly rounds: number
  readonly basePort: number
  readonly server: "nginx" | "node" | undefined
  /** Another checkout, built, whose keepalive packages run as extra rows (`<client>@baseline`). */
  readonly baseline: string | undefined
  /** Each keepalive client runs at the same time as its baseline row, on the same core (`BENCH_TOGETHER=1`). */
  readonly together: boolean
  readonly pinning: Pinning
}

const positiveInteger = (name: string, fallback: number): number => {
  const text = process.env[name]
  if (text === undefined || text === "") return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got "${text}"`)
  return value
}

const readOptions = (): Options => {
  const { values } = parseArgs({
    // pnpm forwards a literal "--" when one is typed before the flags.
    args: process.argv.slice(2).filter((arg) => arg !== "--"),
    options: {
      json: { type: "boolean", default: false },
      only: { type: "string" },
      clients: { type: "string" }
    }
  })
  const listOf = (text: string | undefined) => (text === undefined ? undefined : new Set(text.split(",").map((s) => s.trim())))
  const only = listOf(values.only)
  const selected = scenarios.filter((scenario) => only === undefined || only.has(scenario.id))
  if (selected.length === 0) throw new Error(`--only matched no scenario (known: ${scenarios.map((s) => s.id).join(", ")})`)
  const clients = listOf(values.clients)
  const knownClients = new Set<string>([...Object.keys(capSupport), "wrk"])
  const unknownClients = [...(clients ?? [])].filter((client) => !knownClients.has(client))
  if (unknownClients.length > 0) {
    throw new Error(`--clients: unknown ${unknownClients.join(", ")} (known: ${[...knownClients].join(", ")})`)
  }
  const server = process.env["BENCH_SERVER"]
  if (server !== undefined && server !== "" && server !== "nginx" && server !== "node") {
    throw new Error(`BENCH_SERVER must be nginx or node, got "${server}"`)
  }
  const baseline = process.env["BENCH_BASELINE"]
  const baselineMissing = baseline === undefined || baseline === "" ? undefined : missingBuild(baseline)
  if (baselineMissing !== undefined) throw new Error(`BENCH_BASELINE: ${baselineMissing}`)
  const together = process.env["BENCH_TOGETHER"] === "1"
  if (together && (baseline === undefined || baseline === "")) throw new Error("BENCH_TOGETHER=1 needs BENCH_BASELINE")
  return {
    json: values.json,
    baseline: baseline === undefined || baseline === "" ? undefined : path.resolve(baseline),
    together,
    scenarios: selected,
    clients,
    seconds: positiveInteger("BENCH_SECONDS", 5),
    rounds: positiveInteger("BENCH_ROUNDS", 3),
    basePort: positiveInteger("BENCH_PORT", 18080),
    server: server === "nginx" || server === "node" ? server : undefined,
    pinning: choosePinning()
  }
}

const log = (line: string) => process.stderr.write(line + "\n")
const packageDir = path.join(import.meta.dirname, "..")
const clientScript = path.join(import.meta.dirname, "client.js")

/** Every client process gets this long past its warm-up and window before it is killed. */
const clientGraceSeconds = 30

const spawnClient = (
  pinning: Pinning,
  args: ReadonlyArray<string>,
  seconds: number,
  script = clientScript
): Promise<ClientReport> =>
  new Promise((resolve) => {
    // taskset execs node, so killing the child kills the client itself.
    const node = onCore(pinning, "client", { command: process.execPath, args: [script, ...args] })
    const child = spawn(node.command, node.args, {
      cwd: path.join(path.dirname(script), ".."),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    const killTimer = setTimeout(() => child.kill("SIGKILL"), (1 + seconds + clientGraceSeconds) * 1000)
    child.on("close", (code, signal) => {
      clearTimeout(killTimer)
      const last = stdout.trim().split("\n").at(-1) ?? ""
      try {
        resolve(JSON.parse(last) as ClientReport)
      } catch {
        const why = signal === "SIGKILL" ? "timed out" : `exit ${code ?? signal}`
        resolve({ outcome: "failed", reason: `${why}: ${(stderr || stdout).trim().split("\n").slice(0, 3).join(" ")}` })
      }
    })
  })

/** Plain ports the server always listens on, so that single-origin runs can each have one of their own. */
const minimumPorts = 50
let runs = 0

/**
 * The base port a client run is told. A single-origin run gets the next of
 * the server's ports in turn: a run that opens thousands of connections
 * leaves as many in TIME_WAIT for a minute, and the next run to the same
 * port would have its connects collide with them (on loopback the kernel
 * keeps both ends' states), which costs whichever client runs next.
 */
const basePortFor = (server: Server, scenario: Scenario): number =>
  scenario.origins === 1 && scenario.tls !== true ? server.basePort + (runs++ % minimumPorts) : server.basePort

const measureClient = async (
  pinning: Pinning,
  server: Server,
  /** The proxy of a proxied scenario; undefined otherwise. */
  squid: Squid | undefined,
  /** The Redis of a fleet scenario; undefined otherwise. */
  redis: RedisServer | undefined,
  scenario: Scenario,
  client: ClientName,
  seconds: number,
  script = clientScript
): Promise<Run> => {
  const before = await server.acceptedConnections()
  const squidBefore = squid?.counts()
  const redisBefore = redis?.cpuSeconds()
  const report = await spawnClient(pinning, [client, scenario.id, String(seconds), String(basePortFor(server, scenario))], seconds, script)
  // squid logs a tunnel when it closes: after the client process has exited.
  await squid?.settle()
  const squidAfter = squid?.counts()
  const redisAfter = redis?.cpuSeconds()
  // The second /status request opens a connection of its own.
  const serverConnections = (await server.acceptedConnections()) - before - 1
  if (report.outcome === "idle") return { outcome: "failed", reason: "the client process did not run a client" }
  if (report.outcome !== "measured") return report
  if (pinning.pinned && report.cores !== undefined && report.cores !== String(pinning.clientCore)) {
    return { outcome: "failed", reason: `ran on cores ${report.cores}, not on core ${pinning.clientCore}` }
  }
  // Through squid, the client's connections are those squid accepted; the server's are squid's own.
  const proxied = squidBefore !== undefined && squidAfter !== undefined
    ? {
      connections: squidAfter.connections - squidBefore.connections,
      connects: squidAfter.connects - squidBefore.connects,
      cpuSeconds: squidAfter.cpuSeconds - squidBefore.cpuSeconds
    }
    : undefined
  if (proxied !== undefined && proxied.connections === 0 && report.completedTotal > 0) {
    return { outcome: "failed", reason: `${report.completedTotal} responses but squid accepted no connection: the client did not go through the proxy` }
  }
  const connectionsOpened = proxied?.connections ?? serverConnections
  // Every count per 1,000 responses covers the whole process, warm-up included.
  const perThousand = (count: number) => (count / report.completedTotal) * 1000
  const counts = report.counts
  const fleet = {
    ...(counts?.agentOpened === undefined ? {} : { agentConnectionsOpened: counts.agentOpened }),
    ...(counts?.permitAcquires === undefined ? {} : {
      permitAcquires: counts.permitAcquires,
      ...(counts.permitsGranted === undefined ? {} : { permitsGranted: counts.permitsGranted }),
      ...(report.completedTotal === 0 ? {} : { permitAcquiresPerThousandResponses: perThousand(counts.permitAcquires) })
    }),
    ...(counts?.permitWaitMs === undefined ? {} : {
      permitWaitP50Ms: counts.permitWaitMs.p50,
      permitWaitP99Ms: counts.permitWaitMs.p99,
      permitWaitMaxMs: counts.permitWaitMs.max,
      permitWaitsInWindow: counts.permitWaitMs.count
    }),
    ...(counts?.permitWaitAllMs === undefined ? {} : { permitWaitAllMs: counts.permitWaitAllMs }),
    ...(redisBefore === undefined || redisAfter === undefined || report.completedTotal === 0
      ? {}
      : { redisCpuMicrosPerResponse: ((redisAfter - redisBefore) * 1e6) / report.completedTotal })
  }
  return {
    outcome: "measured",
    requestsPerSecond: report.completed / report.seconds,
    ...(report.completed === 0 ? {} : { cpuMicrosPerResponse: (report.cpuSeconds * 1e6) / report.completed }),
    peakRssMB: report.maxRssMB,
    connectionsOpened,
    ...(report.completedTotal === 0 ? {} : { connectionsPerThousandResponses: perThousand(connectionsOpened) }),
    ...(proxied === undefined ? {} : {
      connectsSent: proxied.connects,
      originConnectionsOpened: serverConnections,
      ...(report.completedTotal === 0 ? {} : {
        connectsPerThousandResponses: perThousand(proxied.connects),
        proxyCpuMicrosPerResponse: (proxied.cpuSeconds * 1e6) / report.completedTotal
      })
    }),
    ...fleet,
    errors: report.errors,
    ...(report.firstError === undefined ? {} : { firstError: report.firstError })
  }
}

const measureWrk = async (
  pinning: Pinning,
  server: Server,
  scenario: Scenario,
  connections: number,
  seconds: number
): Promise<Run> => {
  const before = await server.acceptedConnections()
  try {
    const result = await runWrk(`http://127.0.0.1:${server.basePort}${scenario.path}`, connections, seconds, pinning)
    const connectionsOpened = (await server.acceptedConnections()) - before - 1
    return {
      outcome: "measured",
      requestsPerSecond: result.requestsPerSecond,
      // wrk's CPU covers its whole run, so it is divided by every response of the run.
      cpuMicrosPerResponse: (result.cpuSeconds * 1e6) / result.requests,
      connectionsOpened,
      connectionsPerThousandResponses: (connectionsOpened / result.requests) * 1000,
      errors: 0
    }
  } catch (cause) {
    return { outcome: "failed", reason: cause instanceof Error ? cause.message : String(cause) }
  }
}

/** Why a client's numbers are not like-for-like with keepalive's in this scenario. */
const notesFor = (scenario: Scenario, client: ClientName): ReadonlyArray<string> => {
  const notes: Array<string> = []
  const caps = capSupport[client]
  if (caps === "none") notes.push("no connection cap: concurrency only")
  // Where the global cap is the per-origin caps' sum, it never binds, and a per-origin cap alone is like-for-like.
  const globalCapBinds = scenario.maxConnections < scenario.origins * scenario.connectionsPerOrigin
  if (caps === "per-origin" && globalCapBinds) notes.push("per-origin cap only, no global cap")
  if (client === "effect-node") notes.push("new http.Agent() defaults: keepAlive false")
  if (client === "fetch") notes.push(`Node's bundled undici ${process.versions.undici}`)
  if (client.endsWith("-no-persist")) notes.push("persist: false")
  if (client === "node-http-no-keepalive") notes.push("keepAlive: false")
  if (client === "keepalive" || client === "keepalive-no-persist") notes.push("Agent.request")
  if (client === "keepalive-scoped") notes.push("Agent.requestScoped in Effect.scoped")
  if (client === "keepalive-fleet") {
    notes.push(`Agent.request with RedisPermits.layer, fleet cap ${scenario.connectionsPerOrigin} per origin (never binds: one process)`)
  }
  if (client === "keepalive-with") notes.push("Agent.requestWith")
  if (scenario.proxy === true) {
    const http = scenario.tls !== true
    if (client === "keepalive") notes.push(`proxy: the squid URL; ${http ? "forwarded in absolute-form" : "a CONNECT tunnel per pooled connection"}`)
    if (client === "undici-proxy-agent") {
      notes.push(`ProxyAgent({ uri, connections })${http ? ", proxyTunnel: true (its default): the http origin goes in CONNECT tunnels" : ""}`)
    }
    if (client === "undici-proxy-agent-forward") {
      notes.push("ProxyAgent, proxyTunnel: false: forwarded in absolute-form; its Pool to the proxy capped through `factory` (undici gives it no `connections`)")
    }
    if (client === "undici-env-proxy-agent") {
      notes.push(`EnvHttpProxyAgent({ httpProxy, httpsProxy, noProxy: "", connections })${http ? ", tunnels the http origin as ProxyAgent does" : ""}`)
    }
  }
  if (scenario.read === "stream") {
    if (client === "keepalive" || client === "keepalive-with") notes.push("body via Agent.forEachChunk")
    if (client === "keepalive-scoped" || client === "keepalive-httpclient" || client.startsWith("effect-")) {
      notes.push("body via response.stream (an Effect Stream)")
    }
  }
  return notes
}

/** A run made at the same time as another: the server's count of connections is both runs'. */
const withoutServerCounts = (run: Run): Run => {
  if (run.outcome !== "measured") return run
  const { connectionsOpened: _opened, connectionsPerThousandResponses: _perThousand, ...own } = run
  return own
}

const runScenario = async (
  options: Options,
  server: Server,
  squid: Squid | undefined,
  redis: RedisServer | undefined,
  scenario: Scenario,
  wrk: boolean,
  /** The client script of the baseline's rows, when there is a baseline. */
  baselineScript: string | undefined
): Promise<ScenarioResult> => {
  const { pinning, rounds, seconds } = options
  const clients = scenario.clients.filter((client) => options.clients === undefined || options.clients.has(client))
  const withWrk = wrk && scenario.wrkConnections !== undefined && (options.clients === undefined || options.clients.has("wrk"))
  const runsByClient = new Map<string, Array<Run>>([...clients, ...(withWrk ? ["wrk"] : [])].map((c) => [c, []]))
  const notesByClient = new Map<string, ReadonlyArray<string>>(clients.map((client) => [client, notesFor(scenario, client)]))
  if (withWrk) notesByClient.set("wrk", [`reference ceiling: wrk -t1 -c${scenario.wrkConnections}`])
  // Paired runs are told apart by the client processes' own counts only: the
  // server's and squid's and Redis's count both, so proxied and fleet
  // scenarios run their rows one at a time even then.
  const together = options.together && scenario.proxy !== true && scenario.fleet !== true
  if (baselineScript !== undefined) {
    // The same keepalive clients, built from the other checkout, in the same rounds.
    for (const client of clients.filter((c) => c.startsWith("keepalive"))) {
      runsByClient.set(client + baselineSuffix, [])
      notesByClient.set(client + baselineSuffix, [...notesFor(scenario, client), `keepalive built at ${options.baseline}`])
      if (together) {
        const pairNote = "run at the same time as its pair from the other build, on the same core: compare the two only"
        notesByClient.set(client, [...notesByClient.get(client)!, pairNote])
        notesByClient.set(client + baselineSuffix, [...notesByClient.get(client + baselineSuffix)!, pairNote])
      }
    }
  }
  const order = [...runsByClient.keys()].filter((client) => !(together && client.endsWith(baselineSuffix)))
  const proxy = scenario.proxy === true ? squid : undefined
  const store = scenario.fleet === true ? redis : undefined
  const record = (round: number, client: string, run: Run) => {
    runsByClient.get(client)!.push(run)
    const shown = run.outcome === "measured" ? `${Math.round(run.requestsPerSecond)} req/s` : `${run.outcome}: ${run.reason}`
    log(`[${scenario.id} ${round}/${rounds}] ${client.padEnd(32)} ${shown}`)
  }
  for (let round = 1; round <= rounds; round++) {
    // Rotated each round, so that no client always runs after the same one
    // (wrk's 128 connections closing, say) or first.
    const shift = (round - 1) % order.length
    for (const client of [...order.slice(shift), ...order.slice(0, shift)]) {
      if (together && runsByClient.has(client + baselineSuffix)) {
        // Both builds at once, each on the client core: a change in the machine's speed hits both alike.
        const [run, baselineRun] = await Promise.all([
          measureClient(pinning, server, proxy, store, scenario, client as ClientName, seconds),
          measureClient(pinning, server, proxy, store, scenario, client as ClientName, seconds, baselineScript)
        ])
        record(round, client, withoutServerCounts(run))
        record(round, client + baselineSuffix, withoutServerCounts(baselineRun))
        continue
      }
      const run = client === "wrk"
        ? await measureWrk(pinning, server, scenario, scenario.wrkConnections!, seconds)
        : client.endsWith(baselineSuffix)
        ? await measureClient(
          pinning,
          server,
          proxy,
          store,
          scenario,
          client.slice(0, -baselineSuffix.length) as ClientName,
          seconds,
          baselineScript
        )
        : await measureClient(pinning, server, proxy, store, scenario, client as ClientName, seconds)
      record(round, client, run)
    }
  }
  return summarize(scenario, runsByClient, notesByClient)
}

const baselineRssMB = async (pinning: Pinning): Promise<number | undefined> => {
  const report = await spawnClient(pinning, ["baseline"], 0)
  return report.outcome === "idle" ? report.maxRssMB : undefined
}

/**
 * The serving processes (squid among them when it runs) and their cores, as
 * `taskset -cp` reports them; throws when pinning was asked for and a
 * serving process runs elsewhere.
 */
const checkServerPinning = (
  pinning: Pinning,
  server: Server,
  squid: Squid | undefined,
  redis: RedisServer | undefined
): ReadonlyArray<{ readonly pid: number; readonly cores: string }> => {
  const pids = [...server.servingPids(), ...(squid?.pid === undefined ? [] : [squid.pid]), ...(redis?.pid === undefined ? [] : [redis.pid])]
  const processes = pids.map((pid) => ({ pid, cores: affinityOf(pid) ?? "unknown" }))
  if (pinning.pinned) {
    const expected = String(pinning.serverCore)
    if (processes.length === 0) throw new Error("pinning: found no serving process to check (BENCH_PIN=0 runs unpinned)")
    const stray = processes.filter((process) => process.cores !== expected)
    if (stray.length > 0) {
      const found = stray.map((process) => `pid ${process.pid} on cores ${process.cores}`).join(", ")
      throw new Error(`pinning: the server should run on core ${expected} only, but ${found} (BENCH_PIN=0 runs unpinned)`)
    }
  }
  return processes
}

const pinningLine = (pinning: Pinning, serverProcesses: ReadonlyArray<{ readonly pid: number; readonly cores: string }>): string => {
  const pids = serverProcesses.map((process) => process.pid).join(", ")
  return pinning.pinned
    ? `pinned with taskset: server on core ${pinning.serverCore} (pid ${pids}, checked with taskset -p), every client process and wrk on core ${pinning.clientCore}`
    : `not pinned (${pinning.reason}): the server and the clients share every core`
}

const main = async () => {
  const options = readOptions()
  const { seconds, rounds } = options
  const nginx = nginxVersion()
  const serverKind = options.server === "node" || nginx === undefined ? "node" : "nginx"
  const wrk = wrkVersion()
  // The HTTPS scenario needs nginx (the node:http stand-in serves plain HTTP only).
  let runnable = options.scenarios.filter((scenario) => scenario.tls !== true || serverKind === "nginx")
  for (const scenario of options.scenarios) {
    if (!runnable.includes(scenario)) log(`scenario ${scenario.id} skipped: HTTPS needs nginx`)
  }
  const tls = runnable.some((scenario) => scenario.tls === true)
  // The HTTPS port is tlsPortOffset above the base port: the free range must reach it.
  const ports = Math.max(minimumPorts, ...runnable.map((scenario) => scenario.origins), tls ? tlsPortOffset + 1 : 0)
  const { pinning } = options
  const server = await startServer({ kind: serverKind, basePort: options.basePort, ports, tls, pinning })
  if (tls && server.tlsCaFile === undefined) {
    for (const scenario of runnable) if (scenario.tls === true) log(`scenario ${scenario.id} skipped: no certificates (openssl failed)`)
    runnable = runnable.filter((scenario) => scenario.tls !== true)
  }
  // The HTTPS clients trust the server's CA (client processes inherit the environment).
  if (server.tlsCaFile !== undefined) process.env[tlsCaEnv] = server.tlsCaFile
  let baseline: BaselineHarness | undefined
  let squid: Squid | undefined
  let redis: RedisServer | undefined
  const stopServer = async () => {
    baseline?.remove()
    await squid?.stop()
    await redis?.stop()
    return server.stop()
  }
  const onSignal = () => void stopServer().finally(() => process.exit(130))
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  try {
    if (runnable.some((scenario) => scenario.proxy === true)) {
      const found = obtainSquid(log)
      let unavailable = "unavailable" in found ? found.unavailable : undefined
      if ("binary" in found) {
        try {
          // squid relays to the bench's ports only: the plain origins and the HTTPS port.
          squid = await startSquid({
            ...found,
            pinning,
            connectPorts: { from: server.basePort, to: server.basePort + Math.max(ports - 1, tlsPortOffset) },
            probeUrl: `http://127.0.0.1:${server.basePort}/status`
          })
        } catch (cause) {
          unavailable = cause instanceof Error ? cause.message : String(cause)
        }
      }
      if (squid === undefined) {
        for (const scenario of runnable) if (scenario.proxy === true) log(`scenario ${scenario.id} skipped: ${unavailable}`)
        runnable = runnable.filter((scenario) => scenario.proxy !== true)
      } else {
        // The proxied clients go through it (client processes inherit the environment).
        process.env[proxyEnv] = squid.url
      }
    }
    if (runnable.some((scenario) => scenario.fleet === true)) {
      const found = obtainRedis(log)
      let unavailable = "unavailable" in found ? found.unavailable : undefined
      if ("binary" in found) {
        try {
          redis = await startRedis({ ...found, pinning })
        } catch (cause) {
          unavailable = cause instanceof Error ? cause.message : String(cause)
        }
      }
      if (redis === undefined) {
        for (const scenario of runnable) if (scenario.fleet === true) log(`scenario ${scenario.id} skipped: ${unavailable}`)
        runnable = runnable.filter((scenario) => scenario.fleet !== true)
      } else {
        // The fleet clients take their permits from it (client processes inherit the environment).
        process.env[redisEnv] = redis.url
      }
    }
    if (options.baseline !== undefined) baseline = prepareBaseline(packageDir, options.baseline)
    const serverProcesses = checkServerPinning(pinning, server, squid, redis)
    const serverNote = serverKind === "nginx"
      ? server.description
      : `${server.description} (${nginx === undefined ? "nginx not found on PATH" : "BENCH_SERVER=node"})`
    const meta = {
      server: serverNote,
      ...(squid === undefined ? {} : { proxy: `${squid.description}, ${squid.url}, on the server's core` }),
      ...(redis === undefined ? {} : { permitStore: `${redis.description}, ${redis.url}, on the server's core` }),
      ports: `127.0.0.1:${server.basePort}–${server.basePort + ports - 1}`,
      node: process.version,
      cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? "unknown"}`,
      // Anything else running shares the 2 cores with the client and the server.
      loadAverageAtStart: os.loadavg()[0]!,
      pinned: pinning.pinned,
      ...(pinning.pinned
        ? { cores: { server: pinning.serverCore, clients: pinning.clientCore } }
        : { unpinnedBecause: pinning.reason }),
      /** The processes that serve requests, with the cores `taskset -cp` says each may run on. */
      serverProcesses,
      undici: (JSON.parse(fs.readFileSync(path.join(packageDir, "node_modules", "undici", "package.json"), "utf8")) as { version: string }).version,
      wrk: wrk ?? "not installed",
      seconds,
      warmupSeconds: 1,
      rounds,
      ...(options.together ? { together: "each keepalive client ran at the same time as its baseline row, both on the client core" } : {}),
      idleClientRssMB: await baselineRssMB(pinning)
    }
    if (!options.json) {
      console.log([
        "## keepalive bench",
        "",
        `- server: ${meta.server}, ${meta.ports}`,
        ...(meta.proxy === undefined ? [] : [`- proxy: ${meta.proxy}`]),
        ...(meta.permitStore === undefined ? [] : [`- fleet permits: ${meta.permitStore}`]),
        `- node ${meta.node}, ${meta.cpus} (1-minute load average at start: ${meta.loadAverageAtStart.toFixed(2)}), undici ${meta.undici} (npm), wrk ${meta.wrk}`,
        `- ${pinningLine(pinning, serverProcesses)}`,
        `- each client in its own process; ${seconds} s measured after a 1 s warm-up; ${rounds} rounds, clients alternated`,
        ...(meta.together === undefined ? [] : [`- ${meta.together} (BENCH_TOGETHER=1): read those rows against each other only`]),
        `- req/s and spread are over rounds; CPU µs/resp (user + system CPU over the window ÷ responses in it) and peak RSS are the client process's own, medians over rounds`,
        `- vs keepalive and CPU vs keepalive: this client's req/s (CPU µs/resp) ÷ keepalive's in the same round, median over rounds`,
        `- RSS floor: a client process that loads the harness but runs no client peaks at ${meta.idleClientRssMB?.toFixed(0) ?? "?"} MB`,
        ""
      ].join("\n"))
    }
    const results: Array<ScenarioResult> = []
    for (const scenario of runnable) {
      const result = await runScenario(options, server, squid, redis, scenario, wrk !== undefined, baseline?.clientScript)
      results.push(result)
      if (!options.json) console.log(renderTable(result) + "\n")
    }
    if (options.json) console.log(JSON.stringify({ meta, scenarios: results }, null, 2))
  } finally {
    await stopServer()
  }
}

await main().catch((cause: unknown) => {
  log(`bench: ${cause instanceof Error ? cause.message : String(cause)}`)
  process.exit(1)
})
