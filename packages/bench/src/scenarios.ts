/**
 * The workloads every client runs. A scenario fixes the origins, how many
 * requests are in flight per origin, the connection caps a client is asked to
 * honour, and how the body is read. The parent process and every client
 * process read the same table, so a client is told only a scenario id.
 */
import * as fs from "node:fs"

/** The body `/small` serves: 13 bytes. */
export const smallBody = "hello, world\n"

/** The size of the body `/big` serves. */
export const bigBodySize = 64 * 1024

export type ClientName =
  | "keepalive"
  | "keepalive-scoped"
  | "keepalive-with"
  | "keepalive-httpclient"
  | "keepalive-no-persist"
  | "keepalive-fleet"
  | "keepalive-httpclient-no-persist"
  | "undici-pool"
  | "undici-request"
  | "node-http"
  | "node-http-no-keepalive"
  | "fetch"
  | "effect-undici"
  | "effect-node"
  | "undici-proxy-agent"
  | "undici-proxy-agent-forward"
  | "undici-env-proxy-agent"

/** The clients compared in the throughput scenarios (a–e and h). */
const throughputClients: ReadonlyArray<ClientName> = [
  "keepalive",
  "keepalive-scoped",
  "keepalive-with",
  "keepalive-httpclient",
  "undici-pool",
  "undici-request",
  "node-http",
  "fetch",
  "effect-undici",
  "effect-node"
]

/** Scenario f compares persistent connections with a connection per request. */
const persistClients: ReadonlyArray<ClientName> = [
  "keepalive",
  "keepalive-no-persist",
  "keepalive-httpclient",
  "keepalive-httpclient-no-persist",
  "node-http",
  "node-http-no-keepalive"
]

/** The clients of the HTTPS scenario: each told to trust the bench's own CA. */
const tlsClients: ReadonlyArray<ClientName> = ["keepalive", "keepalive-httpclient", "undici-pool", "node-http"]

/**
 * The clients of the scenarios through squid: keepalive's `Agent.request`
 * with `proxy`, and undici's two proxy dispatchers.
 * `undici-proxy-agent-forward` (`proxyTunnel: false`) differs from
 * `undici-proxy-agent` for http origins only.
 */
const proxyClients: ReadonlyArray<ClientName> = ["keepalive", "undici-proxy-agent", "undici-proxy-agent-forward", "undici-env-proxy-agent"]
const proxyTlsClients: ReadonlyArray<ClientName> = ["keepalive", "undici-proxy-agent", "undici-env-proxy-agent"]

/**
 * The fleet scenarios compare keepalive's `Agent.request` with a fleet-wide
 * per-origin cap on the harness's Redis (`RedisPermits.layer`) against the
 * same client without one, in the same rounds. The fleet's cap equals the
 * scenario's own per-origin cap, so with one process it never binds: what
 * differs is what the permits cost (an acquire per connection opened, its
 * release, the lease refresh, the fleet's pub/sub).
 */
const fleetClients: ReadonlyArray<ClientName> = ["keepalive", "keepalive-fleet"]

/** The HTTPS port: this far above the base port, past the plain origins' ports. */
export const tlsPortOffset = 50

/** The CA certificate (PEM file) the HTTPS clients trust: set by the harness for its client processes. */
export const tlsCaEnv = "BENCH_TLS_CA"

/** The URL of the harness's Redis (`redis://127.0.0.1:<port>`): set by the harness for its client processes. */
export const redisEnv = "BENCH_REDIS"

/** The URL of the harness's squid (`http://127.0.0.1:<port>`): set by the harness for its client processes. */
export const proxyEnv = "BENCH_PROXY"

export interface Scenario {
  readonly id: string
  readonly title: string
  /** Distinct origins, served on consecutive ports from the base port. */
  readonly origins: number
  /** Closed-loop workers per origin: each keeps exactly one request in flight. */
  readonly inFlightPerOrigin: number
  /** The per-origin connection cap handed to clients that have one. */
  readonly connectionsPerOrigin: number
  /** The global connection cap handed to clients that have one. */
  readonly maxConnections: number
  readonly path: "/small" | "/big"
  /** `whole`: read the body into one buffer; `stream`: consume it chunk by chunk. */
  readonly read: "whole" | "stream"
  readonly clients: ReadonlyArray<ClientName>
  /** Connections for the `wrk` reference run; absent where wrk is not a fair ceiling. */
  readonly wrkConnections?: number
  /** Over HTTPS, to `localhost` on the TLS port, with a certificate of the bench's own CA. */
  readonly tls?: boolean
  /**
   * Through the harness's squid: an http origin forwarded to it (or tunnelled,
   * by a client that tunnels every origin), an https origin in a CONNECT tunnel.
   */
  readonly proxy?: boolean
  /**
   * With the harness's Redis: `keepalive-fleet` takes its per-origin cap
   * from `RedisPermits.layer` as well, the fleet's cap equal to
   * `connectionsPerOrigin`.
   */
  readonly fleet?: boolean
}

export const scenarios: ReadonlyArray<Scenario> = [
  {
    id: "a",
    title: "1 origin, 1 request in flight, 1 connection",
    origins: 1,
    inFlightPerOrigin: 1,
    connectionsPerOrigin: 1,
    maxConnections: 1,
    path: "/small",
    read: "whole",
    clients: throughputClients,
    wrkConnections: 1
  },
  {
    id: "b",
    title: "1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/small",
    read: "whole",
    clients: throughputClients,
    wrkConnections: 2
  },
  {
    id: "c",
    title: "1 origin, 128 in flight over 128 connections",
    origins: 1,
    inFlightPerOrigin: 128,
    connectionsPerOrigin: 128,
    maxConnections: 128,
    path: "/small",
    read: "whole",
    clients: throughputClients,
    wrkConnections: 128
  },
  {
    id: "d",
    title: "50 origins, 8 in flight each (400 in all), 8 connections per origin, 64 connections in all",
    origins: 50,
    inFlightPerOrigin: 8,
    connectionsPerOrigin: 8,
    maxConnections: 64,
    path: "/small",
    read: "whole",
    clients: throughputClients
  },
  {
    id: "e",
    title: "64 KiB bodies streamed, 1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/big",
    read: "stream",
    clients: throughputClients
  },
  {
    id: "f",
    title: "persistent vs a connection per request, 1 origin, 4 in flight, 4 connections",
    origins: 1,
    inFlightPerOrigin: 4,
    connectionsPerOrigin: 4,
    maxConnections: 4,
    path: "/small",
    read: "whole",
    clients: persistClients
  },
  {
    id: "g",
    title: "HTTPS: 1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/small",
    read: "whole",
    clients: tlsClients,
    tls: true
  },
  {
    // d without its global cap binding: every worker keeps a connection of its own, none is ever closed to move.
    id: "h",
    title: "50 origins, 8 in flight each (400 in all), 8 connections per origin, 400 connections in all",
    origins: 50,
    inFlightPerOrigin: 8,
    connectionsPerOrigin: 8,
    maxConnections: 400,
    path: "/small",
    read: "whole",
    clients: throughputClients
  },
  {
    // b through squid: the same load, each request forwarded by squid to nginx.
    id: "bp",
    title: "b through squid: http origin forwarded, 1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/small",
    read: "whole",
    clients: proxyClients,
    proxy: true
  },
  {
    // g through squid: the tunnel is the pooled connection, TLS to nginx inside it.
    id: "gp",
    title: "g through squid: HTTPS in CONNECT tunnels, 1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/small",
    read: "whole",
    clients: proxyTlsClients,
    tls: true,
    proxy: true
  },
  {
    // b with a fleet cap on Redis that never binds: what the permits cost where connections are kept.
    id: "bf",
    title: "b with a fleet cap on Redis (2 per origin, never binding): 1 origin, 16 in flight over 2 connections",
    origins: 1,
    inFlightPerOrigin: 16,
    connectionsPerOrigin: 2,
    maxConnections: 2,
    path: "/small",
    read: "whole",
    clients: fleetClients,
    fleet: true
  },
  {
    // d with a fleet cap on Redis that never binds: every connection the global cap makes the Agent reopen is an acquire.
    id: "df",
    title: "d with a fleet cap on Redis (8 per origin, never binding): 50 origins, 8 in flight each, 8 per origin, 64 in all",
    origins: 50,
    inFlightPerOrigin: 8,
    connectionsPerOrigin: 8,
    maxConnections: 64,
    path: "/small",
    read: "whole",
    clients: fleetClients,
    fleet: true
  }
]

export const findScenario = (id: string): Scenario => {
  const scenario = scenarios.find((s) => s.id === id)
  if (scenario === undefined) {
    throw new Error(`unknown scenario "${id}" (known: ${scenarios.map((s) => s.id).join(", ")})`)
  }
  return scenario
}

/** One URL per closed-loop worker: `inFlightPerOrigin` workers for each origin. */
export const workerUrls = (scenario: Scenario, basePort: number): ReadonlyArray<string> =>
  Array.from(
    { length: scenario.origins * scenario.inFlightPerOrigin },
    (_, worker) =>
      scenario.tls === true
        ? `https://localhost:${basePort + tlsPortOffset}${scenario.path}`
        : `http://127.0.0.1:${basePort + (worker % scenario.origins)}${scenario.path}`
  )

/** The CA the HTTPS clients trust, read from the file the harness names; undefined for plain HTTP. */
export const tlsCa = (scenario: Scenario): string | undefined => {
  if (scenario.tls !== true) return undefined
  const file = process.env[tlsCaEnv]
  if (file === undefined || file === "") throw new Error(`${tlsCaEnv} is not set: the HTTPS scenario runs under pnpm bench`)
  return fs.readFileSync(file, "utf8")
}

/** The Redis of a fleet scenario, read from the variable the harness sets; undefined when it has none. */
export const redisUrl = (scenario: Scenario): string | undefined => {
  if (scenario.fleet !== true) return undefined
  const url = process.env[redisEnv]
  if (url === undefined || url === "") throw new Error(`${redisEnv} is not set: the fleet scenarios run under pnpm bench`)
  return url
}

/** The proxy a scenario's clients go through, read from the variable the harness sets; undefined when it has none. */
export const proxyUrl = (scenario: Scenario): string | undefined => {
  if (scenario.proxy !== true) return undefined
  const url = process.env[proxyEnv]
  if (url === undefined || url === "") throw new Error(`${proxyEnv} is not set: the proxied scenarios run under pnpm bench`)
  return url
}

export const expectedBodySize = (scenario: Scenario): number =>
  scenario.path === "/big" ? bigBodySize : Buffer.byteLength(smallBody)

/** Which of a scenario's connection caps a client can be told about. */
export type CapSupport = "per-origin and global" | "per-origin" | "none"

export const capSupport: Record<ClientName, CapSupport> = {
  "keepalive": "per-origin and global",
  "keepalive-scoped": "per-origin and global",
  "keepalive-with": "per-origin and global",
  "keepalive-httpclient": "per-origin and global",
  "keepalive-no-persist": "per-origin and global",
  "keepalive-fleet": "per-origin and global",
  "keepalive-httpclient-no-persist": "per-origin and global",
  "undici-pool": "per-origin",
  "undici-request": "none",
  "node-http": "per-origin and global",
  "node-http-no-keepalive": "none",
  "fetch": "none",
  "effect-undici": "none",
  "effect-node": "none",
  "undici-proxy-agent": "per-origin",
  "undici-proxy-agent-forward": "per-origin",
  "undici-env-proxy-agent": "per-origin"
}
