import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { AgentError } from "../AgentError.js"
import type { ResponseHead } from "../Http1.js"

/**
 * Response bytes buffered before the transport is paused while a stream
 * reads. A body of known length up to this size is received into one array.
 *
 * @internal
 */
export const highWaterMark = 256 * 1024

/** No bytes: what `take` gives with nothing buffered, and `takeNext` at the end of a body. */
const noChunks: ReadonlyArray<Uint8Array> = Object.freeze([])

/**
 * What an exchange's body reads need from the connection that carries it.
 * The connection gives itself when it makes the exchange, so exchange.ts
 * imports nothing of connection.ts.
 *
 * @internal
 */
export interface Carrier {
  /** The exchange in flight; an earlier one was let go and no more bytes come to it. */
  readonly exchange: Exchange | undefined
  /**
   * Lifts the pause the connection put on its transport while a stream read,
   * if `ex` is the exchange in flight (an earlier one read late must not
   * resume it): the transport reads again, and the body deadline runs again.
   */
  resumeReading(ex: Exchange): void
  /** What reading a response fails with once its connection moved on without it. */
  released(): AgentError
  /** What a whole-body read fails with once a stream took some of the bytes. */
  streamed(): AgentError
}

/**
 * One request/response exchange, as its connection fills it and its readers
 * take from it: the head, the body bytes not yet taken, whether the response
 * completed or failed, and the readers waiting for more. It outlives its
 * connection's interest in it: once settled, its bytes stay readable after
 * the connection moved on to another request.
 *
 * @internal
 */
export class Exchange {
  head: ResponseHead | undefined = undefined
  /** Body bytes received and not yet taken by a reader. */
  buffered = 0
  /** The body's one array, when its size is known and small enough (see `Connection.onHead`); else bytes go to `#chunks`. */
  body: Uint8Array | undefined = undefined
  #filled = 0
  #taken = 0
  /** What `takeRest` took, for the next whole-body reader. */
  #rest: ReadonlyArray<Uint8Array> | undefined = undefined
  // No array literals here: V8 may pretenure them (see ARCHITECTURE.md, "Performance rules"), and
  // these point to young body bytes. `Array.of` is not pretenured.
  #chunks: Array<Uint8Array> | undefined = undefined
  complete = false
  failure: AgentError | undefined = undefined
  streaming = false
  /** True once a stream took body bytes: they are its reader's, and no whole-body read can follow. */
  streamed = false
  abandonedBody = false
  /** False while a streamed request body is still being written. */
  requestSent = true
  /** A reader's wait: true once it resumed its reader (see `waitFor`). */
  #waiter: (() => boolean) | undefined = undefined
  /** Readers waiting besides the first: two reads of one body at once, say. */
  #moreWaiters: Array<() => boolean> | undefined = undefined
  drain: (() => void) | undefined = undefined
  /** True once the response completed or failed. */
  get settled(): boolean {
    return this.complete || this.failure !== undefined
  }
  /** Called once, in a microtask, when the response completed or failed (see release.ts: the connection is freed then). */
  onSettled: (() => void) | undefined = undefined
  readonly #carrier: Carrier
  constructor(carrier: Carrier, readonly reused: boolean) {
    this.#carrier = carrier
  }
  /** Registers a reader's wait; several readers may wait at once. */
  addWaiter(waiter: () => boolean): void {
    if (this.#waiter === undefined) this.#waiter = waiter
    else (this.#moreWaiters ??= Array.of()).push(waiter)
  }
  /** Lets every waiting reader whose wait is over resume. */
  wake(): void {
    const first = this.#waiter
    if (first !== undefined && first()) this.#waiter = undefined
    const more = this.#moreWaiters
    if (more === undefined) return
    this.#moreWaiters = undefined
    for (const waiter of more) if (!waiter()) this.addWaiter(waiter)
  }
  clearWaiters(): void {
    this.#waiter = undefined
    this.#moreWaiters = undefined
  }
  /**
   * Keeps a copy of body bytes: a transport lends its bytes only for the
   * duration of `onData` (the Node connector reads every socket into one buffer).
   */
  append(chunk: Uint8Array): void {
    const body = this.body
    if (body !== undefined) {
      body.set(chunk, this.#filled)
      this.#filled += chunk.length
    } else {
      // Uint8Array's slice copies; a Node Buffer's would be a view of the lent bytes.
      ;(this.#chunks ??= Array.of()).push(Uint8Array.prototype.slice.call(chunk))
    }
    this.buffered += chunk.length
  }
  /** The body bytes buffered so far, now the reader's: no array is written to after it was handed out. */
  take(): ReadonlyArray<Uint8Array> {
    this.buffered = 0
    const body = this.body
    if (body === undefined) {
      const chunks = this.#chunks ?? noChunks
      this.#chunks = undefined
      return chunks
    }
    const from = this.#taken
    if (from === this.#filled) return noChunks
    this.#taken = this.#filled
    return Array.of(from === 0 && this.#filled === body.length ? body : body.subarray(from, this.#filled))
  }
  /**
   * The rest of a complete body: taken once, then the same for every reader
   * that asks, so that two whole-body reads at once both get all of it.
   */
  takeRest(): ReadonlyArray<Uint8Array> {
    return this.#rest ??= this.take()
  }
  settle(): void {
    const onSettled = this.onSettled
    if (onSettled !== undefined) {
      this.onSettled = undefined
      // Not from inside the parser's callback: the connection may be checked in.
      queueMicrotask(onSettled)
    }
  }

  // --- body reads ------------------------------------------------------------

  /**
   * The next body bytes when they need no wait: all buffered chunks, an empty
   * array at the end of the body, or the exchange's failure; undefined while
   * the reader must wait. Bytes taken make the body streamed.
   */
  takeNext(): ReadonlyArray<Uint8Array> | AgentError | undefined {
    if (this.buffered > 0) {
      this.streamed = true
      const chunks = this.take()
      this.#carrier.resumeReading(this)
      return chunks
    }
    if (this.failure !== undefined) return this.failure
    if (this.complete) return noChunks
    return undefined
  }

  /**
   * Waits for the next body bytes: all buffered chunks, or `None` at the end.
   */
  pull(): Effect.Effect<Option.Option<ReadonlyArray<Uint8Array>>, AgentError> {
    return Effect.suspend(() => {
      this.streaming = true
      const take = (): Effect.Effect<Option.Option<ReadonlyArray<Uint8Array>>, AgentError> | undefined => {
        const next = this.takeNext()
        if (next === undefined) return undefined
        if (next instanceof AgentError) return Effect.fail(next)
        return Effect.succeed(next.length === 0 ? Option.none() : Option.some(next))
      }
      const now = take()
      if (now !== undefined) return now
      // What a settled exchange buffered stays readable after its connection moved on.
      if (this !== this.#carrier.exchange) return Effect.fail(this.#carrier.released())
      return waitFor(this, () => this.buffered > 0 || this.settled, take)
    })
  }

  /** The whole body, taken from the exchange, when it is all here already. */
  takeCompleteBody(): ReadonlyArray<Uint8Array> | undefined {
    if (!this.complete || this.failure !== undefined || this.streamed) return undefined
    return this.takeRest()
  }

  /**
   * Reads the rest of the body into memory: everything or nothing. Chunks stay
   * with the exchange until it completes, so an interrupted read loses none.
   */
  readAll(): Effect.Effect<ReadonlyArray<Uint8Array>, AgentError> {
    return Effect.suspend(() => {
      const ready = (): Effect.Effect<ReadonlyArray<Uint8Array>, AgentError> | undefined => {
        if (this.failure !== undefined) return Effect.fail(this.failure)
        // A stream took bytes: what is left would be a part passed off as the whole.
        if (this.streamed) return Effect.fail(this.#carrier.streamed())
        const chunks = this.takeCompleteBody()
        return chunks === undefined ? undefined : Effect.succeed(chunks)
      }
      const now = ready()
      if (now !== undefined) return now
      if (this !== this.#carrier.exchange) return Effect.fail(this.#carrier.released())
      // Collecting, not streaming: no backpressure pause from here on.
      this.streaming = false
      this.#carrier.resumeReading(this)
      return waitFor(this, () => this.settled, ready)
    })
  }
}

/**
 * Waits for an event of the exchange after which `isReady` holds, then runs
 * `ready` (which may take bytes) in the waiting fiber.
 *
 * The registration returns no canceler on purpose: with one, Effect.async wraps
 * the wait in `onInterrupt`, whose options object literal V8 pretenures under
 * load, and everything the wait refers to (the exchange, its head and body)
 * then survives scavenges. An interrupted waiter may stay registered; it is
 * harmless: the interrupted fiber ignores its resume, and it took nothing,
 * since only the resumed fiber runs `ready`.
 */
const waitFor = <A>(
  ex: Exchange,
  isReady: () => boolean,
  ready: () => Effect.Effect<A, AgentError> | undefined
): Effect.Effect<A, AgentError> => {
  const next = Effect.suspend(() => ready() ?? waitFor(ex, isReady, ready))
  return Effect.async<A, AgentError>((resume) => {
    if (isReady()) return resume(next)
    ex.addWaiter(() => {
      if (!isReady()) return false
      resume(next)
      return true
    })
  })
}
