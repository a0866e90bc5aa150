import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import { AgentError } from "../AgentError.js"
import type { Phase, Reason } from "../AgentError.js"
import type { Transport, TransportListener } from "../Connector.js"
import type { ResponseHead } from "../Http1.js"
import type { Origin } from "../Origin.js"
import * as Http1 from "./http1.js"
import { List, ListNode } from "./list.js"
import type { ConnectionScope } from "./scope.js"
import type { OriginPool } from "./pool.js"

/** Response bytes buffered before the transport is paused while a stream reads. */
const highWaterMark = 256 * 1024

/**
 * Time for a connection: the Clock (so TestClock governs every deadline) and
 * the Agent's watchdog, which wakes up for the connection's deadline.
 *
 * @internal
 */
export interface Timing {
  readonly clock: Clock.Clock
  readonly headersMillis: number
  readonly bodyMillis: number
  readonly watchdog: Watchdog
}

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
 * One timer fiber for all of an Agent's deadlines: the header and body
 * deadlines of its connections, and the connect deadlines of its openings.
 * (A watchdog fiber per connection cost ~90 us of every connection opened: the
 * fork into its scope, a timer, the interruption at close; `Effect.timeoutFail`
 * per connect raced two more fibers.)
 *
 * It sleeps until the earliest deadline it knows of. A deadline set later than
 * that (the common case: every deadline is now plus the same timeout) is only
 * recorded on its owner; when the fiber wakes it looks at what it watches,
 * expires what is past its deadline, forgets what has none, and sleeps until
 * the next. A deadline earlier than its wake-up starts a new fiber (a new
 * generation) and interrupts the old one.
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
            // deadline: the exchange has its timeout by then, either way.
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
      this.#wakeAt = next
      if (next === Infinity) {
        this.#fiber = undefined
        return Effect.void
      }
      return Effect.zipRight(Effect.sleep(Duration.millis(next - now)), this.#loop(generation))
    })
  }
}

/** @internal */
export type PreparedBody =
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Bytes"; readonly bytes: Uint8Array }
  | { readonly _tag: "Stream"; readonly length: number | undefined; readonly write: (conn: Connection) => Effect.Effect<void, AgentError> }

/** @internal */
export interface PreparedRequest {
  readonly method: string
  readonly head: Uint8Array
  readonly body: PreparedBody
}

let nextId = 1

/**
 * One transport and one response parser: the unit the pool owns. It carries one
 * exchange at a time and decides from what it saw whether it may carry another.
 *
 * @internal
 */
export class Connection implements TransportListener, Deadline {
  readonly id = nextId++
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  /** Requests completed on this connection. */
  served = 0
  /** Clock millis when it last became idle. */
  idleSince = 0
  /** Clock nanos when it was last released: decides the I/O turn before reuse. */
  releasedAtNanos = 0n
  /** Effective idle timeout, shortened by a server's Keep-Alive hint. */
  idleTimeoutMillis: number
  /** Set once anything odd was seen: never reuse. */
  broken = false
  closed = false
  busy = false
  /** When the idle-timer fiber wakes next (Infinity: no timer). */
  timerWakeAt = Infinity
  /** Bumped to retire a timer fiber that sleeps too long. */
  timerGeneration = 0
  /** The pool's record of its origin (set once open). */
  site: OriginPool | undefined = undefined
  /** Its place in the pool's list of idle connections (in it while idle). */
  readonly idleNode = new ListNode<Connection>(this)
  /** The scope the connection lives in (its place in the pool's list); undefined once the pool closed it. */
  scope: ListNode<ConnectionScope> | undefined = undefined
  /** Clock millis when it opened (for `maxConnectionAge`). */
  openedAt = 0
  /** Called when an idle connection breaks (FIN, RST, stray bytes). */
  onIdleBreak: (() => void) | undefined = undefined

  readonly #transport: Transport
  readonly #parser: Http1.ResponseParser
  readonly #timing: Timing
  #exchange: Exchange | undefined = undefined
  #paused = false
  // The deadline of the current phase, watched by the Agent's Watchdog.
  // Moving it on the hot path is an assignment, not a fork.
  #deadline = Infinity
  #phase: Phase = "headers"

  constructor(
    readonly origin: Origin,
    transport: Transport,
    idleTimeoutMillis: number,
    parserOptions: Http1.ParserOptions,
    timing: Timing
  ) {
    this.idleTimeoutMillis = idleTimeoutMillis
    this.#timing = timing
    this.#transport = transport
    // Read once connected: a destroyed Node socket no longer knows it, and a
    // response may outlive its connection (freed as soon as the body came).
    this.remoteAddress = transport.remoteAddress
    this.#parser = new Http1.ResponseParser(this, parserOptions)
    transport.listen(this)
  }

  /** The peer's address, as the transport gave it when the connection was made. */
  readonly remoteAddress: string | undefined

  // --- parser events -------------------------------------------------------

  onHead(head: ResponseHead): void {
    const ex = this.#exchange!
    ex.head = head
    const length = head.contentLength
    // A body of known size that a stream would buffer anyway goes into one
    // array: one allocation, and the bytes a reader gets need no joining.
    if (length !== undefined && length > 0 && length <= highWaterMark) ex.body = new Uint8Array(length)
    this.#arm("body", this.#timing.bodyMillis)
    ex.wake()
  }

  onBody(chunk: Uint8Array): void {
    const ex = this.#exchange!
    ex.append(chunk)
    if (ex.streaming && ex.buffered > highWaterMark && !this.#paused) {
      // Paused by us: silence from the server is not its fault.
      this.#paused = true
      this.#deadline = Infinity
      this.#transport.pause()
    } else if (!this.#paused) {
      this.#arm("body", this.#timing.bodyMillis)
    }
    ex.wake()
  }

  onComplete(_trailers: Record<string, string>): void {
    const ex = this.#exchange!
    ex.complete = true
    this.#deadline = Infinity
    ex.wake()
    ex.settle()
  }

  // --- transport events ----------------------------------------------------

  /**
   * The exchange still waiting for bytes. Otherwise the connection is done
   * for: bytes with no request in flight are never read as the next response,
   * and a response that was complete stays good while its connection does not.
   */
  #waitingExchange(): Exchange | undefined {
    const ex = this.#exchange
    if (ex === undefined || ex.complete || ex.failure !== undefined) {
      this.#breakIdle()
      return undefined
    }
    return ex
  }

  onData(chunk: Uint8Array): void {
    const ex = this.#waitingExchange()
    if (ex === undefined) return
    ex.receivedAny = true
    const error = this.#parser.execute(chunk)
    if (error !== undefined) {
      this.#fail(ex, error.reason === "Unsolicited" ? "Protocol" : error.reason, error.detail)
    }
  }

  onEnd(): void {
    const ex = this.#waitingExchange()
    if (ex === undefined) return
    this.broken = true
    // A close-delimited body completes here (onComplete runs); anything else is cut short.
    if (this.#parser.finish() !== undefined || !ex.complete) this.#failClosed(ex, "closed by the peer")
  }

  onError(cause: unknown): void {
    const ex = this.#waitingExchange()
    if (ex === undefined) return
    this.#failClosed(ex, String(cause), cause)
  }

  onClose(): void {
    this.closed = true
    this.#timing.watchdog.unwatch(this)
    const ex = this.#waitingExchange()
    if (ex === undefined) return
    if (this.#parser.finish() !== undefined || !ex.complete) this.#failClosed(ex, "connection closed")
  }

  onDrain(): void {
    const ex = this.#exchange
    if (ex !== undefined && ex.drain !== undefined) {
      const resume = ex.drain
      ex.drain = undefined
      resume()
    }
  }

  #breakIdle(): void {
    const first = !this.broken
    this.broken = true
    this.#transport.destroy()
    // A connection in the pool's idle set must leave it now; a busy one is
    // dropped when its exchange ends.
    if (first && !this.busy && this.onIdleBreak !== undefined) this.onIdleBreak()
  }

  #failClosed(ex: Exchange, detail: string, cause?: unknown): void {
    // A reused connection that dies before any response byte was stale: the
    // request may be retried when that is safe.
    const reason: Reason = !ex.receivedAny && ex.reused
      ? "Stale"
      : ex.receivedAny
      ? "Truncated"
      : "Transport"
    this.#fail(ex, reason, detail, cause)
  }

  #fail(ex: Exchange, reason: Reason, detail: string, cause?: unknown, phase?: Phase): void {
    this.broken = true
    this.#deadline = Infinity
    // The failure is recorded, and its reader woken, even if the transport's destroy throws.
    if (ex.failure === undefined) {
      ex.failure = new AgentError({
        reason,
        origin: this.origin.key,
        detail,
        ...(phase !== undefined ? { phase } : {}),
        ...(cause !== undefined ? { cause } : {})
      })
    }
    try {
      this.#transport.destroy()
    } finally {
      ex.wake()
      ex.settle()
    }
  }

  // --- the exchange ----------------------------------------------------------

  /** Writes bytes, waiting for the transport's buffer to drain when it is full. */
  write(bytes: Uint8Array): Effect.Effect<void, AgentError> {
    return Effect.suspend(() => {
      const ex = this.#exchange
      if (ex === undefined || this.broken) return this.#currentFailure()
      if (ex.head !== undefined) {
        // The server answered before the body was sent (e.g. 413): stop sending.
        ex.abandonedBody = true
        return Effect.interrupt
      }
      if (this.#transport.write(bytes)) return Effect.void
      return Effect.async<void>((resume) => {
        ex.drain = () => resume(Effect.void)
        return Effect.sync(() => {
          ex.drain = undefined
        })
      })
    })
  }

  #currentFailure(): Effect.Effect<never, AgentError> {
    return Effect.fail(
      this.#exchange?.failure ??
        new AgentError({ reason: "Transport", origin: this.origin.key, detail: "connection closed" })
    )
  }

  /**
   * Sends a request and waits for the response head. The connection must be
   * idle and unbroken. The bytes are written when this is called, not when
   * the effect runs: call it from inside the effect that sends.
   */
  send(request: PreparedRequest): Effect.Effect<ResponseHead, AgentError> {
    const ex = new Exchange(this.served > 0)
    this.#exchange = ex
    this.busy = true
    this.#parser.expect(request.method)
    this.#arm("headers", this.#timing.headersMillis)
    const body = request.body
    if (body._tag === "Bytes" && body.bytes.length > 0) {
      if (body.bytes.length <= 16384) {
        const joined = new Uint8Array(request.head.length + body.bytes.length)
        joined.set(request.head, 0)
        joined.set(body.bytes, request.head.length)
        this.#transport.write(joined)
      } else {
        this.#transport.write(request.head)
        this.#transport.write(body.bytes)
      }
    } else {
      this.#transport.write(request.head)
    }
    const head = this.#awaitHead(ex)
    if (body._tag !== "Stream") return head
    ex.requestSent = false
    // Stream the body while waiting for the head: a server may answer early.
    return Effect.raceFirst(
      head,
      Effect.zipRight(
        Effect.catchAllCause(Effect.tap(body.write(this), () => {
          ex.requestSent = true
        }), (cause) => {
          if (ex.abandonedBody) return Effect.never
          ex.abandonedBody = true
          this.broken = true
          this.#transport.destroy()
          return Effect.failCause(cause)
        }),
        Effect.never
      )
    )
  }

  #awaitHead(ex: Exchange): Effect.Effect<ResponseHead, AgentError> {
    const ready = (): Effect.Effect<ResponseHead, AgentError> | undefined => {
      if (ex.head !== undefined) return Effect.succeed(ex.head)
      if (ex.failure !== undefined) return Effect.fail(ex.failure)
      return undefined
    }
    return ready() ?? waitFor(ex, () => ex.head !== undefined || ex.failure !== undefined, ready)
  }

  /** Sets the deadline of a phase (none for an infinite timeout). */
  #arm(phase: Phase, millis: number): void {
    if (!Number.isFinite(millis)) {
      this.#deadline = Infinity
      return
    }
    this.#phase = phase
    this.#deadline = this.#timing.clock.unsafeCurrentTimeMillis() + millis
    this.#timing.watchdog.watch(this, this.#deadline)
  }

  /** The deadline the watchdog looks at: Infinity when there is nothing to time out. */
  get deadline(): number {
    return this.closed || this.#exchange === undefined ? Infinity : this.#deadline
  }

  /** Called by the watchdog once the deadline passed: the exchange fails with a timeout. */
  expire(): void {
    const ex = this.#exchange
    if (ex === undefined || this.closed || this.#deadline === Infinity) return
    const phase = this.#phase
    this.#fail(ex, "Timeout", `no ${phase === "headers" ? "response head" : "body bytes"} within the timeout`, undefined, phase)
  }

  /** What reading a response fails with once its connection moved on without it. */
  #released(): AgentError {
    return new AgentError({ reason: "Closed", origin: this.origin.key, detail: "the response was released before its body was read" })
  }

  #streamed(): AgentError {
    return new AgentError({ reason: "Closed", origin: this.origin.key, detail: "the body was read as a stream, which keeps no bytes" })
  }

  /** The exchange in flight, the handle its response reads the body through. */
  get exchange(): Exchange | undefined {
    return this.#exchange
  }

  /** True when the response was read to its end without error. */
  get responseComplete(): boolean {
    const ex = this.#exchange
    return ex !== undefined && ex.complete && ex.failure === undefined
  }

  /**
   * Waits for the next body bytes: all buffered chunks, or `None` at the end.
   */
  pull(ex: Exchange): Effect.Effect<Option.Option<ReadonlyArray<Uint8Array>>, AgentError> {
    return Effect.suspend(() => {
      ex.streaming = true
      const take = (): Effect.Effect<Option.Option<ReadonlyArray<Uint8Array>>, AgentError> | undefined => {
        if (ex.buffered > 0) {
          ex.streamed = true
          const chunks = ex.take()
          // Only the exchange in flight owns the pause (an earlier one read late must not resume it).
          if (this.#paused && ex === this.#exchange) {
            this.#paused = false
            this.#transport.resume()
            this.#arm("body", this.#timing.bodyMillis)
          }
          return Effect.succeed(Option.some(chunks))
        }
        if (ex.failure !== undefined) return Effect.fail(ex.failure)
        if (ex.complete) return Effect.succeed(Option.none())
        return undefined
      }
      const now = take()
      if (now !== undefined) return now
      // What a settled exchange buffered stays readable after its connection moved on.
      if (ex !== this.#exchange) return Effect.fail(this.#released())
      return waitFor(ex, () => ex.buffered > 0 || ex.settled, take)
    })
  }

  /** The whole body, taken from the exchange, when it is all here already. */
  takeCompleteBody(ex: Exchange): ReadonlyArray<Uint8Array> | undefined {
    if (!ex.complete || ex.failure !== undefined || ex.streamed) return undefined
    return ex.takeRest()
  }

  /**
   * Reads the rest of the body into memory: everything or nothing. Chunks stay
   * with the exchange until it completes, so an interrupted read loses none.
   */
  readAll(ex: Exchange): Effect.Effect<ReadonlyArray<Uint8Array>, AgentError> {
    return Effect.suspend(() => {
      const ready = (): Effect.Effect<ReadonlyArray<Uint8Array>, AgentError> | undefined => {
        if (ex.failure !== undefined) return Effect.fail(ex.failure)
        // A stream took bytes: what is left would be a part passed off as the whole.
        if (ex.streamed) return Effect.fail(this.#streamed())
        const chunks = this.takeCompleteBody(ex)
        return chunks === undefined ? undefined : Effect.succeed(chunks)
      }
      const now = ready()
      if (now !== undefined) return now
      if (ex !== this.#exchange) return Effect.fail(this.#released())
      // Collecting, not streaming: no backpressure pause from here on.
      ex.streaming = false
      if (this.#paused) {
        this.#paused = false
        this.#transport.resume()
        this.#arm("body", this.#timing.bodyMillis)
      }
      return waitFor(ex, () => ex.settled, ready)
    })
  }

  /**
   * Ends the exchange. Returns true when the connection may carry another
   * request, applying the server's Keep-Alive hint.
   */
  finish(configuredIdleMillis: number): boolean {
    const ex = this.#exchange
    this.busy = false
    if (ex === undefined) return false
    if (!ex.settled) {
      // Released mid-response: a reader still waiting (one forked off, say)
      // fails now rather than waiting for bytes that will never come.
      ex.failure = this.#released()
      ex.wake()
    }
    ex.clearWaiters()
    ex.drain = undefined
    this.#exchange = undefined
    this.#deadline = Infinity
    if (this.#paused) {
      this.#paused = false
      this.#transport.resume()
    }
    const reusable = !this.broken && ex.requestSent && ex.failure === undefined && ex.complete &&
      this.#parser.canReuse && ex.head !== undefined
    if (!reusable) {
      this.broken = true
      return false
    }
    this.served++
    const hint = ex.head!.keepAliveTimeout
    this.idleTimeoutMillis = hint === undefined ? configuredIdleMillis : Math.min(configuredIdleMillis, hint - 1000)
    if (this.idleTimeoutMillis <= 0) {
      this.broken = true
      return false
    }
    return true
  }

  /** Closes the transport at once. */
  destroy(): void {
    this.broken = true
    this.#timing.watchdog.unwatch(this)
    this.#transport.destroy()
  }
}

const noChunks: ReadonlyArray<Uint8Array> = Object.freeze([])

/** What one request/response exchange has seen so far. @internal */
export class Exchange {
  head: ResponseHead | undefined = undefined
  /** Body bytes received and not yet taken by a reader. */
  buffered = 0
  /** The body's one array, when its size is known and small enough (see `onHead`); else bytes go to `#chunks`. */
  body: Uint8Array | undefined = undefined
  #filled = 0
  #taken = 0
  /** What `takeRest` took, for the next whole-body reader. */
  #rest: ReadonlyArray<Uint8Array> | undefined = undefined
  // No array literals here: V8 may pretenure them (see `Head` in http1.ts), and
  // these point to young body bytes. `Array.of` is not pretenured.
  #chunks: Array<Uint8Array> | undefined = undefined
  complete = false
  failure: AgentError | undefined = undefined
  receivedAny = false
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
  /** Called once when the response completed or failed (the connection is freed there: `Held.freeWhenComplete`). */
  onSettled: (() => void) | undefined = undefined
  constructor(readonly reused: boolean) {}
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
