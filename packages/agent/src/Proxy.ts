/**
 * Proxies: which one a request goes through (the environment's rules as curl
 * has them, or explicit settings), and how each is reached.
 *
 * @since 0.2.0
 */
import * as Data from "effect/Data"
import type * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as internal from "./internal/proxy.js"

/**
 * One proxy: `http` (forwarding and CONNECT tunnels), `socks5` (names
 * resolved locally) or `socks5h` (the proxy resolves them).
 *
 * It prints and serialises as `key`, never with its credentials.
 *
 * @since 0.2.0
 * @category models
 */
export interface Endpoint {
  readonly scheme: "http" | "socks5" | "socks5h"
  /** Host name or address, lower-cased, IPv6 without brackets. */
  readonly host: string
  /** The port; 80 for `http`, 1080 for `socks5`/`socks5h` when the URL gives none. */
  readonly port: number
  /** `scheme://host:port`, with no credentials: what errors, spans, metrics and logs show. */
  readonly key: string
  /** The URL's userinfo, percent-decoded, when it has one. */
  readonly credentials: Redacted.Redacted<Credentials> | undefined
}

/**
 * A proxy's username and password.
 *
 * @since 0.2.0
 * @category models
 */
export interface Credentials {
  readonly username: string
  readonly password: string
}

/**
 * Which proxy each request goes through: one per scheme of the origin, a
 * fallback for both (`all`), and the hosts that go direct (`noProxy`).
 *
 * @since 0.2.0
 * @category models
 */
export interface Config {
  readonly [internal.TypeId]: typeof internal.TypeId
  /** The proxy of `http:` origins, when set. */
  readonly http: Endpoint | undefined
  /** The proxy of `https:` origins, when set. */
  readonly https: Endpoint | undefined
  /** The proxy of either scheme when its own is not set. */
  readonly all: Endpoint | undefined
  /** The `NO_PROXY` list as given (entries separated by commas). */
  readonly noProxy: string
}

/**
 * Explicit proxy settings: URLs (`http://user:pass@host:port`,
 * `socks5://host`, `socks5h://host:1080`; a URL without a scheme is
 * `http://`) and a `NO_PROXY`-style list.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options {
  readonly http?: string | undefined
  readonly https?: string | undefined
  readonly all?: string | undefined
  readonly noProxy?: string | undefined
}

/**
 * A proxy setting that cannot be used: a URL that does not parse
 * (`InvalidUrl`) or whose scheme is not `http:`, `socks5:` or `socks5h:`
 * (`UnsupportedScheme`). `setting` names the variable or option it came
 * from; the message never shows the URL's credentials.
 *
 * @since 0.2.0
 * @category errors
 */
export class ProxyConfigError extends Data.TaggedError("ProxyConfigError")<{
  readonly reason: "InvalidUrl" | "UnsupportedScheme"
  readonly setting: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.setting}: ${this.detail}`
  }
}

/**
 * Builds a proxy config from explicit settings; throws `ProxyConfigError`
 * for a setting that cannot be used.
 *
 * @since 0.2.0
 * @category constructors
 * @example
 * import { Proxy } from "@keepalive/agent"
 * const config = Proxy.make({ all: "http://proxy.internal:3128", noProxy: "localhost,.corp" })
 */
export const make: (options: Options) => Config = internal.make

/**
 * Builds a proxy config from environment variables as curl reads them:
 * `http_proxy`, `https_proxy`, `all_proxy` and `no_proxy`, lower case before
 * upper case; an empty value is unset. `HTTP_PROXY` in upper case is ignored
 * when `REQUEST_METHOD` is set (a CGI environment, where a request header
 * could set it). `env` defaults to `process.env` where there is one. Throws
 * `ProxyConfigError` naming the variable that cannot be used.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromEnv: (env?: Readonly<Record<string, string | undefined>>) => Config = internal.fromEnv

/**
 * No proxy at all.
 *
 * @since 0.2.0
 * @category constructors
 */
export const none: Config = internal.none

/**
 * The proxy that a request to `url` goes through, or none: the proxy of
 * the URL's scheme (else `all`) unless the host matches `noProxy`. The URL
 * is the proxy's `key` as a URL, without credentials. `noProxy`
 * follows curl: entries separated by commas, blanks and empty entries
 * ignored, case-insensitive; `*` alone matches every host; a name matches
 * itself and its subdomains, with or without a leading dot; trailing dots
 * are ignored; IPv4 and IPv6 addresses match as addresses, with CIDR
 * prefixes (`10.0.0.0/8`, `::1/128`).
 *
 * @since 0.2.0
 * @category selection
 */
export const select: (config: Config, url: string | URL) => Option.Option<URL> = internal.select

/**
 * True when `host` (a name or an address, IPv6 with or without brackets)
 * goes direct under the `noProxy` list.
 *
 * @since 0.2.0
 * @category selection
 */
export const bypasses: (noProxy: string, host: string) => boolean = internal.bypasses
