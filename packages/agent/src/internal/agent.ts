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
  /** Its connection openings waiting for a global permit (ones the Pool starts on its own). */
  permitWaiting: number
  /** Global permits its requests took for openings the Pool has not started yet. */
  reserved: number
  /** Its connection openings under way. */
  opening: number
  /** Its open connections. */
  openCount: number
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

    /**
     * The least recently used idle connection that no request of its origin
     * is waiting for: an idle connection whose origin has a waiter is about to
     * be taken by it.
     */
    const evictable = (): Connection | undefined => {
      for (const [conn, owner] of idle) if (owner.waiting === 0) return conn
      return undefined
    }

    /** Takes a global permit if one is free or an idle connection can make room; false at the cap. */
    const takeFreePermit: Effect.Effect<boolean> = Effect.suspend(() => {
      if (permitsHeld < config.maxConnections) {
        permitsHeld++
        return Effect.as(permits.take(1), true)
      }
      // At the cap: the least recently used idle connection makes room.
      const victim = evictable()
      if (victim !== undefined) return Effect.zipRight(evict(victim), takeFreePermit)
      return Effect.succeed(false)
    })

    /** The permit of an opening the Pool started: reserved by a request, free, or waited for. */
    const acquirePermit = (owner: OriginPool): Effect.Effect<void> => Effect.suspend(() => {
      if (owner.reserved > 0) {
        // A request of this origin took the permit before asking the Pool.
        owner.reserved--
        return Effect.void
      }
      return Effect.flatMap(takeFreePermit, (taken) => taken ? Effect.void : waitForPermit(owner))
    })

    // Only openings the Pool starts beyond the requests' reservations, and
    // persist: false openings, wait here.
    const waitForPermit = (owner: OriginPool): Effect.Effect<void> => Effect.suspend(() => {
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
      return Effect.zipRight(permits.release(1), Effect.sync(wakeForPermit))
    })

    // Requests that need a new connection while the global cap is reached wait
    // here, oldest first, for a permit or for an idle connection of their
    // origin. They wait here and not inside Pool.get, whose wait for an
    // opening cannot be interrupted and is not woken by a returned connection.
    interface CapWaiter {
      readonly owner: OriginPool
      resume: (() => void) | undefined
      /** A connection is being closed to free a permit for it. */
      promised: boolean
    }
    const capWaiters = new Set<CapWaiter>()

    const wake = (waiter: CapWaiter): boolean => {
      const resume = waiter.resume
      if (resume === undefined) return false
      waiter.resume = undefined
      resume()
      return true
    }
    /** The oldest waiter of an origin with no connection at all, not yet helped: it goes first. */
    const starving = (): CapWaiter | undefined => {
      for (const waiter of capWaiters) {
        if (!waiter.promised && waiter.owner.openCount === 0 && waiter.owner.opening === 0) return waiter
      }
      return undefined
    }
    const wakeForPermit = (): void => {
      const first = starving()
      if (first !== undefined && wake(first)) return
      for (const waiter of capWaiters) if (wake(waiter)) return
    }
    const wakeForIdle = (owner: OriginPool): void => {
      for (const waiter of capWaiters) if (waiter.owner === owner && wake(waiter)) return
    }
    const waitAtCap = (waiter: CapWaiter): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        waiter.resume = () => resume(Effect.void)
        return Effect.sync(() => {
          waiter.resume = undefined
        })
      })

    /** Takes a global permit for an opening the Pool is about to start, if one is free or can be freed. */
    const reserve = (owner: OriginPool): Effect.Effect<boolean> =>
      Effect.map(takeFreePermit, (taken) => {
        if (taken) owner.reserved++
        return taken
      })

    /** Gives back reservations no opening will use (the Pool handed over a returned connection instead). */
    const unreserve = (owner: OriginPool): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (owner.reserved === 0 || owner.opening > 0) return Effect.void
        const unused = owner.reserved
        owner.reserved = 0
        permitsHeld -= unused
        return Effect.zipRight(permits.release(unused), Effect.sync(wakeForPermit))
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
          owner.opening++
          let opening = true
          const opened = () => {
            if (opening) {
              opening = false
              owner.opening--
            }
          }
          yield* Effect.addFinalizer(() => Effect.sync(opened))
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
          opened()
          owner.openCount++
          counters.open++
          counters.opened++
          owner.users++
          yield* Effect.addFinalizer(() =>
            Effect.zipRight(
              Effect.sync(() => {
                counters.open--
                owner.openCount--
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
            reserved: 0,
            opening: 0,
            openCount: 0,
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
    //
    // An opening needs a global permit: the request takes it first (or waits
    // for one at the cap), so that the opening the Pool starts never waits.
    const poolGet = (owner: OriginPool): Effect.Effect<Connection, AgentError, Scope.Scope> =>
      Effect.suspend(() => {
        if (owner.idleCount > 0) return Pool.get(owner.pool)
        let waiter: CapWaiter | undefined = undefined
        const loop: Effect.Effect<Connection, AgentError, Scope.Scope> = Effect.suspend(() => {
          if (owner.idleCount > 0) return Pool.get(owner.pool)
          if (waiter !== undefined) waiter.promised = false
          // No barging: with requests already waiting at the cap, a newcomer
          // queues behind them.
          const mayReserve = waiter !== undefined || capWaiters.size === 0
          return Effect.flatMap(mayReserve ? reserve(owner) : Effect.succeed(false), (reserved) => {
            if (reserved) {
              return Effect.ensuring(
                Effect.flatMap(Effect.forkDaemon(Pool.get(owner.pool)), Fiber.join),
                unreserve(owner)
              )
            }
            if (waiter === undefined) {
              waiter = { owner, resume: undefined, promised: false }
              capWaiters.add(waiter)
            }
            return Effect.zipRight(waitAtCap(waiter), loop)
          })
        })
        return Effect.ensuring(
          loop,
          Effect.sync(() => {
            if (waiter !== undefined) capWaiters.delete(waiter)
          })
        )
      })

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

    /**
     * At the global cap, whether a connection this origin releases should be
     * closed to give its permit away: to an origin that has no connection at
     * all (so none starves) when this one has another, or to anyone waiting
     * when no request of this origin wants it. An origin's own waiters keep its connections otherwise:
     * closing and reopening at every release would churn.
     */
    const mustMakeRoom = (owner: OriginPool): boolean => {
      if (capWaiters.size === 0 && globalWaiting === 0) return false
      // Only an origin with another connection gives one away: one that gave
      // its last would be the next to starve.
      const first = starving()
      if (first !== undefined && first.owner !== owner && owner.openCount > 1) {
        first.promised = true
        return true
      }
      return owner.waiting === 0 || (owner.permitWaiting > 0 && owner.idleCount === 0 && !hasCapWaiter(owner))
    }
    const hasCapWaiter = (owner: OriginPool): boolean => {
      for (const waiter of capWaiters) if (waiter.owner === owner) return true
      return false
    }

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
        if (!reusable || closed || mustMakeRoom(owner)) {
          conn.destroy()
          return invalidate(owner.pool, conn)
        }
        return Effect.zipRight(markIdle(conn, owner), Effect.sync(() => wakeForIdle(owner)))
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
