import { AgentError } from "@keepalive/agent/AgentError"
import type { ConnectOptions, Transport, TransportListener } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import type { Endpoint } from "@keepalive/agent/Proxy"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as dns from "node:dns"
import * as net from "node:net"
import * as tls from "node:tls"
import type * as NodeConnector from "../NodeConnector.js"
import { authority, ConnectHandshake, type Handshake, socks5Handshake } from "./proxyHandshake.js"

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
 * connection's scope before the socket is made. `opened` is the transport of
 * a direct connect, or a connect through a proxy (which destroys whichever
 * sockets it made).
 */
class Registration {
  opened: { destroy(): void } | undefined = undefined
  /** Set when the finalizer ran: the scope closed (before the socket was made, if `opened` is unset). */
  closed = false
  readonly finalizer = (): Effect.Effect<void> =>
    Effect.sync(() => {
      this.closed = true
      this.opened?.destroy()
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
      if (connectOptions.proxy !== undefined) {
        const proxied = new ProxiedConnect(options, sessions, origin, connectOptions, connectOptions.proxy)
        registration.opened = proxied
        return Effect.async<Transport, AgentError>((resume) => proxied.start(resume))
      }
      const transport = open(options, sessions, origin, connectOptions)
      registration.opened = transport
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
  const socket: net.Socket = !tcp
    ? tlsConnect(options, sessions, origin, connectOptions, literal, undefined)
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
  if (!tcp) socket.setNoDelay(true)
  return transport = new SocketTransport(socket, tcp, tcp ? undefined : host, literal ? host : undefined)
}

/**
 * A TLS socket to the origin, connecting: directly, or over `tunnel` (a
 * socket through a proxy). `host` is passed either way: without a server name
 * (an IP literal) the certificate is checked against it, which through a
 * tunnel would otherwise be the proxy's. Its sessions are kept for the next
 * connection to the same server.
 */
const tlsConnect = (
  options: NodeConnector.Options,
  sessions: SessionCache,
  origin: Origin,
  connectOptions: ConnectOptions,
  literal: boolean,
  tunnel: net.Socket | undefined
): tls.TLSSocket => {
  const servername = connectOptions.servername ?? (literal ? "" : origin.host)
  const sessionKey = `${origin.key} ${servername}`
  const socket = tls.connect({
    ...options.tls,
    socket: tunnel,
    host: origin.host,
    port: origin.port,
    servername,
    ALPNProtocols: ["http/1.1"],
    session: sessions.get(sessionKey)
  })
  // TLS 1.3 sends its tickets after the handshake; the last one is kept.
  socket.on("session", (session: Buffer) => sessions.set(sessionKey, session))
  // A session that led to a failed handshake is not offered again.
  socket.once("error", () => {
    if (!socket.authorized) sessions.delete(sessionKey)
  })
  return socket
}

/** What reads of a socket with `onread` go to. */
interface Reader {
  received(chunk: Uint8Array): void
}

/**
 * A connect through a proxy, from the TCP connection to the proxy to the
 * transport to the origin:
 * - an `http` proxy and an `http:` origin (forwarding): the TCP connection to
 *   the proxy is the transport, as fast as a direct one;
 * - otherwise the proxy's handshake (a CONNECT, or SOCKS5's) over that TCP
 *   connection, then TLS inside it for an `https:` origin, or the TCP
 *   connection itself as the transport for an `http:` one.
 *
 * The TCP socket reads with `onread` like a direct one, into the shared
 * buffer: its reads go to `#reader`, this object (the handshake) until the
 * tunnel is up, then the transport. TLS over it takes the socket's reads
 * over below JavaScript (its TLSWrap reads the TCP handle), so the callback
 * hears nothing more once TLS starts.
 *
 * Registered in the connection's scope before any socket exists: `destroy`
 * destroys whichever sockets are made, and stops a step still to come (a DNS
 * answer, a handshake reply) from making another.
 */
class ProxiedConnect implements Reader {
  #raw: net.Socket | undefined = undefined
  #tls: tls.TLSSocket | undefined = undefined
  #reader: Reader | undefined = undefined
  #handshake: Handshake | undefined = undefined
  /** Set once the connect succeeded, failed or was destroyed: nothing more is told, nothing more is made. */
  #settled = false
  #connected = false
  #resume: ((effect: Effect.Effect<Transport, AgentError>) => void) | undefined = undefined
  /** The proxy's address when its host is an IP literal: the peer of the transport. */
  readonly #address: string | undefined

  constructor(
    readonly options: NodeConnector.Options,
    readonly sessions: SessionCache,
    readonly origin: Origin,
    readonly connectOptions: ConnectOptions,
    readonly proxy: Endpoint
  ) {
    this.#address = net.isIP(proxy.host) !== 0 ? proxy.host : undefined
  }

  start(resume: (effect: Effect.Effect<Transport, AgentError>) => void): void {
    if (this.#settled) return
    this.#resume = resume
    const { origin, proxy } = this
    const credentials = proxy.credentials === undefined ? undefined : Redacted.value(proxy.credentials)
    if (proxy.scheme === "http") {
      if (origin.scheme === "http") return this.#forward()
      return this.#connect(new ConnectHandshake(proxy.key, origin.host, origin.port, credentials))
    }
    const target = authority(origin.host, origin.port)
    const socks = (destination: string) => {
      const handshake = socks5Handshake(proxy.key, target, destination, origin.port, credentials)
      if ("_tag" in handshake) return this.#fail("Proxy", handshake.detail)
      this.#connect(handshake)
    }
    // socks5h: the proxy resolves the name. socks5: it is resolved here, and the address sent.
    if (proxy.scheme === "socks5h" || net.isIP(origin.host) !== 0) return socks(origin.host)
    dns.lookup(origin.host, (error, address) => {
      if (this.#settled) return
      if (error) return this.#fail("Connect", error.message, error)
      socks(address)
    })
  }

  /** Forwarding: the connection to the proxy is the transport, read as a direct one. */
  #forward(): void {
    const raw = this.#tcp()
    const transport = new SocketTransport(raw, true, undefined, this.#address)
    this.#reader = transport
    raw.once("error", this.#onError)
    raw.once("connect", () => {
      raw.off("error", this.#onError)
      this.#succeed(transport)
    })
  }

  /** The handshake, once connected to the proxy. */
  #connect(handshake: Handshake): void {
    const raw = this.#tcp()
    this.#handshake = handshake
    this.#reader = this
    raw.on("error", this.#onError)
    raw.on("end", this.#onClose)
    raw.on("close", this.#onClose)
    raw.once("connect", () => {
      this.#connected = true
      raw.write(handshake.greeting)
    })
  }

  /** A TCP socket to the proxy, reading into the shared buffer. */
  #tcp(): net.Socket {
    return this.#raw = net.connect({
      host: this.proxy.host,
      port: this.proxy.port,
      noDelay: true,
      onread: {
        buffer: readBuffer,
        callback: (nread: number) => {
          this.#reader?.received(readBuffer.subarray(0, nread))
          return true
        }
      }
    })
  }

  /** Before the connect: the proxy cannot be reached. After: it failed or closed during the handshake. */
  readonly #onError = (cause: unknown): void => {
    const message = String((cause as Error | undefined)?.message ?? cause)
    if (!this.#connected) return this.#fail("Connect", `proxy ${this.proxy.key}: ${message}`, cause)
    const code = (cause as NodeJS.ErrnoException | undefined)?.code
    this.#fail("Proxy", `${this.#handshake!.closedDetail} (${code ?? message})`, cause)
  }

  readonly #onClose = (): void => this.#fail("Proxy", this.#handshake!.closedDetail)

  /** Bytes from the proxy during the handshake. */
  received(chunk: Uint8Array): void {
    const handshake = this.#handshake
    if (handshake === undefined || this.#settled) return
    const step = handshake.receive(chunk)
    switch (step._tag) {
      case "Pending":
        return
      case "Send":
        this.#raw!.write(step.bytes)
        return
      case "Failed":
        return this.#fail("Proxy", step.detail)
      case "Established":
        // Nothing was sent through the tunnel yet, and the origin speaks only
        // when spoken to (TLS: after our ClientHello): these bytes are no one's.
        if (step.trailing > 0) {
          return this.#fail(
            "Protocol",
            `proxy ${this.proxy.key} sent ${step.trailing} bytes after its handshake reply, before anything was sent to ${
              authority(this.origin.host, this.origin.port)
            }`
          )
        }
        return this.#tunnel()
    }
  }

  /** The handshake succeeded: the transport over the tunnel. */
  #tunnel(): void {
    const raw = this.#raw!
    raw.off("error", this.#onError)
    raw.off("end", this.#onClose)
    raw.off("close", this.#onClose)
    this.#handshake = undefined
    const origin = this.origin
    if (origin.scheme === "http") {
      const transport = new SocketTransport(raw, true, undefined, this.#address)
      this.#reader = transport
      return this.#succeed(transport)
    }
    this.#reader = undefined
    const literal = net.isIP(origin.host) !== 0
    const socket = this.#tls = tlsConnect(this.options, this.sessions, origin, this.connectOptions, literal, raw)
    const transport = new SocketTransport(socket, false, origin.host, this.#address)
    const onError = (cause: unknown) => {
      // Closed under the handshake: the tunnel went, whichever end closed it; any other failure is TLS's own.
      const code = (cause as NodeJS.ErrnoException | undefined)?.code
      const message = String((cause as Error | undefined)?.message ?? cause)
      if (code === "ECONNRESET" || /socket disconnected before secure TLS connection/.test(message)) {
        return this.#fail(
          "Proxy",
          `the tunnel through proxy ${this.proxy.key} closed during the TLS handshake with ${
            authority(origin.host, origin.port)
          } (${code ?? "ECONNRESET"})`,
          cause
        )
      }
      this.#fail("Connect", tlsFailure(cause, origin.host), cause)
    }
    socket.once("error", onError)
    socket.once("secureConnect", () => {
      socket.off("error", onError)
      this.#succeed(transport)
    })
  }

  #succeed(transport: Transport): void {
    if (this.#settled) return
    this.#settled = true
    this.#resume!(Effect.succeed(transport))
  }

  #fail(reason: "Connect" | "Proxy" | "Protocol", detail: string, cause?: unknown): void {
    if (this.#settled) return
    this.#settled = true
    this.#destroySockets()
    // Nothing reached the origin, whatever the reason.
    this.#resume!(Effect.fail(new AgentError({ reason, origin: this.origin.key, detail, cause, requestSent: false })))
  }

  #destroySockets(): void {
    this.#tls?.destroy()
    this.#raw?.destroy()
  }

  /** The scope's finalizer: whatever was made is destroyed, whatever was to come is not made. */
  destroy(): void {
    this.#settled = true
    this.#destroySockets()
  }
}

/** @internal */
export const yieldToIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
