import * as Options from "@effect/cli/Options"
import { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { bounded, optionalText, UsageError } from "./options.js"
import { type FleetSummary, messageOf, percentile, permitWaitedMillis } from "./summary.js"

/**
 * `--fleet`, `--fleet-max-per-origin` and `--fleet-key-prefix` of `fetch`.
 *
 * @internal
 */
export const fleetOptions = {
  fleet: optionalText(
    "fleet",
    "URL",
    "share a per-origin connection cap with every keepalive fetch using this Redis (redis:// or rediss://; needs @keepalive/redis installed)"
  ),
  fleetMaxPerOrigin: Options.optional(
    bounded("fleet-max-per-origin", { min: 1, max: 10_000 }).pipe(
      Options.withDescription(
        "with --fleet: connections to one origin across every process (default --max-per-origin, 1 to 10000)"
      )
    )
  ),
  fleetKeyPrefix: optionalText(
    "fleet-key-prefix",
    "PREFIX",
    "with --fleet: the prefix of the fleet's Redis keys; only processes with the same one share the cap (default keepalive:permits)"
  )
}

/**
 * What `--fleet` asks for, checked.
 *
 * @internal
 */
export interface FleetPlan {
  /** The URL as given, credentials included: for the Redis client only, never shown. */
  readonly url: string
  /** `scheme://host:port`: what the output shows of it. */
  readonly key: string
  readonly maxPerOrigin: number
  readonly keyPrefix: string | undefined
}

const redisScheme = /^rediss?:\/\//i

/** A URL as a message may show it: without whatever precedes the last `@`, so that no password shows even when it does not parse. */
const shown = (text: string): string => {
  const at = text.lastIndexOf("@")
  return at === -1 ? `'${text}'` : `'${/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(text)?.[0] ?? ""}<redacted>@${text.slice(at + 1)}'`
}

const badUrl = (detail: string) => new UsageError({ message: `bad --fleet URL: ${detail}` })

/**
 * The fleet `fetch` joins, from its flags; undefined without `--fleet`.
 * Throws a `UsageError` for a URL that is not a `redis://` or `rediss://`
 * URL of a host (its path, if any, a database number), and for
 * `--fleet-max-per-origin` or `--fleet-key-prefix` without `--fleet`. The
 * cap defaults to the process's own per-origin cap.
 *
 * @internal
 */
export const fleetPlan = (
  flags: {
    readonly fleet: Option.Option<string>
    readonly fleetMaxPerOrigin: Option.Option<number>
    readonly fleetKeyPrefix: Option.Option<string>
  },
  maxPerOrigin: number
): FleetPlan | undefined => {
  if (Option.isNone(flags.fleet)) {
    const stray = Option.isSome(flags.fleetMaxPerOrigin)
      ? "--fleet-max-per-origin"
      : Option.isSome(flags.fleetKeyPrefix)
      ? "--fleet-key-prefix"
      : undefined
    if (stray !== undefined) throw new UsageError({ message: `${stray} needs --fleet URL` })
    return undefined
  }
  const text = flags.fleet.value.trim()
  if (!redisScheme.test(text)) throw badUrl(`${shown(text)} is not a redis:// or rediss:// URL`)
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw badUrl(`${shown(text)} is not a valid URL`)
  }
  const where = `${url.protocol}//${url.host}`
  if (url.hostname === "") throw badUrl(`${shown(where)} has no host`)
  if (url.pathname !== "" && !/^\/\d*$/.test(url.pathname)) {
    throw badUrl(`the path of ${shown(`${where}${url.pathname}`)} is not a database number`)
  }
  return {
    url: text,
    key: `${url.protocol}//${url.hostname}:${url.port === "" ? 6379 : url.port}`,
    maxPerOrigin: Option.getOrElse(flags.fleetMaxPerOrigin, () => maxPerOrigin),
    keyPrefix: Option.getOrUndefined(flags.fleetKeyPrefix)
  }
}

/**
 * What the command uses of `@keepalive/redis`. The package is an optional
 * peer dependency, loaded only for `--fleet`: its types may be missing when
 * this package is built, so the command states here what it relies on
 * (`test/cli.test.ts` checks that the package fits it).
 *
 * @internal
 */
export interface RedisModule {
  readonly RedisPermits: {
    readonly layer: (config: {
      readonly redis: string
      readonly maxConnectionsPerOrigin: number
      readonly keyPrefix?: string | undefined
    }) => Layer.Layer<ConnectionPermits, { readonly option: string; readonly detail: string }>
  }
}

// Not a literal in the `import()`, so that building this package does not look for the package's types.
const redisPackage: string = "@keepalive/redis"

/** The flag a `RedisPermits.Config` option comes from. */
const flagOf: Record<string, string> = {
  redis: "--fleet",
  maxConnectionsPerOrigin: "--fleet-max-per-origin",
  keyPrefix: "--fleet-key-prefix"
}

const isMissing = (cause: unknown): boolean =>
  (cause as { readonly code?: unknown } | null)?.code === "ERR_MODULE_NOT_FOUND" &&
  messageOf(cause).includes(`'${redisPackage}'`)

/**
 * Loads `@keepalive/redis` and makes the `ConnectionPermits` of `plan`'s
 * fleet, each `acquire` timed into `waits`. A package that is not installed,
 * or a setting the layer refuses, is a `UsageError` naming the flag.
 *
 * @internal
 */
export const permitsLayer = (
  plan: FleetPlan,
  waits: PermitWaits
): Effect.Effect<Layer.Layer<ConnectionPermits, UsageError>, UsageError> =>
  Effect.tryPromise({
    try: () => import(redisPackage) as Promise<RedisModule>,
    catch: (cause) =>
      new UsageError({
        message: isMissing(cause)
          ? `--fleet needs the package ${redisPackage}, which is not installed (npm install ${redisPackage})`
          : `--fleet: cannot load ${redisPackage}: ${messageOf(cause)}`
      })
  }).pipe(Effect.map(({ RedisPermits }) =>
    timed(waits).pipe(
      Layer.provide(RedisPermits.layer({
        redis: plan.url,
        maxConnectionsPerOrigin: plan.maxPerOrigin,
        keyPrefix: plan.keyPrefix
      })),
      Layer.mapError((error) => new UsageError({ message: `bad ${flagOf[error.option] ?? "--fleet"}: ${error.detail}` }))
    )
  ))

/**
 * The time each `acquire` of the fleet's permits took until it got one, and
 * how many ended without one. Those the Agent called off, once the requests
 * they were for had been served by other connections, held up no request:
 * their waits are left out.
 *
 * @internal
 */
export class PermitWaits {
  readonly #millis: Array<number> = []
  #calledOff = 0

  record(millis: number, granted: boolean): void {
    if (granted) this.#millis.push(millis)
    else this.#calledOff++
  }

  summary(plan: FleetPlan): FleetSummary {
    const sorted = [...this.#millis].sort((a, b) => a - b)
    const tenth = (n: number) => Math.round(n * 10) / 10
    const tenthOrNull = (n: number | null) => n === null ? null : tenth(n)
    return {
      redis: plan.key,
      maxPerOrigin: plan.maxPerOrigin,
      permits: sorted.length,
      waited: sorted.filter((ms) => ms > permitWaitedMillis).length,
      calledOff: this.#calledOff,
      waitTotalMs: tenth(sorted.reduce((sum, ms) => sum + ms, 0)),
      waitP50Ms: tenthOrNull(percentile(sorted, 50)),
      waitP99Ms: tenthOrNull(percentile(sorted, 99)),
      waitMaxMs: tenthOrNull(sorted.at(-1) ?? null)
    }
  }
}

const nowMillis = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos) / 1e6)

/**
 * The `ConnectionPermits` below it, with each `acquire` timed into `waits`
 * by the Clock; interruptible as the service below is.
 *
 * @internal
 */
export const timed = (waits: PermitWaits): Layer.Layer<ConnectionPermits, never, ConnectionPermits> =>
  Layer.effect(
    ConnectionPermits,
    Effect.map(ConnectionPermits, (permits) =>
      ConnectionPermits.of({
        acquire: (origin, holder) =>
          Effect.flatMap(nowMillis, (started) =>
            Effect.onExit(
              permits.acquire(origin, holder),
              (exit) => Effect.map(nowMillis, (ended) => waits.record(ended - started, Exit.isSuccess(exit)))
            ))
      }))
  )
