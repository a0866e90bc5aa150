/**
 * A `Connector` over node:net and node:tls.
 *
 * @since 0.1.0
 */
import { Connector } from "@keepalive/agent/Connector"
import * as Layer from "effect/Layer"
import type * as tls from "node:tls"
import * as internal from "./internal/nodeConnector.js"

/**
 * Options of the Node connector.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Extra TLS options for `https:` origins (e.g. `ca`, `rejectUnauthorized`). */
  readonly tls?: Omit<tls.ConnectionOptions, "host" | "port" | "servername" | "socket"> | undefined
}

/**
 * A Connector with the given options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<Connector> =>
  Layer.succeed(Connector, { connect: internal.connect(options), yieldToIo: internal.yieldToIo })

/**
 * The Connector with Node's defaults (certificates checked against Node's CA store).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Connector> = layerWith({})
