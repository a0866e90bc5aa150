/**
 * The Lua scripts, each one atomic step on one origin's keys (or on the
 * processes key), and their registration on an ioredis client.
 *
 * Time is Redis's: every script reads `TIME`, never a time sent by a client,
 * so the clocks of the fleet's machines play no part. Registered with
 * ioredis' `defineCommand`, a script runs by `EVALSHA` and falls back to
 * `EVAL` when Redis answers `NOSCRIPT` (a `SCRIPT FLUSH`, a restarted Redis),
 * which loads it again: one extra round trip once, not a flood of errors.
 *
 * Every key of an origin expires `3 × leaseTtl` after its last write, so an
 * origin nobody uses any more leaves nothing behind.
 *
 * @internal
 */
import type { Redis } from "ioredis"

const preamble = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

/** Keeps every key of the origin for `3 × ttl` more. KEYS: leases, queue, tickets, seq. */
const keepKeys = `
local function keep(ttl)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl * 3) end
end
`

/** Drops expired leases and dead tickets; true when it dropped some. */
const purge = `
local function purge()
  local dropped = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for i = 1, #dead do
    redis.call('ZREM', KEYS[2], dead[i])
    redis.call('ZREM', KEYS[3], dead[i])
  end
  return dropped > 0 or #dead > 0
end
`

/**
 * Asks for a permit for waiter `id`.
 * KEYS: leases, queue, tickets, seq.
 * ARGV: id, max, ttl (ms), channel, origin, announce ("1": publish `wanted`
 * when it waits on).
 * Returns `{1, held}` when the lease `id` is granted (and its ticket gone),
 * or `{0, rank}`: it waits, its ticket `rank`-th in line (queued at the end if
 * it had none, renewed if it had).
 *
 * The first `max − held` tickets in line may take a lease: first come, first
 * served across the fleet, whoever asks first among them. With nobody in
 * line, a free permit is taken without a ticket.
 */
export const acquire = `${preamble}${keepKeys}${purge}
local id, max, ttl, channel, origin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local changed = purge()
if redis.call('ZSCORE', KEYS[1], id) then
  -- Granted to it by an earlier call whose answer it did not wait for: renewed, as the
  -- holder counts its lease from this call.
  redis.call('ZADD', KEYS[1], now + ttl, id)
  keep(ttl)
  return {1, redis.call('ZCARD', KEYS[1])}
end
local held = redis.call('ZCARD', KEYS[1])
local free = max - held
local rank = redis.call('ZRANK', KEYS[2], id)
local queued = false
if not rank then
  if free > 0 and redis.call('ZCARD', KEYS[2]) == 0 then
    redis.call('ZADD', KEYS[1], now + ttl, id)
    keep(ttl)
    return {1, held + 1}
  end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), id)
  rank = redis.call('ZRANK', KEYS[2], id)
  queued = true
end
if rank < free then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[1], now + ttl, id)
  keep(ttl)
  if changed and free > 1 and redis.call('ZCARD', KEYS[2]) > 0 then
    redis.call('PUBLISH', channel, 'freed ' .. origin)
  end
  return {1, held + 1}
end
redis.call('ZADD', KEYS[3], now + ttl, id)
keep(ttl)
if changed and free > 0 then
  redis.call('PUBLISH', channel, 'freed ' .. origin)
end
if queued or ARGV[6] == '1' then
  redis.call('PUBLISH', channel, 'wanted ' .. origin)
end
return {0, rank}
`

/**
 * Gives back lease `id`, or withdraws waiter `id` (its ticket, and its lease
 * if one was granted to it meanwhile: an interrupted acquire holds nothing).
 * KEYS: leases, queue, tickets, seq. ARGV: id, channel, origin.
 * Publishes `freed` when that may let a waiter in. Returns 1 when a lease
 * was removed.
 */
export const release = `${preamble}
local id, channel, origin = ARGV[1], ARGV[2], ARGV[3]
local removed = redis.call('ZREM', KEYS[1], id)
local wasQueued = redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
if (removed == 1 or wasQueued == 1) and redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('PUBLISH', channel, 'freed ' .. origin)
end
return removed
`

/**
 * Renews this process's leases and tickets of one origin.
 * KEYS: leases, queue, tickets, seq.
 * ARGV: ttl (ms), adopt ("1": re-register leases Redis lost, after an
 * outage), max, the count of lease ids, the lease ids, then the ticket ids.
 * Returns the lease ids that were lost (expired, or gone), which are now
 * another's to take; a lost ticket is dropped and the waiter queues again
 * at its next attempt.
 *
 * Adopting, a lease Redis lost is registered again only within `max`: what
 * the processes admitted on their own during the outage is lost beyond it,
 * so that the fleet's cap holds again once Redis rules.
 */
export const refresh = `${preamble}${keepKeys}
local ttl, adopt, max, n = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local lost = {}
if adopt then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
for i = 5, 4 + n do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if (score and tonumber(score) > now) or (adopt and redis.call('ZCARD', KEYS[1]) < max) then
    redis.call('ZADD', KEYS[1], now + ttl, id)
  else
    if score then redis.call('ZREM', KEYS[1], id) end
    lost[#lost + 1] = id
  end
end
for i = 5 + n, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[3], id)
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[3], now + ttl, id)
  elseif redis.call('ZSCORE', KEYS[2], id) or score then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
keep(ttl)
return lost
`

/**
 * Says this process is alive for `ttl` more and counts the live ones.
 * KEYS: processes. ARGV: process id, ttl (ms). Returns the count.
 */
export const heartbeat = `${preamble}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 3)
return redis.call('ZCARD', KEYS[1])
`

/**
 * Leaves: removes this process's heartbeat. KEYS: processes. ARGV: process id.
 */
export const leave = `
return redis.call('ZREM', KEYS[1], ARGV[1])
`

/** The command names the scripts are registered under on a client. */
export const commands = {
  acquire: "keepalivePermitsAcquire",
  release: "keepalivePermitsRelease",
  refresh: "keepalivePermitsRefresh",
  heartbeat: "keepalivePermitsHeartbeat",
  leave: "keepalivePermitsLeave"
} as const

/** What a client (or a pipeline) can call once the scripts are registered. */
export interface ScriptCommands<R> {
  keepalivePermitsAcquire(...args: Array<string | number>): R
  keepalivePermitsRelease(...args: Array<string | number>): R
  keepalivePermitsRefresh(...args: Array<string | number>): R
  keepalivePermitsHeartbeat(...args: Array<string | number>): R
  keepalivePermitsLeave(...args: Array<string | number>): R
}

/**
 * Registers the scripts on a client, under names no other library uses; on a
 * caller's client, registering again is harmless (same names, same scripts).
 */
export const register = (client: Redis): void => {
  client.defineCommand(commands.acquire, { numberOfKeys: 4, lua: acquire })
  client.defineCommand(commands.release, { numberOfKeys: 4, lua: release })
  client.defineCommand(commands.refresh, { numberOfKeys: 4, lua: refresh })
  client.defineCommand(commands.heartbeat, { numberOfKeys: 1, lua: heartbeat })
  client.defineCommand(commands.leave, { numberOfKeys: 1, lua: leave })
}
