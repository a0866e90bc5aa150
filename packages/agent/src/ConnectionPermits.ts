/**
 * Permits to open connections, held outside the Agent: the hook through which
 * a fleet of processes shares one per-origin connection cap
 * (`@keepalive/redis` provides one on Redis).
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { AgentError } from "./AgentError.js"
import type { Origin } from "./Origin.js"

/**
 * What a permit's holder is told, by the service, at any time while it
 * holds the permit. Calls are synchronous and cheap; the Agent does what
 * they ask when it can.
 *
 * @since 0.2.0
 * @category models
 */
export interface PermitHolder {
  /**
   * The permit is lost (its lease ran out, and it may be another's now): the
   * Agent starts no new request on the connection and closes it as soon as
   * it is idle.
   */
  lost(): void
  /**
   * Others wait for a permit of this origin: the Agent closes the connection
   * if it is idle and no request of its own waits for it, giving the permit
   * back, so that a fleet never deadlocks on idle connections.
   */
  wanted(): void
}

/**
 * A permit for one connection to one origin, held for the connection's whole
 * life, idle or busy.
 *
 * @since 0.2.0
 * @category models
 */
export interface Permit {
  /**
   * Gives it back; the Agent runs it once, after its connection closed. It
   * must not wait on the network (a service queues what it has to send).
   */
  readonly release: Effect.Effect<void>
  /**
   * Whether the permit still holds, as far as the service knows without
   * I/O (its lease's deadline by a local clock). The Agent asks before each
   * request it puts on the connection: false retires the connection as
   * `lost()` would, so that a process that stalled past its lease uses the
   * connection for nothing more, even before the service had a turn to say
   * so. Without it, only `lost()` retires.
   */
  readonly valid?: (() => boolean) | undefined
}

/**
 * The service the Agent asks for a permit before it opens a connection to an
 * origin, when one is in its context. Without one, the Agent opens
 * connections under its own caps alone.
 *
 * `acquire` waits until a permit is free. It must be interruptible, and an
 * interrupted `acquire` holds nothing: the Agent interrupts it when the
 * request it was for gives up (its `queueTimeout`, an interruption) or
 * the Agent shuts down. It fails with an `AgentError` (reason
 * `Unavailable`) when the service cannot decide; the request then fails,
 * having sent nothing.
 *
 * @since 0.2.0
 * @category services
 */
export class ConnectionPermits extends Context.Tag("@keepalive/agent/ConnectionPermits")<ConnectionPermits, {
  readonly acquire: (origin: Origin, holder: PermitHolder) => Effect.Effect<Permit, AgentError>
}>() {}
