import type * as Effect from "effect/Effect"
import type { AgentError } from "../AgentError.js"
import type { Permit } from "../ConnectionPermits.js"
import type { Origin } from "../Origin.js"
import type { CloseReason, Connection, IdleBreakListener } from "./connection.js"
import { List, ListNode } from "./list.js"
import type { OriginMetrics } from "./metrics.js"
import type { Keeper, Opening } from "./opening.js"
import type { Trace } from "./tracing.js"
import type { Deadline } from "./watchdog.js"

/**
 * What the pool does with an idle connection that must go: it broke (FIN,
 * RST, stray bytes) or its idle deadline passed.
 *
 * @internal
 */
export interface IdleCloser {
  closeIdle(pooled: Pooled, reason: CloseReason): void
}

/**
 * A connection as the pool holds it: the connection itself, and the pool's
 * bookkeeping of it (its origin's line, its scope, its place among the idle
 * connections, when it opened, went idle and was last released). Its idle
 * deadline is watched by the Agent's Watchdog.
 *
 * @internal
 */
export class Pooled implements IdleBreakListener, Deadline {
  /** Its place in the pool's list of idle connections, least recently used first (in it while idle). */
  readonly idleNode = new ListNode<Pooled>(this)
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  /** Clock millis when it last became idle. */
  idleSince = 0
  /** Clock nanos when it was last released (-1: handed straight to the next request): decides the I/O turn before reuse. */
  releasedAtNanos = 0n
  /** The keeper of the scope it lives in; undefined once the pool closed it. */
  keeper: Keeper | undefined

  constructor(
    readonly connection: Connection,
    readonly line: OriginLine,
    keeper: Keeper,
    /** Clock millis when it opened. */
    readonly openedAt: number,
    /** Clock millis from which it is not reused (`maxConnectionAge`, spread; 0 once retired otherwise). */
    public retireAt: number,
    readonly closer: IdleCloser
  ) {
    this.keeper = keeper
    connection.owner = this
  }

  /** Why it is not reused once past `retireAt`. */
  retiredBy: CloseReason = "max_age"
  /** Its fleet permit, whose `valid` is asked before each request on it. */
  permit: Permit | undefined = undefined

  /** It carries no new request: closed when next idle (or now, by the caller, if idle). */
  retire(reason: CloseReason): void {
    this.retireAt = 0
    this.retiredBy = reason
  }

  /** True while it sits idle in the pool. */
  get idle(): boolean {
    return this.idleNode.list !== undefined
  }

  onIdleBreak(): void {
    if (this.idle) this.closer.closeIdle(this, this.connection.closeReason ?? "server_close")
  }

  /** Its idle deadline while idle; none while checked out. */
  get deadline(): number {
    return this.idle ? this.idleSince + this.connection.idleTimeoutMillis : Infinity
  }

  expire(): void {
    if (this.idle) this.closer.closeIdle(this, "idle_timeout")
  }
}

/** A request waiting for a connection, as the pool tells it what it needs to know. @internal */
export interface RequestTiming {
  /** It ended: its response head came (`status`), or it failed. Times it for the metrics. */
  ended(line: OriginLine, status: number, error: AgentError | undefined): void
  /** Its span, when it is traced: a connection opened for it is traced under it, and its wait is told to it. */
  readonly trace: Trace | undefined
}

/** What the pool does with a waiter whose `queueTimeout` passed. @internal */
export interface QueueTimeout {
  queueTimedOut(waiter: Waiter): void
}

/**
 * A request of an origin waiting for a connection. `granted` is set when a
 * connection was handed to it: if its fiber is interrupted before it takes
 * over, the connection goes back to the pool. Its `queueTimeout` deadline,
 * when there is one, is watched by the Agent's Watchdog. A class, not an
 * object literal, as every object made per request (see ARCHITECTURE.md).
 *
 * @internal
 */
export class Waiter implements Deadline {
  resume: ((effect: Effect.Effect<Pooled, AgentError>) => void) | undefined = undefined
  /** The outcome, when it came before the waiting fiber registered `resume`. */
  pending: Effect.Effect<Pooled, AgentError> | undefined = undefined
  granted: Pooled | undefined = undefined
  /** Its place in the origin's line; removed once served, failed or abandoned. */
  readonly node = new ListNode<Waiter>(this)
  #watchNode: ListNode<Deadline> | undefined = undefined
  constructor(
    readonly line: OriginLine,
    /** Clock millis when it began to wait (-1 when neither the metrics nor a span want it). */
    readonly queuedAt: number,
    /** Clock millis by which it must have a connection (Infinity: no limit). */
    readonly deadline: number,
    readonly timeout: QueueTimeout,
    readonly request: RequestTiming
  ) {}

  /** Made when first watched: most waiters have no `queueTimeout`. */
  get watchNode(): ListNode<Deadline> {
    return this.#watchNode ??= new ListNode<Deadline>(this)
  }

  expire(): void {
    if (this.node.list !== undefined) this.timeout.queueTimedOut(this)
  }

  /** Hands it its outcome, whether its fiber is waiting yet or not. */
  settle(outcome: Effect.Effect<Pooled, AgentError>): void {
    if (this.resume !== undefined) this.resume(outcome)
    else this.pending = outcome
  }
}

/**
 * One origin's part of the pool: its idle connections (a stack: the most
 * recently used is taken first, so the others age out), its FIFO line of
 * waiting requests, its openings, and its counts. The pool forgets it once
 * nothing of it is left.
 *
 * @internal
 */
export class OriginLine {
  /** Idle connections, most recently used last (taken last in, first out). */
  readonly idle: Array<Pooled> = []
  /** Requests waiting for a connection, oldest first. */
  readonly waiters = new List<Waiter>()
  /** Open connections, idle and busy. */
  open = 0
  /**
   * The openings under way for its waiters: one nobody waits for any more is
   * called off (interrupted; a connection it still makes is closed at once),
   * and leaves the list then.
   */
  readonly openings = new List<Opening>()
  /** The openings under way for `preconnect`, which no waiter can call off. */
  preconnecting = 0
  /** Waiting in the global cap's queue for a permit. */
  queued = false
  /** Connections opened since the line was made. */
  opened = 0
  /** Requests sent on a reused connection since the line was made. */
  reused = 0
  constructor(readonly origin: Origin, readonly metrics: OriginMetrics) {}

  /** Connections being opened (not counting openings called off): each counted once, in `openings` or `preconnecting`. */
  get opening(): number {
    return this.openings.size + this.preconnecting
  }

  /** Nothing of it is left: no connection, opening, waiter, or place in the cap's queue. */
  get unused(): boolean {
    return this.open + this.opening + this.waiters.size === 0 && !this.queued
  }

  /** Waiters that no opening under way will serve: each needs a connection. */
  get unserved(): number {
    return this.waiters.size - this.opening
  }

  /** Takes an idle connection out of its stack (the pool's LRU list is the caller's). */
  removeIdle(pooled: Pooled): void {
    const at = this.idle.indexOf(pooled)
    if (at >= 0) this.idle.splice(at, 1)
  }
}
