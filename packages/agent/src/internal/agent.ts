import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import type * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import { AgentError } from "../AgentError.js"
import { ConnectionPermits } from "../ConnectionPermits.js"
import { Connector } from "../Connector.js"
import * as Config from "./config.js"
import { Connection, type Timing } from "./connection.js"
import { AgentMetrics } from "./metrics.js"
import { Opener } from "./opening.js"
import type { OriginLine, Pooled } from "./originLine.js"
import type { RequestTiming } from "./originLine.js"
import { ConnectionPool } from "./pool.js"
import { handOver, Held, holdWhile, type Keep, keepInCallerScope, Lease } from "./release.js"
import * as Request from "./request.js"
import type * as ResponseReader from "./responseReader.js"
import { Routes } from "./routes.js"
import { AgentResponse, decode } from "./response.js"
import { type Trace, traced, TraceSettings } from "./tracing.js"
import { Watchdog } from "./watchdog.js"

type Restore = <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>

/**
 * The Agent service: sends a request over a pooled connection (an `Attempt`),
 * retries it once on a fresh connection when a reused one turned out stale
 * and the request may be sent twice, and hands the response over with the
 * rule of its entry point for giving the connection back (release.ts).
 *
 * A class, so that the HttpClient adapter can tell the Agent's own service
 * (which it drives through `execute`) from any other implementation.
 *
 * @internal
 */
export class AgentService implements Agent.Service {
  readonly #pool: ConnectionPool
  readonly #env: AttemptEnv
  /** The route of each origin, when some go through a proxy. */
  readonly routes: Routes | undefined

  constructor(
    readonly config: Agent.ResolvedConfig,
    pool: ConnectionPool,
    connector: Context.Tag.Service<typeof Connector>,
    clock: Clock.Clock,
    metrics: boolean,
    routes: Routes | undefined
  ) {
    this.routes = routes
    this.#pool = pool
    this.#env = { pool, connector, clock, metrics }
  }

  /**
   * Sends `request` to `url` and gives the response to `keep`, which takes
   * charge of it and of giving its connection back. The request is checked
   * and serialised when the effect runs. A traced request's span is ended
   * with however it ends (see `traced`'s `sendEnds`).
   */
  execute<A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    url: URL,
    keep: Keep<A, E, R>,
    trace: Trace | undefined
  ): Effect.Effect<A, AgentError | E, R> {
    // The mask's function runs when the effect does: it prepares the request then.
    return Effect.uninterruptibleMask((restore) => {
      const run = this.#run(request, url, keep, trace, restore)
      if (trace === undefined) return run
      // A success ended the span with the response head (`traceResponse`):
      // only a failure is left to end it. Inside the mask, an interrupted
      // wait's is seen here too.
      return Effect.catchAllCause(run, (cause) => {
        trace.ended(Exit.failCause(cause), trace.settings.clock.unsafeCurrentTimeNanos())
        return Effect.failCause(cause)
      })
    })
  }

  /** `execute`'s work, in its uninterruptible region: waits are made interruptible with `restore`. */
  #run<A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    url: URL,
    keep: Keep<A, E, R>,
    trace: Trace | undefined,
    restore: Restore
  ): Effect.Effect<A, AgentError | E, R> {
    if (this.#pool.closed) {
      return Effect.fail(new AgentError({ reason: "Closed", origin: "", detail: "the Agent was shut down" }))
    }
    const env = this.#env
    const startedAt = env.metrics ? env.clock.unsafeCurrentTimeNanos() : 0n
    const prepared = Request.prepare(request, url, this.config.persist, this.routes)
    if (prepared instanceof AgentError) return Effect.fail(prepared)
    if (Effect.isEffect(prepared)) {
      return Effect.flatMap(restore(prepared), (p) => new Attempt(env, restore, request, p, keep, false, startedAt, trace).run())
    }
    return new Attempt(env, restore, request, prepared, keep, false, startedAt, trace).run()
  }

  readonly request = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<AgentResponse, AgentError> =>
    Effect.withFiberRuntime((fiber) => this.executeIn(fiber, request, handOver))

  readonly requestScoped = (
    request: HttpClientRequest.HttpClientRequest
  ): Effect.Effect<AgentResponse, AgentError, Scope.Scope> =>
    Effect.withFiberRuntime((fiber) => this.executeIn(fiber, request, keepInCallerScope))

  readonly requestWith = <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, AgentError | E, R> => Effect.withFiberRuntime((fiber) => this.executeIn(fiber, request, holdWhile(f)))

  readonly stats: Effect.Effect<Agent.Stats> = Effect.sync((): Agent.Stats => {
    const pool = this.#pool
    const origins: Record<string, Agent.OriginStats> = {}
    let awaiting = 0
    for (const line of pool.lines()) {
      let awaitingPermit = 0
      for (const node of line.openings.nodes()) if (node.value.awaitingPermit) awaitingPermit++
      awaiting += awaitingPermit
      origins[line.origin.key] = {
        open: line.open,
        idle: line.idle.length,
        busy: line.open - line.idle.length,
        waiting: line.waiters.size,
        awaitingPermit,
        opened: line.opened,
        reused: line.reused
      }
    }
    return {
      open: pool.open,
      idle: pool.idleCount,
      busy: pool.open - pool.idleCount,
      waiting: pool.waiting,
      awaitingPermit: awaiting,
      opened: pool.opened,
      reused: pool.reused,
      responses: pool.completed,
      origins
    }
  })

  readonly preconnect = (url: string | URL, count: number): Effect.Effect<number, AgentError> =>
    Effect.suspend(() => {
      const origin = Request.originOf(url)
      return origin instanceof AgentError ? Effect.fail(origin) : this.#pool.preconnect(origin, count)
    })

  /**
   * `execute` with the request's own URL, under the span the HttpClient
   * adapter would make when there is a tracer to see it (see
   * `TraceSettings.ofAgent`), from a step of the calling `fiber` (the entry
   * points of the `Agent` module find the service and call this in one step).
   */
  executeIn<A, E, R>(
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    request: HttpClientRequest.HttpClientRequest,
    keep: Keep<A, E, R>
  ): Effect.Effect<A, AgentError | E, R> {
    const url = Request.resolveUrl(request)
    if (url instanceof AgentError) return Effect.fail(url)
    const settings = TraceSettings.ofAgent(fiber, request)
    if (settings === undefined) return this.execute(request, url, keep, undefined)
    return traced(fiber, (sent, trace) => this.execute(sent, url, keep, trace), request, url, settings, true)
  }
}

/**
 * Sends `request` through the Agent of the fiber's context in one step: to
 * the Agent's own service directly (`executeIn`, with `keep`), to any other
 * implementation of the service through `other`.
 * @internal
 */
export const withAgent = <A, E, R>(
  tag: Context.Tag<Agent.Agent, Agent.Service>,
  request: HttpClientRequest.HttpClientRequest,
  keep: Keep<A, E, R>,
  other: (agent: Agent.Service) => Effect.Effect<A, AgentError | E, R>
): Effect.Effect<A, AgentError | E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const agent = Context.unsafeGet(fiber.currentContext, tag)
    return agent instanceof AgentService ? agent.executeIn(fiber, request, keep) : other(agent)
  })

/** What an attempt uses of the Agent. */
interface AttemptEnv {
  readonly pool: ConnectionPool
  readonly connector: Context.Tag.Service<typeof Connector>
  readonly clock: Clock.Clock
  /** Whether requests are timed for the metrics. */
  readonly metrics: boolean
}

/**
 * One try at a request, in the uninterruptible region of `execute` (or of its
 * own, for a second try) that `restore` leaves: `run` checks a connection
 * out (an idle one of the origin, else one waited for), `checked` gives it an
 * I/O turn first when it was idle a while, then `exchange` sends and hands
 * the response to `keep`, or `retryStale` decides on the one retry. A class,
 * as every object made per request (see ARCHITECTURE.md).
 */
class Attempt<A, E, R> implements RequestTiming {
  constructor(
    readonly env: AttemptEnv,
    readonly restore: Restore,
    readonly request: HttpClientRequest.HttpClientRequest,
    readonly prepared: Request.Prepared,
    readonly keep: Keep<A, E, R>,
    /** True for the one retry after a stale connection. */
    readonly retried: boolean,
    /** Clock nanos when the request was made (0 when metrics are off). */
    readonly startedAt: bigint,
    /** Its span, when it is traced. */
    readonly trace: Trace | undefined
  ) {}

  /** Starts an attempt in an uninterruptible region of its own. */
  static start<A, E, R>(
    env: AttemptEnv,
    request: HttpClientRequest.HttpClientRequest,
    prepared: Request.Prepared,
    keep: Keep<A, E, R>,
    retried: boolean,
    startedAt: bigint,
    trace: Trace | undefined
  ): Effect.Effect<A, AgentError | E, R> {
    return Effect.uninterruptibleMask((restore) =>
      new Attempt(env, restore, request, prepared, keep, retried, startedAt, trace).run()
    )
  }

  /** Records the request's duration, to its response head (`status`) or its failure. */
  ended(line: OriginLine, status: number, error: AgentError | undefined): void {
    if (!this.env.metrics) return
    const seconds = Number(this.env.clock.unsafeCurrentTimeNanos() - this.startedAt) / 1e9
    line.metrics.request(this.request.method, status, error === undefined ? "" : error.reason, seconds)
  }

  run(): Effect.Effect<A, AgentError | E, R> {
    const pool = this.env.pool
    // The common case: an idle connection, used within the last millisecond.
    const idle = pool.takeIdle(this.prepared.origin)
    if (idle !== undefined) return this.checked(idle)
    return Effect.flatMap(pool.wait(this.prepared.origin, this.restore, this), (pooled) => this.checked(pooled))
  }

  /** A connection checked out: sent on unless it broke while idle, after an I/O turn when it was idle a while. */
  checked(pooled: Pooled): Effect.Effect<A, AgentError | E, R> {
    if (pooled.connection.broken) return this.foundBroken(pooled)
    const pool = this.env.pool
    if (!pool.needsIoTurn(pooled)) return this.exchange(pooled)
    return Effect.flatMap(
      // Interrupted here, the connection goes back as it came.
      Effect.onInterrupt(this.restore(this.env.connector.yieldToIo), () => Effect.sync(() => pool.putBack(pooled))),
      () => pooled.connection.broken ? this.foundBroken(pooled) : this.exchange(pooled)
    )
  }

  /**
   * Found closed at checkout: nothing was sent, so the attempt starts over
   * (no retry) with another connection. A connection that never carried a
   * request and is already closed means the server turns us away: failing
   * rather than starting over keeps a server that always does so from
   * looping us.
   */
  foundBroken(pooled: Pooled): Effect.Effect<A, AgentError | E, R> {
    this.env.pool.putBack(pooled)
    if (pooled.connection.served === 0) {
      const error = new AgentError({
        reason: "Connect",
        origin: pooled.line.origin.key,
        detail: "closed by the server before the request was sent"
      })
      this.ended(pooled.line, 0, error)
      return Effect.fail(error)
    }
    return this.restore(
      Attempt.start(this.env, this.request, this.prepared, this.keep, this.retried, this.startedAt, this.trace)
    )
  }

  /**
   * Sends the request and waits for the head; on success `keep` takes charge
   * of the response and of giving its connection back, still inside the
   * uninterruptible region, so that an interruption arriving just then cannot
   * drop them. On failure the connection goes back (closed) at once.
   */
  exchange(pooled: Pooled): Effect.Effect<A, AgentError | E, R> {
    const conn = pooled.connection
    // Effect.exit + flatMap, not matchCauseEffect: its options would be an
    // object literal per request (see ARCHITECTURE.md).
    return Effect.flatMap(Effect.exit(this.restore(conn.send(this.prepared))), (exit) => {
      if (exit._tag === "Success") {
        if (exit.value.status === 407 && this.prepared.route.forwarded) return this.proxyRefused(pooled)
        if (conn.served > 0) this.env.pool.countReused(pooled)
        this.ended(pooled.line, exit.value.status, undefined)
        const response = new AgentResponse(this.request, exit.value, conn, conn.exchange!)
        if (this.trace !== undefined) this.traceResponse(response)
        return this.keep(new Held(response, new Lease(pooled, this.env.pool)), this.restore)
      }
      this.env.pool.checkin(pooled)
      return this.restore(this.retryStale(exit.cause, pooled.line))
    })
  }

  /**
   * A forwarded request answered 407 by the proxy: the proxy wants
   * credentials it was not given, or refused those it was. The origin saw
   * nothing; the connection, its response unread, is closed.
   */
  proxyRefused(pooled: Pooled): Effect.Effect<never, AgentError> {
    const proxy = this.prepared.route.proxy!
    pooled.connection.destroy()
    this.env.pool.checkin(pooled)
    const error = new AgentError({
      reason: "Proxy",
      origin: this.prepared.origin.key,
      detail: `proxy ${proxy.key} ${
        proxy.credentials === undefined ? "requires authentication" : "refused the credentials"
      } (407 Proxy Authentication Required)`
    })
    this.ended(pooled.line, 407, error)
    return Effect.fail(error)
  }

  /**
   * The one retry: a request that failed `Stale` (a reused connection closed
   * before any response byte) is sent once more, on a fresh connection, when
   * it may be sent twice (idempotent, its body replayable). Anything else
   * fails as it is.
   */
  retryStale(cause: Cause.Cause<AgentError>, line: OriginLine): Effect.Effect<A, AgentError | E, R> {
    if (cause._tag !== "Fail") return Effect.failCause(cause)
    const error = cause.error
    if (this.retried || !this.prepared.retryable || error.reason !== "Stale") {
      this.ended(line, 0, error)
      return Effect.fail(error)
    }
    // The server closed an idle connection: its other idle connections of
    // that age are likely dead too. The retry goes to a fresh one.
    this.env.pool.closeIdleOf(this.prepared.origin)
    return Attempt.start(this.env, this.request, this.prepared, this.keep, true, this.startedAt, this.trace)
  }

  /** What only the pool knows, and the response head, go on the request's span, which ends. */
  traceResponse(response: AgentResponse): void {
    const now = this.env.clock.unsafeCurrentTimeNanos()
    this.trace!.sentOn(response.connection.id, response.exchange.reused, this.prepared.route.proxy?.key)
    this.trace!.responded(response.status, response.head.headers, now)
  }
}

/** Builds the Agent's parts in the current scope; closing it shuts them down. @internal */
export const make = (input: Agent.Config = {}): Effect.Effect<Agent.Service, never, Scope.Scope | Connector> =>
  Effect.gen(function*() {
    const config = Config.resolve(input)
    const connector = yield* Connector
    const runtime = yield* Effect.runtime<never>()
    const clock = yield* Effect.clock
    const watchdog = new Watchdog(clock, Runtime.runFork(runtime))
    // One map of remembered field values for all the Agent's connections (see responseReader.ts).
    const parserOptions: ResponseReader.InternalParserOptions = {
      maxHeaderSize: config.maxHeaderSize,
      maxHeaderCount: config.maxHeaderCount,
      remembered: new Map()
    }
    const idleMillis = Config.millisOrInfinity(config.idleTimeout)
    const timing: Timing = {
      clock,
      headersMillis: Config.millisOrInfinity(config.headersTimeout),
      bodyMillis: Config.millisOrInfinity(config.bodyTimeout),
      watchdog,
      shutdown: { cutShort: false }
    }
    const routes = Config.hasProxy(config.proxy) ? new Routes(config.proxy) : undefined
    const fleet = Option.getOrUndefined(yield* Effect.serviceOption(ConnectionPermits))
    const opener = new Opener({
      routes,
      fleet,
      connector,
      permits: yield* Effect.makeSemaphore(config.maxConnections),
      runtime,
      watchdog,
      connectMillis: Config.millisOrInfinity(config.connectTimeout),
      makeConnection: (origin, transport) =>
        new Connection(origin, transport, idleMillis, config.maxRequestsPerConnection, parserOptions, timing)
    })
    const pool = new ConnectionPool(
      {
        maxConnectionsPerOrigin: config.maxConnectionsPerOrigin,
        maxConnections: config.maxConnections,
        persist: config.persist,
        idleMillis,
        maxAgeMillis: Config.millisOrInfinity(config.maxConnectionAge),
        connectTimeout: config.connectTimeout,
        queueMillis: Config.millisOrInfinity(config.queueTimeout),
        queueTimeout: config.queueTimeout,
        shutdownTimeout: config.shutdownTimeout
      },
      clock,
      opener,
      watchdog,
      new AgentMetrics(config.metrics, routes)
    )
    // When the Agent's scope closes: the pool shuts down (and waits for the
    // requests in flight, up to shutdownTimeout), then what is left of the
    // connections' scopes closes, cutting short the exchanges still under
    // way. Two finalizers (run in reverse order), so that the second runs
    // even if the first fails.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Effect.sync(() => {
          timing.shutdown.cutShort = true
        }),
        opener.closeScopes
      )
    )
    yield* Effect.addFinalizer(() => Effect.ensuring(pool.shutdown(), watchdog.shutdown()))
    return new AgentService(config, pool, connector, clock, config.metrics, routes)
  })

/** The body as text, failing with the Agent's own error. @internal */
export const bodyText = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string, AgentError> =>
  response instanceof AgentResponse
    ? Effect.map(response.bytes, decode)
    : Effect.orDie(response.text)

/** `Agent.request`, in one step of the caller's fiber. @internal */
export const requestVia = (
  tag: Context.Tag<Agent.Agent, Agent.Service>,
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError, Agent.Agent> =>
  withAgent(tag, request, handOver, (agent) => agent.request(request))

/** `Agent.requestScoped`, in one step of the caller's fiber. @internal */
export const requestScopedVia = (
  tag: Context.Tag<Agent.Agent, Agent.Service>,
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, AgentError, Agent.Agent | Scope.Scope> =>
  withAgent(tag, request, keepInCallerScope, (agent) => agent.requestScoped(request))

/** `Agent.requestWith`, in one step of the caller's fiber. @internal */
export const requestWithVia = <A, E, R>(
  tag: Context.Tag<Agent.Agent, Agent.Service>,
  request: HttpClientRequest.HttpClientRequest,
  f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
): Effect.Effect<A, AgentError | E, Agent.Agent | R> =>
  withAgent(tag, request, holdWhile(f), (agent) => agent.requestWith(request, f))
