/**
 * @since 0.1.0
 */

/**
 * A fleet-wide per-origin connection cap on Redis: the Agent's `ConnectionPermits`.
 *
 * @since 0.1.0
 */
export * as RedisPermits from "./RedisPermits.js"
