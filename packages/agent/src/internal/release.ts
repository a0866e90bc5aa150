/**
 * Every way a connection is given back to the pool once its response's head
 * arrived, in one place. A connection is given back once, by the first of
 * the events that apply to how the response was asked for:
 *
 * | event                                             | `request`, HttpClient | `requestScoped` | `requestWith` |
 * | ------------------------------------------------- | --------------------- | --------------- | ------------- |
 * | the whole body is here (at once if it came with the head) | yes          | yes             | yes           |
 * | the last read under way ends (read to its end, or given up) | yes (closes it if unread) | no    | no            |
 * | `requestWith`'s function ends, however it ends    | —                     | —               | yes (closes it if unread) |
 * | the caller's scope closes                          | —                     | yes (closes it if unread) | — |
 * | `HttpClient.withScope`'s scope closes             | HttpClient only (closes it) | —         | —             |
 * | the response is garbage collected                  | yes (closes it)       | no              | no            |
 *
 * When the body is all here its bytes stay with the response's exchange, so
 * a response kept for later, or read slowly, holds no connection. Before
 * that, giving the connection back closes it (the pool sees its exchange
 * unfinished) and the rest of the body is lost: a later read fails with
 * `Closed`. A request that fails before its head arrived gives its connection
 * back in the attempt itself, and one interrupted or found broken before its
 * exchange started is put back unused (both in agent.ts, through the pool).
 *
 * Every release here is synchronous and idempotent, so that it can run from
 * a callback no fiber runs (a microtask, an abort listener, a finalization
 * registry): see `releaseOutsideFiber`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { globalValue } from "effect/GlobalValue"
import * as Scope from "effect/Scope"
import type { Pooled } from "./originLine.js"
import type { AgentResponse, ReadWatcher } from "./response.js"

/** Where a connection goes back to. @internal */
export interface CheckIn {
  checkin(pooled: Pooled): void
}

/**
 * Runs a connection's release from a callback no fiber runs. Only a
 * transport whose destroy throws can make it throw; there is nobody to fail
 * there, and the pool's books are right regardless (see the pool's `#close`).
 * Inside an Effect the same throw is a defect of that Effect. @internal
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

/** What the registry watches in a response's place. @internal */
class WatchedToken {}

/**
 * The leases handed over since the last microtask whose response may yet be
 * dropped unread: see `Lease.freeWhenCollected`. A fresh array per batch, so
 * that nothing long-lived refers to the leases once the batch ran.
 */
let unwatched: Array<Lease> | undefined = undefined

/**
 * How many microtasks a response handed over unread waits for its read to
 * start before it is watched: the caller's fiber, and a fiber it forks right
 * away (`Stream.run` does, to run a body's `stream`), each run in a microtask
 * of Effect's scheduler.
 */
const watchAfterMicrotasks = 3

const startWatching = (): void => {
  const leases = unwatched!
  unwatched = undefined
  watchUnread(leases, 1)
}

const watchUnread = (leases: Array<Lease>, microtasks: number): void => {
  const unread = leases.filter((lease) => lease.unread)
  if (unread.length === 0) return
  if (microtasks < watchAfterMicrotasks) queueMicrotask(() => watchUnread(unread, microtasks + 1))
  else for (let i = 0; i < unread.length; i++) unread[i]!.watchNow()
}

/**
 * Gives a connection back, once. What a caller's scope keeps until it closes
 * refers to this and the connection only: a closure made in the attempt
 * would keep the request and everything it was prepared into alive just as
 * long. It also counts the reads of its response under way, for a response
 * handed over without a scope (`Held.handOver`).
 *
 * @internal
 */
export class Lease implements ReadWatcher {
  #pooled: Pooled | undefined
  /** The response, until it is watched for garbage collection or its read started. */
  #unread: AgentResponse | undefined = undefined
  #watched = false
  #readers = 0
  constructor(pooled: Pooled, readonly pool: CheckIn) {
    this.#pooled = pooled
  }

  /** Gives the connection back (once; later calls do nothing). */
  readonly release = (): void => {
    const pooled = this.#pooled
    if (pooled === undefined) return
    this.#pooled = undefined
    this.#unread = undefined
    if (this.#watched) unreadResponses.unregister(this)
    this.pool.checkin(pooled)
  }

  /**
   * Frees the connection when `response` is garbage collected with no read
   * of it under way and its body still arriving.
   *
   * For a few microtasks the lease holds the response itself: a caller who
   * reads the body at once (nearly every one) starts the read in the same run
   * of its fiber, or of one it forks at once, and the registry is never
   * touched. Whatever is still unread then is watched by the registry. A read
   * under way keeps its response reachable, and the last read to end gives
   * the connection back, so a read that started needs no watching.
   */
  freeWhenCollected(response: AgentResponse): void {
    this.#unread = response
    if (unwatched === undefined) {
      unwatched = []
      queueMicrotask(startWatching)
    }
    unwatched.push(this)
  }

  /** Whether the response waits to be watched: handed over, not yet read, its connection not yet freed. */
  get unread(): boolean {
    return this.#unread !== undefined
  }

  /**
   * Watches the unread response now. The registry watches an object only the
   * response refers to, not the response: V8 makes the registry's cell in
   * old space, and until the next full GC even an unregistered cell keeps
   * what it watches alive through every minor GC, promoting it with all it
   * refers to (the exchange, the body's buffers, the request).
   */
  watchNow(): void {
    const response = this.#unread
    if (response === undefined) return
    this.#unread = undefined
    this.#watched = true
    const token = new WatchedToken()
    response.watchedToken = token
    unreadResponses.register(token, this.release, this)
  }

  readStarted(): void {
    this.#readers++
    this.#unread = undefined
  }

  /** The last read under way ended, however it ended: a reader that gives up takes nobody else's body away. */
  readEnded(): void {
    if (--this.#readers === 0) this.release()
  }
}

/**
 * A response and its lease. A class, as every object made per request (see
 * ARCHITECTURE.md).
 *
 * @internal
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
   * here already, as a small body that came with its head, the bytes are
   * taken into the response (`keepBody`) and the connection goes back now:
   * true then, and whoever holds it has nothing left to free. Else the
   * transport callback that completes the body frees it, unless the holder
   * released it before.
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
   * @effect/platform's `HttpClient` does: see the table above. `signal` is
   * `HttpClient.withScope`'s.
   */
  handOver(signal?: AbortSignal): AgentResponse {
    const { release, response } = this
    if (this.freeWhenComplete()) return response
    response.readWatcher = this.lease
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
 * Takes charge of a response and of giving its connection back. It runs
 * uninterruptibly (so that nothing is dropped between the response arriving
 * and it taking charge); `restore` makes what it runs interruptible again.
 * @internal
 */
export type Keep<A, E, R> = (
  held: Held,
  restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
) => Effect.Effect<A, E, R>

/** `Agent.request`, and the HttpClient adapter outside `HttpClient.withScope`: the response frees its connection itself. @internal */
export const handOver = (held: Held): Effect.Effect<AgentResponse> => Effect.succeed(held.handOver())

/**
 * `Agent.requestScoped`: the connection is held until the caller's scope
 * closes or the body is all here, whichever comes first. When the whole
 * response is here already its bytes are kept, the connection goes back at
 * once, and the caller's scope gets no finalizer. `Scope.addFinalizer`, not
 * `Effect.addFinalizer`: the latter diffs and patches all FiberRefs.
 * @internal
 */
export const keepInCallerScope = (held: Held): Effect.Effect<AgentResponse, never, Scope.Scope> =>
  held.freeWhenComplete()
    ? Effect.succeed(held.response)
    : Effect.flatMap(Effect.scope, (outer) => Effect.as(Scope.addFinalizer(outer, Effect.sync(held.release)), held.response))

/**
 * `Agent.requestWith`: runs `f` with the response; the connection goes back
 * when `f` ends or the body is all here, whichever comes first. @internal
 */
export const holdWhile = <A, E, R>(
  f: (response: AgentResponse) => Effect.Effect<A, E, R>
): Keep<A, E, R> =>
(held, restore) => {
  // `f` is called once the region is interruptible again: an interruption
  // already pending stops it before even its synchronous part runs.
  const run = restore(Effect.suspend(() => f(held.response)))
  // All of the response here already: `f` runs with nothing left to give back.
  if (held.freeWhenComplete()) return run
  return Effect.flatMap(Effect.exit(run), (exit) => {
    held.release()
    return exit
  })
}
