import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Agent from "../Agent.js"
import { AgentError } from "../AgentError.js"
import type { Phase, Reason } from "../AgentError.js"
import type { Transport, TransportListener } from "../Connector.js"
import type { ResponseHead } from "../Http1.js"
import type { Origin } from "../Origin.js"
import { type Carrier, Exchange, highWaterMark } from "./exchange.js"
import { idleTimeoutAfter, responsesAllowed } from "./headRules.js"
import { ListNode } from "./list.js"
import * as ResponseReader from "./responseReader.js"
import type { Deadline, Watchdog } from "./watchdog.js"

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
  /** Set when the Agent's shutdown closes the connections still in use: their exchanges fail `Closed`. */
  readonly shutdown: { cutShort: boolean }
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
 * What a connection tells whoever keeps it between exchanges.
 *
 * @internal
 */
export interface IdleBreakListener {
  /** The connection broke (FIN, RST, stray bytes) with no exchange waiting for bytes. */
  onIdleBreak(): void
}

/** Why a connection closed (see `Agent.ConnectionCloseReason`). @internal */
export type CloseReason = Agent.ConnectionCloseReason

/**
 * One transport and one response parser: it carries one exchange at a time
 * (writes the request, feeds the response's bytes to its exchange, times its
 * phases through the Agent's Watchdog) and decides from what it saw whether
 * it may carry another. It knows nothing of pools: whoever holds it asks
 * `finish` whether it may be reused.
 *
 * @internal
 */
export class Connection implements TransportListener, Deadline, Carrier {
  readonly id = nextId++
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  /** Requests completed on this connection. */
  served = 0
  /** Effective idle timeout, shortened by a server's Keep-Alive hint. */
  idleTimeoutMillis: number
  /** Set once anything odd was seen: never reuse. */
  broken = false
  closed = false
  /** Why it may not be reused, once it knows (the pool names the reasons it decides itself). */
  closeReason: CloseReason | undefined = undefined
  /** Responses it may carry in all: `maxRequestsPerConnection`, lowered by a server's `Keep-Alive: max` (the responses served so far plus N). */
  #allowed: number
  /** Told when the connection breaks between exchanges (whoever keeps it idle). */
  owner: IdleBreakListener | undefined = undefined

  readonly #transport: Transport
  readonly #parser: ResponseReader.ResponseParser
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
    maxResponses: number,
    parserOptions: ResponseReader.InternalParserOptions,
    timing: Timing
  ) {
    this.idleTimeoutMillis = idleTimeoutMillis
    this.#allowed = maxResponses
    this.#timing = timing
    this.#transport = transport
    // Read once connected: a destroyed Node socket no longer knows it, and a
    // response may outlive its connection (freed as soon as the body came).
    this.remoteAddress = transport.remoteAddress
    this.#parser = new ResponseReader.ResponseParser(this, parserOptions)
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
  #waitingExchange(reason: CloseReason): Exchange | undefined {
    const ex = this.#exchange
    if (ex === undefined || ex.complete || ex.failure !== undefined) {
      this.#breakIdle(reason)
      return undefined
    }
    this.closeReason ??= reason
    return ex
  }

  onData(chunk: Uint8Array): void {
    const ex = this.#exchange
    if (ex === undefined || ex.complete || ex.failure !== undefined) {
      // Between responses the parser skips empty lines (some servers send a
      // CRLF after a body); anything else ends the connection, and is never
      // read as the next response. A broken connection (its response given
      // up mid-body, say) reads nothing more at all.
      if (this.broken || ex?.failure !== undefined || this.#parser.execute(chunk) !== undefined) this.#breakIdle("error")
      return
    }
    const error = this.#parser.execute(chunk)
    if (error === undefined) return
    // A response complete before the bytes that follow it in the same read
    // stands, correctly framed as it was; only its connection is done for.
    if (ex.complete) return this.#breakIdle("error")
    this.#fail(ex, error.reason === "Unsolicited" ? "Protocol" : error.reason, error.detail)
  }

  onEnd(): void {
    const ex = this.#waitingExchange("server_close")
    if (ex === undefined) return
    this.broken = true
    // A close-delimited body completes here (onComplete runs); anything else is cut short.
    if (this.#parser.finish() !== undefined || !ex.complete) this.#failClosed(ex, "closed by the peer")
  }

  onError(cause: unknown): void {
    const ex = this.#waitingExchange("error")
    if (ex === undefined) return
    this.#failClosed(ex, String(cause), cause)
  }

  onClose(): void {
    this.closed = true
    this.#timing.watchdog.unwatch(this)
    const ex = this.#waitingExchange("server_close")
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

  #breakIdle(reason: CloseReason): void {
    const first = !this.broken
    this.broken = true
    this.closeReason ??= reason
    this.#transport.destroy()
    // An idle connection must leave the pool now; one still checked out is
    // dropped when its exchange ends (its owner knows which it is).
    if (first && this.owner !== undefined) this.owner.onIdleBreak()
  }

  #failClosed(ex: Exchange, detail: string, cause?: unknown): void {
    if (this.#timing.shutdown.cutShort) {
      return this.#fail(ex, "Closed", "the Agent was shut down before the response was complete", cause, undefined, true)
    }
    // A reused connection that dies before any response byte (empty lines
    // aside) was stale: the request may be retried when that is safe.
    const received = this.#parser.received
    const reason: Reason = !received && ex.reused
      ? "Stale"
      : received
      ? "Truncated"
      : "Transport"
    this.#fail(ex, reason, detail, cause)
  }

  #fail(ex: Exchange, reason: Reason, detail: string, cause?: unknown, phase?: Phase, requestSent?: boolean): void {
    this.broken = true
    this.closeReason ??= "error"
    this.#deadline = Infinity
    // The failure is recorded, and its reader woken, even if the transport's destroy throws.
    if (ex.failure === undefined) {
      ex.failure = new AgentError({
        reason,
        origin: this.origin.key,
        detail,
        ...(phase !== undefined ? { phase } : {}),
        ...(cause !== undefined ? { cause } : {}),
        ...(requestSent !== undefined ? { requestSent } : {})
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
    const ex = new Exchange(this, this.served > 0)
    this.#exchange = ex
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
          this.#unusable("error")
          this.#transport.destroy()
          return Effect.failCause(cause)
        }),
        Effect.never
      )
    )
  }

  #awaitHead(ex: Exchange): Effect.Effect<ResponseHead, AgentError> {
    // One wait, resumed with the outcome itself (no step to look again).
    return headOf(ex) ?? Effect.async<ResponseHead, AgentError>((resume) => {
      const now = headOf(ex)
      if (now !== undefined) return resume(now)
      ex.addWaiter(() => {
        const settled = headOf(ex)
        if (settled === undefined) return false
        resume(settled)
        return true
      })
    })
  }

  /**
   * Lifts the pause `onBody` put on the transport, if any: it reads again
   * and, with an exchange in flight, that exchange's body deadline runs again.
   */
  #unpause(): void {
    if (!this.#paused) return
    this.#paused = false
    this.#transport.resume()
    if (this.#exchange !== undefined) this.#arm("body", this.#timing.bodyMillis)
  }

  /** Lifts the pause for a reader of `ex`, the exchange in flight (see `Carrier`). */
  resumeReading(ex: Exchange): void {
    if (ex === this.#exchange) this.#unpause()
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
  released(): AgentError {
    return new AgentError({
      reason: "Closed",
      origin: this.origin.key,
      detail: "the response was released before its body was read",
      requestSent: true
    })
  }

  /** What a whole-body read fails with once a stream took some of the bytes. */
  streamed(): AgentError {
    return new AgentError({
      reason: "Closed",
      origin: this.origin.key,
      detail: "the body was read as a stream, which keeps no bytes",
      requestSent: true
    })
  }

  /** The exchange in flight, the handle its response reads the body through (see `Carrier`). */
  get exchange(): Exchange | undefined {
    return this.#exchange
  }

  /** True when the response was read to its end without error. */
  get responseComplete(): boolean {
    const ex = this.#exchange
    return ex !== undefined && ex.complete && ex.failure === undefined
  }

  /**
   * Ends the exchange. Returns true when the connection may carry another
   * request, applying the server's Keep-Alive hint.
   */
  finish(configuredIdleMillis: number): boolean {
    const ex = this.#exchange
    if (ex === undefined) return false
    if (!ex.settled) {
      // Released mid-response: a reader still waiting (one forked off, say)
      // fails now rather than waiting for bytes that will never come.
      ex.failure = this.released()
      ex.wake()
    }
    ex.clearWaiters()
    ex.drain = undefined
    this.#exchange = undefined
    this.#deadline = Infinity
    this.#unpause()
    const head = ex.head
    if (this.broken || !ex.requestSent || ex.failure !== undefined || !ex.complete || head === undefined) {
      return this.#unusable("error")
    }
    // The server said it closes (Connection: close, HTTP/1.0, a close-delimited body).
    if (!this.#parser.canReuse) return this.#unusable("server_close")
    this.served++
    this.#allowed = responsesAllowed(this.#allowed, this.served, head.keepAliveMax)
    if (this.served >= this.#allowed) return this.#unusable("max_requests")
    this.idleTimeoutMillis = idleTimeoutAfter(configuredIdleMillis, head.keepAliveTimeout)
    // A hint of a second or less: the server closes before a next request could safely go out.
    if (this.idleTimeoutMillis <= 0) return this.#unusable("server_close")
    return true
  }

  #unusable(reason: CloseReason): false {
    this.broken = true
    this.closeReason ??= reason
    return false
  }

  /** Closes the transport at once. */
  destroy(): void {
    this.broken = true
    this.#timing.watchdog.unwatch(this)
    this.#transport.destroy()
  }
}

/** The exchange's head, or its failure, once it has either. */
const headOf = (ex: Exchange): Effect.Effect<ResponseHead, AgentError> | undefined =>
  ex.head !== undefined ? Effect.succeed(ex.head) : ex.failure !== undefined ? Effect.fail(ex.failure) : undefined
