/**
 * The service that opens byte streams to origins. The core never touches a
 * socket itself: `@keepalive/node` provides a node:net/node:tls Connector,
 * tests provide an in-memory one.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { AgentError } from "./AgentError.js"
import type { Origin } from "./Origin.js"
import type { Endpoint } from "./Proxy.js"

/**
 * What a Transport reports. Callbacks run synchronously on the transport's
 * own events, and never after `onClose`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransportListener {
  /**
   * Bytes arrived, lent for the duration of the call: the receiver copies
   * what it keeps, since a transport may read its next bytes into the same array.
   */
  onData(chunk: Uint8Array): void
  /** The peer will send no more bytes (FIN). */
  onEnd(): void
  /** The transport failed; `onClose` follows. */
  onError(cause: unknown): void
  /** The transport is closed for good. */
  onClose(): void
  /** The write buffer has room again after `write` returned false. */
  onDrain(): void
}

/**
 * An open, full-duplex byte stream to one origin.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transport {
  /** Installs the listener; events before this call are buffered by the implementation. */
  listen(listener: TransportListener): void
  /** Queues bytes; false means the buffer is full and `onDrain` will follow. */
  write(chunk: Uint8Array): boolean
  /** Stops delivering `onData` until `resume`. */
  pause(): void
  resume(): void
  /** Closes at once, discarding what is unsent. Idempotent. */
  destroy(): void
  /** The peer's address, when known. */
  readonly remoteAddress: string | undefined
}

/**
 * Options the Agent passes when it opens a transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions {
  /** Server name for TLS (SNI) and certificate checks; the origin's host by default. */
  readonly servername?: string | undefined
  /**
   * The proxy to go through, when there is one. The transport then reaches
   * the origin as follows:
   * - an `http` proxy and an `http:` origin: a plain connection to the proxy,
   *   which the Agent sends absolute-form requests to (forwarding);
   * - an `http` proxy and an `https:` origin: a CONNECT tunnel to the origin,
   *   then TLS with the origin inside it;
   * - a `socks5`/`socks5h` proxy: the SOCKS5 handshake to the origin, then
   *   TLS for an `https:` origin.
   *
   * What the proxy refuses fails with reason `Proxy`; a proxy that cannot be
   * reached, with reason `Connect` naming the proxy.
   */
  readonly proxy?: Endpoint | undefined
}

/**
 * Opens transports to origins.
 *
 * @since 0.1.0
 * @category services
 */
export class Connector extends Context.Tag("@keepalive/agent/Connector")<Connector, {
  /**
   * Opens a transport in the connection's scope: whatever the attempt
   * creates (a socket) is registered in that scope *before* waiting, so that
   * an interruption at any moment, even one that lands just as the connect
   * succeeded, frees it when the Agent closes the scope. Interruption must
   * abort the attempt. Fails with reason `Connect`.
   */
  readonly connect: (origin: Origin, options: ConnectOptions) => Effect.Effect<Transport, AgentError, Scope.Scope>
  /**
   * Lets pending I/O events run (a macrotask), so that a FIN, RST or stray
   * bytes that already reached an idle connection are seen before reuse.
   */
  readonly yieldToIo: Effect.Effect<void>
}>() {}
