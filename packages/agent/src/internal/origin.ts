import * as Equal from "effect/Equal"
import * as Hash from "effect/Hash"
import type { Origin } from "../Origin.js"

const defaultPort = (scheme: "http" | "https"): number => scheme === "https" ? 443 : 80

/** Origins are equal when their keys are, so they work as keys of Effect's HashMap, RcMap and the like. */
class OriginImpl implements Origin {
  readonly key: string
  readonly hostHeader: string
  constructor(readonly scheme: "http" | "https", readonly host: string, readonly port: number) {
    const bracketed = host.includes(":") ? `[${host}]` : host
    this.key = `${scheme}://${bracketed}:${port}`
    this.hostHeader = port === defaultPort(scheme) ? bracketed : `${bracketed}:${port}`
  }
  [Hash.symbol](): number {
    return Hash.cached(this, Hash.string(this.key))
  }
  [Equal.symbol](that: unknown): boolean {
    return that instanceof OriginImpl && that.key === this.key
  }
  toString(): string {
    return this.key
  }
}

/** @internal */
export const make = (scheme: "http" | "https", host: string, port?: number): Origin => {
  let h = host.toLowerCase()
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1)
  return new OriginImpl(scheme, h, port ?? defaultPort(scheme))
}

const cache = new Map<string, Origin>()

/** @internal */
export const fromUrl = (url: URL): Origin | undefined => {
  // URL already lower-cases scheme and host and drops default ports; the
  // cache spares the string work on the hot path and is bounded.
  const known = cache.get(url.origin)
  if (known !== undefined) return known
  const scheme = url.protocol === "http:" ? "http" : url.protocol === "https:" ? "https" : undefined
  if (scheme === undefined || url.hostname === "") return undefined
  const origin = make(scheme, url.hostname, url.port === "" ? undefined : Number(url.port))
  if (cache.size >= 1024) cache.clear()
  cache.set(url.origin, origin)
  return origin
}
