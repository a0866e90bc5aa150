import { AgentError } from "@keepalive/agent/AgentError"
import type { ConnectOptions, Transport, TransportListener } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import * as net from "node:net"
import * as tls from "node:tls"
import type * as NodeConnector from "../NodeConnector.js"

type Event =
  | { readonly _tag: "data"; readonly chunk: Uint8Array }
  | { readonly _tag: "end" | "close" | "drain" }
  | { readonly _tag: "error"; readonly cause: unknown }

/**
 * Where plain TCP sockets read into: one buffer for all of them (`onread`).
 * Each read is handed to the connection, which copies what it keeps before
 * the callback returns, so reads never overwrite bytes still in use. This
 * skips what a Readable stream costs per read: a fresh 64 KiB allocation
 * (page faults whenever malloc gave that memory back to the OS), a Buffer
 * object and the stream's bookkeeping.
 */
const readBuffer = Buffer.allocUnsafe(64 * 1024)

/** How long a socket whose write failed keeps reading what its peer sent before it closed. */
const lingerMillis = 200

/**
 * A peer that answers and closes while a request body is still being sent
 * (an HTTP/1.0 server that does not read the body) makes the next write fail
 * (EPIPE, ECONNRESET). Node then destroys the socket at once, and the answer
 * the peer sent first, already in the kernel's buffer but not yet read, is
 * lost. So a write error does not destroy the socket at once: it keeps reading
 * until the peer's EOF, a read error, our own destroy, or `lingerMillis`, and
 * then reports the write error.
 *
 * Two of Node's ways are relied on (`python-http-server.test.ts` fails if
 * either changes): a socket is destroyed on a write error through its
 * `destroy(error)`, with an error whose `syscall` is `"write"` (that call is
 * deferred); and its read side, errored by the write error from then on, emits
 * no 'end', but still hands EOF to its `push(null)` (which `onEnd` hears).
 */
const lingerAfterWriteError = (socket: net.Socket, onEnd: () => void): void => {
  const destroyNow = socket.destroy.bind(socket)
  let writeError: Error | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  const finish = () => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    destroyNow(writeError)
  }
  socket.destroy = (error?: Error) => {
    if (
      error !== undefined && (error as NodeJS.ErrnoException).syscall === "write" && !socket.destroyed &&
      !socket.readableEnded
    ) {
      if (writeError === undefined) {
        writeError = error
        timer = setTimeout(finish, lingerMillis)
        // Only now: every read of a TLS socket goes through push.
        const push = socket.push.bind(socket)
        socket.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
          const pushed = push(chunk, encoding)
          if (chunk === null && timer !== undefined) {
            onEnd()
            finish()
          }
          return pushed
        }
      }
      return socket
    }
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    // A read error or our own destroy ends the lingering at once.
    return destroyNow(error)
  }
}

/** What a closed socket still listens with: an 'error' emitted with no listener would throw. */
const ignoreError = (): void => {}

/** A net.Socket as a Transport; events before `listen` are queued. */
class SocketTransport implements Transport {
  #listener: TransportListener | undefined = undefined
  #queued: Array<Event> | undefined = []
  readonly #tlsHost: string | undefined

  /**
   * `copiesReads`: the socket reads with `onread` and calls `received` itself,
   * no 'data' events. `tlsHost`: the host of a TLS socket. `address`: the
   * host when it is an IP literal (the address the socket connects to).
   */
  constructor(
    readonly socket: net.Socket,
    copiesReads: boolean,
    tlsHost: string | undefined,
    readonly address: string | undefined
  ) {
    this.#tlsHost = tlsHost
    if (!copiesReads) socket.on("data", this.#onData)
    lingerAfterWriteError(socket, this.#onEnd)
    socket.on("end", this.#onEnd)
    socket.on("error", this.#onError)
    socket.on("close", this.#onClose)
    socket.on("drain", this.#onDrain)
  }

  readonly #onData = (chunk: Buffer): void => this.received(chunk)

  readonly #onEnd = (): void => this.#ended()

  readonly #onError = (raw: unknown): void => {
    // A TLS alert after the handshake (TLS 1.3: a server refusing the
    // client's certificate) is one readable line too, not OpenSSL's.
    const tlsHost = this.#tlsHost
    const cause = tlsHost !== undefined && isOpenSslError(raw) ? new Error(tlsFailure(raw, tlsHost), { cause: raw }) : raw
    if (this.#listener) this.#listener.onError(cause)
    else this.#queue({ _tag: "error", cause })
  }

  readonly #onClose = (): void => {
    const listener = this.#listener
    if (listener === undefined) return this.#queue({ _tag: "close" })
    // Nothing follows a close. The socket, which Node keeps reachable until
    // a full GC, lets go of the connection's graph and of this transport's
    // listeners: only a shared no-op 'error' listener stays.
    this.#listener = undefined
    this.#queued = undefined
    this.#unlisten()
    listener.onClose()
  }

  readonly #onDrain = (): void => this.#listener ? this.#listener.onDrain() : this.#queue({ _tag: "drain" })

  #unlisten(): void {
    const socket = this.socket
    socket.on("error", ignoreError)
    socket.off("data", this.#onData)
    socket.off("end", this.#onEnd)
    socket.off("error", this.#onError)
    socket.off("close", this.#onClose)
    socket.off("drain", this.#onDrain)
  }

  /** Bytes read, lent to the listener for this call only. */
  received(chunk: Uint8Array): void {
    if (this.#listener) this.#listener.onData(chunk)
    // Kept past this call: copied (Uint8Array's slice copies, a Buffer's would not).
    else this.#queue({ _tag: "data", chunk: Uint8Array.prototype.slice.call(chunk) })
  }

  #endSeen = false

  /** The peer's EOF, told once (from 'end', or from a socket lingering after a write error). */
  #ended(): void {
    if (this.#endSeen) return
    this.#endSeen = true
    if (this.#listener) this.#listener.onEnd()
    else this.#queue({ _tag: "end" })
  }

  #queue(event: Event): void {
    this.#queued?.push(event)
  }

  /** The address connected to: the host itself when it is an IP literal, else asked of the socket (a system call). */
  get remoteAddress(): string | undefined {
    return this.address ?? this.socket.remoteAddress
  }

  listen(listener: TransportListener): void {
    this.#listener = listener
    const queued = this.#queued
    this.#queued = undefined
    for (const event of queued ?? []) {
      switch (event._tag) {
        case "data":
          listener.onData(event.chunk)
          break
        case "end":
          listener.onEnd()
          break
        case "error":
          listener.onError(event.cause)
          break
        case "close":
          this.#listener = undefined
          this.#unlisten()
          listener.onClose()
          break
        case "drain":
          listener.onDrain()
          break
      }
    }
  }

  write(chunk: Uint8Array): boolean {
    return this.socket.write(chunk)
  }

  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/**
 * Destroys the socket of a connect, once there is one: registered in the
 * connection's scope before the socket is made.
 */
class Registration {
  transport: SocketTransport | undefined = undefined
  /** Set when the finalizer ran: the scope closed (before the socket was made, if `transport` is unset). */
  closed = false
  readonly finalizer = (): Effect.Effect<void> =>
    Effect.sync(() => {
      this.closed = true
      this.transport?.destroy()
    })
}

/** @internal */
export const connect = (options: NodeConnector.Options) => {
  // One cache per Connector, so per TLS options: connectors made with
  // different options never share a session.
  const sessions = new SessionCache(maxSessions)
  return (origin: Origin, connectOptions: ConnectOptions): Effect.Effect<Transport, AgentError, Scope.Scope> =>
    connectWith(options, sessions, origin, connectOptions)
}

/** TLS sessions kept for resumption, per Connector (least recently used dropped first). */
const maxSessions = 256

/**
 * The last TLS session of each server (origin and server name), so that a
 * new connection resumes it instead of a full handshake. Bounded: the least
 * recently used goes first. Per connection, not per request, so a Map.
 * @internal
 */
export class SessionCache {
  readonly #sessions = new Map<string, Buffer>()
  constructor(readonly max: number) {}
  get(key: string): Buffer | undefined {
    const session = this.#sessions.get(key)
    if (session !== undefined) {
      this.#sessions.delete(key)
      this.#sessions.set(key, session)
    }
    return session
  }
  set(key: string, session: Buffer): void {
    this.#sessions.delete(key)
    this.#sessions.set(key, session)
    if (this.#sessions.size > this.max) this.#sessions.delete(this.#sessions.keys().next().value!)
  }
  delete(key: string): void {
    this.#sessions.delete(key)
  }
}

const connectWith = (
  options: NodeConnector.Options,
  sessions: SessionCache,
  origin: Origin,
  connectOptions: ConnectOptions
): Effect.Effect<Transport, AgentError, Scope.Scope> =>
  // The socket belongs to the connection's scope from the start: its
  // finalizer is registered before the socket is made, so wherever an
  // interruption lands (even just as it connected), closing the scope
  // destroys it, with no uninterruptible region (Effect.acquireRelease
  // would also diff and patch all FiberRefs, for every connection).
  // The scope read in the same step as the rest begins (Effect.scope would take three).
  Effect.withFiberRuntime((fiber) => {
    const scope = Context.unsafeGet(fiber.currentContext, Scope.Scope)
    const registration = new Registration()
    return Effect.flatMap(Scope.addFinalizerExit(scope, registration.finalizer), () => {
      // A scope closed already ran the finalizer at once: nothing may be opened in it.
      if (registration.closed) return Effect.interrupt
      const transport = registration.transport = open(options, sessions, origin, connectOptions)
      // No canceler: an interrupted wait ends with the scope closed, which
      // destroys the socket (and a canceler would wrap the wait in onInterrupt).
      return Effect.async<Transport, AgentError>((resume) => {
        const socket = transport.socket
        const onError = (cause: unknown) => {
          socket.destroy()
          const detail = origin.scheme === "https" ? tlsFailure(cause, origin.host) : String((cause as Error)?.message ?? cause)
          resume(Effect.fail(new AgentError({ reason: "Connect", origin: origin.key, detail, cause })))
        }
        socket.once("error", onError)
        socket.once(origin.scheme === "https" ? "secureConnect" : "connect", () => {
          socket.off("error", onError)
          resume(Effect.succeed(transport))
        })
      })
    })
  })

/** Certificate errors that mean: not signed by a CA this client trusts. */
const untrusted = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED"
])

/**
 * A failed TLS connect as one readable line ending in its stable code: Node's
 * own message for a handshake error is OpenSSL's raw line
 * (`…:error:0A00010B:SSL routines:…`). A failure before the handshake keeps
 * Node's message, as for http.
 */
const tlsFailure = (cause: unknown, host: string): string => {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? "UNKNOWN"
  const message = String((cause as Error | undefined)?.message ?? cause)
  if (untrusted.has(code)) return `TLS: the server's certificate is not signed by a trusted CA (${code})`
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") return `TLS: the server's certificate is not valid for ${host} (${code})`
  if (code === "CERT_HAS_EXPIRED") return `TLS: the server's certificate has expired (${code})`
  if (code === "CERT_NOT_YET_VALID") return `TLS: the server's certificate is not valid yet (${code})`
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || /wrong version number/.test(message)) {
    return `TLS: the server did not answer in TLS (a plain HTTP port?) (ERR_SSL_WRONG_VERSION_NUMBER)`
  }
  if (code === "ECONNRESET" || /socket disconnected before secure TLS connection/.test(message)) {
    return `TLS: the server closed the connection during the handshake (${code})`
  }
  if (/ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN)$/.test(code)) {
    return `TLS: the server refused the client certificate, or its absence (${code})`
  }
  // Not the handshake's: a refused connect, a name that does not resolve… Node's message says it as for http.
  if (!isOpenSslError(cause)) return message
  // OpenSSL's own short reason when it gives one, else the first line without its error-queue prefix.
  const reason = (cause as { reason?: unknown } | undefined)?.reason
  const what = typeof reason === "string" && reason !== "" ? reason : message.split("\n")[0]!.replace(/^.*?:error:[0-9A-F]+:/, "")
  return `TLS handshake failed: ${what} (${code})`
}

/** An error from OpenSSL (its code `ERR_SSL_…`, or its `library` field set). */
const isOpenSslError = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null &&
  (String((cause as NodeJS.ErrnoException).code ?? "").startsWith("ERR_SSL_") || "library" in cause)

/** A socket to the origin, connecting. */
const open = (
  options: NodeConnector.Options,
  sessions: SessionCache,
  origin: Origin,
  connectOptions: ConnectOptions
): SocketTransport => {
  const host = origin.host
  // Set before any read can happen: a socket reads only once connected.
  let transport: SocketTransport | undefined = undefined
  const tcp = origin.scheme !== "https"
  const literal = net.isIP(host) !== 0
  const servername = connectOptions.servername ?? (literal ? "" : host)
  const sessionKey = `${origin.key} ${servername}`
  const socket: net.Socket = !tcp
    ? tls.connect({
      ...options.tls,
      host,
      port: origin.port,
      servername,
      ALPNProtocols: ["http/1.1"],
      session: sessions.get(sessionKey)
    })
    : net.connect({
      host,
      port: origin.port,
      // As an option, set once connected; setNoDelay before the connect
      // made two setsockopt calls per connection.
      noDelay: true,
      onread: {
        buffer: readBuffer,
        callback: (nread: number) => {
          transport?.received(readBuffer.subarray(0, nread))
          return true
        }
      }
    })
  // TLS sockets take no `onread` (they read through 'data' events); no-delay is set on them by call.
  if (!tcp) {
    socket.setNoDelay(true)
    // TLS 1.3 sends its tickets after the handshake; the last one is kept.
    socket.on("session", (session: Buffer) => sessions.set(sessionKey, session))
    // A session that led to a failed handshake is not offered again.
    socket.once("error", () => {
      if (!(socket as tls.TLSSocket).authorized) sessions.delete(sessionKey)
    })
  }
  return transport = new SocketTransport(socket, tcp, tcp ? undefined : host, literal ? host : undefined)
}

/** @internal */
export const yieldToIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
