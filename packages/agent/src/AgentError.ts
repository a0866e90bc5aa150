/**
 * The one error family of the Agent.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * Why a request failed, fine enough to decide a retry:
 * - `Connect`: the connection could not be opened (nothing was sent).
 * - `Proxy`: the proxy refused the connection (a 407, a CONNECT answered
 *   with another status than 2xx, a SOCKS5 failure reply, a proxy that closed
 *   during its handshake); nothing was sent to the origin.
 * - `Stale`: a reused connection was closed by the peer before any response byte.
 * - `Protocol`: the peer sent bytes that are not valid HTTP/1.1 (or not expected).
 * - `HeadersTooLarge`: the response head exceeded `maxHeaderSize` or the field count.
 * - `Truncated`: the peer closed before the response was complete.
 * - `Timeout`: a phase took longer than its timeout (see `phase`).
 * - `InvalidRequest`: the request was refused before a byte was written, or its
 *   streamed body contradicted its declared length (the connection is then closed).
 * - `Transport`: the socket failed mid-exchange.
 * - `Unavailable`: the service of the fleet's connection permits
 *   (`ConnectionPermits`) could not give one (its store is unreachable and
 *   its policy is to fail); nothing was sent.
 * - `Closed`: the Agent was shut down, a response was read after it was released,
 *   or a body was read whole after a stream took its bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type Reason =
  | "Connect"
  | "Proxy"
  | "Stale"
  | "Protocol"
  | "HeadersTooLarge"
  | "Truncated"
  | "Timeout"
  | "InvalidRequest"
  | "Transport"
  | "Unavailable"
  | "Closed"

/**
 * The phase a timeout applies to: waiting for a connection (`queueTimeout`),
 * opening one, waiting for the response head, or between body bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type Phase = "queue" | "connect" | "headers" | "body"

/**
 * A failed request or connection, with the origin it concerned.
 *
 * `requestSent` says whether any byte of the request may have reached the
 * server. False for `Connect`, a `Timeout` while queued or connecting,
 * `InvalidRequest` refused before writing, and `Closed` before sending: such
 * a request may be sent again, even a POST. True otherwise, unless the
 * constructor was told better.
 *
 * @since 0.1.0
 * @category errors
 */
export class AgentError extends Data.TaggedError("AgentError")<AgentError.Fields> {
  /** Whether any byte of the request may have reached the server. */
  declare readonly requestSent: boolean

  constructor(args: AgentError.Fields) {
    super(args.requestSent === undefined ? { ...args, requestSent: sentByDefault(args.reason, args.phase) } : args)
  }

  override get message(): string {
    return `${this.reason}${this.phase ? ` (${this.phase})` : ""} ${this.origin}: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 */
export declare namespace AgentError {
  /**
   * What an `AgentError` is made of.
   *
   * @since 0.1.0
   * @category models
   */
  export interface Fields {
    readonly reason: Reason
    /** The origin key (`scheme://host:port`), or `""` when the URL had none. */
    readonly origin: string
    readonly detail: string
    readonly phase?: Phase
    readonly cause?: unknown
    /** Whether any byte of the request may have reached the server (see the class doc for the default). */
    readonly requestSent?: boolean
  }
}

const sentByDefault = (reason: Reason, phase: Phase | undefined): boolean =>
  !(reason === "Connect" || reason === "Proxy" || reason === "Unavailable" || reason === "InvalidRequest" || reason === "Closed" ||
    (reason === "Timeout" && (phase === "queue" || phase === "connect")))

/**
 * True when the value is an `AgentError`.
 *
 * @since 0.1.0
 * @category refinements
 */
export const isAgentError = (u: unknown): u is AgentError => u instanceof AgentError
