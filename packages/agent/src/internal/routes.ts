import * as Encoding from "effect/Encoding"
import * as Redacted from "effect/Redacted"
import type { ConnectOptions } from "../Connector.js"
import type { Origin } from "../Origin.js"
import type * as Proxy from "../Proxy.js"
import { endpointFor } from "./proxy.js"

/** What a connection to an origin goes through: direct, or a proxy (and how it is reached). @internal */
export class Route {
  constructor(
    /** The proxy, undefined for a direct connection. */
    readonly proxy: Proxy.Endpoint | undefined,
    /** What the connector is told; one object per route, shared by every connect. */
    readonly connectOptions: ConnectOptions,
    /**
     * Requests go to the proxy itself in absolute-form (an `http:` origin
     * through an `http` proxy), with this `Proxy-Authorization` value, if any.
     */
    readonly forwarded: boolean,
    readonly proxyAuthorization: string | undefined
  ) {}
}

const noOptions: ConnectOptions = {}

/** The route of every origin when there is no proxy. @internal */
export const direct = new Route(undefined, noOptions, false, undefined)

/** How many origins' routes are remembered; past it, the memory starts over. */
const remembered = 1024

/**
 * The route of each origin under one Agent's proxy config, decided once per
 * origin and remembered: the config cannot change while the Agent runs.
 *
 * @internal
 */
export class Routes {
  readonly #config: Proxy.Config
  readonly #known = new Map<string, Route>()
  /**
   * One Route per proxy and kind, so that origins through one proxy share
   * it. Keyed by the endpoint itself, not its key: one proxy address may be
   * set for several schemes with different credentials.
   */
  readonly #forwarded = new Map<Proxy.Endpoint, Route>()
  readonly #tunnelled = new Map<Proxy.Endpoint, Route>()

  constructor(config: Proxy.Config) {
    this.#config = config
  }

  of(origin: Origin): Route {
    const known = this.#known.get(origin.key)
    if (known !== undefined) return known
    const proxy = endpointFor(this.#config, origin.scheme, origin.host)
    const route = proxy === undefined ? direct : this.#through(proxy, proxy.scheme === "http" && origin.scheme === "http")
    if (this.#known.size >= remembered) this.#known.clear()
    this.#known.set(origin.key, route)
    return route
  }

  #through(proxy: Proxy.Endpoint, forwarded: boolean): Route {
    const routes = forwarded ? this.#forwarded : this.#tunnelled
    let route = routes.get(proxy)
    if (route === undefined) {
      route = new Route(proxy, { proxy }, forwarded, forwarded ? basicAuthorization(proxy) : undefined)
      routes.set(proxy, route)
    }
    return route
  }
}

/** `Basic base64(user:password)` of a proxy's credentials, if it has any. */
const basicAuthorization = (proxy: Proxy.Endpoint): string | undefined => {
  if (proxy.credentials === undefined) return undefined
  const { password, username } = Redacted.value(proxy.credentials)
  return `Basic ${Encoding.encodeBase64(`${username}:${password}`)}`
}
