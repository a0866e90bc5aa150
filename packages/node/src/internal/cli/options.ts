import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

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
 * An integer option within `[min, max]`. Parsed by hand rather than with
 * `Options.integer`, so that a value out of range, however long, gets a
 * message that names the range instead of a generic parse failure.
 *
 * @internal
 */
export const integer = (
  name: string,
  bounds: { readonly min: number; readonly max: number; readonly fallback: number; readonly description: string }
): Options.Options<number> =>
  Options.text(name).pipe(
    Options.withPseudoName("N"),
    Options.withDescription(`${bounds.description} (default ${bounds.fallback}, ${bounds.min} to ${bounds.max})`),
    Options.mapEffect((text) => {
      const n = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN
      return Number.isSafeInteger(n) && n >= bounds.min && n <= bounds.max
        ? Effect.succeed(n)
        : Effect.fail(invalid(`--${name} must be an integer from ${bounds.min} to ${bounds.max}, got '${text}'`))
    }),
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
