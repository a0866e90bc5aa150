import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import type * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { globalValue } from "effect/GlobalValue"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import { AgentError } from "../AgentError.js"
import { Connector } from "../Connector.js"
import { Connection, type Timing, Watchdog } from "./connection.js"
import { KeyedPool } from "./pool.js"
import * as Request from "./request.js"
import { AgentResponse, decode } from "./response.js"

/** @internal */
export const resolveConfig = (config: Agent.Config = {}): Agent.ResolvedConfig => {
  const positive = (name: string, value: number | undefined, fallback: number) => {
    const n = value ?? fallback
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${n}`)
    return n
  }
  return {
    maxConnectionsPerOrigin: positive("maxConnectionsPerOrigin", config.maxConnectionsPerOrigin, 2),
    maxConnections: positive("maxConnections", config.maxConnections, 100),
    idleTimeout: Duration.decode(config.idleTimeout ?? "4 seconds"),
    persist: config.persist ?? true,
    connectTimeout: Duration.decode(config.connectTimeout ?? "10 seconds"),
    headersTimeout: Duration.decode(config.headersTimeout ?? "60 seconds"),
    bodyTimeout: Duration.decode(config.bodyTimeout ?? "60 seconds"),
    maxHeaderSize: positive("maxHeaderSize", config.maxHeaderSize, 16384),
    maxHeaderCount: positive("maxHeaderCount", config.maxHeaderCount, 100),
    maxConnectionAge: Duration.decode(config.maxConnectionAge ?? "5 minutes")
  }
}

/** Idle time (ns) after which a connection gets one I/O turn before reuse. */
const yieldAfterIdleNanos = 1_000_000n

/**
 * Runs a connection's release from a callback no fiber runs (a microtask, an
 * abort listener, a finalization registry). Only a transport whose destroy
 * throws can make it throw; there is nobody to fail there, and the pool's
 * books are right regardless (see the pool's `#close`). Inside an Effect the
 * same throw is a defect of that Effect. @internal
 */
export const releaseOutsideFiber = (release: () => void): void => {
  try {
    release()
  } catch {
    // The connection is closed as far as the Agent is concerned.
  }
}

/** Frees the connection of a response garbage collected with its body unread and still arriving. */
const unreadResponses = globalValue(
  Symbol.for("@keepalive/agent/unreadResponses"),
  () => new FinalizationRegistry<() => void>(releaseOutsideFiber)
)

/**
 * A response and what gives its connection back: synchronous and idempotent,
 * so that it can run from a transport callback without a fiber. A class, as
 * every object made per request (see `Head` in http1.ts). @internal
 */
export class Held {
  constructor(readonly response: AgentResponse, readonly lease: Lease) {}

  /** Gives the connection back (once; later calls do nothing). */
  get release(): () => void {
    return this.lease.release
  }

  /**
   * Gives the connection back as soon as the whole response (or its failure)
   * is here, whoever still reads it: the bytes stay with the response's
   * exchange, which its connection leaves alone once it moved on. When it is
   * here already, as a small body that came with its head, the bytes are taken
   * into the response (`keepBody`) and the connection goes back now: true
   * then, and whoever holds it has nothing left to free. Else the transport
   * callback that completes the body frees it, unless the holder released it
   * before.
   */
  freeWhenComplete(): boolean {
    const exchange = this.response.exchange
    if (!exchange.settled) {
      const release = this.release
      exchange.onSettled = () => releaseOutsideFiber(release)
      return false
    }
    this.response.keepBody()
    this.release()
    return true
  }

  /**
   * Hands the response over with nothing for its holder to free, as
   * @effect/platform's `HttpClient` does. The connection goes back once the
   * body is all here (whoever still reads it); before that, when a reader read
   * its end or gave up on it (interrupted, a stream or `forEachChunk` ended
   * early), when `signal` aborts (`HttpClient.withScope`), or when the
   * response is garbage collected.
   */
  handOver(signal?: AbortSignal): AgentResponse {
    const { release, response } = this
    if (this.freeWhenComplete()) return response
    response.free = release
    this.lease.freeWhenCollected(response)
    if (signal !== undefined) {
      // Its scope may have closed while the request was on its way.
      if (signal.aborted) release()
      else signal.addEventListener("abort", () => releaseOutsideFiber(release), { once: true })
    }
    return response
  }
}

/**
 * Takes charge of a response without a scope: it frees its connection itself
 * (`Agent.request`, and the HttpClient adapter outside `HttpClient.withScope`).
 * @internal
 */
export const handOver = (held: Held): Effect.Effect<AgentResponse> => Effect.succeed(held.handOver())

/**
 * Gives a connection back, once. What a caller's scope keeps until it closes
 * refers to this and the connection only: a closure made in `attempt` would
 * keep the request and everything it was prepared into alive just as long.
 * @internal
 */
export class Lease {
  #conn: Connection | undefined
  #watched = false
  constructor(conn: Connection, readonly checkin: (conn: Connection) => void) {
    this.#conn = conn
  }
  readonly release = (): void => {
    const conn = this.#conn
    if (conn === undefined) return
    this.#conn = undefined
    // Unwatched once freed: V8's scavenger keeps a registered response alive
    // (and promotes it, with its exchange and body) until it is unregistered.
    if (this.#watched) unreadResponses.unregister(this)
    this.checkin(conn)
  }

  /** Frees the connection when `response` is garbage collected first. */
  freeWhenCollected(response: AgentResponse): void {
    this.#watched = true
    unreadResponses.register(response, this.release, this)
  }
}

/**
 * Takes charge of a response and of giving its connection back. It runs
 * uninterruptibly (so that nothing is dropped between the response arriving
 * and it taking charge); `restore` makes what it runs interruptible again.
 * @internal
 */
export type Keep<A, E, R> = (
  held: Held,
  restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
) => Effect.Effect<A, E, R>

/** The service with the entry point the HttpClient adapter uses. @internal */
export interface InternalService extends Agent.Service {
  readonly execute: <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    url: URL,
    keep: Keep<A, E, R>
  ) => Effect.Effect<A, AgentError | E, R>
}

/** @internal */
export const isInternalService = (agent: Agent.Service): agent is InternalService => "execute" in agent

/** @internal */
export const make = (input: Agent.Config = {}): Effect.Effect<Agent.Service, never, Scope.Scope | Connector> =>
  Effect.gen(function*() {
    const config = resolveConfig(input)
    const connector = yield* Connector
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const clock = yield* Effect.clock
    const millisOrInfinity = (d: Duration.Duration) => Duration.isFinite(d) ? Duration.toMillis(d) : Infinity
    const parserOptions = { maxHeaderSize: config.maxHeaderSize, maxHeaderCount: config.maxHeaderCount }
    // The configured idle timeout; a server's Keep-Alive hint may shorten it per connection.
    const idleMillis = Duration.toMillis(config.idleTimeout)
    const timing: Timing = {
      clock,
      headersMillis: millisOrInfinity(config.headersTimeout),
      bodyMillis: millisOrInfinity(config.bodyTimeout),
      watchdog: new Watchdog(clock, runFork)
    }

    const pool = new KeyedPool({
      config,
      connector,
      clock,
      permits: yield* Effect.makeSemaphore(config.maxConnections),
      runtime,
      makeConnection: (origin, transport) => new Connection(origin, transport, idleMillis, parserOptions, timing),
      watchdog: timing.watchdog
    })
    const counters = { reused: 0, requests: 0 }

    /** Ends an exchange: the connection goes back to the pool, or is closed when not reusable. */
    const checkin = (conn: Connection): void => {
      const complete = conn.responseComplete
      const reusable = conn.finish(idleMillis)
      if (complete) counters.requests++
      pool.release(conn, reusable)
    }

    /**
     * Whether a connection must first let pending I/O run: one idle since an
     * earlier event-loop turn may have a FIN or stray bytes waiting (undici's
     * check). One released within the last millisecond, or never used, is trusted.
     */
    const mustYield = (conn: Connection): boolean =>
      conn.served > 0 && clock.unsafeCurrentTimeNanos() - conn.releasedAtNanos >= yieldAfterIdleNanos

    /**
     * One try. On success `keep` takes charge of the response and of giving
     * its connection back, still inside the uninterruptible region: an
     * interruption arriving just then cannot drop them.
     */
    const attempt = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      prepared: Request.Prepared,
      retried: boolean,
      keep: Keep<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> =>
      Effect.uninterruptibleMask((restore) => attemptMasked(restore, request, prepared, retried, keep))

    /** `attempt`, in an uninterruptible region `restore` leaves. */
    const attemptMasked = <A, E, R>(
      restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>,
      request: HttpClientRequest.HttpClientRequest,
      prepared: Request.Prepared,
      retried: boolean,
      keep: Keep<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> => {
      const exchange = (conn: Connection): Effect.Effect<A, AgentError | E, R> =>
        // Effect.exit + flatMap, not matchCauseEffect: its options would be an
        // object literal per request (see `Head` in http1.ts).
        Effect.flatMap(Effect.exit(restore(conn.send(prepared))), (exit) => {
          if (exit._tag === "Success") {
            if (conn.served > 0) counters.reused++
            const lease = new Lease(conn, checkin)
            return keep(new Held(new AgentResponse(request, exit.value, conn, conn.exchange!), lease), restore)
          }
          checkin(conn)
          return restore(retryOrFail(request, prepared, retried, exit.cause, keep))
        })
      // Found closed at checkout: nothing was sent, so the attempt starts
      // over (no retry) with another connection. A connection that never
      // carried a request and is already closed means the server turns us
      // away: failing rather than starting over keeps a server that always
      // does so from looping us.
      const broken = (conn: Connection): Effect.Effect<A, AgentError | E, R> => {
        pool.putBack(conn)
        if (conn.served === 0) {
          return Effect.fail(
            new AgentError({ reason: "Connect", origin: conn.origin.key, detail: "closed by the server before the request was sent" })
          )
        }
        return restore(attempt(request, prepared, retried, keep))
      }
      const checked = (conn: Connection): Effect.Effect<A, AgentError | E, R> => {
        if (conn.broken) return broken(conn)
        if (!mustYield(conn)) return exchange(conn)
        return Effect.flatMap(
          // Interrupted here, the connection goes back as it came.
          Effect.onInterrupt(restore(connector.yieldToIo), () => Effect.sync(() => pool.putBack(conn))),
          () => conn.broken ? broken(conn) : exchange(conn)
        )
      }
      // The common case: an idle connection, used within the last millisecond.
      const idle = pool.takeIdle(prepared.origin)
      if (idle !== undefined) return checked(idle)
      return Effect.flatMap(pool.wait(prepared.origin, restore), checked)
    }

    const retryOrFail = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      prepared: Request.Prepared,
      retried: boolean,
      cause: Cause.Cause<AgentError>,
      keep: Keep<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> => {
      if (cause._tag !== "Fail") return Effect.failCause(cause)
      const error = cause.error
      if (!retried && prepared.retryable && error.reason === "Stale") {
        // The server closed an idle connection: its other idle connections of
        // that age are likely dead too. The one retry goes to a fresh one.
        pool.closeIdleOf(prepared.origin)
        return attempt(request, prepared, true, keep)
      }
      return Effect.fail(error)
    }

    const execute = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      url: URL,
      keep: Keep<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> =>
      // The mask's function runs when the effect does: it prepares the request then.
      Effect.uninterruptibleMask((restore) => {
        if (pool.closed) {
          return Effect.fail(new AgentError({ reason: "Closed", origin: "", detail: "the Agent was shut down" }))
        }
        const prepared = Request.prepare(request, url, config.persist)
        if (prepared instanceof AgentError) return Effect.fail(prepared)
        if (Effect.isEffect(prepared)) return Effect.flatMap(restore(prepared), (p) => attemptMasked(restore, request, p, false, keep))
        return attemptMasked(restore, request, prepared, false, keep)
      })

    // The connection is held until the caller's scope closes or the body is
    // all here, whichever comes first. When the whole response is here already
    // (a small body arrives with its head) its bytes are kept, the connection
    // goes back at once, and the caller's scope gets no finalizer. Scope.addFinalizer, not Effect.addFinalizer: the
    // latter diffs and patches all FiberRefs (~10 µs).
    const keepInCallerScope = (held: Held): Effect.Effect<AgentResponse, never, Scope.Scope> =>
      held.freeWhenComplete()
        ? Effect.succeed(held.response)
        : Effect.flatMap(Effect.scope, (outer) => Effect.as(Scope.addFinalizer(outer, Effect.sync(held.release)), held.response))

    /** `execute` with the request's own URL (resolving it is pure: done now; execute defers the rest). */
    const executeAtUrl = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      keep: Keep<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> => {
      const url = Request.resolveUrl(request)
      return url instanceof AgentError ? Effect.fail(url) : execute(request, url, keep)
    }

    const request = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<AgentResponse, AgentError> =>
      executeAtUrl(request, handOver)

    const requestScoped = (
      request: HttpClientRequest.HttpClientRequest
    ): Effect.Effect<AgentResponse, AgentError, Scope.Scope> => executeAtUrl(request, keepInCallerScope)

    const requestWith = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      f: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, AgentError | E, R> =>
      executeAtUrl(request, (held, restore) => {
        // `f` is called once the region is interruptible again: an interruption
        // already pending stops it before even its synchronous part runs.
        const run = restore(Effect.suspend(() => f(held.response)))
        // All of the response here already: `f` runs with nothing left to give
        // back. Else the connection goes back when `f` ends or the body is all
        // here, whichever comes first.
        if (held.freeWhenComplete()) return run
        return Effect.flatMap(Effect.exit(run), (exit) => {
          held.release()
          return exit
        })
      })

    // When the Agent's scope closes: the pool shuts down, then what is left of
    // the connections' scopes closes. Two finalizers (run in reverse order),
    // so that the second runs even if the first fails.
    yield* Effect.addFinalizer(() => pool.closeScopes)
    yield* Effect.addFinalizer(() => Effect.ensuring(pool.shutdown(), timing.watchdog.shutdown()))

    const stats = Effect.sync((): Agent.Stats => ({
      open: pool.open,
      idle: pool.idleCount,
      busy: pool.open - pool.idleCount,
      waiting: pool.waiting,
      opened: pool.opened,
      reused: counters.reused,
      requests: counters.requests
    }))

    return { config, request, requestScoped, requestWith, stats, execute } satisfies InternalService
  })

/** The body as text, failing with the Agent's own error. @internal */
export const bodyText = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string, AgentError> =>
  response instanceof AgentResponse
    ? Effect.map(response.bytes, decode)
    : Effect.orDie(response.text)
