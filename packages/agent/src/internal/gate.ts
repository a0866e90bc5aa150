import * as Effect from "effect/Effect"

interface Waiter {
  granted: boolean
  readonly resume: (effect: Effect.Effect<void>) => void
}

/**
 * A counting gate that admits waiters strictly in arrival order. Effect's
 * `Semaphore` and `Pool` let newcomers barge ahead of waiters; requests to an
 * origin must be served first come, first served.
 *
 * @internal
 */
export class FifoGate {
  // A Set keeps insertion order and removes an interrupted waiter in O(1).
  readonly #waiters = new Set<Waiter>()
  #free: number

  constructor(permits: number) {
    this.#free = permits
  }

  get waiting(): number {
    return this.#waiters.size
  }

  readonly #wait: Effect.Effect<void> = Effect.async<void>((resume) => {
    const waiter: Waiter = { granted: false, resume }
    this.#waiters.add(waiter)
    return Effect.sync(() => {
      // Interrupted: give back a permit that was handed over too late.
      if (waiter.granted) this.release()
      else this.#waiters.delete(waiter)
    })
  })

  /** Takes one permit, waiting in line when there is none. */
  readonly take: Effect.Effect<void> = Effect.suspend(() => {
    if (this.#free > 0 && this.#waiters.size === 0) {
      this.#free--
      return Effect.void
    }
    return this.#wait
  })

  /** Returns one permit, handing it to the longest waiter if any. */
  release(): void {
    for (const waiter of this.#waiters) {
      this.#waiters.delete(waiter)
      waiter.granted = true
      waiter.resume(Effect.void)
      return
    }
    this.#free++
  }
}
