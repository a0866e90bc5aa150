import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { AgentError } from "../AgentError.js"
import type { Origin } from "../Origin.js"
import { decideCheckin, isRetired, type PoolState } from "./checkin.js"
import type { CloseReason, Connection } from "./connection.js"
import { GlobalCap } from "./globalCap.js"
import { List } from "./list.js"
import type { AgentMetrics } from "./metrics.js"
import type { Keeper, Opener, Opening, OpeningOutcome } from "./opening.js"
import type { Holder, PermitOwner } from "./permits.js"
import { type IdleCloser, OriginLine, Pooled, type QueueTimeout, type RequestTiming, Waiter } from "./originLine.js"
import type { Watchdog } from "./watchdog.js"

/** Idle time (ns) after which a connection gets one I/O turn before reuse. */
const yieldAfterIdleNanos = 1_000_000n

/** `releasedAtNanos` of a connection handed from the request that ended on it straight to a waiting one. */
const handedOver = -1n

/** How the pool bounds and ages its connections. @internal */
export interface PoolOptions {
  readonly maxConnectionsPerOrigin: number
  readonly maxConnections: number
  /** False: a fresh connection per request, closed after it. */
  readonly persist: boolean
  /** The configured idle timeout; a server's Keep-Alive hint may shorten it per connection. */
  readonly idleMillis: number
  /** Age (Clock millis) past which a connection is not reused; Infinity: none. */
  readonly maxAgeMillis: number
  /** For the message of a connect timeout. */
  readonly connectTimeout: Duration.Duration
  /** Longest wait for a connection (Clock millis); Infinity: none. */
  readonly queueMillis: number
  /** For the message of a queue timeout. */
  readonly queueTimeout: Duration.Duration
  /** How long shutdown waits for the requests in flight. */
  readonly shutdownTimeout: Duration.Duration
}

/**
 * The share of `maxConnectionAge` by which a connection's own limit may fall
 * short of it: connections opened together then retire apart.
 */
const ageSpread = 0.1
/** The golden ratio's fraction: successive multiples spread evenly over [0, 1). */
const goldenFraction = 0.6180339887498949

/**
 * The Agent's pool of connections keyed by origin: at most
 * `maxConnectionsPerOrigin` per origin, at most `maxConnections` over all of
 * them, requests served first come, first served per origin, idle connections
 * closed after `idleTimeout` and never reused past `maxConnectionAge`.
 *
 * **Why it is ours, not Effect's `Pool`/`KeyedPool`.** Measured against an
 * Agent built on per-origin Effect `Pool`s in an `RcMap`:
 * - a `Pool`'s finalizers run only when the pool shuts down: a connection the
 *   server closed cannot give its permit back when it closes;
 * - a `KeyedPool` never forgets a key: every origin ever visited keeps its
 *   pool (here an origin's record goes with its last connection and waiter);
 * - its time-to-live is a sweep over every item, not a FIFO line per origin
 *   with an idle deadline per connection; its wait for an opening can be
 *   neither interrupted nor woken by a connection given back;
 * - a get and release, with the scopes around them, cost a large share of a
 *   whole request (the figures are in ARCHITECTURE.md).
 * The shape stays Effect's: each connection a scoped resource (see
 * opening.ts), the global cap an Effect `Semaphore`, every timer on `Clock`.
 *
 * Its parts: an `OriginLine` per origin (idle stack, FIFO line of waiters,
 * openings), the `GlobalCap`'s books and fairness, the check-in decision
 * (`decideCheckin`, checkin.ts), the `Opener` (a connection as a scoped
 * resource), and the Agent's `Watchdog` for idle deadlines.
 * Taking an idle connection and giving one back are synchronous and O(1);
 * only waiting and opening are effects.
 *
 * @internal
 */
export class ConnectionPool
  implements IdleCloser, QueueTimeout, OpeningOutcome<OriginLine>, PermitOwner<Pooled>, PoolState
{
  readonly #options: PoolOptions
  readonly #clock: Clock.Clock
  readonly #opener: Opener
  readonly #watchdog: Watchdog
  readonly #metrics: AgentMetrics
  /** Resumes the shutdown waiting for the connections in use, once none is left. */
  #drained: (() => void) | undefined = undefined
  readonly #cap: GlobalCap
  readonly #lines = new Map<string, OriginLine>()
  /** Every idle connection, least recently used first. */
  readonly #idle = new List<Pooled>()
  #closed = false

  #open = 0
  #opened = 0
  #waiting = 0
  #completed = 0
  #reused = 0

  constructor(options: PoolOptions, clock: Clock.Clock, opener: Opener, watchdog: Watchdog, metrics: AgentMetrics) {
    this.#options = options
    this.#clock = clock
    this.#opener = opener
    this.#watchdog = watchdog
    this.#metrics = metrics
    this.#cap = new GlobalCap(options.maxConnections)
    opener.permitOwner = this
  }

  /** Open connections. */
  get open(): number {
    return this.#open
  }

  /** Connections opened since start. */
  get opened(): number {
    return this.#opened
  }

  /** Requests waiting for a connection. */
  get waiting(): number {
    return this.#waiting
  }

  /** Responses read to their end. */
  get completed(): number {
    return this.#completed
  }

  /** Requests sent on a connection that had served one before (told by the Agent's attempt). */
  get reused(): number {
    return this.#reused
  }

  /** Idle connections now. */
  get idleCount(): number {
    return this.#idle.size
  }

  /** The lines of the origins the pool holds anything of now. */
  lines(): IterableIterator<OriginLine> {
    return this.#lines.values()
  }

  /** A request goes out on a connection that served one before. */
  countReused(pooled: Pooled): void {
    this.#reused++
    pooled.line.reused++
    pooled.line.metrics.reused()
  }

  /** True once shut down. */
  get closed(): boolean {
    return this.#closed
  }

  /** False: a fresh connection per request. */
  get persist(): boolean {
    return this.#options.persist
  }

  // --- checkout ----------------------------------------------------------------

  /** An idle connection of the origin, taken, when one is free and no request of the origin waits. */
  takeIdle(origin: Origin): Pooled | undefined {
    const line = this.#lines.get(origin.key)
    return line === undefined || line.waiters.size > 0 ? undefined : this.#takeIdle(line)
  }

  /**
   * Waits in line for a connection of the origin: the first one released or
   * opened for this request.
   *
   * Must run uninterruptibly; `restore` makes the wait interruptible. A
   * connection handed over just as the fiber is interrupted goes back.
   */
  wait(
    origin: Origin,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
    request: RequestTiming
  ): Effect.Effect<Pooled, AgentError> {
    if (this.#closed) return Effect.fail(closedError(origin))
    const queueMillis = this.#options.queueMillis
    const deadline = queueMillis === Infinity ? Infinity : this.#clock.unsafeCurrentTimeMillis() + queueMillis
    const queuedAt = this.#metrics.enabled || request.trace !== undefined ? this.#clock.unsafeCurrentTimeMillis() : -1
    const waiter = new Waiter(this.#lineOf(origin), queuedAt, deadline, this, request)
    waiter.line.waiters.append(waiter.node)
    this.#waiting++
    waiter.line.metrics.waiting(1)
    if (deadline !== Infinity) this.#watchdog.watch(waiter, deadline)
    return Effect.catchAllCause(
      restore(Effect.async<Pooled, AgentError>((resume) => {
        if (waiter.pending !== undefined) return resume(waiter.pending)
        waiter.resume = resume
        this.#dispatch(waiter.line)
      })),
      (cause) => {
        this.#abandon(waiter)
        return Effect.failCause(cause)
      }
    )
  }

  /**
   * Whether a connection must first let pending I/O run: one idle since an
   * earlier event-loop turn may have a FIN or stray bytes waiting. One
   * released within the last millisecond, or never used, is trusted.
   */
  needsIoTurn(pooled: Pooled): boolean {
    // One handed straight from a request to the next was never idle, however
    // long the runtime took to resume the next.
    return pooled.connection.served > 0 && pooled.releasedAtNanos !== handedOver &&
      this.#clock.unsafeCurrentTimeNanos() - pooled.releasedAtNanos >= yieldAfterIdleNanos
  }

  /** Gives back a connection taken with `takeIdle` or `wait` whose exchange never started (interrupted before it). */
  putBack(pooled: Pooled): void {
    // Handed over, then not used: when it was released is not known, so it is looked at before reuse.
    if (pooled.releasedAtNanos === handedOver) pooled.releasedAtNanos = 0n
    this.#giveBack(pooled, true, false)
  }

  /**
   * Ends a connection's exchange and gives it back: to the next request of
   * its origin, to the idle connections, or closed when it may not carry
   * another request, is too old, or its permit is owed to another origin at
   * the cap.
   */
  checkin(pooled: Pooled): void {
    const conn = pooled.connection
    if (conn.responseComplete) this.#completed++
    const reusable = conn.finish(this.#options.idleMillis)
    // In use until now: when it was released is set by where it goes (see
    // #handOff). One put back unused keeps its time: its turn may have been
    // cut short.
    this.#giveBack(pooled, reusable, true)
  }

  /** Closes the idle connections of an origin (after one turned out stale). */
  closeIdleOf(origin: Origin): void {
    const line = this.#lines.get(origin.key)
    if (line === undefined || line.idle.length === 0) return
    // Presumed closed by the server, as their sibling was.
    for (const pooled of line.idle.slice()) this.#close(pooled, "server_close")
    this.#afterClose(line)
  }

  /** An idle connection broke or outlived its idle deadline. */
  closeIdle(pooled: Pooled, reason: CloseReason): void {
    this.#drop(pooled, reason)
  }

  /** Its fleet permit is lost: it carries no new request, and closes now if idle. */
  permitLost(pooled: Pooled): void {
    if (pooled.keeper === undefined) return
    pooled.retire("permit_lost")
    if (pooled.idle) this.closeIdle(pooled, "permit_lost")
  }

  /** Others in the fleet wait for its origin: given back now if idle and none of ours waits for it. */
  permitWanted(pooled: Pooled): void {
    if (pooled.idle && pooled.line.waiters.size === 0) this.closeIdle(pooled, "permit_wanted")
  }

  /** A request waited `queueTimeout` for a connection: it fails, having sent nothing. */
  queueTimedOut(waiter: Waiter): void {
    const line = waiter.line
    this.#fail(
      waiter,
      new AgentError({
        reason: "Timeout",
        phase: "queue",
        origin: line.origin.key,
        detail: `no connection within ${Duration.format(this.#options.queueTimeout)}`
      })
    )
    this.#callOffUnwanted(line)
  }

  /**
   * Opens connections to `origin` until it has `count` (open or being opened),
   * within both caps and taking only free global permits; resolves with how
   * many it opened once they are open, or fails with the first connect
   * failure. The new connections wait idle for requests.
   */
  preconnect(origin: Origin, count: number): Effect.Effect<number, AgentError> {
    return Effect.suspend(() => {
      if (this.#closed) return Effect.fail(closedError(origin))
      const line = this.#lineOf(origin)
      const wanted = Math.min(count, this.#options.maxConnectionsPerOrigin) - line.open - line.opening
      let started = 0
      while (started < wanted && this.#cap.tryTake()) started++
      if (started === 0) {
        this.#forgetIfUnused(line)
        return Effect.succeed(0)
      }
      // Started here, not when the wait below registers: the permits are taken now.
      const outcome = new Preconnect(this, started)
      for (let i = 0; i < started; i++) {
        line.preconnecting++
        this.#opener.open(line.origin, outcome, line)
      }
      return Effect.async<number, AgentError>((resume) => outcome.onEnd(resume))
    })
  }

  /**
   * Shuts the pool: waiters fail, idle connections close, openings stop, and
   * it waits up to `shutdownTimeout` for the connections in use to be given
   * back (they close then); the caller closes what is left. All of it even
   * when a transport's destroy throws: the first such throw is a defect of
   * the shutdown afterwards.
   */
  shutdown(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.#closed = true
      let defect: { readonly thrown: unknown } | undefined
      for (const line of this.#lines.values()) {
        for (const node of line.waiters.nodes()) this.#fail(node.value, closedError(line.origin))
        for (const pooled of line.idle.slice()) {
          try {
            this.#close(pooled, "shutdown")
          } catch (thrown) {
            defect ??= { thrown }
          }
        }
      }
      this.#cap.clear()
      const stopped = Effect.zipRight(this.#opener.interruptAll, this.#drain())
      return defect === undefined ? stopped : Effect.zipRight(stopped, Effect.die(defect.thrown))
    })
  }

  /** Waits until no connection is in use, for `shutdownTimeout` at most. */
  #drain(): Effect.Effect<void> {
    if (Duration.isZero(this.#options.shutdownTimeout)) return Effect.void
    const inUse = Effect.async<void>((resume) => {
      if (this.#open === 0) return resume(Effect.void)
      this.#drained = () => resume(Effect.void)
      return Effect.sync(() => {
        this.#drained = undefined
      })
    })
    return Effect.asVoid(Effect.timeoutOption(Effect.interruptible(inUse), this.#options.shutdownTimeout))
  }

  // --- origins' lines ------------------------------------------------------------

  #lineOf(origin: Origin): OriginLine {
    let line = this.#lines.get(origin.key)
    if (line === undefined) {
      line = new OriginLine(origin, this.#metrics.of(origin))
      this.#lines.set(origin.key, line)
    }
    return line
  }

  #forgetIfUnused(line: OriginLine): void {
    if (line.unused && this.#lines.get(line.origin.key) === line) this.#lines.delete(line.origin.key)
  }

  /** A connection whose fleet permit no longer holds is retired (`permit_lost`). */
  #checkPermit(pooled: Pooled): void {
    if (pooled.permit?.valid !== undefined && !pooled.permit.valid()) pooled.retire("permit_lost")
  }

  /** Past its age, or its fleet permit no longer holds: not reused (`retiredBy` says why). */
  #tooOld(pooled: Pooled): boolean {
    this.#checkPermit(pooled)
    return isRetired(pooled, this.#clock)
  }

  /** When a connection opened now retires: `maxConnectionAge`, less a spread of up to `ageSpread` of it. */
  #retireAt(openedAt: number): number {
    const maxAge = this.#options.maxAgeMillis
    if (maxAge === Infinity) return Infinity
    const spread = (this.#opened * goldenFraction) % 1
    return openedAt + maxAge * (1 - ageSpread * spread)
  }

  /** The most recently used idle connection of the origin that is still good, taken. */
  #takeIdle(line: OriginLine): Pooled | undefined {
    let dropped = false
    let pooled: Pooled | undefined
    while ((pooled = line.idle.pop()) !== undefined) {
      this.#idle.remove(pooled.idleNode)
      line.metrics.taken()
      if (pooled.connection.broken || this.#tooOld(pooled)) {
        this.#close(pooled, pooled.connection.broken ? pooled.connection.closeReason ?? "server_close" : pooled.retiredBy)
        dropped = true
        continue
      }
      break
    }
    if (dropped) this.#permitFreed()
    return pooled
  }

  /**
   * Carries out `decideCheckin` (checkin.ts). `fromExchange`: it comes from
   * the request that just ended on it, and is released now: handed straight
   * over, or idle from now (whoever takes it within a millisecond needs no
   * I/O turn first).
   */
  #giveBack(pooled: Pooled, reusable: boolean, fromExchange: boolean): void {
    this.#checkPermit(pooled)
    const checkin = decideCheckin(pooled, reusable, this.#clock, this, this.#cap)
    switch (checkin._tag) {
      case "Close":
        return this.#drop(pooled, checkin.reason)
      case "Idle":
        if (fromExchange) pooled.releasedAtNanos = this.#clock.unsafeCurrentTimeNanos()
        return this.#markIdle(pooled)
      case "Grant":
        if (fromExchange) pooled.releasedAtNanos = handedOver
        return this.#grant(pooled.line.waiters.first!, pooled)
    }
  }

  /**
   * Idle: on top of its origin's stack, last in the pool's LRU list, and its
   * idle deadline told to the Watchdog (a recorded deadline costs nothing
   * when the watchdog already wakes up earlier).
   */
  #markIdle(pooled: Pooled): void {
    pooled.idleSince = this.#clock.unsafeCurrentTimeMillis()
    pooled.line.metrics.idle()
    pooled.line.idle.push(pooled)
    this.#idle.append(pooled.idleNode)
    this.#watchdog.watch(pooled, pooled.idleSince + pooled.connection.idleTimeoutMillis)
  }

  #grant(waiter: Waiter, pooled: Pooled): void {
    this.#leaveLine(waiter)
    const line = waiter.line
    if (this.#opener.withPermits && line.openings.size > line.waiters.size) this.#callOffAwaitingPermit(line)
    if (waiter.queuedAt >= 0) {
      // One measure of the wait, for the metrics and the request's span alike
      // (in millis: a wait is worth measuring from a millisecond up, and a
      // millisecond clock reads without making a bigint).
      const seconds = (this.#clock.unsafeCurrentTimeMillis() - waiter.queuedAt) / 1000
      waiter.line.metrics.waited(seconds)
      waiter.request.trace?.waited(seconds)
    }
    waiter.granted = pooled
    this.#cap.dequeueIfServed(waiter.line)
    waiter.settle(Effect.succeed(pooled))
  }

  #fail(waiter: Waiter, error: AgentError): void {
    this.#leaveLine(waiter)
    waiter.request.ended(waiter.line, 0, error)
    this.#cap.dequeueIfServed(waiter.line)
    waiter.settle(Effect.fail(error))
  }

  /** The waiter's fiber was interrupted or failed: leave the line, or give back what it was handed. */
  #abandon(waiter: Waiter): void {
    const line = waiter.line
    if (waiter.granted !== undefined) {
      const pooled = waiter.granted
      waiter.granted = undefined
      return this.putBack(pooled)
    }
    if (waiter.node.list !== undefined) this.#leaveLine(waiter)
    this.#callOffUnwanted(line)
  }

  /** The waiter leaves its origin's line (granted, failed or gone). */
  #leaveLine(waiter: Waiter): void {
    waiter.line.waiters.remove(waiter.node)
    this.#waiting--
    waiter.line.metrics.waiting(-1)
    if (waiter.deadline !== Infinity) this.#watchdog.unwatch(waiter)
  }

  /** A waiter left without a connection: openings no request waits for any more are called off. */
  #callOffUnwanted(line: OriginLine): void {
    // Their permits come back when they end.
    while (line.openings.size > line.waiters.size) {
      const newest = line.openings.last!
      line.openings.remove(newest.node)
      this.#opener.cancel(newest)
    }
    this.#cap.dequeueIfServed(line)
    this.#forgetIfUnused(line)
  }

  /**
   * More openings than waiters, once a waiter was served by a connection
   * given back: those still waiting for a fleet permit are called off (their
   * place in the fleet's line would take a permit for nobody). Those already
   * connecting go on, as without a fleet.
   */
  #callOffAwaitingPermit(line: OriginLine): void {
    let node = line.openings.lastNode
    while (node !== undefined && line.openings.size > line.waiters.size) {
      const opening = node.value
      node = node.prev
      if (!opening.awaitingPermit) continue
      line.openings.remove(opening.node)
      this.#opener.cancel(opening)
    }
  }

  /** Serves the origin's waiters: idle connections first, then new ones within both caps. */
  #dispatch(line: OriginLine): void {
    while (line.waiters.size > 0) {
      const pooled = this.#takeIdle(line)
      if (pooled !== undefined) {
        this.#grant(line.waiters.first!, pooled)
        continue
      }
      if (line.unserved <= 0) return
      if (line.open + line.opening >= this.#options.maxConnectionsPerOrigin) return
      if (!this.#takePermit()) return this.#cap.enqueue(line)
      this.#openFor(line)
    }
  }

  // --- the global cap ------------------------------------------------------------

  /** Takes a global permit if one is free, or frees one by closing an idle connection nobody waits for. */
  #takePermit(): boolean {
    if (this.#cap.tryTake()) return true
    for (let node = this.#idle.firstNode; node !== undefined; node = node.next) {
      const pooled = node.value
      // An idle connection of an origin with waiters is about to be handed to one of them.
      if (pooled.line.waiters.size > 0) continue
      this.#close(pooled, "evicted")
      this.#forgetIfUnused(pooled.line)
      this.#cap.take()
      return true
    }
    return false
  }

  /** A permit came free: it goes to the origins waiting at the cap, those with no connection first. */
  #permitFreed(): void {
    while (!this.#cap.full) {
      const line = this.#cap.next()
      if (line === undefined) return
      this.#dispatch(line)
      this.#forgetIfUnused(line)
    }
  }

  // --- closing -------------------------------------------------------------------

  /** Closes a connection and frees its permit; the caller decides who gets the permit. */
  #close(pooled: Pooled, reason: CloseReason): void {
    const line = pooled.line
    const wasIdle = this.#idle.remove(pooled.idleNode)
    if (wasIdle) line.removeIdle(pooled)
    this.#watchdog.unwatch(pooled)
    const keeper = pooled.keeper
    if (keeper === undefined) return
    pooled.keeper = undefined
    line.metrics.closed(reason, (this.#clock.unsafeCurrentTimeMillis() - pooled.openedAt) / 1000, wasIdle)
    // A transport whose destroy throws (a buggy Connector) still leaves the
    // books right: the throw goes on to the caller once they are.
    try {
      pooled.connection.destroy()
    } finally {
      line.open--
      this.#open--
      this.#cap.give()
      this.#cap.lostConnection(line)
      // Its scope closes: the Semaphore permit comes back, its keeper runs the finalizers.
      this.#opener.closeScope(keeper)
      if (this.#open === 0 && this.#drained !== undefined) this.#drained()
    }
  }

  #afterClose(line: OriginLine): void {
    this.#permitFreed()
    this.#dispatch(line)
    this.#forgetIfUnused(line)
  }

  #drop(pooled: Pooled, reason: CloseReason): void {
    try {
      this.#close(pooled, reason)
    } finally {
      this.#afterClose(pooled.line)
    }
  }

  // --- opening -------------------------------------------------------------------

  /** Opens a connection for the origin's waiters; the caller holds a permit for it. */
  #openFor(line: OriginLine): void {
    // The waiter it is for: the first that no opening under way serves (its span is the connect's parent).
    let node = line.waiters.firstNode
    for (let i = 0; i < line.opening && node !== undefined; i++) node = node.next
    line.openings.append(this.#opener.open(line.origin, this, line, node?.value.request.trace).node)
  }

  /** A connection opened for `line` (told by the Opener). */
  connected(
    line: OriginLine,
    connection: Connection,
    keeper: Keeper,
    opening: Opening | undefined,
    holder: Holder<unknown> | undefined
  ): void {
    // Not in `openings` any more: it was called off, too late to stop the connect.
    const calledOff = opening !== undefined && !line.openings.remove(opening.node)
    if (opening === undefined) line.preconnecting--
    line.open++
    line.opened++
    this.#open++
    this.#opened++
    line.metrics.opened()
    const now = this.#clock.unsafeCurrentTimeMillis()
    const pooled = new Pooled(connection, line, keeper, now, this.#retireAt(now), this)
    if (holder !== undefined) {
      holder.pooled = pooled
      pooled.permit = holder.permit
      if (holder.lostEarly) pooled.retire("permit_lost")
    }
    if (calledOff) return this.#drop(pooled, "evicted")
    if (connection.broken && !this.#closed) {
      // Closed by the server as soon as it was open: a failed connect, or
      // the waiters would make the pool reconnect forever.
      this.#close(pooled, connection.closeReason ?? "server_close")
      this.#failWaiters(
        line,
        new AgentError({ reason: "Connect", origin: line.origin.key, detail: "closed by the server as soon as it was opened" })
      )
      return this.#afterClose(line)
    }
    this.#giveBack(pooled, true, false)
  }

  /** An opening for `line` failed, or was called off (told by the Opener). */
  openFailed(line: OriginLine, exit: Exit.Exit<unknown, AgentError>, timedOut: boolean, opening: Opening | undefined): void {
    this.failedOpening(line, this.openError(line, exit, timedOut), opening)
  }

  /** An opening for `line` ended without a connection: `error` (if any) for those waiting for it. */
  failedOpening(line: OriginLine, error: AgentError | undefined, opening: Opening | undefined): void {
    if (opening === undefined) line.preconnecting--
    else line.openings.remove(opening.node)
    this.#cap.give()
    if (error !== undefined) this.#failWaiters(line, error)
    if (this.#closed) return this.#forgetIfUnused(line)
    this.#afterClose(line)
  }

  /**
   * What a failed opening means for those waiting for it; undefined when it
   * was only interrupted (called off, as nobody waits for it, or the Agent is
   * shutting down).
   */
  openError(line: OriginLine, exit: Exit.Exit<unknown, AgentError>, timedOut: boolean): AgentError | undefined {
    if (timedOut && !this.#closed) {
      const proxy = this.#opener.proxyOf(line.origin)
      return new AgentError({
        reason: "Timeout",
        phase: "connect",
        origin: line.origin.key,
        detail: `not connected within ${Duration.format(this.#options.connectTimeout)}${
          proxy === undefined ? "" : ` through proxy ${proxy}`
        }`
      })
    }
    if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return undefined
    const failure = Cause.failureOption(exit.cause)
    // A defect (a connector that threw) fails the waiters too, or the pool would reconnect forever.
    return failure._tag === "Some" ? failure.value : new AgentError({
      reason: "Connect",
      origin: line.origin.key,
      detail: "the connector failed",
      cause: Cause.squash(exit.cause)
    })
  }

  /**
   * A connect failed: the requests no other opening or connection will serve
   * learn it now (with no connection left, the origin is unreachable for all
   * of them; else the first in line), rather than each trying in turn.
   */
  #failWaiters(line: OriginLine, error: AgentError): void {
    let toFail = line.open === 0 ? line.unserved : 1
    for (const node of line.waiters.nodes()) {
      if (toFail-- <= 0) break
      this.#fail(node.value, error)
    }
  }
}

const closedError = (origin: Origin) =>
  new AgentError({ reason: "Closed", origin: origin.key, detail: "the Agent was shut down" })

/**
 * The openings of one `preconnect`: each outcome goes to the pool as any
 * opening's would (as one no waiter can call off), and the caller learns how
 * many opened once all of them ended.
 */
class Preconnect implements OpeningOutcome<OriginLine> {
  #left: number
  #opened = 0
  #error: AgentError | undefined = undefined
  #resume: ((effect: Effect.Effect<number, AgentError>) => void) | undefined = undefined
  constructor(readonly pool: ConnectionPool, count: number) {
    this.#left = count
  }

  /** Tells `resume` the outcome once every opening ended (at once if they have). */
  onEnd(resume: (effect: Effect.Effect<number, AgentError>) => void): void {
    if (this.#left === 0) resume(this.#outcome())
    else this.#resume = resume
  }

  connected(line: OriginLine, connection: Connection, keeper: Keeper, _opening: unknown, holder: Holder<unknown> | undefined): void {
    this.#opened++
    this.pool.connected(line, connection, keeper, undefined, holder)
    this.#ended()
  }

  openFailed(line: OriginLine, exit: Exit.Exit<unknown, AgentError>, timedOut: boolean): void {
    const error = this.pool.openError(line, exit, timedOut)
    this.#error ??= error ?? new AgentError({ reason: "Closed", origin: line.origin.key, detail: "the Agent was shut down" })
    this.pool.failedOpening(line, error, undefined)
    this.#ended()
  }

  #ended(): void {
    if (--this.#left > 0) return
    this.#resume?.(this.#outcome())
  }

  #outcome(): Effect.Effect<number, AgentError> {
    return this.#error === undefined ? Effect.succeed(this.#opened) : Effect.fail(this.#error)
  }
}
