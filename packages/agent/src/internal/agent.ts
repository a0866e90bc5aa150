import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Pool from "effect/Pool"
import * as RcMap from "effect/RcMap"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import { AgentError } from "../AgentError.js"
import { Connector } from "../Connector.js"
import type { Origin } from "../Origin.js"
import { Connection } from "./connection.js"
import { FifoGate } from "./gate.js"
import * as Request from "./request.js"
import { AgentResponse } from "./response.js"

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
 * A pooled connection turned out closed at checkout: the attempt starts over
 * (it is no retry: nothing was sent). Retrying inside the same scope would
 * still hold the dead connection and make the pool open two.
 */
class BrokenAtCheckout {
  readonly _tag = "BrokenAtCheckout"
}
const brokenAtCheckout = new BrokenAtCheckout()

// Pool.invalidate is typed as needing a Scope it does not use.
const invalidate = (pool: Pool.Pool<Connection, AgentError>, conn: Connection): Effect.Effect<void> =>
  Effect.scoped(Pool.invalidate(pool, conn))

/** A response and the scope that holds its connection until it is closed. @internal */
export interface Held {
  readonly response: AgentResponse
  readonly scope: Scope.CloseableScope
}

/** The service with the entry point the HttpClient adapter uses. @internal */
export interface InternalService extends Agent.Service {
  readonly execute: <A, R>(
    request: HttpClientRequest.HttpClientRequest,
    url: URL,
    keep: (held: Held) => Effect.Effect<A, never, R>
  ) => Effect.Effect<A, AgentError, R>
}

/** @internal */
export const isInternalService = (agent: Agent.Service): agent is InternalService => "execute" in agent

/** Connections and waiters of one origin: lives in the RcMap while in use. */
interface OriginPool {
  readonly origin: Origin
  readonly gate: FifoGate
  /** Requests of this origin waiting for a connection, at the gate or in the pool. */
  waiting: number
  /** Its connections in the Agent's idle set. */
  idleCount: number
  /** Its connection openings waiting for a global permit. */
  permitWaiting: number
  /** Requests in flight and open connections that hold this origin's lease. */
  users: number
  /** Holds one RcMap reference while `users` > 0. */
  lease: Scope.CloseableScope | undefined
  pool: Pool.Pool<Connection, AgentError>
}

/** @internal */
export const make = (input: Agent.Config = {}): Effect.Effect<Agent.Service, never, Scope.Scope | Connector> =>
  Effect.gen(function*() {
    const config = resolveConfig(input)
    const connector = yield* Connector
    const agentScope = yield* Effect.scope
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const clock = yield* Effect.clock
    const idleMillis = Duration.toMillis(config.idleTimeout)
    const millisOrInfinity = (d: Duration.Duration) => Duration.isFinite(d) ? Duration.toMillis(d) : Infinity
    const parserOptions = { maxHeaderSize: config.maxHeaderSize, maxHeaderCount: config.maxHeaderCount }

    // One permit per open connection, held from connect to close.
    const permits = yield* Effect.makeSemaphore(config.maxConnections)
    let permitsHeld = 0
    let globalWaiting = 0
    // Idle connections in least-recently-used order (a Map iterates in insertion order).
    const idle = new Map<Connection, OriginPool>()
    const counters = { open: 0, waiting: 0, opened: 0, reused: 0, requests: 0 }
    let closed = false

    const setIdle = (conn: Connection, owner: OriginPool): void => {
      if (idle.has(conn)) idle.delete(conn) // to the end: most recently used
      else owner.idleCount++
      idle.set(conn, owner)
    }
    const clearIdle = (conn: Connection): void => {
      const owner = idle.get(conn)
      if (owner === undefined) return
      owner.idleCount--
      idle.delete(conn)
    }

    const evict = (conn: Connection): Effect.Effect<void> =>
      Effect.suspend(() => {
        const owner = idle.get(conn)
        if (owner === undefined) return Effect.void
        clearIdle(conn)
        conn.destroy()
        return invalidate(owner.pool, conn)
      })

    const acquirePermit = (owner: OriginPool): Effect.Effect<void> => Effect.suspend(() => {
      if (permitsHeld < config.maxConnections) {
        permitsHeld++
        return permits.take(1)
      }
      // At the cap: the least recently used idle connection makes room.
      for (const conn of idle.keys()) return Effect.zipRight(evict(conn), acquirePermit(owner))
      globalWaiting++
      owner.permitWaiting++
      return Effect.uninterruptibleMask((restore) =>
        Effect.ensuring(
          Effect.zipRight(restore(permits.take(1)), Effect.sync(() => permitsHeld++)),
          Effect.sync(() => {
            globalWaiting--
            owner.permitWaiting--
          })
        )
      )
    })
    const releasePermit = Effect.suspend(() => {
      permitsHeld--
      return permits.release(1)
    })

    // One timer fiber per idle stretch, not per request: it sleeps until the
    // deadline and re-arms itself if the connection was used meanwhile. A
    // deadline earlier than the one it sleeps towards starts a new generation.
    const watchIdle = (conn: Connection, generation: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (generation !== conn.timerGeneration) return Effect.void
        if (!idle.has(conn)) {
          conn.timerWakeAt = Infinity
          return Effect.void
        }
        const deadline = conn.idleSince + conn.idleTimeoutMillis
        const remaining = deadline - clock.unsafeCurrentTimeMillis()
        if (remaining <= 0) {
          conn.timerWakeAt = Infinity
          return evict(conn)
        }
        conn.timerWakeAt = deadline
        return Effect.zipRight(Effect.sleep(Duration.millis(remaining)), watchIdle(conn, generation))
      })

    const markIdle = (conn: Connection, owner: OriginPool): Effect.Effect<void> =>
      Effect.suspend(() => {
        conn.busy = false
        conn.idleSince = clock.unsafeCurrentTimeMillis()
        conn.releasedAtNanos = clock.unsafeCurrentTimeNanos()
        setIdle(conn, owner)
        if (conn.timerWakeAt <= conn.idleSince + conn.idleTimeoutMillis) return Effect.void
        const generation = ++conn.timerGeneration
        conn.timerWakeAt = conn.idleSince + conn.idleTimeoutMillis
        // Forked from finalizers and uninterruptible regions: the timer itself must stay interruptible.
        return Effect.asVoid(Effect.forkIn(Effect.interruptible(watchIdle(conn, generation)), agentScope))
      })

    /** Opens one connection: the scoped Resource the pools hold. */
    const openConnection = (owner: OriginPool, pooled: boolean): Effect.Effect<Connection, AgentError, Scope.Scope> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          yield* restore(acquirePermit(owner))
          yield* Effect.addFinalizer(() => releasePermit)
          const connect = connector.connect(owner.origin, {})
          const transport = yield* restore(
            Duration.isFinite(config.connectTimeout)
              ? Effect.timeoutFail(connect, {
                duration: config.connectTimeout,
                onTimeout: () =>
                  new AgentError({
                    reason: "Timeout",
                    phase: "connect",
                    origin: owner.origin.key,
                    detail: `not connected within ${Duration.format(config.connectTimeout)}`
                  })
              })
              : connect
          )
          const connectionScope = yield* Effect.scope
          const conn = new Connection(owner.origin, transport, idleMillis, parserOptions, {
            clock,
            headersMillis: millisOrInfinity(config.headersTimeout),
            bodyMillis: millisOrInfinity(config.bodyTimeout),
            fork: (watchdog) => Effect.asVoid(Effect.forkIn(Effect.interruptible(watchdog), connectionScope)),
            run: (effect) => void runFork(effect)
          })
          counters.open++
          counters.opened++
          owner.users++
          yield* Effect.addFinalizer(() =>
            Effect.zipRight(
              Effect.sync(() => {
                counters.open--
                clearIdle(conn)
                conn.destroy()
              }),
              leaveOrigin(owner)
            )
          )
          if (pooled) {
            conn.onIdleBreak = () => runFork(evict(conn))
            // A connection the pool opened but nobody took yet is idle too.
            yield* markIdle(conn, owner)
          }
          return conn
        })
      )

    const pools = yield* RcMap.make({
      // The Pool's own fibers inherit the interruptibility of whoever builds it.
      lookup: (origin: Origin) =>
        Effect.interruptible(Effect.gen(function*() {
          const owner: OriginPool = {
            origin,
            gate: new FifoGate(config.maxConnectionsPerOrigin),
            waiting: 0,
            users: 0,
            idleCount: 0,
            permitWaiting: 0,
            lease: undefined,
            pool: undefined as unknown as Pool.Pool<Connection, AgentError>
          }
          owner.pool = yield* Pool.makeWithTTL({
            acquire: openConnection(owner, true),
            min: 0,
            max: config.maxConnectionsPerOrigin,
            timeToLive: config.maxConnectionAge,
            timeToLiveStrategy: "creation"
          })
          return owner
        })),
      idleTimeToLive: config.idleTimeout
    })

    // The RcMap owns each origin's pool; the Agent holds one reference per
    // origin for as long as a request or an open connection uses it, so that a
    // request finds its pool with a Map lookup rather than an RcMap.get. The
    // RcMap's idle time-to-live starts when the last user leaves.
    const leases = new Map<string, OriginPool>()

    const enterOrigin = (origin: Origin): Effect.Effect<OriginPool> =>
      Effect.suspend(() => {
        const known = leases.get(origin.key)
        if (known !== undefined) {
          known.users++
          return Effect.succeed(known)
        }
        return Effect.flatMap(Scope.make(), (lease) =>
          Effect.map(Scope.extend(RcMap.get(pools, origin), lease), (owner) => {
            const raced = leases.get(origin.key)
            if (raced !== undefined) {
              // Another request leased it meanwhile: keep theirs.
              runFork(Scope.close(lease, Exit.void))
              raced.users++
              return raced
            }
            owner.lease = lease
            owner.users++
            leases.set(origin.key, owner)
            return owner
          }))
      })

    const leaveOrigin = (owner: OriginPool): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (--owner.users > 0 || owner.lease === undefined) return Effect.void
        const lease = owner.lease
        owner.lease = undefined
        if (leases.get(owner.origin.key) === owner) leases.delete(owner.origin.key)
        return Scope.close(lease, Exit.void)
      })

    // Finalizers go straight onto the request's scope: Effect.addFinalizer
    // diffs and patches all FiberRefs on each call, which costs ~10 µs here.

    /** Takes a connection: FIFO per origin, then the pool. Everything it holds is released by `scope`. */
    const checkout = (
      origin: Origin,
      scope: Scope.Scope
    ): Effect.Effect<Connection, AgentError | BrokenAtCheckout, Scope.Scope> =>
      // A chain of flatMaps, not Effect.gen: this runs once per request and a
      // generator per call showed up in profiles.
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          // Uninterruptible, so that a lease taken is a lease recorded; the
          // RcMap lookup makes its Pool's fibers interruptible itself.
          enterOrigin(origin),
          (owner) => {
            counters.waiting++
            owner.waiting++
            const waited = Effect.sync(() => {
              counters.waiting--
              owner.waiting--
            })
            const connect = config.persist
              ? takePooled(owner)
              : Effect.map(openConnection(owner, false), (conn) => {
                conn.busy = true
                return conn
              })
            return Effect.flatMap(
              Effect.zipRight(
                Scope.addFinalizer(scope, leaveOrigin(owner)),
                Effect.onInterrupt(restore(owner.gate.take), () => waited)
              ),
              () =>
                Effect.flatMap(
                  Scope.addFinalizer(scope, Effect.sync(() => owner.gate.release())),
                  () =>
                    Effect.flatMap(
                      Effect.ensuring(restore(connect), waited),
                      (conn) => Effect.as(Scope.addFinalizer(scope, checkin(conn, owner)), conn)
                    )
                )
            )
          }
        )
      )

    // Pool.get waits for a connection being opened without letting itself be
    // interrupted (until the connect ends, or a global permit frees up). With
    // no idle connection to take, it runs in a fiber of its own and the request
    // waits for that fiber, interruptibly; a connection it gets after the
    // request gave up goes straight back to the pool (its scope is closed).
    const poolGet = (owner: OriginPool): Effect.Effect<Connection, AgentError, Scope.Scope> =>
      owner.idleCount > 0
        ? Pool.get(owner.pool)
        : Effect.flatMap(Effect.forkDaemon(Pool.get(owner.pool)), Fiber.join)

    const takePooled = (owner: OriginPool): Effect.Effect<Connection, AgentError | BrokenAtCheckout, Scope.Scope> =>
      Effect.flatMap(poolGet(owner), (conn) => {
        clearIdle(conn)
        conn.busy = true
        if (conn.broken) return Effect.zipRight(invalidate(owner.pool, conn), Effect.fail(brokenAtCheckout))
        // A connection idle since an earlier event-loop turn may have a FIN or
        // stray bytes waiting: let pending I/O run before trusting it (undici's
        // check). One released within the last millisecond skips the turn.
        if (clock.unsafeCurrentTimeNanos() - conn.releasedAtNanos >= yieldAfterIdleNanos) {
          return Effect.flatMap(
            // Interrupted here, the connection goes back as it came: idle.
            Effect.onInterrupt(
              connector.yieldToIo,
              () => conn.broken ? invalidate(owner.pool, conn) : markIdle(conn, owner)
            ),
            () => {
              if (!conn.broken) return Effect.succeed(conn)
              return Effect.zipRight(invalidate(owner.pool, conn), Effect.fail(brokenAtCheckout))
            }
          )
        }
        return Effect.succeed(conn)
      })

    /** Ends an exchange: back to idle when safe, otherwise closed. */
    const checkin = (conn: Connection, owner: OriginPool): Effect.Effect<void> =>
      Effect.suspend(() => {
        const complete = conn.responseComplete
        const reusable = conn.finish(idleMillis)
        if (complete) counters.requests++
        if (!config.persist) {
          conn.destroy()
          return Effect.void
        }
        if (
          !reusable || closed ||
          // A request elsewhere waits for a global permit and no request of
          // this origin waits for a connection: close it to make room. Also
          // when this origin's own opening waits for a permit: the Pool does
          // not hand a returned connection to a request that waits for that
          // opening, so the permit is what frees it.
          (globalWaiting > 0 && (owner.waiting === 0 || owner.permitWaiting > 0))
        ) {
          conn.destroy()
          return invalidate(owner.pool, conn)
        }
        return markIdle(conn, owner)
      })

    /**
     * One try. On success `keep` takes charge of the response and the scope
     * that holds its connection, still inside the uninterruptible region: an
     * interruption arriving just then cannot drop them.
     */
    const attempt = <A, R>(
      request: HttpClientRequest.HttpClientRequest,
      prepared: Request.Prepared,
      retried: boolean,
      keep: (held: Held) => Effect.Effect<A, never, R>
    ): Effect.Effect<A, AgentError, R> =>
      Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.flatMap(
          Effect.exit(restore(
            Effect.flatMap(Scope.extend(checkout(prepared.origin, scope), scope), (conn) =>
              Effect.map(
                conn.send(prepared),
                (head) => new AgentResponse(request, head, conn, conn.exchange!, Effect.void)
              ))
          )),
          (exit) => {
            if (Exit.isSuccess(exit)) {
              if (exit.value.connection.served > 0) counters.reused++
              return keep({ response: exit.value, scope })
            }
            return Effect.zipRight(
              Scope.close(scope, exit),
              restore(retryOrFail(request, prepared, retried, exit, keep))
            )
          }
        )))

    const retryOrFail = <A, R>(
      request: HttpClientRequest.HttpClientRequest,
      prepared: Request.Prepared,
      retried: boolean,
      exit: Exit.Exit<AgentResponse, AgentError | BrokenAtCheckout>,
      keep: (held: Held) => Effect.Effect<A, never, R>
    ): Effect.Effect<A, AgentError, R> => {
      if (Exit.isSuccess(exit) || exit.cause._tag !== "Fail") return exit as Exit.Exit<never, AgentError>
      const error = exit.cause.error
      if (error instanceof BrokenAtCheckout) return attempt(request, prepared, retried, keep)
      if (!retried && prepared.retryable && error.reason === "Stale") {
        // The server closed an idle connection: its other idle connections of
        // that age are likely dead too. The one retry goes to a fresh one.
        return Effect.zipRight(evictIdleOf(prepared.origin), attempt(request, prepared, true, keep))
      }
      return Effect.fail(error)
    }

    const evictIdleOf = (origin: Origin): Effect.Effect<void> =>
      Effect.suspend(() => {
        const stale: Array<Connection> = []
        for (const conn of idle.keys()) if (conn.origin.key === origin.key) stale.push(conn)
        return Effect.forEach(stale, evict, { discard: true })
      })

    const execute = <A, R>(
      request: HttpClientRequest.HttpClientRequest,
      url: URL,
      keep: (held: Held) => Effect.Effect<A, never, R>
    ): Effect.Effect<A, AgentError, R> =>
      Effect.suspend(() => {
        if (closed) {
          return Effect.fail(new AgentError({ reason: "Closed", origin: "", detail: "the Agent was shut down" }))
        }
        return Effect.flatMap(
          Request.prepare(request, url, config.persist),
          (prepared) => attempt(request, prepared, false, keep)
        )
      })

    // The connection is held until the caller's scope closes.
    const keepInCallerScope = (held: Held): Effect.Effect<AgentResponse, never, Scope.Scope> =>
      Effect.flatMap(Effect.scope, (outer) =>
        Effect.as(Scope.addFinalizerExit(outer, (end) => Scope.close(held.scope, end)), held.response))

    const request = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<AgentResponse, AgentError, Scope.Scope> =>
      Effect.suspend(() => {
        const url = Request.resolveUrl(request)
        if (url instanceof AgentError) return Effect.fail(url)
        return execute(request, url, keepInCallerScope)
      })

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
      })
    )

    const stats = Effect.sync((): Agent.Stats => ({
      open: counters.open,
      idle: idle.size,
      busy: counters.open - idle.size,
      waiting: counters.waiting,
      opened: counters.opened,
      reused: counters.reused,
      requests: counters.requests
    }))

    return { config, request, stats, execute } satisfies InternalService
  })


const textDecoder = new TextDecoder()

/** The body as text, failing with the Agent's own error. @internal */
export const bodyText = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string, AgentError> =>
  response instanceof AgentResponse
    ? Effect.map(response.bytes, (bytes) => textDecoder.decode(bytes))
    : Effect.orDie(response.text)
