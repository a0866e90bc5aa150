/**
 * The byte-level handshakes that open a tunnel through a proxy, sans-IO: an
 * HTTP `CONNECT` and its reply (RFC 9110 §9.3.6), and the SOCKS5 client
 * handshake (RFC 1928, with RFC 1929's username and password). Bytes in,
 * decisions out; the Node connector writes and reads the socket.
 *
 * Every detail a handshake states names the proxy by its key and the target
 * by `host:port`, never by credentials: they appear only in the bytes sent.
 * @internal
 */
import * as net from "node:net"

/** A proxy's username and password, as the endpoint holds them behind `Redacted`. */
export interface Credentials {
  readonly username: string
  readonly password: string
}

/**
 * What the proxy's bytes so far lead to:
 * - `Pending`: more bytes are needed;
 * - `Send`: write `bytes`, then wait for the answer;
 * - `Established`: the tunnel is up; `trailing` bytes of the last chunk came
 *   after the handshake (the origin's, or the proxy's mistake);
 * - `Failed`: the proxy refused, or answered with bytes that are not the
 *   handshake's (`detail` says which).
 */
export type Step =
  | { readonly _tag: "Pending" }
  | { readonly _tag: "Send"; readonly bytes: Uint8Array }
  | { readonly _tag: "Established"; readonly trailing: number }
  | { readonly _tag: "Failed"; readonly detail: string }

/** The client side of one handshake with a proxy, once connected to it. */
export interface Handshake {
  /** The bytes to send first, once connected. */
  readonly greeting: Uint8Array
  /** Reads bytes from the proxy; `chunk` is lent for this call only (kept bytes are copied). */
  receive(chunk: Uint8Array): Step
  /** What it means when the proxy closes before the handshake ended. */
  readonly closedDetail: string
}

const pending: Step = { _tag: "Pending" }
const failed = (detail: string): Step => ({ _tag: "Failed", detail })

/** `host:port`, an IPv6 address in brackets: the authority of a CONNECT and how targets are named. */
export const authority = (host: string, port: number): string =>
  net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`

/** A byte as `0xNN`. */
const hex = (byte: number): string => `0x${byte.toString(16).toUpperCase().padStart(2, "0")}`

/** Bytes appended to bytes (copied: what is appended is lent). */
const append = (kept: Uint8Array, chunk: Uint8Array): Uint8Array => {
  const all = new Uint8Array(kept.length + chunk.length)
  all.set(kept)
  all.set(chunk, kept.length)
  return all
}

// --- HTTP CONNECT ------------------------------------------------------------

/**
 * The CONNECT request to `host:port`: `Host` names the same authority, and
 * `Proxy-Authorization` carries Basic credentials when there are some.
 */
export const encodeConnectRequest = (host: string, port: number, credentials: Credentials | undefined): Uint8Array => {
  const target = authority(host, port)
  let head = `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n`
  if (credentials !== undefined) {
    const basic = Buffer.from(`${credentials.username}:${credentials.password}`, "utf8").toString("base64")
    head += `Proxy-Authorization: Basic ${basic}\r\n`
  }
  return Buffer.from(`${head}\r\n`, "latin1")
}

/** The final reply to a CONNECT: its status line (its fields are checked, not kept), and the bytes that followed the head. */
export interface ConnectReply {
  readonly _tag: "Reply"
  readonly status: number
  /** The reason phrase, latin1-decoded; `""` when absent. */
  readonly statusText: string
  /** Bytes of the last chunk after the head (for a 2xx, the tunnel's first bytes). */
  readonly trailing: number
}

/** A reply that is not an HTTP/1.1 response head. */
export interface MalformedReply {
  readonly _tag: "Malformed"
  readonly detail: string
}

/** The bound on a CONNECT reply's head, interim (1xx) heads included. */
export const maxConnectReplySize = 16 * 1024

const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1")
const statusLine = /^HTTP\/1\.[01] ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/
const fieldLine = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/

/**
 * Reads the reply to a CONNECT as it arrives: the interim (1xx) heads it
 * skips, then the final head. Only the head is read, never a body: a 2xx
 * reply has none (the tunnel starts right after it), and any other ends the
 * attempt. Lines end with CRLF (a bare LF or CR is malformed), as in the
 * Agent's own parser.
 */
export class ConnectReplyReader {
  /** Bytes from the start of the reply, interim heads included, until the final head ends. */
  #kept: Buffer = Buffer.alloc(0)
  /** Where the head being read starts in `#kept` (after the interim heads). */
  #headStart = 0
  #outcome: ConnectReply | MalformedReply | undefined = undefined

  constructor(readonly maxSize: number = maxConnectReplySize) {}

  /** Feeds bytes (lent); the reply once its head is complete, or why it cannot be one; undefined while incomplete. */
  push(chunk: Uint8Array): ConnectReply | MalformedReply | undefined {
    if (this.#outcome !== undefined) return this.#outcome
    const searchFrom = Math.max(this.#headStart, this.#kept.length - 3)
    const kept = this.#kept = Buffer.concat([this.#kept, chunk])
    for (let from = searchFrom;;) {
      const end = kept.indexOf(CRLFCRLF, from)
      if (end === -1 || end + 4 > this.maxSize) {
        if (kept.length >= this.maxSize) {
          return this.#outcome = { _tag: "Malformed", detail: `its head is larger than ${this.maxSize} bytes` }
        }
        return undefined
      }
      const head = parseHead(kept.toString("latin1", this.#headStart, end))
      if (head._tag === "Malformed") return this.#outcome = head
      // Interim replies are skipped; 101 is no interim reply but a switch, which CONNECT does not ask for.
      if (head.status < 200 && head.status !== 101) {
        from = this.#headStart = end + 4
        continue
      }
      return this.#outcome = { ...head, trailing: kept.length - (end + 4) }
    }
  }
}

/** A head without its final CRLFCRLF. */
const parseHead = (text: string): Omit<ConnectReply, "trailing"> | MalformedReply => {
  const lines = text.split("\r\n")
  const status = statusLine.exec(lines[0]!)
  if (status === null) return { _tag: "Malformed", detail: `its status line is not HTTP/1.1's: ${printable(lines[0]!)}` }
  for (let i = 1; i < lines.length; i++) {
    if (!fieldLine.test(lines[i]!)) return { _tag: "Malformed", detail: `a header line is malformed: ${printable(lines[i]!)}` }
  }
  return { _tag: "Reply", status: Number(status[1]), statusText: status[2] ?? "" }
}

/** A line from the peer as it may be shown: control bytes escaped, at most 80 characters. */
const printable = (line: string): string => {
  const shown = JSON.stringify(line.length > 80 ? `${line.slice(0, 80)}…` : line)
  return shown.replace(/[\x80-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16)}`)
}

/** `407 Proxy Authentication Required`, or the status alone without a reason phrase. */
const statusOf = (reply: ConnectReply): string =>
  reply.statusText === "" ? String(reply.status) : `${reply.status} ${reply.statusText.slice(0, 128)}`

/** A CONNECT tunnel to `host:port` through the `http` proxy whose key is `proxyKey`. */
export class ConnectHandshake implements Handshake {
  readonly greeting: Uint8Array
  readonly #reader = new ConnectReplyReader()
  readonly #sentCredentials: boolean

  constructor(
    readonly proxyKey: string,
    readonly host: string,
    readonly port: number,
    credentials: Credentials | undefined
  ) {
    this.greeting = encodeConnectRequest(host, port, credentials)
    this.#sentCredentials = credentials !== undefined
  }

  get closedDetail(): string {
    return `proxy ${this.proxyKey} closed the connection during CONNECT`
  }

  receive(chunk: Uint8Array): Step {
    const reply = this.#reader.push(chunk)
    if (reply === undefined) return pending
    if (reply._tag === "Malformed") return failed(`proxy ${this.proxyKey} sent a malformed reply to CONNECT: ${reply.detail}`)
    return connectOutcome(this.proxyKey, authority(this.host, this.port), reply, this.#sentCredentials)
  }
}

/**
 * What the final reply to a CONNECT means: a 2xx opens the tunnel, a 407 asks
 * for (other) credentials, any other status refuses.
 */
export const connectOutcome = (proxyKey: string, target: string, reply: ConnectReply, sentCredentials: boolean): Step => {
  if (reply.status >= 200 && reply.status < 300) return { _tag: "Established", trailing: reply.trailing }
  if (reply.status === 407) {
    return failed(
      sentCredentials
        ? `proxy ${proxyKey} refused the credentials (${statusOf(reply)})`
        : `proxy ${proxyKey} requires authentication (${statusOf(reply)})`
    )
  }
  return failed(`proxy ${proxyKey} refused CONNECT to ${target}: ${statusOf(reply)}`)
}

// --- SOCKS5 --------------------------------------------------------------------

const SOCKS_VERSION = 0x05
const METHOD_NONE = 0x00
const METHOD_PASSWORD = 0x02
const METHOD_REFUSED = 0xff
const COMMAND_CONNECT = 0x01
const ATYP_IPV4 = 0x01
const ATYP_DOMAIN = 0x03
const ATYP_IPV6 = 0x04

/** RFC 1928 §6's reply codes, by code. */
const replyMeanings: ReadonlyArray<string> = [
  "succeeded",
  "general SOCKS server failure",
  "connection not allowed by ruleset",
  "network unreachable",
  "host unreachable",
  "connection refused",
  "TTL expired",
  "command not supported",
  "address type not supported"
]

/** What a SOCKS5 reply code means, as RFC 1928 words it. */
export const socks5ReplyMeaning = (code: number): string => replyMeanings[code] ?? `unknown reply code ${hex(code)}`

/** The four bytes of an IPv4 address. */
const ipv4Bytes = (address: string): Array<number> => address.split(".").map(Number)

/** The sixteen bytes of an IPv6 address (`::` and a dotted IPv4 tail allowed). */
export const ipv6Bytes = (address: string): Uint8Array => {
  const bytes = new Uint8Array(16)
  let text = address
  const tail: Array<number> = []
  const lastColon = text.lastIndexOf(":")
  if (text.includes(".", lastColon)) {
    tail.push(...ipv4Bytes(text.slice(lastColon + 1)))
    text = `${text.slice(0, lastColon + 1)}0:0`
  }
  const [left, right] = text.includes("::") ? text.split("::") as [string, string] : [text, undefined]
  const groups = (part: string) => part === "" ? [] : part.split(":").map((group) => parseInt(group, 16))
  const head = groups(left)
  const rest = right === undefined ? [] : groups(right)
  const all = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest]
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8
    bytes[2 * i + 1] = group & 0xff
  })
  if (tail.length === 4) bytes.set(tail, 12)
  return bytes
}

/**
 * The CONNECT request to `destination:port`: an IP address as one (ATYP 1 or
 * 4), a name as a domain name (ATYP 3) for the proxy to resolve. Undefined
 * when the name is longer than 255 bytes.
 */
export const encodeSocks5Connect = (destination: string, port: number): Uint8Array | undefined => {
  const family = net.isIP(destination)
  let address: Array<number> | Uint8Array
  let type: number
  if (family === 4) {
    type = ATYP_IPV4
    address = ipv4Bytes(destination)
  } else if (family === 6) {
    type = ATYP_IPV6
    address = ipv6Bytes(destination)
  } else {
    const name = Buffer.from(destination, "utf8")
    if (name.length < 1 || name.length > 255) return undefined
    type = ATYP_DOMAIN
    address = [name.length, ...name]
  }
  return Uint8Array.from([SOCKS_VERSION, COMMAND_CONNECT, 0x00, type, ...address, port >> 8, port & 0xff])
}

/** RFC 1929's request: version 1, then the username and the password, each prefixed by its length. */
export const encodeSocks5Password = (credentials: Credentials): Uint8Array | undefined => {
  const username = Buffer.from(credentials.username, "utf8")
  const password = Buffer.from(credentials.password, "utf8")
  if (username.length < 1 || username.length > 255 || password.length < 1 || password.length > 255) return undefined
  return Uint8Array.from([0x01, username.length, ...username, password.length, ...password])
}

/** A SOCKS5 reply, read from the start of `bytes`. */
export type Socks5Reply =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Malformed"; readonly detail: string }
  /** REP is not 0: known as soon as its byte arrives (the bound address of a failure means nothing). */
  | { readonly _tag: "Refused"; readonly code: number }
  /** `length`: the reply's length in bytes, BND.ADDR and BND.PORT included (a CONNECT's bound address is of no use to the tunnel); what follows is not the reply's. */
  | { readonly _tag: "Succeeded"; readonly length: number }

const incomplete: Socks5Reply = { _tag: "Incomplete" }

/** Reads the reply to a SOCKS5 CONNECT: VER, REP, RSV, ATYP, BND.ADDR (4, 16 or 1 + n bytes) and BND.PORT. */
export const readSocks5Reply = (bytes: Uint8Array): Socks5Reply => {
  if (bytes.length < 1) return incomplete
  if (bytes[0] !== SOCKS_VERSION) return { _tag: "Malformed", detail: `its reply's version is ${hex(bytes[0]!)}, not 0x05` }
  if (bytes.length < 2) return incomplete
  if (bytes[1] !== 0x00) return { _tag: "Refused", code: bytes[1]! }
  if (bytes.length < 5) return incomplete
  const type = bytes[3]!
  const addressLength = type === ATYP_IPV4 ? 4 : type === ATYP_IPV6 ? 16 : type === ATYP_DOMAIN ? 1 + bytes[4]! : -1
  if (addressLength === -1) return { _tag: "Malformed", detail: `its reply's address type is ${hex(type)}` }
  const length = 4 + addressLength + 2
  return bytes.length < length ? incomplete : { _tag: "Succeeded", length }
}

/** What a SOCKS5 handshake waits for. */
type Socks5Stage = "method" | "password" | "reply" | "done"

/**
 * A SOCKS5 tunnel to `destination:port` (a name the proxy resolves, or an
 * address) through the proxy whose key is `proxyKey`; `target` names it in
 * details. Offers no authentication, and username/password when there are
 * credentials. Refused at once (`Failed`, before connecting) when the
 * credentials or the name do not fit in SOCKS5's one-byte lengths.
 */
export const socks5Handshake = (
  proxyKey: string,
  target: string,
  destination: string,
  port: number,
  credentials: Credentials | undefined
): Handshake | { readonly _tag: "Failed"; readonly detail: string } => {
  const request = encodeSocks5Connect(destination, port)
  if (request === undefined) {
    return { _tag: "Failed", detail: `proxy ${proxyKey}: the host name of ${target} is longer than SOCKS5's 255 bytes` }
  }
  let password: Uint8Array | undefined = undefined
  if (credentials !== undefined) {
    password = encodeSocks5Password(credentials)
    if (password === undefined) {
      return {
        _tag: "Failed",
        detail: `proxy ${proxyKey}: SOCKS5 takes a username and a password of 1 to 255 bytes each (RFC 1929)`
      }
    }
  }
  return new Socks5Handshake(proxyKey, target, request, password)
}

class Socks5Handshake implements Handshake {
  readonly greeting: Uint8Array
  #stage: Socks5Stage = "method"
  #kept: Uint8Array = new Uint8Array(0)

  constructor(
    readonly proxyKey: string,
    readonly target: string,
    readonly request: Uint8Array,
    readonly password: Uint8Array | undefined
  ) {
    this.greeting = password === undefined
      ? Uint8Array.from([SOCKS_VERSION, 1, METHOD_NONE])
      : Uint8Array.from([SOCKS_VERSION, 2, METHOD_NONE, METHOD_PASSWORD])
  }

  get closedDetail(): string {
    return `proxy ${this.proxyKey} closed the connection during the SOCKS5 handshake`
  }

  receive(chunk: Uint8Array): Step {
    if (this.#stage === "done") return pending
    const bytes = this.#kept = append(this.#kept, chunk)
    switch (this.#stage) {
      case "method": {
        if (bytes.length < 2) return pending
        if (bytes[0] !== SOCKS_VERSION) {
          return this.#fail(`proxy ${this.proxyKey} did not answer as a SOCKS5 server (version ${hex(bytes[0]!)})`)
        }
        const method = bytes[1]!
        if (method === METHOD_NONE) return this.#next(2, "reply", this.request)
        if (method === METHOD_PASSWORD && this.password !== undefined) return this.#next(2, "password", this.password)
        if (method === METHOD_REFUSED) {
          const offered = this.password === undefined ? "no authentication" : "no authentication, username/password"
          return this.#fail(`proxy ${this.proxyKey} accepts none of the authentication methods offered (${offered})`)
        }
        return this.#fail(`proxy ${this.proxyKey} chose an authentication method that was not offered (${hex(method)})`)
      }
      case "password": {
        if (bytes.length < 2) return pending
        // The version byte is not checked: servers send 0x01 (RFC 1929) or 0x05; the status decides.
        if (bytes[1] !== 0x00) return this.#fail(`proxy ${this.proxyKey} refused the credentials`)
        return this.#next(2, "reply", this.request)
      }
      case "reply": {
        const reply = readSocks5Reply(bytes)
        switch (reply._tag) {
          case "Incomplete":
            return pending
          case "Malformed":
            return this.#fail(`proxy ${this.proxyKey} sent a malformed SOCKS5 reply: ${reply.detail}`)
          case "Refused":
            return this.#fail(`proxy ${this.proxyKey} refused CONNECT to ${this.target}: ${socks5ReplyMeaning(reply.code)}`)
          case "Succeeded":
            this.#stage = "done"
            this.#kept = new Uint8Array(0)
            return { _tag: "Established", trailing: bytes.length - reply.length }
        }
      }
    }
  }

  /** The message of `length` bytes is read: the next one is sent, and no byte may have come ahead of it. */
  #next(length: number, stage: Socks5Stage, send: Uint8Array): Step {
    if (this.#kept.length > length) {
      return this.#fail(`proxy ${this.proxyKey} sent ${this.#kept.length - length} bytes ahead of the SOCKS5 handshake`)
    }
    this.#stage = stage
    this.#kept = new Uint8Array(0)
    return { _tag: "Send", bytes: send }
  }

  #fail(detail: string): Step {
    this.#stage = "done"
    return failed(detail)
  }
}
