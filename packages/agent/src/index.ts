/**
 * @since 0.1.0
 */

/**
 * The Agent service: persistent HTTP/1.1 connections pooled per origin.
 *
 * @since 0.1.0
 */
export * as Agent from "./Agent.js"

/**
 * The Agent's error family.
 *
 * @since 0.1.0
 */
export * as AgentError from "./AgentError.js"

/**
 * The Agent as an `@effect/platform` HttpClient.
 *
 * @since 0.1.0
 */
export * as AgentHttpClient from "./AgentHttpClient.js"

/**
 * Permits to open connections, held outside the Agent (a fleet's per-origin cap).
 *
 * @since 0.2.0
 */
export * as ConnectionPermits from "./ConnectionPermits.js"

/**
 * The service that opens transports.
 *
 * @since 0.1.0
 */
export * as Connector from "./Connector.js"

/**
 * The HTTP/1.1 codec.
 *
 * @since 0.1.0
 */
export * as Http1 from "./Http1.js"

/**
 * Normalised origins.
 *
 * @since 0.1.0
 */
export * as Origin from "./Origin.js"

/**
 * Proxies: which one a request goes through, and how each is reached.
 *
 * @since 0.2.0
 */
export * as Proxy from "./Proxy.js"
