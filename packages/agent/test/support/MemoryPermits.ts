import { AgentError } from "@keepalive/agent/AgentError"
import { ConnectionPermits, type PermitHolder } from "@keepalive/agent/ConnectionPermits"
import type { Origin } from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/** A permit as the in-memory store sees it. */
export interface Held {
  readonly origin: string
  readonly holder: PermitHolder
  released: boolean
  /** What the permit's `valid` answers (a lease past its deadline by the local clock: false). */
  valid: boolean
}

/**
 * A fleet's permits in memory: `max` per origin, waiters served first come
 * first served, with the store's controls a test needs (lose a permit, say
 * others want an origin, take permits for another process, be unavailable).
 */
export class MemoryPermits {
  readonly held: Array<Held> = []
  readonly #waiters = new Map<string, Array<() => void>>()
  /** Acquires that were interrupted while they waited. */
  interrupted = 0
  /** Every acquire fails with reason Unavailable. */
  unavailable = false

  constructor(readonly max: number) {}

  /** Permits of `origin` held now (by the Agent or by `takeFor`). */
  heldOf(origin: string): Array<Held> {
    return this.held.filter((h) => h.origin === origin && !h.released)
  }

  /** Takes a permit for another process of the fleet, if one is free. */
  takeFor(origin: string): Held | undefined {
    if (this.heldOf(origin).length >= this.max) return undefined
    const held: Held = { origin, holder: { lost() {}, wanted() {} }, released: false, valid: true }
    this.held.push(held)
    return held
  }

  /** Gives a permit back and wakes the next waiter of its origin. */
  release(held: Held): void {
    if (held.released) return
    held.released = true
    this.#waiters.get(held.origin)?.shift()?.()
  }

  readonly layer: Layer.Layer<ConnectionPermits> = Layer.succeed(ConnectionPermits, {
    acquire: (origin: Origin, holder: PermitHolder) =>
      Effect.suspend(() => {
        if (this.unavailable) {
          return Effect.fail(
            new AgentError({ reason: "Unavailable", origin: origin.key, detail: "the permit store is unreachable" })
          )
        }
        const grant = () => {
          const held: Held = { origin: origin.key, holder, released: false, valid: true }
          this.held.push(held)
          return { release: Effect.sync(() => this.release(held)), valid: () => held.valid }
        }
        if (this.heldOf(origin.key).length < this.max) return Effect.succeed(grant())
        return Effect.async<ReturnType<typeof grant>>((resume) => {
          const wake = () => resume(Effect.succeed(grant()))
          const line = this.#waiters.get(origin.key) ?? []
          line.push(wake)
          this.#waiters.set(origin.key, line)
          return Effect.sync(() => {
            this.interrupted++
            line.splice(line.indexOf(wake), 1)
          })
        })
      })
  })
}
