import * as Option from "effect/Option"
import type * as Proxy from "../Proxy.js"

/** @internal */
export const TypeId: unique symbol = Symbol.for("@keepalive/agent/Proxy")

/** @internal */
export const make = (_options: Proxy.Options): Proxy.Config => none

/** @internal */
export const fromEnv = (_env?: Readonly<Record<string, string | undefined>>): Proxy.Config => none

/** @internal */
export const none: Proxy.Config = { [TypeId]: TypeId, http: undefined, https: undefined, all: undefined, noProxy: "" }

/** @internal */
export const select = (_config: Proxy.Config, _url: string | URL): Option.Option<URL> => Option.none()

/** @internal */
export const bypasses = (_noProxy: string, _host: string): boolean => false

/** The proxy of an origin, or undefined for a direct connection. @internal */
export const endpointFor = (_config: Proxy.Config, _scheme: "http" | "https", _host: string): Proxy.Endpoint | undefined =>
  undefined
