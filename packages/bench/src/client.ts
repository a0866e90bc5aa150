/**
 * One measurement in a fresh process:
 *
 *   node dist/client.js <client> <scenario> <seconds> <basePort>
 *
 * Builds the client, runs the closed loop (1 s warm-up, then <seconds>
 * measured) and prints one JSON `ClientReport` line on stdout. A fresh process
 * per measurement keeps one client's heap, JIT state and sockets out of the
 * next one's numbers.
 */
import type { ClientCounts, Runner } from "./closedLoop.js"
import { MeasurementWindow } from "./closedLoop.js"
import type { Measurement } from "./closedLoop.js"
import { ownAffinity } from "./pinning.js"
import type { ClientName, Scenario } from "./scenarios.js"
import { capSupport, expectedBodySize, findScenario, workerUrls } from "./scenarios.js"

export type ClientReport =
  | ({
    readonly outcome: "measured"
    readonly maxRssMB: number
    /** The cores this process was allowed to run on (`Cpus_allowed_list`), so the harness can check its pinning. */
    readonly cores?: string
    /** What a keepalive client counted (connections the Agent opened, its permits' acquires), warm-up included. */
    readonly counts?: ClientCounts
  } & Measurement)
  | { readonly outcome: "unavailable"; readonly reason: string }
  | { readonly outcome: "failed"; readonly reason: string }
  /** `client.ts baseline`: the process loaded the harness but no client; its RSS is the floor for every client. */
  | { readonly outcome: "idle"; readonly maxRssMB: number }

const warmupMs = 1000

/** Loaded lazily so that a missing keepalive build only affects the keepalive rows. */
const keepaliveClients = () =>
  import("./clients/keepalive.js").catch((cause: unknown) => {
    throw new KeepaliveUnavailable(cause instanceof Error ? cause.message : String(cause))
  })

/** The fleet client alone loads @keepalive/redis. */
const keepaliveFleetClient = () =>
  import("./clients/keepaliveFleet.js").catch((cause: unknown) => {
    throw new KeepaliveUnavailable(cause instanceof Error ? cause.message : String(cause))
  })

class KeepaliveUnavailable extends Error {
  constructor(detail: string) {
    super(`not available yet: @keepalive/node, @keepalive/agent or @keepalive/redis could not be loaded (${detail.split("\n")[0]})`)
  }
}

const makeRunner = async (client: ClientName, scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> => {
  switch (client) {
    case "keepalive":
      return (await keepaliveClients()).agentRequest(scenario, urls, true)
    case "keepalive-scoped":
      return (await keepaliveClients()).agentRequestScoped(scenario, urls)
    case "keepalive-with":
      return (await keepaliveClients()).agentRequestWith(scenario, urls)
    case "keepalive-fleet":
      return (await keepaliveFleetClient()).agentRequestFleet(scenario, urls)
    case "keepalive-no-persist":
      return (await keepaliveClients()).agentRequest(scenario, urls, false)
    case "keepalive-httpclient":
      return (await keepaliveClients()).agentHttpClient(scenario, urls, true)
    case "keepalive-httpclient-no-persist":
      return (await keepaliveClients()).agentHttpClient(scenario, urls, false)
    case "undici-pool":
      return (await import("./clients/undici.js")).undiciPool(scenario, urls)
    case "undici-request":
      return (await import("./clients/undici.js")).undiciRequest(scenario, urls)
    case "node-http":
      return (await import("./clients/nodeHttp.js")).nodeHttp(scenario, urls, true)
    case "node-http-no-keepalive":
      return (await import("./clients/nodeHttp.js")).nodeHttp(scenario, urls, false)
    case "fetch":
      return (await import("./clients/fetch.js")).globalFetch(scenario, urls)
    case "effect-undici":
      return (await import("./clients/effectPlatform.js")).effectUndici(scenario, urls)
    case "effect-node":
      return (await import("./clients/effectPlatform.js")).effectNode(scenario, urls)
    case "undici-proxy-agent":
      return (await import("./clients/undiciProxy.js")).undiciProxyAgent(scenario, urls)
    case "undici-proxy-agent-forward":
      return (await import("./clients/undiciProxy.js")).undiciProxyAgentForward(scenario, urls)
    case "undici-env-proxy-agent":
      return (await import("./clients/undiciProxy.js")).undiciEnvProxyAgent(scenario, urls)
  }
}

const measure = async (argv: ReadonlyArray<string>): Promise<ClientReport> => {
  const [client, scenarioId, secondsArg, basePortArg] = argv
  if (client === "baseline") return { outcome: "idle", maxRssMB: process.resourceUsage().maxRSS / 1024 }
  if (client === undefined || scenarioId === undefined || secondsArg === undefined || basePortArg === undefined) {
    return { outcome: "failed", reason: "usage: client.ts <client> <scenario> <seconds> <basePort>" }
  }
  if (!(client in capSupport)) return { outcome: "failed", reason: `unknown client "${client}"` }
  const scenario = findScenario(scenarioId)
  const urls = workerUrls(scenario, Number(basePortArg))
  let runner: Runner
  try {
    runner = await makeRunner(client as ClientName, scenario, urls)
  } catch (cause) {
    if (cause instanceof KeepaliveUnavailable) return { outcome: "unavailable", reason: cause.message }
    throw cause
  }
  const window = new MeasurementWindow({
    warmupMs,
    measureMs: Number(secondsArg) * 1000,
    expectedBodySize: expectedBodySize(scenario)
  })
  measurementWindow = window
  window.start()
  await runner.run(window)
  // A baseline build without `Agent.stats` only loses the counts.
  const counts = await runner.counts?.(window).catch(() => undefined)
  // A client that cannot close within 2 s must not hold up the report; the process exits anyway.
  await Promise.race([runner.close(), new Promise((resolve) => setTimeout(resolve, 2000))])
  const cores = ownAffinity()
  return {
    outcome: "measured",
    maxRssMB: process.resourceUsage().maxRSS / 1024,
    ...(cores === undefined ? {} : { cores }),
    ...(counts === undefined ? {} : { counts }),
    ...window.measurement()
  }
}

let measurementWindow: MeasurementWindow | undefined
let reported = false
const emit = (report: ClientReport) => {
  reported = true
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0))
}
// Node exits on its own (code 13) when nothing is left to wake a pending await: a request that will never finish.
process.on("exit", () => {
  if (!reported) {
    const progress = measurementWindow?.isOver ? ` (after the window: ${JSON.stringify(measurementWindow.measurement())})` : ""
    const reason = `stalled: requests still pending with no socket or timer left to complete them${progress}`
    process.stdout.write(JSON.stringify({ outcome: "failed", reason } satisfies ClientReport) + "\n")
  }
})
emit(
  await measure(process.argv.slice(2)).catch((cause: unknown): ClientReport => ({
    outcome: "failed",
    reason: cause instanceof Error ? cause.message : String(cause)
  }))
)
