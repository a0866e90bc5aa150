import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import { AgentError } from "../AgentError.js"
import type { Connector, Transport } from "../Connector.js"
import type { Origin } from "../Origin.js"
import { type Connection, type Deadline, type Watchdog } from "./connection.js"
import { List, ListNode } from "./list.js"
import { asCloseable, ConnectionScope } from "./scope.js"

/**
 * A request of an origin waiting for a connection. `granted` is set when a
 * connection was handed to it: if its fiber is interrupted before it takes
 * over, the connection goes back to the pool (see `KeyedPool.wait`). A class,
 * not an object literal, as every object made per request (see `Head` in http1.ts).
 */
class Waiter {
  resume: ((effect: Effect.Effect<Connection, AgentError>) => void) | undefined = undefined
  /** The outcome, when it came before the waiting fiber registered `resume`. */
  pending: Effect.Effect<Connection, AgentError> | undefined = undefined
  granted: Connection | undefined = undefined
  /** Its place in the origin's line; removed once served, failed or abandoned. */
  readonly node = new ListNode<Waiter>(this)
  constructor(
    readonly site: OriginPool,
    /** Arrival order over all origins (fairness at the global cap). */
    readonly since: number
  ) {}
}

/** One origin's connections and the requests waiting for one of them. @internal */
export class OriginPool {
  /** Idle connections, most recently used last (taken last in, first out). */
  readonly idle: Array<Connection> = []
  /** Requests waiting for a connection, oldest first. */
  readonly waiters = new List<Waiter>()
  /** Open connections, idle and busy. */
  open = 0
  /** Connections being opened for its waiters (not counting openings called off). */
  opening = 0
  /**
   * The openings under way: one nobody waits for any more is called off
   * (interrupted; a connection it still makes is closed at once).
   */
  readonly openings = new List<Opening>()
  /** Waiting in the cap queue for a global permit. */
  queued = false
  constructor(readonly origin: Origin) {}
}

/**
 * A connection being opened: its fiber, and its connect deadline, which the
 * Agent's Watchdog watches. A deadline past interrupts the fiber; for it an
 * interruption is then a connect timeout.
 */
class Opening implements Deadline {
  timedOut = false
  /** Its place in the origin's openings. */
  readonly node = new ListNode<Opening>(this)
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  constructor(readonly fiber: Fiber.RuntimeFiber<void>, readonly deadline: number) {}
  expire(): void {
    this.timedOut = true
    // Lands once the connect is under way (the permit is taken uninterruptibly).
    this.fiber.unsafeInterruptAsFork(FiberId.none)
  }
}

/**
 * What a connection's scope gives back when it closes, in one finalizer: its
 * transport, destroyed, then its permit of the global Semaphore (even if the
 * destroy throws).
 */
class Resources {
  transport: Transport | undefined = undefined
  constructor(readonly releasePermit: Effect.Effect<void>) {}
  readonly finalize = (): Effect.Effect<void> => {
    const transport = this.transport
    this.transport = undefined
    if (transport !== undefined) {
      try {
        transport.destroy()
      } catch (defect) {
        return Effect.zipRight(this.releasePermit, Effect.die(defect))
      }
    }
    return this.releasePermit
  }
}

/** What the pool needs from the Agent that owns it. @internal */
export interface PoolEnv {
  readonly config: Agent.ResolvedConfig
  readonly connector: Context.Tag.Service<typeof Connector>
  readonly clock: Clock.Clock
  /** One permit per open connection, held from connect to close. */
  readonly permits: Effect.Semaphore
  /** The Agent's runtime: the pool's fibers run in it (a connection's opening, with its scope added). */
  readonly runtime: Runtime.Runtime<never>
  /** Makes the Connection for a transport. */
  readonly makeConnection: (origin: Origin, transport: Transport) => Connection
  /** Times out connects (as it does the connections' header and body phases). */
  readonly watchdog: Watchdog
}

/**
 * Requests an origin's last connection serves before it may be given away to
 * an origin with none: with more origins than the global cap, each gets turns
 * rather than a fresh connection per request (measured with the demo: 6
 * origins, cap 3, 32 in flight: every request on a new connection without it).
 */
const lastConnectionTurn = 8

const firstOf = <A>(set: Set<A>): A | undefined => {
  for (const item of set) return item
  return undefined
}

/**
 * The Agent's pool of connections keyed by origin: at most
 * `maxConnectionsPerOrigin` per origin, at most `maxConnections` over all of
 * them (an Effect `Semaphore`, one permit per open connection), requests served
 * first come, first served per origin, idle connections closed after
 * `idleTimeout` and never reused past `maxConnectionAge`.
 *
 * Each connection is a scoped resource: it lives in a scope of its own, which
 * the Agent closes with its own if the pool has not (acquire = permit +
 * connect, release = close + permit back).
 * Getting an idle connection and giving one back are synchronous and O(1);
 * only waiting and opening are effects.
 *
 * At the cap, an origin that needs a connection queues for a permit (origins
 * with no connection at all first). A permit is freed by closing the least
 * recently used idle connection no request waits for, or by a released
 * connection whose origin can spare it.
 *
 * @internal
 */
export class KeyedPool {
  readonly #env: PoolEnv
  readonly #runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  readonly #maxPerOrigin: number
  readonly #maxConnections: number
  readonly #maxAgeMillis: number
  readonly #connectMillis: number
  readonly #origins = new Map<string, OriginPool>()
  /** Every idle connection, least recently used first. */
  readonly #idle = new List<Connection>()
  /** Origins waiting for a global permit that have no connection at all: served first. */
  readonly #starving = new Set<OriginPool>()
  /** Other origins waiting for a global permit, oldest first. */
  readonly #capQueue = new Set<OriginPool>()
  /** Idle timers and openings: interrupted when the pool shuts down. */
  readonly #fibers = new List<Fiber.RuntimeFiber<unknown, unknown>>()
  /** The scopes of the connections open or being opened (see `#newScope`). */
  readonly #scopes = new List<ConnectionScope>()
  #scopesClosed = false
  /** Gives a connection's permit back. */
  readonly #releasePermit: Effect.Effect<void>
  #permitsHeld = 0
  #closed = false
  #arrivals = 0

  /** Open connections. */
  open = 0
  /** Connections opened since start. */
  opened = 0
  /** Requests waiting for a connection. */
  waiting = 0

  constructor(env: PoolEnv) {
    this.#env = env
    this.#runFork = Runtime.runFork(env.runtime)
    this.#releasePermit = Effect.asVoid(env.permits.release(1))
    this.#maxPerOrigin = env.config.maxConnectionsPerOrigin
    this.#maxConnections = env.config.maxConnections
    this.#connectMillis = Duration.isFinite(env.config.connectTimeout)
      ? Duration.toMillis(env.config.connectTimeout)
      : Infinity
    this.#maxAgeMillis = Duration.isFinite(env.config.maxConnectionAge)
      ? Duration.toMillis(env.config.maxConnectionAge)
      : Infinity
  }

  /** Idle connections now. */
  get idleCount(): number {
    return this.#idle.size
  }

  // --- checkout ----------------------------------------------------------------

  /** An idle connection of the origin, marked busy, when one is free and no request of the origin waits. */
  takeIdle(origin: Origin): Connection | undefined {
    const site = this.#origins.get(origin.key)
    return site === undefined || site.waiters.size > 0 ? undefined : this.#takeIdle(site)
  }

  /**
   * Waits in line for a connection of the origin: the first one released or
   * opened for this request, marked busy.
   *
   * Must run uninterruptibly; `restore` makes the wait interruptible. A
   * connection handed over just as the fiber is interrupted goes back.
   */
  wait(
    origin: Origin,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<Connection, AgentError> {
    if (this.#closed) return Effect.fail(closedError(origin))
    const waiter = new Waiter(this.#siteOf(origin), ++this.#arrivals)
    waiter.site.waiters.append(waiter.node)
    this.waiting++
    return Effect.catchAllCause(
      restore(Effect.async<Connection, AgentError>((resume) => {
        if (waiter.pending !== undefined) return resume(waiter.pending)
        waiter.resume = resume
        this.#dispatch(waiter.site)
      })),
      (cause) => {
        this.#abandon(waiter)
        return Effect.failCause(cause)
      }
    )
  }

  /** Gives back a connection taken with `takeIdle` or `wait` whose exchange never started (interrupted before it). */
  putBack(conn: Connection): void {
    this.#giveBack(conn, conn.site!, true)
  }

  /**
   * Gives back a connection after its exchange: to the next request of its
   * origin, to the idle set, or closed when it is not reusable, too old, or
   * its permit is owed to another origin at the cap.
   */
  release(conn: Connection, reusable: boolean): void {
    // In use until now: whoever takes it next within a millisecond needs no
    // I/O turn first. (One put back unused keeps its time: its turn may
    // have been cut short.)
    conn.releasedAtNanos = this.#env.clock.unsafeCurrentTimeNanos()
    this.#giveBack(conn, conn.site!, reusable)
  }

  /** Closes the idle connections of an origin (after one turned out stale). */
  closeIdleOf(origin: Origin): void {
    const site = this.#origins.get(origin.key)
    if (site === undefined || site.idle.length === 0) return
    for (const conn of site.idle.slice()) this.#close(conn)
    this.#afterClose(site)
  }

  /**
   * Closes the scopes of the connections still open (the Agent's scope is
   * closing, after `shutdown`): the connections close, their permits come back.
   * Every one of them, even when closing one fails (a transport whose destroy
   * throws): the failures are reported together afterwards, as a parent scope
   * does for its children. A scope made after this is closed at once.
   */
  readonly closeScopes: Effect.Effect<void> = Effect.suspend(() => {
    this.#scopesClosed = true
    const nodes = this.#scopes.nodes()
    this.#scopes.clear()
    return Effect.flatMap(
      Effect.forEach(nodes, (node) => Effect.exit(node.value.close(Exit.void))),
      (exits) => Option.getOrElse(Exit.all(exits), () => Exit.void)
    ).pipe(Effect.asVoid)
  })

  /**
   * A scope for a connection, in `#scopes` until it closes. Its own, not a
   * child of the Agent's: `Scope.fork` would put and take a finalizer per
   * connection in the Agent's scope's Map, which keeps each connection's
   * whole graph from minor GCs (see List); and a `ConnectionScope`, not
   * `Scope.make()` (see there). Closed at once after `closeScopes`, as a
   * child of a closed scope would be.
   */
  #newScope(): ListNode<ConnectionScope> {
    const scope = new ConnectionScope()
    if (!this.#scopesClosed) return this.#scopes.push(scope)
    // No finalizer yet: closing it runs nothing; what is added later runs at once.
    scope.unsafeClose(Exit.void)
    return new ListNode(scope)
  }

  /** Shuts the pool: waiters fail, idle connections close, timers and openings stop. */
  shutdown(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.#closed = true
      for (const site of this.#origins.values()) {
        for (const node of site.waiters.nodes()) this.#fail(node.value, closedError(site.origin))
        for (const conn of site.idle.slice()) this.#close(conn)
      }
      for (const site of this.#starving) this.#dequeue(site)
      for (const site of this.#capQueue) this.#dequeue(site)
      return Fiber.interruptAll(this.#fibers.nodes().map((node) => node.value))
    })
  }

  // --- internals ---------------------------------------------------------------

  #siteOf(origin: Origin): OriginPool {
    let site = this.#origins.get(origin.key)
    if (site === undefined) {
      site = new OriginPool(origin)
      this.#origins.set(origin.key, site)
    }
    return site
  }

  #forgetIfUnused(site: OriginPool): void {
    if (site.open + site.opening + site.waiters.size > 0 || site.queued) return
    if (this.#origins.get(site.origin.key) === site) this.#origins.delete(site.origin.key)
  }

  #tooOld(conn: Connection): boolean {
    return this.#maxAgeMillis !== Infinity &&
      this.#env.clock.unsafeCurrentTimeMillis() - conn.openedAt >= this.#maxAgeMillis
  }

  /** The most recently used idle connection of the origin that is still good, marked busy. */
  #takeIdle(site: OriginPool): Connection | undefined {
    let dropped = false
    let conn: Connection | undefined
    while ((conn = site.idle.pop()) !== undefined) {
      this.#idle.remove(conn.idleNode)
      if (conn.broken || this.#tooOld(conn)) {
        this.#close(conn)
        dropped = true
        continue
      }
      conn.busy = true
      break
    }
    if (dropped) this.#permitFreed()
    return conn
  }

  #giveBack(conn: Connection, site: OriginPool, reusable: boolean): void {
    if (!reusable || conn.broken || this.#closed || this.#tooOld(conn)) return this.#drop(conn, site)
    if (!this.#env.config.persist) {
      // Only a connection that carried nothing comes back here: it may serve a waiter.
      return conn.served === 0 && site.waiters.size > 0 ? this.#handOff(conn, site) : this.#drop(conn, site)
    }
    if (this.#mustMakeRoom(conn, site)) return this.#drop(conn, site)
    this.#handOff(conn, site)
  }

  #handOff(conn: Connection, site: OriginPool): void {
    const waiter = site.waiters.first
    if (waiter !== undefined) return this.#grant(waiter, conn)
    conn.busy = false
    this.#markIdle(conn, site)
  }

  #grant(waiter: Waiter, conn: Connection): void {
    waiter.site.waiters.remove(waiter.node)
    this.waiting--
    conn.busy = true
    waiter.granted = conn
    this.#dequeueIfServed(waiter.site)
    this.#settle(waiter, Effect.succeed(conn))
  }

  #fail(waiter: Waiter, error: AgentError): void {
    waiter.site.waiters.remove(waiter.node)
    this.waiting--
    this.#dequeueIfServed(waiter.site)
    this.#settle(waiter, Effect.fail(error))
  }

  #settle(waiter: Waiter, outcome: Effect.Effect<Connection, AgentError>): void {
    if (waiter.resume !== undefined) waiter.resume(outcome)
    else waiter.pending = outcome
  }

  /** The waiter's fiber was interrupted or failed: leave the line, or give back what it was handed. */
  #abandon(waiter: Waiter): void {
    const site = waiter.site
    if (waiter.granted !== undefined) {
      const conn = waiter.granted
      waiter.granted = undefined
      return this.putBack(conn)
    }
    if (site.waiters.remove(waiter.node)) this.waiting--
    // Openings no request waits for any more are called off (their permits come back when they end).
    while (site.openings.size > site.waiters.size) {
      const newest = site.openings.last!
      site.openings.remove(newest.node)
      this.#env.watchdog.unwatch(newest)
      site.opening--
      newest.fiber.unsafeInterruptAsFork(FiberId.none)
    }
    this.#dequeueIfServed(site)
    this.#forgetIfUnused(site)
  }

  /** Serves the origin's waiters: idle connections first, then new ones within both caps. */
  #dispatch(site: OriginPool): void {
    while (site.waiters.size > 0) {
      const conn = this.#takeIdle(site)
      if (conn !== undefined) {
        this.#grant(site.waiters.first!, conn)
        continue
      }
      if (site.waiters.size <= site.opening) return
      if (site.open + site.opening >= this.#maxPerOrigin) return
      if (!this.#takePermit()) return this.#enqueueAtCap(site)
      this.#openFor(site)
    }
  }

  /** Takes a global permit if one is free, or frees one by closing an idle connection nobody waits for. */
  #takePermit(): boolean {
    if (this.#permitsHeld < this.#maxConnections) {
      this.#permitsHeld++
      return true
    }
    for (let node = this.#idle.firstNode; node !== undefined; node = node.next) {
      const conn = node.value
      const owner = conn.site!
      // An idle connection of an origin with waiters is about to be handed to one of them.
      if (owner.waiters.size > 0) continue
      this.#close(conn)
      this.#forgetIfUnused(owner)
      this.#permitsHeld++
      return true
    }
    return false
  }

  #enqueueAtCap(site: OriginPool): void {
    if (site.queued) return
    site.queued = true
    if (site.open + site.opening === 0) this.#starving.add(site)
    else this.#capQueue.add(site)
  }

  #dequeue(site: OriginPool): void {
    site.queued = false
    this.#starving.delete(site)
    this.#capQueue.delete(site)
  }

  /** An origin whose waiters no longer need a new connection leaves the cap queue. */
  #dequeueIfServed(site: OriginPool): void {
    if (site.queued && site.waiters.size <= site.opening) this.#dequeue(site)
  }

  /** A permit came free: it goes to the origins waiting at the cap, those with no connection first. */
  #permitFreed(): void {
    while (this.#permitsHeld < this.#maxConnections) {
      const site = firstOf(this.#starving) ?? firstOf(this.#capQueue)
      if (site === undefined) return
      this.#dequeue(site)
      this.#dispatch(site)
      this.#forgetIfUnused(site)
    }
  }

  /**
   * At the cap, whether a connection its origin gives back should rather be
   * closed to give its permit away: when no request of this origin wants it;
   * to an origin with no connection at all when this one has another; and
   * even this origin's last one when that origin has waited longer than this
   * origin's next request (so no origin starves, whatever the caps). An
   * origin's own waiters keep its connections otherwise: closing and
   * reopening at every release would churn.
   */
  #mustMakeRoom(conn: Connection, site: OriginPool): boolean {
    if (this.#starving.size === 0 && this.#capQueue.size === 0) return false
    const next = site.waiters.first
    if (next === undefined) return true
    const starving = firstOf(this.#starving)
    if (starving === undefined || starving === site) return false
    if (site.open > 1) return true
    const theirs = starving.waiters.first
    return conn.served >= lastConnectionTurn && theirs !== undefined && theirs.since < next.since
  }

  /** Closes a connection and frees its permit; the caller decides who gets the permit. */
  #close(conn: Connection): void {
    const site = conn.site!
    if (this.#idle.remove(conn.idleNode)) {
      const at = site.idle.indexOf(conn)
      if (at >= 0) site.idle.splice(at, 1)
    }
    if (conn.scope === undefined) return
    const scope = conn.scope
    conn.scope = undefined
    this.#scopes.remove(scope)
    // A transport whose destroy throws (a buggy Connector) still leaves the
    // books right: the throw goes on to the caller once they are.
    try {
      conn.destroy()
    } finally {
      site.open--
      this.open--
      this.#permitsHeld--
      if (site.queued && site.open + site.opening === 0 && this.#capQueue.delete(site)) this.#starving.add(site)
      // Releases the Semaphore permit and stops the connection's watchdog. Not
      // tracked: shutdown must not interrupt a scope halfway through closing.
      this.#runFork(scope.value.close(Exit.void))
    }
  }

  #afterClose(site: OriginPool): void {
    this.#permitFreed()
    this.#dispatch(site)
    this.#forgetIfUnused(site)
  }

  #drop(conn: Connection, site: OriginPool): void {
    try {
      this.#close(conn)
    } finally {
      this.#afterClose(site)
    }
  }

  #fork(effect: Effect.Effect<void>): Fiber.RuntimeFiber<void> {
    return this.#track(this.#runFork(effect))
  }

  /** `#fork` with the scope in the fiber's context from the start. */
  #forkIn(scope: ConnectionScope, effect: Effect.Effect<void, never, Scope.Scope>): Fiber.RuntimeFiber<void> {
    const runtime = this.#env.runtime
    return this.#track(Runtime.runFork(Runtime.make({
      context: Context.add(runtime.context, Scope.Scope, asCloseable(scope)),
      runtimeFlags: runtime.runtimeFlags,
      fiberRefs: runtime.fiberRefs
    }))(effect))
  }

  #track(fiber: Fiber.RuntimeFiber<void>): Fiber.RuntimeFiber<void> {
    if (fiber.unsafePoll() !== null) return fiber
    const node = this.#fibers.push(fiber)
    fiber.addObserver(() => this.#fibers.remove(node))
    return fiber
  }

  // --- opening -------------------------------------------------------------------

  /** Opens a connection for the origin's waiters; the caller holds a permit for it. */
  #openFor(site: OriginPool): void {
    site.opening++
    const env = this.#env
    const scope = this.#newScope()
    // The connector runs in the connection's scope: the opening fiber starts
    // with it in its context (Scope.extend would copy the fiber's FiberRefs
    // twice per connection, setting and restoring the context).
    const transport = env.connector.connect(site.origin, {})
    // The resource: a permit of the global Semaphore, then the transport.
    // The connector registers what it creates in the connection's scope
    // before it waits, so an interrupted connect (a request that gives up,
    // shutdown) leaves nothing open, whenever the interruption lands. The
    // pool's own finalizer, added first so run last, destroys the transport
    // (again: a connector may have forgotten) and gives the permit back.
    //
    // The permit is taken uninterruptibly: the accounting above guarantees
    // one is free or about to be (a connection closing for it), and a take
    // that resumes just as the fiber is interrupted would lose the permit.
    // Undefined inside when the opening completes before the fork returns.
    let opening: Opening | undefined = undefined
    const fiber = this.#forkIn(
      scope.value,
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          Effect.exit(Effect.flatMap(env.permits.take(1), () => {
            const resources = new Resources(this.#releasePermit)
            const connect = Effect.map(restore(transport), (t) => {
              resources.transport = t
              return env.makeConnection(site.origin, t)
            })
            // Its scope closed already (the Agent shut down): the permit goes back, nothing opens.
            const closed = scope.value.addNow(resources.finalize)
            return closed === undefined ? connect : Effect.zipRight(closed, Effect.interrupt)
          })),
          (exit) => {
            if (Exit.isSuccess(exit)) {
              this.#opened(site, exit.value, scope, opening)
              return Effect.void
            }
            this.#scopes.remove(scope)
            return Effect.zipRight(
              scope.value.close(exit),
              Effect.sync(() => this.#openFailed(site, exit, opening))
            )
          }
        )
      )
    )
    if (fiber.unsafePoll() !== null) return
    opening = new Opening(fiber, this.#env.clock.unsafeCurrentTimeMillis() + this.#connectMillis)
    site.openings.append(opening.node)
    if (opening.deadline !== Infinity) this.#env.watchdog.watch(opening, opening.deadline)
  }

  /** An opening ended, connected or not: no deadline to watch. True when the deadline stopped it. */
  #openingEnded(opening: Opening | undefined): boolean {
    if (opening === undefined) return false
    this.#env.watchdog.unwatch(opening)
    return opening.timedOut
  }

  #opened(site: OriginPool, conn: Connection, scope: ListNode<ConnectionScope>, opening: Opening | undefined): void {
    // Not in `openings` any more: it was called off, too late to stop the connect.
    const calledOff = opening !== undefined && !site.openings.remove(opening.node)
    if (!calledOff) site.opening--
    // Connected before the timer's interruption could land: the connection counts.
    this.#openingEnded(opening)
    site.open++
    this.open++
    this.opened++
    conn.site = site
    conn.scope = scope
    conn.openedAt = this.#env.clock.unsafeCurrentTimeMillis()
    conn.onIdleBreak = () => {
      if (conn.idleNode.list !== undefined) this.#drop(conn, site)
    }
    if (calledOff) return this.#drop(conn, site)
    if (conn.broken && !this.#closed) {
      // Closed by the server as soon as it was open: a failed connect, or
      // the waiters would make the pool reconnect forever.
      this.#close(conn)
      this.#failWaiters(site, new AgentError({ reason: "Connect", origin: site.origin.key, detail: "closed by the server as soon as it was opened" }))
      return this.#afterClose(site)
    }
    this.#giveBack(conn, site, true)
  }

  /**
   * A connect failed: the requests no other opening or connection will serve
   * learn it now (with no connection left, the origin is unreachable for all
   * of them; else the first in line), rather than each trying in turn.
   */
  #failWaiters(site: OriginPool, error: AgentError): void {
    let toFail = site.open === 0 ? site.waiters.size - site.opening : 1
    for (const node of site.waiters.nodes()) {
      if (toFail-- <= 0) break
      this.#fail(node.value, error)
    }
  }

  /** An opening failed, or was called off. */
  #openFailed(site: OriginPool, exit: Exit.Exit<unknown, AgentError>, opening: Opening | undefined): void {
    if (opening === undefined || site.openings.remove(opening.node)) site.opening--
    this.#permitsHeld--
    if (this.#openingEnded(opening) && !this.#closed) {
      this.#failWaiters(
        site,
        new AgentError({
          reason: "Timeout",
          phase: "connect",
          origin: site.origin.key,
          detail: `not connected within ${Duration.format(this.#env.config.connectTimeout)}`
        })
      )
    } else if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
      // Interrupted only: called off (nobody waits for it), or the Agent is shutting down.
      const failure = Cause.failureOption(exit.cause)
      // A defect (a connector that threw) fails the waiters too, or the pool would reconnect forever.
      const error = failure._tag === "Some" ? failure.value : new AgentError({
        reason: "Connect",
        origin: site.origin.key,
        detail: "the connector failed",
        cause: Cause.squash(exit.cause)
      })
      this.#failWaiters(site, error)
    }
    if (this.#closed) return this.#forgetIfUnused(site)
    this.#afterClose(site)
  }

  // --- idle timers ---------------------------------------------------------------

  // One timer fiber per idle stretch, not per request: it sleeps until the
  // deadline and re-arms itself if the connection was used meanwhile. A
  // deadline earlier than the one it sleeps towards starts a new generation.
  #markIdle(conn: Connection, site: OriginPool): void {
    conn.idleSince = this.#env.clock.unsafeCurrentTimeMillis()
    site.idle.push(conn)
    this.#idle.append(conn.idleNode)
    const deadline = conn.idleSince + conn.idleTimeoutMillis
    if (conn.timerWakeAt <= deadline) return
    const generation = ++conn.timerGeneration
    conn.timerWakeAt = deadline
    this.#fork(this.#watchIdle(conn, generation))
  }

  #watchIdle(conn: Connection, generation: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (generation !== conn.timerGeneration) return Effect.void
      if (conn.idleNode.list === undefined) {
        conn.timerWakeAt = Infinity
        return Effect.void
      }
      const deadline = conn.idleSince + conn.idleTimeoutMillis
      const remaining = deadline - this.#env.clock.unsafeCurrentTimeMillis()
      if (remaining <= 0) {
        conn.timerWakeAt = Infinity
        this.#drop(conn, conn.site!)
        return Effect.void
      }
      conn.timerWakeAt = deadline
      return Effect.zipRight(Effect.sleep(Duration.millis(remaining)), this.#watchIdle(conn, generation))
    })
  }

  /** True once shut down. */
  get closed(): boolean {
    return this.#closed
  }
}

const closedError = (origin: Origin) =>
  new AgentError({ reason: "Closed", origin: origin.key, detail: "the Agent was shut down" })
