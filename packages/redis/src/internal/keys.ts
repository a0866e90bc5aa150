/**
 * The names of the keys and the channel: pure, no I/O.
 *
 * Every key of one origin shares one hash tag, `{prefix:origin}`, so that a
 * Redis Cluster keeps them in one slot and a script may touch them all.
 *
 * @internal
 */

/** The keys of one origin, in the order the scripts take them. */
export interface OriginKeys {
  /** Sorted set: lease id → its expiry (Redis time, ms). */
  readonly leases: string
  /** Sorted set: ticket id → its sequence number (its place in the line). */
  readonly queue: string
  /** Sorted set: ticket id → its expiry (Redis time, ms): a dead waiter's ticket goes. */
  readonly tickets: string
  /** Counter: the last sequence number given to a ticket. */
  readonly seq: string
}

/** The keys of `originKey` (`scheme://host:port`) under `prefix`. */
export const originKeys = (prefix: string, originKey: string): OriginKeys => {
  const tag = `{${prefix}:${originKey}}`
  return { leases: `${tag}:leases`, queue: `${tag}:queue`, tickets: `${tag}:tickets`, seq: `${tag}:seq` }
}

/** Sorted set: process id → the expiry of its heartbeat; its size is the count of live processes. */
export const processesKey = (prefix: string): string => `${prefix}:processes`

/** The channel of the fleet's messages: `freed <origin>` and `wanted <origin>`. */
export const channel = (prefix: string): string => `${prefix}:events`

/** A message on the channel, parsed; `undefined` for anything else. */
export const parseMessage = (message: string): { readonly kind: "freed" | "wanted"; readonly origin: string } | undefined => {
  const space = message.indexOf(" ")
  if (space < 0) return undefined
  const kind = message.slice(0, space)
  if (kind !== "freed" && kind !== "wanted") return undefined
  return { kind, origin: message.slice(space + 1) }
}
