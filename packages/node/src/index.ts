/**
 * @since 0.1.0
 */

/**
 * The Agent on Node.js.
 *
 * @since 0.1.0
 */
export * as NodeAgent from "./NodeAgent.js"

/**
 * The node:net/node:tls Connector.
 *
 * @since 0.1.0
 */
export * as NodeConnector from "./NodeConnector.js"
