import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import { List, ListNode } from "./list.js"

/**
 * Something the Watchdog times out: its deadline now (Clock millis, Infinity
 * for none), and what to do once that passed.
 *
 * @internal
 */
export interface Deadline {
  readonly deadline: number
  expire(): void
  /** Its place among what the watchdog watches, its own for good (see ListNode). */
  readonly watchNode: ListNode<Deadline>
}

/**
 * One timer fiber for every deadline of an Agent: the connect deadline of each
 * opening, the header and body deadlines of each connection's exchange, and
 * the idle deadline of each idle connection. One fiber, not one per
 * connection or per deadline: a fiber per connection would cost a fork, a
 * timer and an interruption for every connection opened, and one per request
 * a fork on the hot path.
 *
 * It sleeps until the earliest deadline it knows of. A deadline set later than
 * that (the common case: every deadline is now plus the same timeout) is only
 * recorded on its owner; when the fiber wakes it looks at what it watches,
 * expires what is past its deadline, forgets what has none, and sleeps until
 * the next. A deadline earlier than its wake-up starts a new fiber (a new
 * generation) and interrupts the old one. All time is the Clock's, so
 * TestClock drives every deadline.
 *
 * @internal
 */
export class Watchdog {
  readonly #watched = new List<Deadline>()
  /** Items listed so far: a scan that sees it move looks again (see `#loop`). */
  #listed = 0
  #wakeAt = Infinity
  #generation = 0
  #fiber: Fiber.RuntimeFiber<void> | undefined = undefined
  #stopped = false

  constructor(
    readonly clock: Clock.Clock,
    readonly runFork: (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void>
  ) {}

  /** What is watched now (what ended leaves at once, the rest when the timer finds it without a deadline). */
  get watching(): number {
    return this.#watched.size
  }

  /** It ended (a connection closed, an opening done): nothing of it to watch any more. */
  unwatch(item: Deadline): void {
    this.#watched.remove(item.watchNode)
  }

  /** `item` has this deadline (Clock millis) now. */
  watch(item: Deadline, deadline: number): void {
    if (item.watchNode.list === undefined) {
      this.#watched.append(item.watchNode)
      this.#listed++
    }
    if (deadline >= this.#wakeAt || this.#stopped) return
    const generation = ++this.#generation
    this.#wakeAt = deadline
    // The fiber it replaces would sleep on (and keep its timer) until its own wake-up.
    const replaced = this.#fiber
    this.#fiber = this.runFork(this.#loop(generation))
    if (replaced !== undefined) replaced.unsafeInterruptAsFork(FiberId.none)
  }

  /** Stops the timer (the Agent shut down): no deadline fires after this. */
  shutdown(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.#stopped = true
      this.#watched.clear()
      const fiber = this.#fiber
      this.#fiber = undefined
      return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
    })
  }

  #loop(generation: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (generation !== this.#generation) return Effect.void
      const now = this.clock.unsafeCurrentTimeMillis()
      let next = Infinity
      let listed: number
      // Again if an expire() listed an item meanwhile (its watch() saw a
      // wake-up no later than its deadline and started nothing).
      do {
        listed = this.#listed
        next = Infinity
        for (const node of this.#watched.nodes()) {
          // Unwatched meanwhile (by an expire() just before).
          if (node.list === undefined) continue
          const item = node.value
          const deadline = item.deadline
          if (deadline === Infinity) {
            this.unwatch(item)
          } else if (deadline <= now) {
            this.unwatch(item)
            // A transport whose destroy throws must not stop every other
            // deadline: what expired has failed or closed by then, either way.
            try {
              item.expire()
            } catch {
              // The connection is broken and its reader woken; nothing more to do.
            }
          } else if (deadline < next) {
            next = deadline
          }
        }
      } while (listed !== this.#listed)
      // An expire() may have started a newer generation (a deadline earlier
      // than this one's wake-up): its fiber owns the books from here.
      if (generation !== this.#generation) return Effect.void
      this.#wakeAt = next
      if (next === Infinity) {
        this.#fiber = undefined
        return Effect.void
      }
      return Effect.zipRight(Effect.sleep(Duration.millis(next - now)), this.#loop(generation))
    })
  }
}
