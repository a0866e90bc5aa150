/**
 * Proxies: which one a request goes through (the environment's rules as curl
 * has them, or explicit settings), and how each is reached.
 *
 * @since 0.2.0
 */
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
  /**
   * The `NO_PROXY` list as given: the hosts that go direct, by the rules of
   * curl's `Curl_check_noproxy` (a host is a name or an address, IPv6 with or
   * without brackets):
   *
   * - Entries are separated by commas; blanks around an entry and empty
   *   entries are ignored. An entry ends at a blank, and the list ends at
   *   anything but a comma after it: `"a b,c"` is the single entry `a`.
   * - `*` as the whole list matches every host; among other entries it is an
   *   ordinary name, and `*.example.com` matches no host.
   * - A host name matches an entry equal to it or to one of its parent
   *   domains, case-insensitively, the entry with or without a leading dot:
   *   `example.com` and `.example.com` both match `example.com` and
   *   `www.example.com`, not `nexample.com`. One trailing dot of the host and
   *   of the entry is ignored.
   * - An IPv4 host (dotted quad) matches IPv4 entries and an IPv6 host IPv6
   *   entries, as addresses, with an optional prefix length (`10.0.0.0/8`,
   *   `::1/64`). A prefix of `/0` compares the whole address; one longer than
   *   the family's (`/33`, `/129`) or not a number matches nothing. An
   *   address host is compared as an address only and a name host as a name
   *   only: `localhost` and `127.0.0.1` do not match each other.
   * - An entry with a port (`example.com:8080`) or an IPv6 entry in brackets
   *   (`[::1]`) matches no host.
   */
  readonly noProxy: string
}

/**
 * Explicit proxy settings: URLs (`http://user:pass@host:port`,
 * `socks5://host`, `socks5h://host:1080`; a value without `scheme://`, such
 * as `proxy:3128` or `[::1]:3128`, is `http://`; a path or query is ignored;
 * an empty string is unset) and a `NO_PROXY`-style list.
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
 * A proxy setting that cannot be used: a URL that does not parse or has no
 * host (`InvalidUrl`), or whose scheme is not `http:`, `socks5:` or
 * `socks5h:` (`UnsupportedScheme`). `setting` names the variable or option it
 * came from; `detail` and the message never show the URL's credentials.
 *
 * @since 0.2.0
 * @category errors
 */
export const ProxyConfigError: typeof internal.ProxyConfigError = internal.ProxyConfigError

/**
 * @since 0.2.0
 * @category errors
 */
export type ProxyConfigError = internal.ProxyConfigError

/**
 * Builds a proxy config from explicit settings; throws `ProxyConfigError`
 * for a setting that cannot be used, its `setting` the option's name
 * (`http`, `https`, `all`).
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
 * upper case; an empty value is unset, and a value of the upper-case name is
 * not read when the lower-case one is set. `HTTP_PROXY` in upper case is
 * ignored when `REQUEST_METHOD` is set (a CGI environment, where a request's
 * `Proxy:` header arrives as `HTTP_PROXY`); `http_proxy` is then read only
 * when a variable of exactly that name exists, as names are
 * case-insensitive on Windows. `env` defaults to `process.env` where there
 * is one. Throws `ProxyConfigError` naming the variable that cannot be used.
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
 * the URL's scheme (else `all`) unless the URL's host is in `noProxy` (see
 * `Config`). The URL is the proxy's `key` as a URL, without credentials.
 * A URL that is not `http:` or `https:`, or a string that does not parse,
 * gets none.
 *
 * @since 0.2.0
 * @category selection
 */
export const select: (config: Config, url: string | URL) => Option.Option<URL> = internal.select
