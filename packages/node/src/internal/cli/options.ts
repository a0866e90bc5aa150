import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Proxy from "@keepalive/agent/Proxy"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/**
 * Bad input found after parsing (a URL, a file): reported as one line, exit code 2.
 *
 * @internal
 */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/**
 * A command ran but did not succeed (a request failed, a check did not hold).
 * Its output already says why; it only sets exit code 1.
 *
 * @internal
 */
export class Unsuccessful extends Data.TaggedError("Unsuccessful")<{}> {}

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

/**
 * An integer option within `[min, max]`, without a default. Parsed by hand
 * rather than with `Options.integer`, so that a value out of range, however
 * long, gets a message that names the range instead of a generic parse failure.
 *
 * @internal
 */
export const bounded = (
  name: string,
  bounds: { readonly min: number; readonly max: number }
): Options.Options<number> =>
  Options.text(name).pipe(
    Options.withPseudoName("N"),
    Options.mapEffect((text) => {
      const n = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN
      return Number.isSafeInteger(n) && n >= bounds.min && n <= bounds.max
        ? Effect.succeed(n)
        : Effect.fail(invalid(`--${name} must be an integer from ${bounds.min} to ${bounds.max}, got '${text}'`))
    })
  )

/**
 * An integer option within `[min, max]`, `fallback` when not given.
 *
 * @internal
 */
export const integer = (
  name: string,
  bounds: { readonly min: number; readonly max: number; readonly fallback: number; readonly description: string }
): Options.Options<number> =>
  bounded(name, bounds).pipe(
    Options.withDescription(`${bounds.description} (default ${bounds.fallback}, ${bounds.min} to ${bounds.max})`),
    Options.withDefault(bounds.fallback)
  )

const units: Record<string, Duration.Unit> = {
  ms: "millis",
  milli: "millis",
  millis: "millis",
  millisecond: "millis",
  milliseconds: "millis",
  s: "seconds",
  sec: "seconds",
  secs: "seconds",
  second: "seconds",
  seconds: "seconds",
  m: "minutes",
  min: "minutes",
  mins: "minutes",
  minute: "minutes",
  minutes: "minutes",
  h: "hours",
  hour: "hours",
  hours: "hours"
}

/**
 * Parses a duration such as `4s`, `500ms`, `2 seconds` or `1.5 minutes`;
 * undefined when the text is not one.
 *
 * @internal
 */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(text)
  if (match === null) return undefined
  const unit = units[match[2]!.toLowerCase()]
  const amount = Number(match[1])
  return unit === undefined || !Number.isFinite(amount) ? undefined : Duration.decode(`${amount} ${unit}`)
}

/**
 * A duration option, positive and at most `max`.
 *
 * @internal
 */
export const duration = (
  name: string,
  bounds: { readonly fallback: string; readonly max: Duration.Duration; readonly description: string }
): Options.Options<Duration.Duration> =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription(`${bounds.description} (default ${bounds.fallback}; e.g. 500ms, 4s, 2 seconds)`),
    Options.withDefault(bounds.fallback),
    Options.mapEffect((text) => {
      const parsed = parseDuration(text)
      if (parsed === undefined) {
        return Effect.fail(invalid(`--${name} must be a duration such as 500ms, 4s or '2 seconds', got '${text}'`))
      }
      if (Duration.toMillis(parsed) <= 0 || Duration.greaterThan(parsed, bounds.max)) {
        return Effect.fail(invalid(`--${name} must be above 0 and at most ${Duration.format(bounds.max)}, got '${text}'`))
      }
      return Effect.succeed(parsed)
    })
  )

/**
 * The Agent's caps, shared by `fetch` and `demo`.
 *
 * @internal
 */
export const agentOptions = {
  concurrency: integer("concurrency", {
    min: 1,
    max: 10_000,
    fallback: 16,
    description: "requests in flight at once"
  }),
  maxPerOrigin: integer("max-per-origin", {
    min: 1,
    max: 10_000,
    fallback: 2,
    description: "the Agent's maxConnectionsPerOrigin"
  }),
  maxConnections: integer("max-connections", {
    min: 1,
    max: 100_000,
    fallback: 100,
    description: "the Agent's maxConnections"
  })
}

/**
 * A text option that may be left out, its value called `value` in the help.
 *
 * @internal
 */
export const optionalText = (name: string, value: string, description: string): Options.Options<Option.Option<string>> =>
  Options.optional(Options.text(name).pipe(Options.withPseudoName(value), Options.withDescription(description)))

/**
 * `--proxy` and `--noproxy`, curl's flags, shared by `fetch` and `probe`.
 *
 * @internal
 */
export const proxyOptions = {
  proxy: optionalText(
    "proxy",
    "URL",
    "one proxy for every scheme (http://, socks5://, socks5h://), instead of http_proxy, https_proxy and all_proxy; '' for none at all"
  ),
  noproxy: optionalText("noproxy", "LIST", "hosts that go direct, comma-separated, instead of NO_PROXY ('*' for all)")
}

/**
 * Which proxy each request goes through, as curl decides it: the
 * environment's (`http_proxy`, `HTTPS_PROXY`, `all_proxy`, `no_proxy`…)
 * unless `--proxy` names one for every scheme, or turns them all off with
 * `""`; `--noproxy` stands in for `NO_PROXY` either way. A proxy URL that
 * cannot be used is a `UsageError` naming the flag or the variable, whose
 * message never shows the URL's credentials.
 *
 * @internal
 */
export const proxyConfig = (
  flags: { readonly proxy: Option.Option<string>; readonly noproxy: Option.Option<string> },
  env: Readonly<Record<string, string | undefined>>
): Proxy.Config => {
  try {
    if (Option.isSome(flags.proxy)) {
      if (flags.proxy.value === "") return Proxy.none
      // The environment's list, read by the library's rules (lower case first, empty unset), and nothing else of it.
      const noProxy = Option.getOrElse(
        flags.noproxy,
        () => Proxy.fromEnv({ no_proxy: env["no_proxy"], NO_PROXY: env["NO_PROXY"] }).noProxy
      )
      return Proxy.make({ all: flags.proxy.value, noProxy })
    }
    return Proxy.fromEnv(
      Option.isSome(flags.noproxy) ? { ...env, no_proxy: flags.noproxy.value, NO_PROXY: undefined } : env
    )
  } catch (error) {
    if (!(error instanceof Proxy.ProxyConfigError)) throw error
    // `all` is the only option `make` is given here: it came from --proxy.
    const where = error.setting === "all" ? "--proxy" : `the environment variable ${error.setting}`
    throw new UsageError({ message: `bad proxy in ${where}: ${error.detail}` })
  }
}

/**
 * The proxy a request to `url` goes through under `config`, with its
 * credentials; undefined for a direct connection.
 *
 * @internal
 */
export const proxyFor = (config: Proxy.Config, url: URL): Proxy.Endpoint | undefined =>
  Option.isNone(Proxy.select(config, url))
    ? undefined
    : (url.protocol === "http:" ? config.http : config.https) ?? config.all
