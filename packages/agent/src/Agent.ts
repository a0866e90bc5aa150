/**
 * The Agent: HTTP/1.1 requests over persistent connections, pooled per origin.
 *
 * @since 0.1.0
 */
import type * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as HttpClientRequestModule from "@effect/platform/HttpClientRequest"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { AgentError } from "./AgentError.js"
import type { Connector } from "./Connector.js"
import type * as Proxy from "./Proxy.js"
import * as internal from "./internal/agent.js"
import * as internalMetrics from "./internal/metrics.js"
import * as internalResponse from "./internal/response.js"

/**
 * How the Agent pools and times connections. Every field is optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** Connections per origin, idle and busy together (default 2). Further requests wait in FIFO order. */
  readonly maxConnectionsPerOrigin?: number | undefined
  /** Open connections over all origins (default 100); idle connections of other origins make room. */
  readonly maxConnections?: number | undefined
  /** How long an idle connection is kept (default 4 seconds); a server's `Keep-Alive: timeout=N` shortens it to N − 1 s. */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** `false`: one fresh connection per request, closed after it (default true). */
  readonly persist?: boolean | undefined
  /** Time to open a connection (default 10 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Time from sending a request to the end of the response head (default 60 seconds). */
  readonly headersTimeout?: Duration.DurationInput | undefined
  /** Longest silence between response body bytes (default 60 seconds). */
  readonly bodyTimeout?: Duration.DurationInput | undefined
  /** Largest response head in bytes (default 16 KiB). */
  readonly maxHeaderSize?: number | undefined
  /** Most fields in a response head (default 100). */
  readonly maxHeaderCount?: number | undefined
  /**
   * A connection older than this is closed once its current exchange ends
   * (default 5 minutes). Each connection's own limit falls short of it by up
   * to a tenth, spread evenly, so that connections opened together do not
   * all close together.
   */
  readonly maxConnectionAge?: Duration.DurationInput | undefined
  /**
   * Responses a connection carries before it is closed (default: no limit).
   * A server's `Keep-Alive: max=N` on a connection's k-th response lowers it
   * to k + N for that connection: N counts the requests the server still
   * takes after that response (`max=0`: none).
   */
  readonly maxRequestsPerConnection?: number | undefined
  /**
   * Longest wait for a connection (default: no limit); a request that waits
   * longer fails with `reason: "Timeout"`, `phase: "queue"`, having sent nothing.
   */
  readonly queueTimeout?: Duration.DurationInput | undefined
  /**
   * How long closing the Agent's scope waits for the requests in flight
   * (default 5 seconds); then their connections are closed and they fail
   * with `reason: "Closed"`.
   */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** `false`: record no metrics (default true; see `Agent.metricNames`). */
  readonly metrics?: boolean | undefined
  /**
   * The proxies to go through (default: none; the environment is read only
   * when given `Proxy.fromEnv()`). A string is one proxy URL for every
   * scheme; `""` is none. An `https:` origin goes through an `http` proxy in
   * a CONNECT tunnel, an `http:` origin is forwarded to it; `socks5`/`socks5h`
   * proxies carry both. Connections through a proxy are pooled per origin
   * like any other. A proxy string that cannot be used makes building the
   * Agent die with `ProxyConfigError` (`Proxy.make` throws it for the caller
   * to handle).
   */
  readonly proxy?: Proxy.Config | string | undefined
}

/**
 * `Config` with every default applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedConfig {
  readonly maxConnectionsPerOrigin: number
  readonly maxConnections: number
  readonly idleTimeout: Duration.Duration
  readonly persist: boolean
  readonly connectTimeout: Duration.Duration
  readonly headersTimeout: Duration.Duration
  readonly bodyTimeout: Duration.Duration
  readonly maxHeaderSize: number
  readonly maxHeaderCount: number
  readonly maxConnectionAge: Duration.Duration
  /** Infinity when there is no limit. */
  readonly maxRequestsPerConnection: number
  readonly queueTimeout: Duration.Duration
  readonly shutdownTimeout: Duration.Duration
  readonly metrics: boolean
  readonly proxy: Proxy.Config
}

/**
 * A snapshot of the Agent: connections now, and totals since it started.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Open connections now. */
  readonly open: number
  /** Open connections with no request. */
  readonly idle: number
  /** Open connections carrying a request. */
  readonly busy: number
  /** Requests waiting for a connection. */
  readonly waiting: number
  /** Connections being opened for waiting requests that wait for a permit of `ConnectionPermits` first (0 without one). */
  readonly awaitingPermit: number
  /** Connections opened since start. */
  readonly opened: number
  /** Requests answered (a response head received) on a connection that had carried a response before. */
  readonly reused: number
  /**
   * Responses whose body was read to its end (or that had none) since start:
   * a request that failed, or whose body was left unread, is not counted.
   */
  readonly responses: number
  /**
   * The same counts per origin key (`scheme://host:port`), for the origins the
   * Agent holds anything of now (a connection, an opening or a waiting
   * request). An origin left with nothing is forgotten, and its totals with it.
   */
  readonly origins: Readonly<Record<string, OriginStats>>
}

/**
 * One origin's part of `Stats`.
 *
 * @since 0.1.0
 * @category models
 */
export interface OriginStats {
  /** Open connections now. */
  readonly open: number
  /** Open connections with no request. */
  readonly idle: number
  /** Open connections carrying a request. */
  readonly busy: number
  /** Requests waiting for a connection. */
  readonly waiting: number
  /** Connections being opened for waiting requests that wait for a permit of `ConnectionPermits` first (0 without one). */
  readonly awaitingPermit: number
  /** Connections opened since the Agent last held nothing of the origin. */
  readonly opened: number
  /** Requests answered on a reused connection since the Agent last held nothing of the origin. */
  readonly reused: number
}

/**
 * What the Agent service offers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly config: ResolvedConfig
  /** Sends a request; its response needs no Scope (see `Agent.request`). */
  readonly request: (
    request: HttpClientRequest.HttpClientRequest
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError>
  /** Sends a request; the caller's scope frees its connection at the latest (see `Agent.requestScoped`). */
  readonly requestScoped: (
    request: HttpClientRequest.HttpClientRequest
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError, Scope.Scope>
  /** Sends a request and runs `f` with its response; `f`'s end frees its connection at the latest (see `Agent.requestWith`). */
  readonly requestWith: <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, AgentError | E, R>
  /** The Agent's statistics now (see `Agent.stats`). */
  readonly stats: Effect.Effect<Stats>
  /** Opens connections to a URL's origin ahead of need (see `Agent.preconnect`). */
  readonly preconnect: (url: string | URL, count: number) => Effect.Effect<number, AgentError>
}

/**
 * The Agent service.
 *
 * @since 0.1.0
 * @category tags
 */
export class Agent extends Context.Tag("@keepalive/agent/Agent")<Agent, Service>() {}

/**
 * Builds an Agent in the current scope; closing the scope closes its connections.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (config?: Config) => Effect.Effect<Service, never, Scope.Scope | Connector> = internal.make

/**
 * A Layer of the Agent; it needs a `Connector` (see `@keepalive/node`'s `NodeAgent.layer`).
 *
 * @since 0.1.0
 * @category layers
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { NodeConnector } from "@keepalive/node"
 * import { Layer } from "effect"
 * const AgentLive = Agent.layer({ maxConnectionsPerOrigin: 4 }).pipe(Layer.provide(NodeConnector.layer))
 */
export const layer = (config?: Config): Layer.Layer<Agent, never, Connector> =>
  Layer.scoped(Agent, internal.make(config))

/**
 * Sends a request through the Agent in the context; no `Scope` is needed, as
 * with @effect/platform's `HttpClient`. The connection goes back to the pool
 * as soon as the whole response is here (at once for a small body that came
 * with its head, else with its last byte), whoever still reads it; before
 * that, when a reader read the body's end or gave up on it (interrupted, a
 * stream or `forEachChunk` ended early) with no other read under way, which
 * closes the connection and loses the rest of the body, or when the response
 * is garbage collected. An unread body keeps arriving into memory, and a
 * stream left half read keeps its connection until then: read it, or use
 * `requestWith` or `requestScoped`, to free it at a known time.
 *
 * @since 0.1.0
 * @category requests
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { HttpClientRequest } from "@effect/platform"
 * import { Effect } from "effect"
 * const body = Agent.request(HttpClientRequest.get("http://127.0.0.1:8080/x")).pipe(
 *   Effect.flatMap((r) => r.arrayBuffer)
 * )
 */
export const request = (
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError, Agent> =>
  internal.requestVia(Agent, request)

/**
 * Sends a request through the Agent in the context; the connection goes back
 * as soon as the whole body is here, or when the scope closes, whichever
 * comes first (a body left unread then closes it). A reader that gives up
 * frees nothing before the scope closes, and a later read still gets the
 * rest. Costs the caller a `Scope`, which `request` does without.
 *
 * @since 0.1.0
 * @category requests
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { HttpClientRequest } from "@effect/platform"
 * import { Effect } from "effect"
 * const status = Agent.requestScoped(HttpClientRequest.get("http://127.0.0.1:8080/x")).pipe(
 *   Effect.map((r) => r.status),
 *   Effect.scoped
 * )
 */
export const requestScoped = (
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError, Agent | Scope.Scope> =>
  internal.requestScopedVia(Agent, request)

/**
 * Sends a request through the Agent in the context and runs `f` with its
 * response; the connection is given back when `f` ends (closed if the body was
 * left unread), or before that once the whole body is here (before `f` runs
 * when it came with its head), so that a slow `f` keeps no connection from
 * others. No `Scope` is needed, and the connection is free at a known time
 * even when `f` leaves the body unread.
 *
 * @since 0.1.0
 * @category requests
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { HttpClientRequest } from "@effect/platform"
 * const body = HttpClientRequest.get("http://127.0.0.1:8080/x").pipe(
 *   Agent.requestWith((response) => response.text)
 * )
 */
export const requestWith: {
  <A, E, R>(
    f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  ): (request: HttpClientRequest.HttpClientRequest) => Effect.Effect<A, AgentError | E, Agent | R>
  <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, AgentError | E, Agent | R>
} = dual(2, <A, E, R>(
  request: HttpClientRequest.HttpClientRequest,
  f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
): Effect.Effect<A, AgentError | E, Agent | R> => internal.requestWithVia(Agent, request, f))

/**
 * Runs `f` on each piece of a response's body, in order, as it arrives; the
 * next piece is read once `f` is done, so a slow `f` slows the server down.
 * What `response.stream` gives, without running an Effect `Stream`, whose
 * fixed cost per run in Effect 3 outweighs a whole small request. The pieces
 * are the caller's to keep.
 *
 * @since 0.1.0
 * @category responses
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { HttpClientRequest } from "@effect/platform"
 * import { Effect } from "effect"
 * let size = 0
 * const download = HttpClientRequest.get("http://127.0.0.1:8080/big").pipe(
 *   Agent.requestWith(Agent.forEachChunk((chunk) => Effect.sync(() => { size += chunk.length })))
 * )
 */
export const forEachChunk: {
  <E, R>(
    f: (chunk: Uint8Array) => Effect.Effect<void, E, R>
  ): (
    response: HttpClientResponse.HttpClientResponse
  ) => Effect.Effect<void, AgentError | HttpClientError.ResponseError | E, R>
  <E, R>(
    response: HttpClientResponse.HttpClientResponse,
    f: (chunk: Uint8Array) => Effect.Effect<void, E, R>
  ): Effect.Effect<void, AgentError | HttpClientError.ResponseError | E, R>
} = dual(2, internalResponse.forEachChunk)

/**
 * GETs a URL and returns its body as text, whatever the status.
 *
 * @since 0.1.0
 * @category requests
 */
export const requestString = (url: string | URL): Effect.Effect<string, AgentError, Agent> =>
  Effect.flatMap(Agent, (agent) => agent.requestWith(HttpClientRequestModule.get(url), internal.bodyText))

/**
 * The Agent's current statistics.
 *
 * @since 0.1.0
 * @category accessors
 */
export const stats: Effect.Effect<Stats, never, Agent> = Effect.flatMap(Agent, (agent) => agent.stats)

/**
 * Opens connections to the origin of `url` until it has `count` open or being
 * opened, within `maxConnectionsPerOrigin` and taking only free global
 * permits (no other origin's idle connection is closed for it). Succeeds with
 * how many it opened, once they are open; they then wait idle for requests
 * (and close after `idleTimeout` like any other). Fails with the first
 * connect failure.
 *
 * @since 0.1.0
 * @category requests
 * @example
 * import { Agent } from "@keepalive/agent"
 * const warm = Agent.preconnect("https://api.example.com", 2)
 */
export const preconnect = (url: string | URL, count: number): Effect.Effect<number, AgentError, Agent> =>
  Effect.flatMap(Agent, (agent) => agent.preconnect(url, count))

/**
 * Why a connection closed, as the `reason` attribute of the
 * `keepalive.connections.closed` metric: its idle timeout passed, the server
 * closed it (or said it would), it failed or saw something odd, it was closed
 * to make room for another origin (or was opened for a request that no longer
 * wanted it), it carried `maxRequestsPerConnection` (or `Keep-Alive: max`, or
 * one with `persist: false`), it outlived `maxConnectionAge`, the Agent shut
 * down, its fleet permit was lost (`permit_lost`), or it was idle while others
 * in the fleet waited for its origin (`permit_wanted`; see `ConnectionPermits`).
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionCloseReason =
  | "idle_timeout"
  | "server_close"
  | "error"
  | "evicted"
  | "max_requests"
  | "max_age"
  | "shutdown"
  | "permit_lost"
  | "permit_wanted"

/**
 * The names of the metrics every Agent records through Effect's `Metric`
 * (unless `metrics: false`), so any Effect metrics exporter sees them. Each
 * series carries its origin as `server.address`, `server.port` and
 * `url.scheme` (for the first 1,000 origins; the others share one series
 * marked `otel.metric.overflow`):
 * - `requestDuration` (histogram, seconds): from the call to the response
 *   head, or to the failure; by `http.request.method`,
 *   `http.response.status_code`, `error.type` (the AgentError's `reason`).
 * - `openConnections` (up-down counter): by `http.connection.state`, `active` or `idle`.
 * - `connectionDuration` (histogram, seconds): how long closed connections lived.
 * - `activeRequests` (up-down counter): requests waiting for a connection or holding one.
 * - `connectionsOpened`, `connectionsClosed` (counters; closed by `reason`, see `ConnectionCloseReason`).
 * - `requestsReused` (counter): requests answered on a connection that carried a response before.
 * - `queueDuration` (histogram, seconds): time requests waited for a connection (those that waited).
 * - `requestsWaiting` (up-down counter): requests waiting for a connection.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metricNames: {
  readonly requestDuration: "http.client.request.duration"
  readonly openConnections: "http.client.open_connections"
  readonly connectionDuration: "http.client.connection.duration"
  readonly activeRequests: "http.client.active_requests"
  readonly connectionsOpened: "keepalive.connections.opened"
  readonly connectionsClosed: "keepalive.connections.closed"
  readonly requestsReused: "keepalive.requests.reused"
  readonly queueDuration: "keepalive.queue.duration"
  readonly requestsWaiting: "keepalive.requests.waiting"
} = internalMetrics.names

/**
 * Which of the Agent's connections carried a response: its `id` (unique in
 * the process) and whether it had carried a response before (`reused`).
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectionInfo {
  readonly id: number
  readonly reused: boolean
}

/**
 * The connection a response came on, for a response of the Agent (through
 * any entry point or its HttpClient); none for any other response.
 *
 * @since 0.1.0
 * @category responses
 * @example
 * import { Agent } from "@keepalive/agent"
 * import { HttpClientRequest } from "@effect/platform"
 * import { Effect, Option } from "effect"
 * const reused = HttpClientRequest.get("http://127.0.0.1:8080/").pipe(
 *   Agent.requestWith((response) => Effect.succeed(Option.map(Agent.connectionOf(response), (c) => c.reused)))
 * )
 */
export const connectionOf = (response: HttpClientResponse.HttpClientResponse): Option.Option<ConnectionInfo> =>
  response instanceof internalResponse.AgentResponse
    ? Option.some({ id: response.connection.id, reused: response.exchange.reused })
    : Option.none()
