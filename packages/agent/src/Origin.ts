/**
 * An origin is where a connection goes: `scheme://host:port`, normalised so
 * that equal origins are equal strings.
 *
 * @since 0.1.0
 */
import type * as Equal from "effect/Equal"
import * as internal from "./internal/origin.js"

/**
 * A normalised origin: lower-cased scheme and host, explicit port.
 *
 * @since 0.1.0
 * @category models
 */
export interface Origin extends Equal.Equal {
  readonly scheme: "http" | "https"
  /** Host name or address, lower-cased, IPv6 without brackets. */
  readonly host: string
  readonly port: number
  /** `scheme://host:port`, the pool key. */
  readonly key: string
  /** The value of the `Host` header for requests to this origin (default ports omitted). */
  readonly hostHeader: string
}

/**
 * Builds the origin of an absolute `http:` or `https:` URL, or returns `undefined`
 * for any other scheme.
 *
 * @since 0.1.0
 * @category constructors
 * @example
 * import { Origin } from "@keepalive/agent"
 * Origin.fromUrl(new URL("HTTP://Example.COM:80/a"))?.key // "http://example.com:80"
 */
export const fromUrl: (url: URL) => Origin | undefined = internal.fromUrl

/**
 * Builds an origin from its parts, normalising case and default ports.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (scheme: "http" | "https", host: string, port?: number) => Origin = internal.make
