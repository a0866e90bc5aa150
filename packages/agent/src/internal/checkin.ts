/**
 * What becomes of a connection given back to the pool, decided from the
 * state of the connection, its origin's line, the pool and the global cap's
 * queue (and the time, for a connection with an age limit), with no side
 * effect: the pool carries the decision out (see pool.ts). Every rule of a check-in is here, in the order it applies.
 *
 * @internal
 */
import type { CloseReason } from "./connection.js"

/**
 * Requests an origin's last connection serves before it may be given away to
 * an origin with none: with more origins than the global cap, each gets turns
 * of several requests rather than a fresh connection per request.
 */
export const lastConnectionTurn = 8

/** What the pool does with a connection given back. @internal */
export type Checkin =
  /** Handed to the first request waiting in its origin's line. */
  | { readonly _tag: "Grant" }
  /** Kept idle. */
  | { readonly _tag: "Idle" }
  /** Closed, for `reason`. */
  | { readonly _tag: "Close"; readonly reason: CloseReason }

const grant: Checkin = { _tag: "Grant" }
const idle: Checkin = { _tag: "Idle" }
const closes = new Map<CloseReason, Checkin>()

/** The decision to close for `reason` (one object per reason, made once). */
const close = (reason: CloseReason): Checkin => {
  let checkin = closes.get(reason)
  if (checkin === undefined) {
    checkin = { _tag: "Close", reason }
    closes.set(reason, checkin)
  }
  return checkin
}

/** What the decision reads of an origin's line. @internal */
export interface LineState {
  /** Its open connections, idle and busy. */
  readonly open: number
  /** Its requests waiting for a connection. */
  readonly waiters: { readonly size: number }
}

/** What the decision reads of a connection given back and the pool's record of it. @internal */
export interface ConnectionState {
  readonly connection: {
    /** Something odd was seen on it. */
    readonly broken: boolean
    readonly closeReason: CloseReason | undefined
    /** Requests it completed. */
    readonly served: number
  }
  /** Clock millis from which it carries no new request (Infinity: never). */
  readonly retireAt: number
  /** Why, once past `retireAt`. */
  readonly retiredBy: CloseReason
  readonly line: LineState
}

/** What the decision reads of the pool. @internal */
export interface PoolState {
  /** False: a fresh connection per request. */
  readonly persist: boolean
  /** Shut down. */
  readonly closed: boolean
}

/** What the decision reads of the global cap's queue for permits. @internal */
export interface CapQueueState {
  /** Some origin waits for a permit. */
  readonly originsWaiting: boolean
  /** The first origin waiting for a permit that has no connection at all. */
  readonly firstStarving: LineState | undefined
}

/** The clock the decision reads, only for a connection with an age limit (Effect's `Clock` is one). @internal */
export interface MillisClock {
  unsafeCurrentTimeMillis(): number
}

/**
 * Past its age, or retired for another reason: it carries no new request.
 * The clock is read only for a connection that has a limit. @internal
 */
export const isRetired = (pooled: ConnectionState, clock: MillisClock): boolean =>
  pooled.retireAt !== Infinity && clock.unsafeCurrentTimeMillis() >= pooled.retireAt

/**
 * Decides what becomes of a connection given back, `reusable` when the
 * exchange that ended on it (if any) left it fit for another request:
 * 1. closed when it may not carry another request: not reusable or broken
 *    (`closeReason`, else `error`), the pool shut down (`shutdown`), past its
 *    age or retired (`retiredBy`);
 * 2. without `persist`, closed once it served a request (`max_requests`);
 *    one that served none (opened ahead, or for a request that left) may
 *    still serve one;
 * 3. at the global cap, closed to give its permit to another origin
 *    (`evicted`): when no request of its own origin wants it; to an origin
 *    with no connection at all when its own has another; and even its
 *    origin's last one once it served a turn (`lastConnectionTurn`
 *    requests), however long its own line. Origins with none are so served
 *    round-robin, and one request of a new origin waits at most a turn per
 *    connection ahead of it. An origin's own waiters keep its connections
 *    otherwise: closing and reopening at every release would churn;
 * 4. else handed to the first request waiting in its origin's line, or kept
 *    idle.
 *
 * @internal
 */
export const decideCheckin = (
  pooled: ConnectionState,
  reusable: boolean,
  clock: MillisClock,
  pool: PoolState,
  cap: CapQueueState
): Checkin => {
  const conn = pooled.connection
  if (!reusable || conn.broken) return close(conn.closeReason ?? "error")
  if (pool.closed) return close("shutdown")
  if (isRetired(pooled, clock)) return close(pooled.retiredBy)
  if (!pool.persist && conn.served > 0) return close("max_requests")
  if (pool.persist && mustMakeRoom(pooled, cap)) return close("evicted")
  return pooled.line.waiters.size > 0 ? grant : idle
}

/** Rule 3 of `decideCheckin`. */
const mustMakeRoom = (pooled: ConnectionState, cap: CapQueueState): boolean => {
  if (!cap.originsWaiting) return false
  const line = pooled.line
  if (line.waiters.size === 0) return true
  const starving = cap.firstStarving
  if (starving === undefined || starving === line) return false
  return line.open > 1 || pooled.connection.served >= lastConnectionTurn
}
