import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { isAgentError } from "@keepalive/agent/AgentError"
import { Connector, type Transport } from "@keepalive/agent/Connector"
import * as Http1 from "@keepalive/agent/Http1"
import * as Origin from "@keepalive/agent/Origin"
import type * as Proxy from "@keepalive/agent/Proxy"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as NodeConnector from "../../NodeConnector.js"
import { checkUrl } from "./fetch.js"
import { duration, integer, proxyConfig, proxyFor, proxyOptions, UsageError, Unsuccessful } from "./options.js"
import { messageOf } from "./summary.js"

/**
 * What `keepalive probe --json` prints.
 *
 * @internal
 */
export interface ProbeReport {
  readonly url: string
  /** The key of the proxy the probe went through (`scheme://host:port`, never credentials); null: direct. */
  readonly proxy: string | null
  /**
   * Whose keep-alive was measured: the origin's (directly, or in a CONNECT or
   * SOCKS5 tunnel), or the proxy's (an http origin forwarded by an http proxy:
   * the connection measured ends at the proxy).
   */
  readonly measured: "origin" | "proxy"
  readonly keepAlive: boolean
  /**
   * The `Keep-Alive` header of the server's first response: `timeout` in seconds, `max` the
   * requests it takes after that response; null when it sent none.
   */
  readonly hint: { readonly timeout: number | null; readonly max: number | null } | null
  /** Requests the server served on one connection before closing it; null: not closed within the bound. */
  readonly requestsPerConnection: number | null
  /** Milliseconds from the end of a response to the server's close of the idle connection; null: not within --max-idle. */
  readonly idleCloseAfterMs: number | null
  readonly http10: "close" | "keep-alive" | "error"
  /** Agent settings that fit: `idleTimeout` in milliseconds (a `Duration.DurationInput`). */
  readonly suggested: { readonly idleTimeout: number; readonly maxRequestsPerConnection: number | null }
}

/** A request failed: the connection closed before a response, or something else went wrong. */
class ExchangeError extends Error {
  constructor(readonly kind: "closed" | "failed", message: string) {
    super(message)
  }
}

const timeoutMs = 10_000

/**
 * How the probe reaches the server: to the origin, through a proxy when
 * there is one. An http origin through an http proxy is forwarded: the
 * connection ends at the proxy, which is sent absolute-form requests (with
 * its credentials) and answers them itself, so what is measured is the
 * proxy's keep-alive. A CONNECT or SOCKS5 tunnel carries the connection on to
 * the origin, whose keep-alive is then measured.
 */
class Route {
  readonly origin: Origin.Origin
  readonly forwarded: boolean

  constructor(readonly url: URL, readonly proxy: Proxy.Endpoint | undefined) {
    this.origin = Origin.fromUrl(url)!
    this.forwarded = proxy?.scheme === "http" && this.origin.scheme === "http"
  }

  /** Where a connection goes, as an error of its connect names it: the proxy only when `detail` does not already. */
  where(detail: string): string {
    return this.proxy === undefined || detail.includes(this.proxy.key)
      ? this.url.host
      : `${this.url.host} through proxy ${this.proxy.key}`
  }

  /** A GET of the URL, in absolute-form with the proxy's credentials when forwarded. */
  requestHead(version: "1.0" | "1.1"): string {
    const path = `${this.url.pathname}${this.url.search}`
    const credentials = this.forwarded && this.proxy?.credentials !== undefined
      ? Redacted.value(this.proxy.credentials)
      : undefined
    const basic = credentials === undefined
      ? ""
      : `Proxy-Authorization: Basic ${
        Buffer.from(`${credentials.username}:${credentials.password}`, "utf8").toString("base64")
      }\r\n`
    return `GET ${this.forwarded ? `${this.url.protocol}//${this.url.host}${path}` : path} HTTP/${version}\r\n` +
      `Host: ${this.url.host}\r\n${basic}` +
      (version === "1.1" ? "Connection: keep-alive\r\n" : "") +
      "User-Agent: keepalive-probe\r\nAccept: */*\r\n\r\n"
  }
}

/**
 * One raw connection to the server and a parser for its responses. The probe
 * measures the server, not the Agent, so it holds the transport itself and
 * sees exactly when the server closes. The transport is the Node
 * connector's, as the Agent's would be: TLS, CONNECT and SOCKS5 alike.
 */
class RawConnection {
  #parser: Http1.ResponseParser
  #head: Http1.ResponseHead | undefined = undefined
  #completedAt: number | undefined = undefined
  #failure: string | undefined = undefined
  /** When the server's FIN (or a reset) arrived. */
  closedAt: number | undefined = undefined
  #wake = new Set<() => void>()

  private constructor(
    readonly route: Route,
    readonly transport: Transport,
    readonly scope: Scope.CloseableScope
  ) {
    this.#parser = new Http1.ResponseParser({
      onHead: (head) => {
        this.#head = head
      },
      onBody: () => {},
      onComplete: () => {
        this.#completedAt = performance.now()
      }
    })
    transport.listen({
      onData: (chunk) => {
        const error = this.#parser.execute(chunk)
        if (error !== undefined && error.reason !== "Unsolicited") this.#failure ??= `${error.reason}: ${error.detail}`
        this.#notify()
      },
      onEnd: () => {
        this.closedAt ??= performance.now()
        const error = this.#parser.finish()
        if (error !== undefined && this.#head !== undefined) this.#failure ??= `${error.reason}: ${error.detail}`
        this.#notify()
      },
      onError: (cause) => {
        this.closedAt ??= performance.now()
        this.#failure ??= messageOf(cause)
        this.#notify()
      },
      onClose: () => {
        this.closedAt ??= performance.now()
        this.#notify()
      },
      onDrain: () => {}
    })
  }

  static async open(route: Route): Promise<RawConnection> {
    const scope = Effect.runSync(Scope.make())
    const exit = await Effect.runPromiseExit(
      Effect.flatMap(Connector, (connector) => connector.connect(route.origin, { proxy: route.proxy })).pipe(
        Effect.timeoutFail({
          duration: timeoutMs,
          onTimeout: () => new Error(`no connection within ${timeoutMs / 1000} s`)
        }),
        Scope.extend(scope),
        Effect.provide(NodeConnector.layer)
      )
    )
    if (Exit.isSuccess(exit)) return new RawConnection(route, exit.value, scope)
    await Effect.runPromise(Scope.close(scope, exit))
    const error = Cause.squash(exit.cause)
    const detail = isAgentError(error) ? error.detail : messageOf(error)
    throw new Error(`cannot connect to ${route.where(detail)}: ${detail}`)
  }

  #notify(): void {
    for (const wake of this.#wake) wake()
  }

  /** Waits until `done` answers something, or `ms` passed (then undefined). */
  #until<A>(done: () => A | undefined, ms: number): Promise<A | undefined> {
    return new Promise((resolve) => {
      const check = () => {
        const result = done()
        if (result === undefined) return
        finish(result)
      }
      const finish = (result: A | undefined) => {
        clearTimeout(timer)
        this.#wake.delete(check)
        resolve(result)
      }
      const timer = setTimeout(() => finish(undefined), ms)
      this.#wake.add(check)
      check()
    })
  }

  /** Sends a GET and waits for the whole response. */
  async exchange(version: "1.0" | "1.1"): Promise<{ readonly head: Http1.ResponseHead; readonly completedAt: number }> {
    // A close that came with the last response is seen before writing again.
    await new Promise((resolve) => setImmediate(resolve))
    if (this.closedAt !== undefined) throw new ExchangeError("closed", "the server closed the connection")
    this.#head = undefined
    this.#completedAt = undefined
    this.#parser.expect("GET")
    this.transport.write(Buffer.from(this.route.requestHead(version), "latin1"))
    const outcome = await this.#until(() => {
      if (this.#failure !== undefined) return "failed" as const
      if (this.#completedAt !== undefined) return "complete" as const
      if (this.closedAt !== undefined) return "closed" as const
      return undefined
    }, timeoutMs)
    if (outcome === "complete") {
      const head = this.#head!
      // A forwarding proxy's 407 is its own answer, not the origin's: nothing to measure.
      const proxy = this.route.proxy
      if (this.route.forwarded && head.status === 407 && proxy !== undefined) {
        throw new ExchangeError(
          "failed",
          proxy.credentials === undefined
            ? `proxy ${proxy.key} requires authentication (407)`
            : `proxy ${proxy.key} refused the credentials (407)`
        )
      }
      return { head, completedAt: this.#completedAt! }
    }
    if (outcome === "closed" && this.#head === undefined) {
      throw new ExchangeError("closed", "the server closed the connection before answering")
    }
    throw new ExchangeError("failed", this.#failure ?? (outcome === undefined ? "no complete response within 10 s" : "the connection closed mid-response"))
  }

  /** Waits for the server's close, at most `ms`; the time it came, or undefined. */
  waitClose(ms: number): Promise<number | undefined> {
    return this.#until(() => this.closedAt, ms)
  }

  destroy(): void {
    this.transport.destroy()
    Effect.runFork(Scope.close(this.scope, Exit.void))
  }
}

/**
 * An idle timeout safely below a server's: a second less, or 90 %, whichever is
 * shorter, but never under half of it; in whole tenths of a second from 0.5 s up.
 *
 * @internal
 */
export const below = (ms: number): number => {
  const safe = Math.max(ms / 2, Math.min(ms - 1000, ms * 0.9))
  // Whole tenths of a second read better, where that costs little.
  return safe >= 500 ? Math.floor(safe / 100) * 100 : Math.floor(safe)
}

/** Agent default, for a server that never closed an idle connection. */
const defaultIdleTimeout = 4000

const probe = async (
  route: Route,
  options: { readonly maxRequests: number; readonly maxIdleMs: number },
  progress: (line: string) => void
): Promise<ProbeReport> => {
  // (1) and (2): requests on one connection until the server closes it, or the bound.
  progress(`requests on one connection (up to ${options.maxRequests})`)
  const first = await RawConnection.open(route)
  let served = 0
  let firstHead: Http1.ResponseHead | undefined
  let closedAfter: number | null = null
  try {
    while (served < options.maxRequests) {
      let head: Http1.ResponseHead
      try {
        head = (await first.exchange("1.1")).head
      } catch (error) {
        if (error instanceof ExchangeError && error.kind === "closed" && served > 0) {
          closedAfter = served
          break
        }
        throw error
      }
      firstHead ??= head
      served++
      if (!head.keepAlive) {
        closedAfter = served
        break
      }
    }
  } finally {
    first.destroy()
  }
  const keepAlive = closedAfter === null ? served > 0 && firstHead!.keepAlive : closedAfter > 1
  // Read by the codec, as the Agent reads it.
  const hint = firstHead === undefined || firstHead.headers["keep-alive"] === undefined ? null : {
    timeout: firstHead.keepAliveTimeout === undefined ? null : firstHead.keepAliveTimeout / 1000,
    max: firstHead.keepAliveMax ?? null
  }

  // (4): HTTP/1.0 without a Connection header.
  progress("an HTTP/1.0 request")
  const http10 = await probeHttp10(route)

  // (3): the idle close, waited for directly rather than by trying gaps.
  let idleCloseAfterMs: number | null = null
  if (keepAlive) {
    progress(`waiting for the server to close an idle connection (up to ${options.maxIdleMs / 1000} s)`)
    const idle = await RawConnection.open(route)
    try {
      const { completedAt, head } = await idle.exchange("1.1")
      if (head.keepAlive) {
        const closedAt = await idle.waitClose(options.maxIdleMs)
        if (closedAt !== undefined) idleCloseAfterMs = Math.round(closedAt - completedAt)
      }
    } finally {
      idle.destroy()
    }
  }

  const candidates: Array<number> = []
  if (idleCloseAfterMs !== null) candidates.push(below(idleCloseAfterMs))
  if (hint?.timeout != null && hint.timeout > 0) candidates.push(below(hint.timeout * 1000))
  return {
    url: route.url.href,
    proxy: route.proxy?.key ?? null,
    measured: route.forwarded ? "proxy" : "origin",
    keepAlive,
    hint,
    requestsPerConnection: closedAfter,
    idleCloseAfterMs,
    http10,
    suggested: {
      idleTimeout: candidates.length === 0 ? defaultIdleTimeout : Math.min(...candidates),
      maxRequestsPerConnection: closedAfter
    }
  }
}

const probeHttp10 = async (route: Route): Promise<ProbeReport["http10"]> => {
  let connection: RawConnection | undefined
  try {
    connection = await RawConnection.open(route)
    const { head } = await connection.exchange("1.0")
    if (head.status >= 400) return "error"
    if (!head.keepAlive) return "close"
    // It said it keeps the connection: believe it unless it closes soon after.
    return await connection.waitClose(500) === undefined ? "keep-alive" : "close"
  } catch {
    return "error"
  } finally {
    connection?.destroy()
  }
}

/**
 * The report as readable lines.
 *
 * @internal
 */
export const reportLines = (report: ProbeReport, options: { readonly maxRequests: number; readonly maxIdleMs: number }) => {
  const hint = report.hint === null
    ? "none"
    : [report.hint.timeout === null ? "" : `timeout=${report.hint.timeout}`, report.hint.max === null ? "" : `max=${report.hint.max}`]
      .filter((s) => s !== "").join(", ") || "present, without timeout or max"
  const lines = report.proxy === null ? [] : [
    `proxy                 ${report.proxy}${
      report.measured === "proxy"
        ? " forwards the requests: measured the proxy's keep-alive, not the origin's"
        : `, a ${report.proxy.startsWith("http:") ? "CONNECT" : "SOCKS5"} tunnel: measured the origin's keep-alive through it`
    }`
  ]
  lines.push(
    `keep-alive            ${report.keepAlive ? "yes" : "no: the server closes the connection after each response"}`,
    `Keep-Alive hint       ${hint}`,
    `requests/connection   ${
      report.requestsPerConnection === null
        ? `more than ${options.maxRequests} (not closed within --max-requests)`
        : `${report.requestsPerConnection}, then the server closed the connection`
    }`,
    `idle close after      ${
      !report.keepAlive
        ? "-"
        : report.idleCloseAfterMs === null
        ? `not within ${options.maxIdleMs / 1000} s (--max-idle)`
        : `${report.idleCloseAfterMs} ms`
    }`,
    `HTTP/1.0              ${
      report.http10 === "error" ? "error (failed, or answered 4xx/5xx)" : `${report.http10} (a request without Connection)`
    }`,
    `suggested             idleTimeout ${report.suggested.idleTimeout} ms${
      report.idleCloseAfterMs === null && report.hint?.timeout == null ? " (the Agent's default: the server never closed)" : ""
    }, maxRequestsPerConnection ${report.suggested.maxRequestsPerConnection ?? "unlimited (the Agent's default)"}`,
    `                      NodeAgent.layer({ idleTimeout: "${report.suggested.idleTimeout} millis"${
      report.suggested.maxRequestsPerConnection === null
        ? ""
        : `, maxRequestsPerConnection: ${report.suggested.maxRequestsPerConnection}`
    } })`
  )
  return lines
}

const run = (options: {
  readonly url: string
  readonly maxRequests: number
  readonly maxIdle: Duration.Duration
  readonly json: boolean
  readonly proxy: Option.Option<string>
  readonly noproxy: Option.Option<string>
}) =>
  Effect.gen(function*() {
    const route = yield* Effect.try({
      try: () => {
        const url = new URL(checkUrl({ text: options.url, where: "the URL argument" }))
        return new Route(url, proxyFor(proxyConfig(options, process.env), url))
      },
      catch: (error) => error instanceof UsageError ? error : new UsageError({ message: messageOf(error) })
    })
    const bounds = { maxRequests: options.maxRequests, maxIdleMs: Duration.toMillis(options.maxIdle) }
    const tty = process.stderr.isTTY === true && process.stdout.isTTY === true && !options.json
    const report = yield* Effect.tryPromise(() =>
      probe(route, bounds, (line) => {
        if (tty) process.stderr.write(`\r\x1b[Kprobing: ${line}…`)
      })
    ).pipe(
      Effect.ensuring(Effect.sync(() => tty && process.stderr.write("\r\x1b[K"))),
      Effect.catchAll((error) =>
        Effect.zipRight(
          Effect.sync(() => process.stderr.write(`keepalive: probe ${route.url.href} failed: ${messageOf(error.error)}\n`)),
          new Unsuccessful()
        )
      )
    )
    process.stdout.write(
      options.json ? `${JSON.stringify(report)}\n` : `keepalive probe ${report.url}\n${reportLines(report, bounds).join("\n")}\n`
    )
  })

/**
 * `keepalive probe`: what a server really does with persistent connections.
 *
 * @internal
 */
export const command = Command.make("probe", {
  url: Args.text({ name: "URL" }).pipe(Args.withDescription("the server to probe (http or https)")),
  maxRequests: integer("max-requests", {
    min: 1,
    max: 100_000,
    fallback: 100,
    description: "requests to try on one connection"
  }),
  maxIdle: duration("max-idle", {
    fallback: "30 seconds",
    max: Duration.minutes(10),
    description: "how long to wait for the server to close an idle connection"
  }),
  json: Options.boolean("json").pipe(Options.withDescription("print the report as one JSON object")),
  ...proxyOptions
}, run).pipe(
  Command.withDescription(
    "Measure a server's keep-alive: requests per connection, idle timeout, Keep-Alive hint, HTTP/1.0; and suggest Agent settings."
  )
)
