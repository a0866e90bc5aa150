import type { CapQueueState } from "./checkin.js"
import type { OriginLine } from "./originLine.js"

const firstOf = <A>(set: Set<A>): A | undefined => {
  for (const item of set) return item
  return undefined
}

/**
 * The books of the global cap (`maxConnections`) and its fairness between
 * origins: one permit per open or opening connection. These books decide,
 * synchronously, who may open; the Effect Semaphore is what each connection
 * holds from connect to close (see opening.ts). The books take a permit just
 * before the Semaphore does and give it back just before the connection's
 * scope does: a connection closing for another's permit may still hold the
 * Semaphore's for a moment, and the opening waits for it.
 *
 * At the cap, an origin that needs a connection queues for a permit, origins
 * with no connection at all first, then in the order they queued. A permit is
 * freed by closing the least recently used idle connection no request waits
 * for (the pool's), or by a released connection given away instead of kept
 * (`decideCheckin`, checkin.ts).
 *
 * @internal
 */
export class GlobalCap implements CapQueueState {
  #held = 0
  /** Origins waiting for a permit that have no connection at all: served first. */
  readonly #starving = new Set<OriginLine>()
  /** Other origins waiting for a permit, oldest first. */
  readonly #queue = new Set<OriginLine>()

  constructor(readonly max: number) {}

  /** True when every permit is held. */
  get full(): boolean {
    return this.#held >= this.max
  }

  /** Some origin waits for a permit. */
  get originsWaiting(): boolean {
    return this.#starving.size > 0 || this.#queue.size > 0
  }

  /** The first origin waiting for a permit that has no connection at all. */
  get firstStarving(): OriginLine | undefined {
    return firstOf(this.#starving)
  }

  /** Takes a free permit; false at the cap. */
  tryTake(): boolean {
    if (this.#held >= this.max) return false
    this.#held++
    return true
  }

  /** Takes the permit a connection just closed for it gave back. */
  take(): void {
    this.#held++
  }

  /** A connection closed, or an opening failed: its permit is free. */
  give(): void {
    this.#held--
  }

  /** The origin waits for a permit (once, however often it asks). */
  enqueue(line: OriginLine): void {
    if (line.queued) return
    line.queued = true
    if (line.open + line.opening === 0) this.#starving.add(line)
    else this.#queue.add(line)
  }

  /** The origin leaves the queue. */
  dequeue(line: OriginLine): void {
    line.queued = false
    this.#starving.delete(line)
    this.#queue.delete(line)
  }

  /** An origin whose waiters no longer need a new connection leaves the queue. */
  dequeueIfServed(line: OriginLine): void {
    if (line.queued && line.unserved <= 0) this.dequeue(line)
  }

  /** The origin's last connection closed while it queued: it now starves, and is served first. */
  lostConnection(line: OriginLine): void {
    if (line.queued && line.open + line.opening === 0 && this.#queue.delete(line)) this.#starving.add(line)
  }

  /** The origin a freed permit goes to, taken out of the queue; undefined when none waits. */
  next(): OriginLine | undefined {
    const line = firstOf(this.#starving) ?? firstOf(this.#queue)
    if (line !== undefined) this.dequeue(line)
    return line
  }

  /** Empties the queue (shutdown). */
  clear(): void {
    for (const line of this.#starving) this.dequeue(line)
    for (const line of this.#queue) this.dequeue(line)
  }
}
