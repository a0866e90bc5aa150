import type * as Effect from "effect/Effect"

/**
 * What an Effect 3 `Semaphore` keeps, privately: its permits, how many are
 * taken, and the takes waiting for one (each woken by `release`).
 */
interface SemaphoreState {
  readonly permits: number
  taken: number
  readonly waiters: { readonly size: number }
}

const stateOf = (semaphore: Effect.Semaphore): SemaphoreState | undefined => {
  const state = semaphore as unknown as Partial<SemaphoreState>
  return typeof state.permits === "number" && typeof state.taken === "number" &&
      typeof state.waiters === "object" && typeof state.waiters?.size === "number"
    ? state as SemaphoreState
    : undefined
}

/**
 * One permit at a time of the global cap's Effect `Semaphore`, taken and given
 * back without an Effect step when that can be done at once: a permit free
 * and no take waiting, as `withPermitsIfAvailable` decides; a permit given
 * back with no take to wake. Otherwise (and with a `Semaphore` whose state is
 * not the one above) through its own `take` and `release`.
 *
 * `take` costs an `asyncInterrupt` and several steps, `release` a fiber
 * lookup and a step, for every connection opened: what opening a connection
 * costs is its steps (see ARCHITECTURE.md, "Performance rules"). The state
 * is private to Effect: `Couplings.test.ts` fails if an upgrade changes it.
 *
 * @internal
 */
export class SemaphorePermits {
  readonly #state: SemaphoreState | undefined
  /** Waits for a permit (uninterruptibly, see opening.ts). */
  readonly take: Effect.Effect<number>
  /** Gives one back, waking a waiting take. A finalizer's value is never read: the count it returns is not turned into void first. */
  readonly release: Effect.Effect<number>

  constructor(readonly semaphore: Effect.Semaphore) {
    this.#state = stateOf(semaphore)
    this.take = semaphore.take(1)
    this.release = semaphore.release(1)
  }

  /** Takes a permit now when one is free and no take waits; false otherwise (`take` then). */
  tryTakeNow(): boolean {
    const state = this.#state
    if (state === undefined || state.waiters.size > 0 || state.taken >= state.permits) return false
    state.taken++
    return true
  }

  /** Gives a permit back now when no take waits for one; false otherwise (`release` then, which wakes it). */
  tryReleaseNow(): boolean {
    const state = this.#state
    if (state === undefined || state.waiters.size > 0) return false
    state.taken--
    return true
  }
}
