import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Agent from "@keepalive/agent/Agent"
import type * as Proxy from "@keepalive/agent/Proxy"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as path from "node:path"
import * as NodeAgent from "../../NodeAgent.js"
import { type FleetPlan, fleetOptions, fleetPlan, permitsLayer, PermitWaits } from "./fleet.js"
import { agentOptions, duration, proxyConfig, proxyFor, proxyOptions, UsageError, Unsuccessful } from "./options.js"
import { Progress } from "./progress.js"
import { messageOf, type Outcome, reasonOf, Recorder, summaryLines } from "./summary.js"

/** Where a URL came from, to name it in an error. */
interface Source {
  readonly text: string
  readonly where: string
}

/**
 * Checks a URL as given: absolute, http or https. Nothing is sent before
 * every URL passed.
 *
 * @internal
 */
export const checkUrl = (source: Source): string => {
  const text = source.text.trim()
  if (text.startsWith("-")) throw new UsageError({ message: `unknown option '${text}' (${source.where})` })
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError({ message: `malformed URL '${text}' (${source.where})` })
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError({
      message: `unsupported scheme '${url.protocol.slice(0, -1)}' in '${text}' (${source.where}): only http and https`
    })
  }
  return url.href
}

const readInput = (file: string): Array<Source> => {
  let text: string
  try {
    text = fs.readFileSync(file === "-" ? 0 : file, "utf8")
  } catch (cause) {
    throw new UsageError({ message: `cannot read --input ${file}: ${messageOf(cause)}` })
  }
  const name = file === "-" ? "stdin" : file
  return text.split(/\r?\n/).flatMap((line, i) => {
    const trimmed = line.trim()
    return trimmed === "" || trimmed.startsWith("#") ? [] : [{ text: trimmed, where: `${name} line ${i + 1}` }]
  })
}

const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

const parseHeader = (text: string): readonly [string, string] => {
  const colon = text.indexOf(":")
  const name = colon < 0 ? "" : text.slice(0, colon).trim()
  if (!token.test(name)) throw new UsageError({ message: `--header must be NAME:VALUE, got '${text}'` })
  return [name, text.slice(colon + 1).trim()]
}

const readData = (data: string): Uint8Array => {
  if (!data.startsWith("@")) return new TextEncoder().encode(data)
  try {
    return fs.readFileSync(data.slice(1))
  } catch (cause) {
    throw new UsageError({ message: `cannot read --data ${data}: ${messageOf(cause)}` })
  }
}

/**
 * A file name for a URL's body: the index first, so that names never
 * collide, then the URL with every character outside `[A-Za-z0-9._-]` made
 * `_`, so that it never leaves the directory.
 *
 * @internal
 */
export const outputName = (index: number, total: number, url: string): string => {
  const stem = url.replace(/^https?:\/\//, "").replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100)
  return `${String(index + 1).padStart(String(total).length, "0")}-${stem}`
}

/** The options of `keepalive fetch`, as parsed. */
interface FetchOptions {
  readonly urls: ReadonlyArray<string>
  readonly input: Option.Option<string>
  readonly concurrency: number
  readonly maxPerOrigin: number
  readonly maxConnections: number
  readonly idleTimeout: Duration.Duration
  readonly noPersist: boolean
  readonly method: Option.Option<string>
  readonly header: ReadonlyArray<string>
  readonly data: Option.Option<string>
  readonly output: Option.Option<string>
  readonly json: boolean
  readonly proxy: Option.Option<string>
  readonly noproxy: Option.Option<string>
  readonly fleet: Option.Option<string>
  readonly fleetMaxPerOrigin: Option.Option<number>
  readonly fleetKeyPrefix: Option.Option<string>
}

/** What is sent, built from the options before anything is sent. */
interface Plan {
  readonly urls: ReadonlyArray<string>
  readonly method: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Uint8Array | undefined
  readonly output: string | undefined
  readonly proxy: Proxy.Config
  /** The key of the proxy each URL goes through, or null; by the index of `urls`. */
  readonly proxies: ReadonlyArray<string | null>
  /** The fleet whose permits each connection waits for (`--fleet`). */
  readonly fleet: FleetPlan | undefined
}

const plan = (options: FetchOptions): Plan => {
  const sources: Array<Source> = options.urls.map((text, i) => ({ text, where: `argument ${i + 1}` }))
  if (Option.isSome(options.input)) sources.push(...readInput(options.input.value))
  if (sources.length === 0) throw new UsageError({ message: "no URL given: pass URLs or --input FILE|-" })
  const urls = sources.map(checkUrl)
  const proxy = proxyConfig(options, process.env)
  const fleet = fleetPlan(options, options.maxPerOrigin)
  const method = Option.getOrElse(options.method, () => Option.isSome(options.data) ? "POST" : "GET")
  if (!token.test(method)) throw new UsageError({ message: `--method must be a token such as GET, got '${method}'` })
  const headers = options.header.map(parseHeader)
  const body = Option.isSome(options.data) ? readData(options.data.value) : undefined
  let output: string | undefined
  if (Option.isSome(options.output)) {
    output = path.resolve(options.output.value)
    try {
      fs.mkdirSync(output, { recursive: true })
      fs.accessSync(output, fs.constants.W_OK)
    } catch (cause) {
      throw new UsageError({ message: `cannot write to --output ${options.output.value}: ${messageOf(cause)}` })
    }
  }
  const proxies = urls.map((url) => proxyFor(proxy, new URL(url))?.key ?? null)
  return { urls, method, headers, body, output, proxy, proxies, fleet }
}

const buildRequest = (p: Plan, url: string): HttpClientRequest.HttpClientRequest => {
  let contentType = "application/x-www-form-urlencoded"
  const headers: Record<string, string> = {}
  for (const [name, value] of p.headers) {
    if (name.toLowerCase() === "content-type") contentType = value
    else headers[name] = value
  }
  // Any token is a method on the wire; the type only lists the common ones.
  const request = HttpClientRequest.make(p.method as HttpClientRequest.HttpClientRequest["method"])(url, { headers })
  return p.body === undefined ? request : HttpClientRequest.bodyUint8Array(request, p.body, contentType)
}

/** A body that could not be written to its file. */
class OutputError extends Error {
  override readonly name = "Output"
}

/** Sends one request, streams its body (to a file with `--output`), and says how it went. */
const fetchOne = (p: Plan, index: number): Effect.Effect<Outcome, never, Agent.Agent> => {
  const url = p.urls[index]!
  const proxy = p.proxies[index]!
  const started = performance.now()
  return Agent.requestWith(buildRequest(p, url), (response) => {
    let bytes = 0
    const file = p.output === undefined ? undefined : path.join(p.output, outputName(index, p.urls.length, url))
    return Effect.acquireUseRelease(
      Effect.try({
        try: () => file === undefined ? undefined : fs.openSync(file, "w"),
        catch: (cause) => new OutputError(messageOf(cause))
      }),
      (fd) =>
        Agent.forEachChunk(response, (chunk) =>
          Effect.try({
            try: () => {
              bytes += chunk.length
              if (fd !== undefined) fs.writeSync(fd, chunk)
            },
            catch: (cause) => new OutputError(messageOf(cause))
          })),
      (fd) => Effect.sync(() => fd !== undefined && fs.closeSync(fd))
    ).pipe(Effect.map(() => ({
      status: response.status,
      bytes,
      reused: Option.exists(Agent.connectionOf(response), (connection) => connection.reused)
    })))
  }).pipe(
    Effect.match({
      onFailure: (error): Outcome => ({ url, proxy, error: { reason: reasonOf(error), message: messageOf(error) } }),
      onSuccess: ({ bytes, reused, status }): Outcome => ({
        url,
        proxy,
        status,
        bytes,
        ms: Math.round((performance.now() - started) * 10) / 10,
        reused
      })
    })
  )
}

const run = (options: FetchOptions) =>
  Effect.gen(function*() {
    const p = yield* Effect.try({
      try: () => plan(options),
      catch: (error) => error instanceof UsageError ? error : new UsageError({ message: messageOf(error) })
    })
    const recorder = new Recorder()
    const progress = new Progress(process.stdout.isTTY === true && !options.json, p.urls.length, recorder, "", p.fleet !== undefined)
    const waits = new PermitWaits()
    const agent = NodeAgent.layer({
      maxConnectionsPerOrigin: options.maxPerOrigin,
      maxConnections: options.maxConnections,
      idleTimeout: options.idleTimeout,
      persist: !options.noPersist,
      proxy: p.proxy
    })
    const layer = p.fleet === undefined ? agent : Layer.provide(agent, yield* permitsLayer(p.fleet, waits))
    const started = performance.now()
    yield* Effect.forEach(
      p.urls,
      (_, index) =>
        Effect.flatMap(fetchOne(p, index), (outcome) =>
          Effect.map(Agent.stats, (stats) => {
            recorder.sample(stats)
            recorder.record(outcome)
            progress.done++
            if (options.json) process.stdout.write(`${JSON.stringify(outcome)}\n`)
            else if ("error" in outcome) progress.line(`failed ${outcome.url}: ${outcome.error.message}`)
          })),
      { concurrency: options.concurrency, discard: true }
    ).pipe(
      progress.run.bind(progress),
      Effect.provide(layer),
      // What a layer logs (the fleet's Redis unavailable, back again) is a line on stderr, as a failed request's is.
      Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => progress.line(logLine(message)))))
    )
    const summary = recorder.summary(p.fleet === undefined ? null : waits.summary(p.fleet))
    if (options.json) process.stdout.write(`${JSON.stringify({ summary })}\n`)
    else {
      const lines = summaryLines(summary, (performance.now() - started) / 1000, recorder)
      process.stdout.write(`${lines.join("\n")}\n`)
    }
    if (summary.failed > 0) return yield* new Unsuccessful()
  })

/** A log message (one value, or the values of one call) on one line. */
const logLine = (message: unknown): string =>
  (Array.isArray(message) ? message : [message]).map((part) => messageOf(part)).join(" ")

/** A text option with a one-letter alias and a name for its value in the help. */
const textOption = (name: string, alias: string, value: string, description: string) =>
  Options.text(name).pipe(Options.withAlias(alias), Options.withPseudoName(value), Options.withDescription(description))

/**
 * `keepalive fetch`: many URLs, many origins, one Agent.
 *
 * @internal
 */
export const command = Command.make("fetch", {
  urls: Args.text({ name: "URL" }).pipe(Args.withDescription("URLs to fetch (http or https)"), Args.repeated),
  input: Options.optional(
    textOption("input", "i", "FILE|-", "read more URLs from FILE, or stdin for -: one per line, # comments")
  ),
  ...agentOptions,
  idleTimeout: duration("idle-timeout", {
    fallback: "4 seconds",
    max: Duration.hours(1),
    description: "the Agent's idleTimeout"
  }),
  noPersist: Options.boolean("no-persist").pipe(Options.withDescription("a fresh connection per request")),
  method: Options.optional(textOption("method", "X", "M", "request method (default GET, or POST with --data)")),
  header: Options.repeated(textOption("header", "H", "K:V", "a request header; repeatable")),
  data: Options.optional(textOption("data", "d", "TEXT|@FILE", "request body: the text, or the bytes of FILE")),
  output: Options.optional(textOption("output", "o", "DIR", "write each response body to a file in DIR")),
  json: Options.boolean("json").pipe(Options.withDescription("one JSON line per response, then a summary line")),
  ...proxyOptions,
  ...fleetOptions
}, run).pipe(Command.withDescription("Fetch URLs through one Agent and summarise what the connections did."))
