import * as Duration from "effect/Duration"
import type * as Agent from "../Agent.js"
import type * as Proxy from "../Proxy.js"
import * as InternalProxy from "./proxy.js"

/** Every default of `Agent.Config`, in one place. @internal */
export const defaults = {
  maxConnectionsPerOrigin: 2,
  maxConnections: 100,
  idleTimeout: "4 seconds",
  persist: true,
  connectTimeout: "10 seconds",
  headersTimeout: "60 seconds",
  bodyTimeout: "60 seconds",
  maxHeaderSize: 16384,
  maxHeaderCount: 100,
  maxConnectionAge: "5 minutes",
  maxRequestsPerConnection: Infinity,
  queueTimeout: Duration.infinity,
  shutdownTimeout: "5 seconds",
  metrics: true
} as const

const positiveInteger = (name: string, value: number | undefined, fallback: number): number => {
  const n = value ?? fallback
  if (n === Infinity && fallback === Infinity) return n
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${n}`)
  return n
}

/**
 * Applies the defaults and checks the config: a count that is not a positive
 * integer throws a RangeError when the Agent is built. @internal
 */
export const resolve = (config: Agent.Config = {}): Agent.ResolvedConfig => ({
  maxConnectionsPerOrigin: positiveInteger(
    "maxConnectionsPerOrigin",
    config.maxConnectionsPerOrigin,
    defaults.maxConnectionsPerOrigin
  ),
  maxConnections: positiveInteger("maxConnections", config.maxConnections, defaults.maxConnections),
  idleTimeout: Duration.decode(config.idleTimeout ?? defaults.idleTimeout),
  persist: config.persist ?? defaults.persist,
  connectTimeout: Duration.decode(config.connectTimeout ?? defaults.connectTimeout),
  headersTimeout: Duration.decode(config.headersTimeout ?? defaults.headersTimeout),
  bodyTimeout: Duration.decode(config.bodyTimeout ?? defaults.bodyTimeout),
  maxHeaderSize: positiveInteger("maxHeaderSize", config.maxHeaderSize, defaults.maxHeaderSize),
  maxHeaderCount: positiveInteger("maxHeaderCount", config.maxHeaderCount, defaults.maxHeaderCount),
  maxConnectionAge: Duration.decode(config.maxConnectionAge ?? defaults.maxConnectionAge),
  maxRequestsPerConnection: positiveInteger("maxRequestsPerConnection", config.maxRequestsPerConnection, defaults.maxRequestsPerConnection),
  queueTimeout: Duration.decode(config.queueTimeout ?? defaults.queueTimeout),
  shutdownTimeout: Duration.decode(config.shutdownTimeout ?? defaults.shutdownTimeout),
  metrics: config.metrics ?? defaults.metrics,
  proxy: proxyOf(config.proxy)
})

/**
 * A proxy setting as a config: a string is one proxy for every scheme, `""`
 * none. A string that cannot be used throws `ProxyConfigError` naming `proxy`.
 */
const proxyOf = (proxy: Proxy.Config | string | undefined): Proxy.Config =>
  proxy === undefined || proxy === "" ? InternalProxy.none : typeof proxy === "string" ? InternalProxy.through("proxy", proxy) : proxy

/** True when the config sends some origin through a proxy. @internal */
export const hasProxy = (proxy: Proxy.Config): boolean =>
  proxy.http !== undefined || proxy.https !== undefined || proxy.all !== undefined

/** A duration in millis; Infinity for an infinite one (no deadline). @internal */
export const millisOrInfinity = (duration: Duration.Duration): number =>
  Duration.isFinite(duration) ? Duration.toMillis(duration) : Infinity
