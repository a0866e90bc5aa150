import * as Data from "effect/Data"
import { NodeInspectSymbol } from "effect/Inspectable"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Proxy from "../Proxy.js"

/** @internal */
export const TypeId: unique symbol = Symbol.for("@keepalive/agent/Proxy")

// The error lives here rather than in Proxy.ts so that this module needs
// nothing of the public one at run time: the Agent's internals import this
// module, and a run-time cycle through Proxy.ts would leave `make`, `none`…
// uninitialised for whichever module is evaluated first.
/** @internal */
export class ProxyConfigError extends Data.TaggedError("ProxyConfigError")<{
  readonly reason: "InvalidUrl" | "UnsupportedScheme"
  readonly setting: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.setting}: ${this.detail}`
  }
}

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/**
 * An IPv4 address as `inet_pton` reads it: exactly four decimal octets of
 * 0-255, without leading zeros (`127.0.0.1`, not `127.1`, `0x7f.0.0.1` or
 * `127.000.0.1`). The four bytes, or undefined.
 */
const parseIPv4 = (text: string): Uint8Array | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  const bytes = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(part)) return undefined
    const value = Number(part)
    if (value > 255) return undefined
    bytes[i] = value
  }
  return bytes
}

const hexGroup = /^[0-9a-fA-F]{1,4}$/

/**
 * The 16-bit words of `groups`, the last of which may be an IPv4 address
 * (two words) when `mayEndInIPv4`; undefined if any group is malformed.
 */
const wordsOf = (groups: ReadonlyArray<string>, mayEndInIPv4: boolean): Array<number> | undefined => {
  const words: Array<number> = []
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i]!
    if (mayEndInIPv4 && i === groups.length - 1 && group.includes(".")) {
      const v4 = parseIPv4(group)
      if (v4 === undefined) return undefined
      words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!)
    } else {
      if (!hexGroup.test(group)) return undefined
      words.push(parseInt(group, 16))
    }
  }
  return words
}

/**
 * An IPv6 address in text form (RFC 4291 §2.2): eight groups of one to four
 * hex digits, one `::` standing for one or more zero groups, and an IPv4
 * address in place of the last two groups (`::ffff:1.2.3.4`). No brackets,
 * no zone id. The sixteen bytes, or undefined.
 */
const parseIPv6 = (text: string): Uint8Array | undefined => {
  if (!text.includes(":")) return undefined
  const gap = text.indexOf("::")
  if (gap !== -1 && text.indexOf("::", gap + 1) !== -1) return undefined
  const headText = gap === -1 ? text : text.slice(0, gap)
  const tailText = gap === -1 ? "" : text.slice(gap + 2)
  const head = wordsOf(headText === "" ? [] : headText.split(":"), gap === -1)
  const tail = wordsOf(tailText === "" ? [] : tailText.split(":"), true)
  if (head === undefined || tail === undefined) return undefined
  const count = head.length + tail.length
  if (gap === -1 ? count !== 8 : count > 7) return undefined
  const bytes = new Uint8Array(16)
  const put = (word: number, at: number) => {
    bytes[at * 2] = word >> 8
    bytes[at * 2 + 1] = word & 0xff
  }
  head.forEach((word, i) => put(word, i))
  tail.forEach((word, i) => put(word, 8 - tail.length + i))
  return bytes
}

/** True when the first `bits` bits of `a` and `b` (of the same length) are equal. */
const samePrefix = (a: Uint8Array, b: Uint8Array, bits: number): boolean => {
  const whole = bits >> 3
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false
  const rest = bits & 7
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return ((a[whole]! ^ b[whole]!) & mask) === 0
}

// ---------------------------------------------------------------------------
// NO_PROXY
// ---------------------------------------------------------------------------

/** An address entry: its bytes and how many leading bits must match. */
interface Network {
  readonly address: Uint8Array
  readonly bits: number
}

/** A blank, as curl's `ISBLANK`: a space or a tab (not a line break). */
const isBlank = (char: string | undefined): boolean => char === " " || char === "\t"

/**
 * The entries of a `NO_PROXY` list, read as curl's `Curl_check_noproxy`
 * reads them: blanks before and after an entry are skipped, an entry ends at
 * a blank or a comma, runs of commas are one separator (so empty entries
 * vanish), and the list ends at anything else after an entry's trailing
 * blanks: `"a b,c"` is the single entry `a`.
 */
const entriesOf = (list: string): Array<string> => {
  const entries: Array<string> = []
  let i = 0
  while (i < list.length) {
    while (isBlank(list[i])) i++
    const start = i
    while (i < list.length && !isBlank(list[i]) && list[i] !== ",") i++
    if (i > start) entries.push(list.slice(start, i))
    while (isBlank(list[i])) i++
    if (list[i] !== ",") break
    while (list[i] === ",") i++
  }
  return entries
}

/**
 * The network an entry names when the host is an address: `address` or
 * `address/bits` with `bits` decimal digits up to 128. A prefix of 0 (or
 * none) compares the whole address, as curl does; a prefix longer than the
 * family's (`/33` for IPv4) never matches.
 */
const networkOf = (entry: string, parse: (text: string) => Uint8Array | undefined): Network | undefined => {
  const slash = entry.indexOf("/")
  const address = parse(slash === -1 ? entry : entry.slice(0, slash))
  if (address === undefined) return undefined
  if (slash === -1) return { address, bits: address.length * 8 }
  const digits = entry.slice(slash + 1)
  if (!/^[0-9]+$/.test(digits)) return undefined
  const bits = Number(digits)
  if (bits > address.length * 8) return undefined
  return { address, bits: bits === 0 ? address.length * 8 : bits }
}

/** ASCII lower case, as curl compares names (`curl_strnequal`). */
const lowerAscii = (text: string): string => text.replace(/[A-Z]+/g, (run) => run.toLowerCase())

/**
 * A `NO_PROXY` list read once: `*` alone, or its names (lower case, one
 * trailing then one leading dot removed) and its IPv4 and IPv6 networks.
 * Matching then costs a parse of the host and a pass over the entries of
 * the host's kind.
 */
class NoProxyList {
  static readonly empty = new NoProxyList(false, [], [], [])

  static parse(list: string): NoProxyList {
    if (list === "") return NoProxyList.empty
    if (list === "*") return new NoProxyList(true, [], [], [])
    const names: Array<string> = []
    const v4: Array<Network> = []
    const v6: Array<Network> = []
    for (const entry of entriesOf(list)) {
      let name = lowerAscii(entry)
      if (name.endsWith(".")) name = name.slice(0, -1)
      if (name.startsWith(".")) name = name.slice(1)
      names.push(name)
      const network4 = networkOf(entry, parseIPv4)
      if (network4 !== undefined) v4.push(network4)
      const network6 = networkOf(entry, parseIPv6)
      if (network6 !== undefined) v6.push(network6)
    }
    return new NoProxyList(false, names, v4, v6)
  }

  private constructor(
    readonly all: boolean,
    readonly names: ReadonlyArray<string>,
    readonly v4: ReadonlyArray<Network>,
    readonly v6: ReadonlyArray<Network>
  ) {}

  /**
   * True when `host` goes direct. An IPv4 host (dotted quad) is compared with
   * the IPv4 networks only and an IPv6 host (with or without brackets) with
   * the IPv6 ones only; any other host is a name, compared without one
   * trailing dot with the names: equal, or ending in `.` + the name.
   */
  matches(host: string): boolean {
    if (host === "") return false
    if (this.all) return true
    if (this.names.length === 0) return false
    const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host
    const v4 = parseIPv4(bare)
    if (v4 !== undefined) return this.v4.some((network) => samePrefix(v4, network.address, network.bits))
    const v6 = parseIPv6(bare)
    if (v6 !== undefined) return this.v6.some((network) => samePrefix(v6, network.address, network.bits))
    let name = lowerAscii(bare)
    if (name.endsWith(".")) name = name.slice(0, -1)
    return this.names.some((entry) =>
      entry.length === name.length
        ? entry === name
        : entry.length < name.length && name.endsWith(entry) && name[name.length - entry.length - 1] === "."
    )
  }
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/** A proxy that prints as its key wherever it is shown: `String`, JSON, `util.inspect`. */
class ProxyEndpoint implements Proxy.Endpoint {
  readonly key: string
  constructor(
    readonly scheme: "http" | "socks5" | "socks5h",
    readonly host: string,
    readonly port: number,
    readonly credentials: Redacted.Redacted<Proxy.Credentials> | undefined
  ) {
    this.key = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`
  }
  toString(): string {
    return this.key
  }
  toJSON(): string {
    return this.key
  }
  [NodeInspectSymbol](): string {
    return this.key
  }
}

const defaultPorts = { http: 80, socks5: 1080, socks5h: 1080 } as const

const withScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//

/**
 * A setting's value as an error may show it: without whatever precedes the
 * last `@`, so that no userinfo shows even when the value does not parse.
 */
const shown = (value: string): string => {
  const at = value.lastIndexOf("@")
  if (at === -1) return JSON.stringify(value)
  return JSON.stringify(`${withScheme.exec(value)?.[0] ?? ""}<redacted>@${value.slice(at + 1)}`)
}

const invalid = (setting: string, detail: string) => new ProxyConfigError({ reason: "InvalidUrl", setting, detail })

/**
 * The endpoint of a proxy URL; throws `ProxyConfigError` naming `setting`.
 * A value without `scheme://` is an `http://` URL.
 */
const endpointOf = (setting: string, value: string): ProxyEndpoint => {
  const trimmed = value.trim()
  let url: URL
  try {
    url = new URL(withScheme.test(trimmed) ? trimmed : `http://${trimmed}`)
  } catch {
    throw invalid(setting, `${shown(trimmed)} is not a valid URL`)
  }
  const scheme = url.protocol.slice(0, -1)
  if (scheme !== "http" && scheme !== "socks5" && scheme !== "socks5h") {
    throw new ProxyConfigError({
      reason: "UnsupportedScheme",
      setting,
      detail: `${JSON.stringify(`${url.protocol}//${url.host}`)} has the scheme ${url.protocol}; a proxy's is http:, socks5: or socks5h:`
    })
  }
  // The host of a socks URL is opaque to the URL parser (kept as written,
  // percent-encoded); parsed as an http host it is lower-cased, IDNA-mapped
  // and checked like any other.
  let host = url.hostname
  if (scheme !== "http" && host !== "") {
    try {
      host = new URL(`http://${host}`).hostname
    } catch {
      throw invalid(setting, `the host of ${shown(`${url.protocol}//${url.host}`)} is not valid`)
    }
  }
  if (host === "") throw invalid(setting, `${shown(`${url.protocol}//${url.host}`)} has no host`)
  if (host.startsWith("[")) host = host.slice(1, -1)
  let credentials: Redacted.Redacted<Proxy.Credentials> | undefined
  if (url.username !== "") {
    try {
      credentials = Redacted.make({
        username: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password)
      })
    } catch {
      throw invalid(setting, `the userinfo of ${JSON.stringify(`${url.protocol}//${url.host}`)} is not valid percent-encoding`)
    }
  }
  return new ProxyEndpoint(
    scheme,
    host.toLowerCase(),
    url.port === "" ? defaultPorts[scheme] : Number(url.port),
    credentials
  )
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

class ProxyConfig implements Proxy.Config {
  readonly [TypeId]: typeof TypeId = TypeId
  readonly #noProxy: NoProxyList

  /** The list of `config`, read once per config this module made. */
  static noProxyOf(config: Proxy.Config): NoProxyList {
    return #noProxy in config ? config.#noProxy : NoProxyList.parse(config.noProxy)
  }

  constructor(
    readonly http: Proxy.Endpoint | undefined,
    readonly https: Proxy.Endpoint | undefined,
    readonly all: Proxy.Endpoint | undefined,
    readonly noProxy: string
  ) {
    this.#noProxy = NoProxyList.parse(noProxy)
  }
}

/** The endpoint of a setting, or undefined when it is unset or empty. */
const optional = (name: string, value: string | undefined): Proxy.Endpoint | undefined =>
  value === undefined || value === "" ? undefined : endpointOf(name, value)

/** @internal */
export const make = (options: Proxy.Options): Proxy.Config =>
  new ProxyConfig(
    optional("http", options.http),
    optional("https", options.https),
    optional("all", options.all),
    options.noProxy ?? ""
  )

/**
 * A config that sends every origin through the proxy at `url`; throws
 * `ProxyConfigError` naming `setting`.
 *
 * @internal
 */
export const through = (setting: string, url: string): Proxy.Config =>
  new ProxyConfig(undefined, undefined, endpointOf(setting, url), "")

type Env = Readonly<Record<string, string | undefined>>

const processEnv = (): Env => (globalThis as { readonly process?: { readonly env?: Env } }).process?.env ?? {}

/** @internal */
export const fromEnv = (env: Env = processEnv()): Proxy.Config => {
  const isSet = (name: string): boolean => env[name] !== undefined && env[name] !== ""
  // Under CGI a request's `Proxy:` header arrives as HTTP_PROXY. Where names
  // are case-insensitive (Windows) `http_proxy` reads it too, so there the
  // lower-case name counts only when a variable of exactly that name exists.
  const cgi = isSet("REQUEST_METHOD")
  const exactly = (name: string): boolean => !cgi || Object.keys(env).includes(name)
  const read = (lower: string, upper: string): Proxy.Endpoint | undefined =>
    isSet(lower)
      ? optional(lower, env[lower])
      : isSet(upper)
      ? optional(upper, env[upper])
      : undefined
  const http = isSet("http_proxy") && exactly("http_proxy")
    ? optional("http_proxy", env["http_proxy"])
    : !cgi && isSet("HTTP_PROXY")
    ? optional("HTTP_PROXY", env["HTTP_PROXY"])
    : undefined
  const noProxy = isSet("no_proxy") ? env["no_proxy"]! : isSet("NO_PROXY") ? env["NO_PROXY"]! : ""
  return new ProxyConfig(http, read("https_proxy", "HTTPS_PROXY"), read("all_proxy", "ALL_PROXY"), noProxy)
}

/** @internal */
export const none: Proxy.Config = new ProxyConfig(undefined, undefined, undefined, "")

/**
 * The proxy of an origin, or undefined for a direct connection: the
 * scheme's own proxy, else `all`, unless the host is in the config's
 * `noProxy`. `host` may be an IPv6 address with or without brackets.
 *
 * @internal
 */
export const endpointFor = (config: Proxy.Config, scheme: "http" | "https", host: string): Proxy.Endpoint | undefined => {
  const endpoint = (scheme === "http" ? config.http : config.https) ?? config.all
  return endpoint === undefined || ProxyConfig.noProxyOf(config).matches(host) ? undefined : endpoint
}

/** @internal */
export const select = (config: Proxy.Config, url: string | URL): Option.Option<URL> => {
  let parsed: URL
  try {
    parsed = typeof url === "string" ? new URL(url) : url
  } catch {
    return Option.none()
  }
  const scheme = parsed.protocol === "http:" ? "http" : parsed.protocol === "https:" ? "https" : undefined
  if (scheme === undefined) return Option.none()
  const endpoint = endpointFor(config, scheme, parsed.hostname)
  return endpoint === undefined ? Option.none() : Option.some(new URL(endpoint.key))
}
