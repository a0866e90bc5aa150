/**
 * The Node connector through proxies that misbehave, and through working
 * ones: raw HTTP CONNECT and SOCKS5 servers on 127.0.0.1, written here byte
 * by byte, driven through the Connector service itself (`connect(origin, {
 * proxy })` in a scope), with TLS origins whose certificates are made at test
 * time with openssl. Every failure names the proxy, never its credentials,
 * and leaves no socket open behind it: the proxy sees its connection closed.
 */
import { describe, expect, it } from "@effect/vitest"
import type { AgentError } from "@keepalive/agent/AgentError"
import { Connector, type Transport } from "@keepalive/agent/Connector"
import * as Origin from "@keepalive/agent/Origin"
import * as Proxy from "@keepalive/agent/Proxy"
import type { Endpoint } from "@keepalive/agent/Proxy"
import { NodeConnector } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import { testCertificates } from "../setup/certificates.js"
import { httpsServer } from "../setup/https.js"
import { freePort } from "../setup/servers.js"
import { timeout } from "./harness.js"
import * as Server from "./server.js"

// --- proxies, origins, certificates ------------------------------------------------

/** The endpoint of a proxy URL, as the Agent's proxy config makes it (credentials percent-decoded). */
const endpoint = (url: string): Endpoint => Proxy.make({ all: url }).all!

/** A connection a raw server accepted: what it received and whether it is closed. */
interface Accepted {
  readonly socket: net.Socket
  received: Buffer
  closed: boolean
}

interface RawServer {
  readonly port: number
  readonly accepted: Array<Accepted>
  /** Waits until every accepted connection is closed. */
  readonly allClosed: Effect.Effect<void>
}

/**
 * A TCP server on 127.0.0.1 that hands each chunk a connection receives to
 * `onData` (with all it received so far), until `onData` returns "stop"
 * (a relay took the socket over); closed with the scope.
 */
const rawServer = (
  onData: (accepted: Accepted, chunk: Buffer) => void | "stop" = () => {}
): Effect.Effect<RawServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; raw: RawServer }>((resume) => {
      const accepted: Array<Accepted> = []
      const server = net.createServer((socket) => {
        const connection: Accepted = { socket, received: Buffer.alloc(0), closed: false }
        accepted.push(connection)
        socket.on("error", () => {})
        socket.on("close", () => connection.closed = true)
        const listener = (chunk: Buffer) => {
          connection.received = Buffer.concat([connection.received, chunk])
          if (onData(connection, chunk) === "stop") socket.off("data", listener)
        }
        socket.on("data", listener)
      })
      server.listen(0, "127.0.0.1", () => {
        const raw: RawServer = {
          port: (server.address() as net.AddressInfo).port,
          accepted,
          allClosed: Server.until(
            () => accepted.length > 0 && accepted.every((a) => a.closed),
            () => `proxy connections accepted: ${accepted.length}, still open: ${accepted.filter((a) => !a.closed).length}`
          )
        }
        resume(Effect.succeed({ server, raw }))
      })
    }),
    ({ raw, server }) =>
      Effect.async<void>((resume) => {
        for (const a of raw.accepted) a.socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ raw }) => raw))

/** A CONNECT request as a proxy reads it: the target, and fields by lower-cased name. */
const parseConnect = (head: string) => {
  const [line = "", ...fields] = head.split("\r\n")
  const headers: Record<string, string> = {}
  for (const field of fields) {
    const colon = field.indexOf(":")
    if (colon > 0) headers[field.slice(0, colon).toLowerCase()] = field.slice(colon + 1).trim()
  }
  const [method, target] = line.split(" ")
  return { method, target: target ?? "", headers }
}

/** Relays a proxy's socket and a new connection to `host:port` both ways, after `ready` is written; undefined once connected. */
const relay = (client: net.Socket, host: string, port: number, ready: Uint8Array, early?: Buffer) => {
  const upstream = net.connect({ host, port }, () => {
    client.write(ready)
    if (early !== undefined && early.length > 0) upstream.write(early)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  upstream.on("error", () => client.destroy())
  client.on("close", () => upstream.destroy())
  upstream.on("close", () => client.destroy())
}

/** What an HTTP CONNECT proxy saw: each CONNECT's target and its Proxy-Authorization. */
interface ConnectSeen {
  readonly targets: Array<string>
  readonly authorizations: Array<string | undefined>
}

/** A working HTTP proxy: it tunnels every CONNECT (to any target) once it has read its head. */
const connectProxy = (seen: ConnectSeen = { targets: [], authorizations: [] }) =>
  Effect.map(
    rawServer((accepted) => {
      const end = accepted.received.indexOf("\r\n\r\n")
      if (end === -1) return
      const request = parseConnect(accepted.received.subarray(0, end).toString("latin1"))
      seen.targets.push(request.target)
      seen.authorizations.push(request.headers["proxy-authorization"])
      const colon = request.target.lastIndexOf(":")
      const host = request.target.slice(0, colon).replace(/^\[|\]$/g, "")
      relay(accepted.socket, host, Number(request.target.slice(colon + 1)), Buffer.from("HTTP/1.1 200 Connection established\r\n\r\n"))
      return "stop"
    }),
    (server) => ({ ...server, seen })
  )

/** A CONNECT proxy that answers each CONNECT head with `reply` (its bytes, or a function of the request). */
const connectReplying = (reply: (request: ReturnType<typeof parseConnect>, accepted: Accepted) => void) =>
  rawServer((accepted) => {
    const end = accepted.received.indexOf("\r\n\r\n")
    if (end === -1) return
    reply(parseConnect(accepted.received.subarray(0, end).toString("latin1")), accepted)
    return "stop"
  })

/** What a SOCKS5 proxy saw: the credentials it was given and each CONNECT's address type and destination. */
interface SocksSeen {
  readonly credentials: Array<{ username: string; password: string }>
  readonly requests: Array<{ readonly type: number; readonly host: string; readonly port: number }>
}

/**
 * A working SOCKS5 proxy (RFC 1928), requiring RFC 1929's username and
 * password when `required` is given, that relays to the destination.
 */
const socksProxy = (required?: { username: string; password: string }, seen: SocksSeen = { credentials: [], requests: [] }) =>
  Effect.map(
    rawServer((accepted) => {
      const bytes = accepted.received
      const state = accepted as Accepted & { stage?: "password" | "request"; offset?: number }
      const offset = state.offset ?? 0
      if (state.stage === undefined) {
        if (bytes.length < 2 || bytes.length < 2 + bytes[1]!) return
        const methods = [...bytes.subarray(2, 2 + bytes[1]!)]
        const method = required === undefined ? (methods.includes(0) ? 0 : 0xff) : (methods.includes(2) ? 2 : 0xff)
        accepted.socket.write(Uint8Array.from([5, method]))
        if (method === 0xff) return void accepted.socket.end()
        state.stage = method === 2 ? "password" : "request"
        state.offset = 2 + bytes[1]!
        return
      }
      const rest = bytes.subarray(offset)
      if (state.stage === "password") {
        if (rest.length < 2 || rest.length < 3 + rest[1]! || rest.length < 3 + rest[1]! + rest[2 + rest[1]!]!) return
        const username = rest.subarray(2, 2 + rest[1]!).toString("utf8")
        const password = rest.subarray(3 + rest[1]!, 3 + rest[1]! + rest[2 + rest[1]!]!).toString("utf8")
        seen.credentials.push({ username, password })
        const ok = username === required!.username && password === required!.password
        accepted.socket.write(Uint8Array.from([1, ok ? 0 : 1]))
        if (!ok) return void accepted.socket.end()
        state.stage = "request"
        state.offset = offset + 3 + rest[1]! + rest[2 + rest[1]!]!
        return
      }
      if (rest.length < 5) return
      const type = rest[3]!
      const addressLength = type === 1 ? 4 : type === 4 ? 16 : 1 + rest[4]!
      if (rest.length < 4 + addressLength + 2) return
      const address = rest.subarray(4, 4 + addressLength)
      const host = type === 1
        ? [...address].join(".")
        : type === 4
        ? Array.from({ length: 8 }, (_, i) => address.readUInt16BE(2 * i).toString(16)).join(":")
        : address.subarray(1).toString("latin1")
      const port = rest.readUInt16BE(4 + addressLength)
      seen.requests.push({ type, host, port })
      relay(accepted.socket, host, port, Uint8Array.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]))
      return "stop"
    }),
    (server) => ({ ...server, seen })
  )

/** A SOCKS5 proxy that accepts no authentication, then answers the CONNECT request with `reply`. */
const socksReplying = (reply: (accepted: Accepted) => void) =>
  rawServer((accepted) => {
    if (accepted.received.length === 3) return void accepted.socket.write(Uint8Array.from([5, 0]))
    if (accepted.received.length > 3) {
      reply(accepted)
      return "stop"
    }
  })

const certificates = testCertificates("proxy TLS tests")

// --- the client side -------------------------------------------------------------------

/** The Node connector with these options. */
const connectorWith = (options: NodeConnector.Options = {}) =>
  Connector.pipe(Effect.provide(NodeConnector.layerWith(options)))

/** Connects through `proxy` and fails with the connector's AgentError (the test fails if it connects). */
const connectFailure = (origin: Origin.Origin, proxy: Endpoint, options: NodeConnector.Options = {}) =>
  Effect.gen(function*() {
    const connector = yield* connectorWith(options)
    return yield* Effect.flip(Effect.scoped(connector.connect(origin, { proxy })))
  })

/** What a failure says, as the tests compare it. */
const summary = (error: AgentError) => ({
  reason: error.reason,
  origin: error.origin,
  detail: error.detail,
  requestSent: error.requestSent
})

/** Nothing of the credentials in the error: not its detail, its message, nor its cause. */
const expectNoSecrets = (error: AgentError, ...secrets: Array<string>) => {
  const shown = [error.detail, error.message, String(error.cause), JSON.stringify(error), String((error.cause as Error)?.stack)]
  for (const secret of secrets) for (const text of shown) expect(text).not.toContain(secret)
}

/** Writes `request` on the transport and reads until a response with its whole Content-Length body (or the end). */
const exchange = (transport: Transport, request: string): Effect.Effect<string> =>
  Effect.async<string>((resume) => {
    let received = ""
    const complete = () => {
      const end = received.indexOf("\r\n\r\n")
      if (end === -1) return false
      const length = /\r\ncontent-length: *(\d+)/i.exec(received.slice(0, end))
      return length !== null && received.length >= end + 4 + Number(length[1])
    }
    transport.listen({
      onData: (chunk) => {
        received += Buffer.from(chunk).toString("latin1")
        if (complete()) resume(Effect.succeed(received))
      },
      onEnd: () => resume(Effect.succeed(received)),
      onError: (cause) => resume(Effect.die(cause)),
      onClose: () => resume(Effect.succeed(received)),
      onDrain: () => {}
    })
    transport.write(Buffer.from(request, "latin1"))
  })

const bodyOf = (response: string) => response.slice(response.indexOf("\r\n\r\n") + 4)

// --- the tests --------------------------------------------------------------------------

describe("an HTTP proxy", () => {
  it.scopedLive("an http: origin is forwarded to: the transport is a plain connection to the proxy, which reads absolute-form requests", () =>
    Effect.gen(function*() {
      const proxy = yield* Server.make()
      const connector = yield* connectorWith()
      const origin = Origin.make("http", "example.test", 8080)
      const response = yield* Effect.scoped(Effect.flatMap(
        connector.connect(origin, { proxy: endpoint(proxy.origin) }),
        (transport) => {
          expect(transport.remoteAddress).toBe("127.0.0.1")
          return exchange(transport, "GET http://example.test:8080/a HTTP/1.1\r\nHost: example.test:8080\r\n\r\n")
        }
      ))
      expect(bodyOf(response)).toBe("GET http://example.test:8080/a")
      expect(proxy.arrivals.map((a) => a.headers.host)).toEqual(["example.test:8080"])
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("a proxy that cannot be reached: Connect, naming the proxy", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      for (const scheme of ["http", "https"] as const) {
        const error = yield* connectFailure(Origin.make(scheme, "example.test", 443), endpoint(`http://127.0.0.1:${port}`))
        expect(summary(error)).toEqual({
          reason: "Connect",
          origin: `${scheme}://example.test:443`,
          detail: `proxy http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`,
          requestSent: false
        })
      }
      const socks = yield* connectFailure(Origin.make("https", "example.test", 443), endpoint(`socks5h://127.0.0.1:${port}`))
      expect(socks.detail).toBe(`proxy socks5h://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`)
    }), timeout)
})

describe("a CONNECT tunnel through a hostile proxy", () => {
  const origin = Origin.make("https", "localhost", 8443)

  it.scopedLive("200, then bytes that are not TLS in answer to the ClientHello: the TLS handshake fails, one readable line", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer((accepted, chunk) => {
        if (chunk.includes("\r\n\r\n")) accepted.socket.write("HTTP/1.1 200 Connection established\r\n\r\n")
        else if (chunk[0] === 0x16) accepted.socket.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
      })
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Connect",
        origin: "https://localhost:8443",
        detail: "TLS: the server did not answer in TLS (a plain HTTP port?) (ERR_SSL_WRONG_VERSION_NUMBER)",
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  for (const how of ["end", "destroy"] as const) {
    it.scopedLive(`200, then the proxy closes (${how}) at the ClientHello: Proxy, the tunnel closed during the TLS handshake`, () =>
      Effect.gen(function*() {
        const proxy = yield* rawServer((accepted, chunk) => {
          if (chunk.includes("\r\n\r\n")) accepted.socket.write("HTTP/1.1 200 Connection established\r\n\r\n")
          else if (chunk[0] === 0x16) {
            if (how === "end") accepted.socket.end()
            else accepted.socket.resetAndDestroy()
          }
        })
        const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
        expect(summary(error)).toMatchObject({ reason: "Proxy", origin: "https://localhost:8443", requestSent: false })
        expect(error.detail).toMatch(
          new RegExp(`^the tunnel through proxy http://127\\.0\\.0\\.1:${proxy.port} closed during the TLS handshake with localhost:8443 \\(`)
        )
        yield* proxy.allClosed
      }), timeout)
  }

  it.scopedLive("200 with a body (Content-Length: 5 and 5 bytes): bytes after the reply head, before anything was sent, are Protocol", () =>
    Effect.gen(function*() {
      const proxy = yield* connectReplying((_request, accepted) =>
        accepted.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
      )
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Protocol",
        origin: "https://localhost:8443",
        detail: `proxy http://127.0.0.1:${proxy.port} sent 5 bytes after its handshake reply, before anything was sent to localhost:8443`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("origin-TLS-like bytes in the same read as the 200: Protocol (the origin speaks only after our ClientHello)", () =>
    Effect.gen(function*() {
      const proxy = yield* connectReplying((_request, accepted) =>
        accepted.socket.write(Buffer.concat([
          Buffer.from("HTTP/1.1 200 Connection established\r\n\r\n"),
          Uint8Array.from([0x16, 0x03, 0x03, 0x00, 0x04, 0x0e, 0x00, 0x00, 0x00])
        ]))
      )
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toMatchObject({ reason: "Protocol", requestSent: false })
      expect(error.detail).toMatch(/sent 9 bytes after its handshake reply/)
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("407 without credentials: Proxy, authentication required; no Proxy-Authorization was sent", () =>
    Effect.gen(function*() {
      const authorizations: Array<string | undefined> = []
      const proxy = yield* connectReplying((request, accepted) => {
        authorizations.push(request.headers["proxy-authorization"])
        accepted.socket.write("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n")
      })
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://localhost:8443",
        detail: `proxy http://127.0.0.1:${proxy.port} requires authentication (407 Proxy Authentication Required)`,
        requestSent: false
      })
      expect(authorizations).toEqual([undefined])
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("407 with credentials: Proxy, the credentials refused; they went as Basic, percent-decoded, and appear nowhere in the error", () =>
    Effect.gen(function*() {
      const authorizations: Array<string | undefined> = []
      const proxy = yield* connectReplying((request, accepted) => {
        authorizations.push(request.headers["proxy-authorization"])
        accepted.socket.write("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
      })
      const basic = Buffer.from("alice:s3cret:p@ss").toString("base64")
      const error = yield* connectFailure(origin, endpoint(`http://alice:s3cret%3Ap%40ss@127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://localhost:8443",
        detail: `proxy http://127.0.0.1:${proxy.port} refused the credentials (407 Proxy Authentication Required)`,
        requestSent: false
      })
      expect(authorizations).toEqual([`Basic ${basic}`])
      expectNoSecrets(error, "s3cret", "p@ss", basic)
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("403: Proxy, with the status and its reason phrase", () =>
    Effect.gen(function*() {
      const proxy = yield* connectReplying((_request, accepted) =>
        accepted.socket.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden")
      )
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://localhost:8443",
        detail: `proxy http://127.0.0.1:${proxy.port} refused CONNECT to localhost:8443: 403 Forbidden`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("a malformed reply: Proxy, saying what is wrong", () =>
    Effect.gen(function*() {
      const proxy = yield* connectReplying((_request, accepted) => accepted.socket.write("SSH-2.0-OpenSSH_9.6\r\n\r\n"))
      const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://localhost:8443",
        detail: `proxy http://127.0.0.1:${proxy.port} sent a malformed reply to CONNECT: its status line is not HTTP/1.1's: "SSH-2.0-OpenSSH_9.6"`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  for (const how of ["FIN", "RST"] as const) {
    it.scopedLive(`the proxy closes (${how}) in the middle of its reply: Proxy, closed during CONNECT`, () =>
      Effect.gen(function*() {
        const proxy = yield* connectReplying((_request, accepted) => {
          accepted.socket.write("HTTP/1.1 200 Conn")
          setTimeout(() => how === "FIN" ? accepted.socket.end() : accepted.socket.resetAndDestroy(), 20)
        })
        const error = yield* connectFailure(origin, endpoint(`http://127.0.0.1:${proxy.port}`))
        expect(summary(error)).toMatchObject({ reason: "Proxy", origin: "https://localhost:8443", requestSent: false })
        expect(error.detail).toMatch(
          how === "FIN"
            ? new RegExp(`^proxy http://127\\.0\\.0\\.1:${proxy.port} closed the connection during CONNECT$`)
            : new RegExp(`^proxy http://127\\.0\\.0\\.1:${proxy.port} closed the connection during CONNECT \\(ECONNRESET\\)$`)
        )
        yield* proxy.allClosed
      }), timeout)
  }

  it.scopedLive("interrupted while the proxy holds the CONNECT unanswered: the socket is closed", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer()
      const connector = yield* connectorWith()
      const fiber = yield* Effect.fork(Effect.scoped(connector.connect(origin, { proxy: endpoint(`http://127.0.0.1:${proxy.port}`) })))
      yield* Server.until(() => proxy.accepted[0]?.received.includes("\r\n\r\n") === true, () => "no CONNECT arrived")
      yield* Fiber.interrupt(fiber)
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("a connect timeout while the proxy holds the CONNECT: the socket is closed", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer()
      const connector = yield* connectorWith()
      const outcome = yield* Effect.scoped(connector.connect(origin, { proxy: endpoint(`http://127.0.0.1:${proxy.port}`) })).pipe(
        Effect.timeout("100 millis"),
        Effect.either
      )
      expect(outcome._tag).toBe("Left")
      expect(proxy.accepted.length).toBe(1)
      yield* proxy.allClosed
    }), timeout)
})

describe("a hostile SOCKS5 proxy", () => {
  const origin = Origin.make("https", "example.test", 443)

  const refusals: Array<[string, number, string]> = [
    ["reply code 0x05", 5, "connection refused"],
    ["reply code 0x01", 1, "general SOCKS server failure"],
    ["reply code 0x02", 2, "connection not allowed by ruleset"],
    ["an unknown reply code 0x42", 0x42, "unknown reply code 0x42"]
  ]
  for (const [name, code, meaning] of refusals) {
    it.scopedLive(`${name}: Proxy, ${meaning}`, () =>
      Effect.gen(function*() {
        const proxy = yield* socksReplying((accepted) => accepted.socket.write(Uint8Array.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0])))
        const error = yield* connectFailure(origin, endpoint(`socks5h://127.0.0.1:${proxy.port}`))
        expect(summary(error)).toEqual({
          reason: "Proxy",
          origin: "https://example.test:443",
          detail: `proxy socks5h://127.0.0.1:${proxy.port} refused CONNECT to example.test:443: ${meaning}`,
          requestSent: false
        })
        yield* proxy.allClosed
      }), timeout)
  }

  it.scopedLive("closing in the middle of the handshake: Proxy, closed during the SOCKS5 handshake", () =>
    Effect.gen(function*() {
      const proxy = yield* socksReplying((accepted) => {
        accepted.socket.write(Uint8Array.from([5, 0, 0]))
        accepted.socket.end()
      })
      const error = yield* connectFailure(origin, endpoint(`socks5h://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://example.test:443",
        detail: `proxy socks5h://127.0.0.1:${proxy.port} closed the connection during the SOCKS5 handshake`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("no acceptable method (0xFF): Proxy", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer((accepted) => void accepted.socket.write(Uint8Array.from([5, 0xff])))
      const error = yield* connectFailure(origin, endpoint(`socks5h://u:p@127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://example.test:443",
        detail: `proxy socks5h://127.0.0.1:${proxy.port} accepts none of the authentication methods offered (no authentication, username/password)`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("wrong credentials: Proxy, refused the credentials, which appear nowhere in the error", () =>
    Effect.gen(function*() {
      const proxy = yield* socksProxy({ username: "alice", password: "right" })
      const error = yield* connectFailure(origin, endpoint(`socks5h://alice:wr0ng%40@127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://example.test:443",
        detail: `proxy socks5h://127.0.0.1:${proxy.port} refused the credentials`,
        requestSent: false
      })
      expect(proxy.seen.credentials).toEqual([{ username: "alice", password: "wr0ng@" }])
      expectNoSecrets(error, "wr0ng")
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("bytes after the reply before anything was sent: Protocol", () =>
    Effect.gen(function*() {
      const proxy = yield* socksReplying((accepted) =>
        accepted.socket.write(Uint8Array.from([5, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x48, 0x54]))
      )
      const error = yield* connectFailure(Origin.make("http", "example.test", 80), endpoint(`socks5h://127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Protocol",
        origin: "http://example.test:80",
        detail: `proxy socks5h://127.0.0.1:${proxy.port} sent 2 bytes after its handshake reply, before anything was sent to example.test:80`,
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("credentials too long for RFC 1929: Proxy, before any connection", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer()
      const error = yield* connectFailure(origin, endpoint(`socks5h://alice:${"x".repeat(256)}@127.0.0.1:${proxy.port}`))
      expect(summary(error)).toEqual({
        reason: "Proxy",
        origin: "https://example.test:443",
        detail: `proxy socks5h://127.0.0.1:${proxy.port}: SOCKS5 takes a username and a password of 1 to 255 bytes each (RFC 1929)`,
        requestSent: false
      })
      yield* Effect.sleep("20 millis")
      expect(proxy.accepted.length).toBe(0)
    }), timeout)

  it.scopedLive("interrupted while the proxy holds the greeting unanswered: the socket is closed", () =>
    Effect.gen(function*() {
      const proxy = yield* rawServer()
      const connector = yield* connectorWith()
      const fiber = yield* Effect.fork(Effect.scoped(connector.connect(origin, { proxy: endpoint(`socks5h://127.0.0.1:${proxy.port}`) })))
      yield* Server.until(() => proxy.accepted[0]?.received.length === 3, () => "no greeting arrived")
      yield* Fiber.interrupt(fiber)
      yield* proxy.allClosed
    }), timeout)
})

describe("a working SOCKS5 proxy with username/password (RFC 1929)", () => {
  it.scopedLive("an http: origin: a whole request and response over the transport; the proxy resolves the name (socks5h)", () =>
    Effect.gen(function*() {
      const origin = yield* Server.make()
      const proxy = yield* socksProxy({ username: "alice", password: "s3cret:p@ss" })
      const connector = yield* connectorWith()
      const response = yield* Effect.scoped(Effect.flatMap(
        connector.connect(Origin.make("http", "localhost", origin.port), {
          proxy: endpoint(`socks5h://alice:s3cret%3Ap%40ss@127.0.0.1:${proxy.port}`)
        }),
        (transport) => exchange(transport, `GET /through-socks HTTP/1.1\r\nHost: localhost:${origin.port}\r\n\r\n`)
      ))
      expect(bodyOf(response)).toBe("GET /through-socks")
      expect(proxy.seen.credentials).toEqual([{ username: "alice", password: "s3cret:p@ss" }])
      expect(proxy.seen.requests).toEqual([{ type: 3, host: "localhost", port: origin.port }])
      yield* proxy.allClosed
      yield* origin.allClosed
    }), timeout)

  it.scopedLive("socks5 resolves the name here and sends the address; the transport's socket keeps only the listeners a direct one has", () =>
    Effect.gen(function*() {
      const origin = yield* Server.make()
      const proxy = yield* socksProxy({ username: "alice", password: "pw" })
      const connector = yield* connectorWith()
      const listeners = (transport: Transport) => {
        const socket = (transport as unknown as { socket: net.Socket }).socket
        return Object.fromEntries(["data", "end", "error", "close", "drain", "connect"].map((e) => [e, socket.listenerCount(e)]))
      }
      const target = Origin.make("http", "localhost", origin.port)
      const direct = yield* Effect.scoped(Effect.map(connector.connect(target, {}), listeners))
      const proxied = yield* Effect.scoped(Effect.flatMap(
        connector.connect(target, { proxy: endpoint(`socks5://alice:pw@127.0.0.1:${proxy.port}`) }),
        (transport) =>
          Effect.map(
            exchange(transport, `GET /resolved HTTP/1.1\r\nHost: localhost:${origin.port}\r\n\r\n`),
            (response) => ({ response, listeners: listeners(transport) })
          )
      ))
      expect(bodyOf(proxied.response)).toBe("GET /resolved")
      expect(proxied.listeners).toEqual(direct)
      expect(proxy.seen.requests).toEqual([{ type: 1, host: "127.0.0.1", port: origin.port }])
      yield* proxy.allClosed
    }), timeout)
})

describe.skipIf(certificates === undefined)("TLS to the origin through a proxy", () => {
  const certs = certificates!

  it.scopedLive("a CONNECT tunnel to a TLS origin: SNI and the certificate checked against the origin's name; the session resumed through the tunnel", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      const proxy = yield* connectProxy()
      const connector = yield* connectorWith({ tls: { ca: certs.ca } })
      const origin = Origin.make("https", "localhost", handshakes.port)
      const once = Effect.scoped(Effect.flatMap(
        connector.connect(origin, { proxy: endpoint(`http://127.0.0.1:${proxy.port}`) }),
        (transport) => exchange(transport, `GET / HTTP/1.1\r\nHost: localhost:${handshakes.port}\r\n\r\n`)
      ))
      expect(bodyOf(yield* once)).toBe("hello")
      // TLS 1.3's ticket arrives after the handshake: it is in once the response is.
      expect(bodyOf(yield* once)).toBe("hello")
      expect(proxy.seen.targets).toEqual([`localhost:${handshakes.port}`, `localhost:${handshakes.port}`])
      expect(proxy.seen.authorizations).toEqual([undefined, undefined])
      expect(handshakes).toMatchObject({ count: 2, resumed: 1, servernames: ["localhost", "localhost"] })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("an IP-literal origin through a tunnel: no SNI, the certificate checked against the origin's address", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      const proxy = yield* connectProxy()
      const connector = yield* connectorWith({ tls: { ca: certs.ca } })
      const response = yield* Effect.scoped(Effect.flatMap(
        connector.connect(Origin.make("https", "127.0.0.1", handshakes.port), { proxy: endpoint(`http://localhost:${proxy.port}`) }),
        (transport) => exchange(transport, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${handshakes.port}\r\n\r\n`)
      ))
      expect(bodyOf(response)).toBe("hello")
      expect(handshakes.servernames).toEqual([false])
    }), timeout)

  it.scopedLive("a certificate for another name: Connect, naming the origin's host, not the proxy's", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.otherKey, cert: certs.otherCert })
      const proxy = yield* connectProxy()
      const error = yield* connectFailure(
        Origin.make("https", "localhost", handshakes.port),
        endpoint(`http://127.0.0.1:${proxy.port}`),
        { tls: { ca: certs.ca } }
      )
      expect(summary(error)).toEqual({
        reason: "Connect",
        origin: `https://localhost:${handshakes.port}`,
        detail: "TLS: the server's certificate is not valid for localhost (ERR_TLS_CERT_ALTNAME_INVALID)",
        requestSent: false
      })
      yield* proxy.allClosed
    }), timeout)

  it.scopedLive("an untrusted origin through a tunnel: verification is on as without a proxy", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      const proxy = yield* connectProxy()
      const error = yield* connectFailure(Origin.make("https", "localhost", handshakes.port), endpoint(`http://127.0.0.1:${proxy.port}`))
      expect(error.reason).toBe("Connect")
      expect(error.detail).toMatch(/^TLS: the server's certificate is not signed by a trusted CA \([A-Z_]+\)$/)
      yield* proxy.allClosed
    }), timeout)

  for (const scheme of ["socks5", "socks5h"] as const) {
    it.scopedLive(`through ${scheme} with username/password to a TLS origin: a whole request, the certificate checked against the origin's name`, () =>
      Effect.gen(function*() {
        const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
        const proxy = yield* socksProxy({ username: "alice", password: "s3cret" })
        const connector = yield* connectorWith({ tls: { ca: certs.ca } })
        const response = yield* Effect.scoped(Effect.flatMap(
          connector.connect(Origin.make("https", "localhost", handshakes.port), {
            proxy: endpoint(`${scheme}://alice:s3cret@127.0.0.1:${proxy.port}`)
          }),
          (transport) => exchange(transport, `GET / HTTP/1.1\r\nHost: localhost:${handshakes.port}\r\n\r\n`)
        ))
        expect(bodyOf(response)).toBe("hello")
        expect(handshakes.servernames).toEqual(["localhost"])
        expect(proxy.seen.requests).toEqual([
          scheme === "socks5h"
            ? { type: 3, host: "localhost", port: handshakes.port }
            : { type: 1, host: "127.0.0.1", port: handshakes.port }
        ])
        yield* proxy.allClosed
      }), timeout)
  }

  it.scopedLive("interrupted during the TLS handshake inside the tunnel: both sockets closed", () =>
    Effect.gen(function*() {
      // 200, then silence: the ClientHello is never answered.
      const proxy = yield* rawServer((accepted, chunk) => {
        if (chunk.includes("\r\n\r\n")) accepted.socket.write("HTTP/1.1 200 OK\r\n\r\n")
      })
      const connector = yield* connectorWith({ tls: { ca: certs.ca } })
      const fiber = yield* Effect.fork(Effect.scoped(
        connector.connect(Origin.make("https", "localhost", 1), { proxy: endpoint(`http://127.0.0.1:${proxy.port}`) })
      ))
      const clientHello = () => {
        const received = proxy.accepted[0]?.received
        const end = received?.indexOf("\r\n\r\n") ?? -1
        return end !== -1 && received![end + 4] === 0x16
      }
      yield* Server.until(clientHello, () => "no ClientHello arrived")
      yield* Fiber.interrupt(fiber)
      yield* proxy.allClosed
    }), timeout)
})
