import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Http1 from "@keepalive/agent/Http1"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as net from "node:net"
import * as tls from "node:tls"
import { checkUrl } from "./fetch.js"
import { duration, integer, UsageError, Unsuccessful } from "./options.js"
import { messageOf } from "./summary.js"

/**
 * What `keepalive probe --json` prints.
 *
 * @internal
 */
export interface ProbeReport {
  readonly url: string
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
 * One raw connection to the server and a parser for its responses. The probe
 * measures the server, not the Agent, so it holds the socket itself and sees
 * exactly when the server closes.
 */
class RawConnection {
  #parser: Http1.ResponseParser
  #head: Http1.ResponseHead | undefined = undefined
  #completedAt: number | undefined = undefined
  #failure: string | undefined = undefined
  /** When the server's FIN (or a reset) arrived. */
  closedAt: number | undefined = undefined
  #wake = new Set<() => void>()

  private constructor(readonly socket: net.Socket) {
    this.#parser = new Http1.ResponseParser({
      onHead: (head) => {
        this.#head = head
      },
      onBody: () => {},
      onComplete: () => {
        this.#completedAt = performance.now()
      }
    })
    socket.on("data", (chunk: Buffer) => {
      const error = this.#parser.execute(chunk)
      if (error !== undefined && error.reason !== "Unsolicited") this.#failure ??= `${error.reason}: ${error.detail}`
      this.#notify()
    })
    socket.on("end", () => {
      this.closedAt ??= performance.now()
      const error = this.#parser.finish()
      if (error !== undefined && this.#head !== undefined) this.#failure ??= `${error.reason}: ${error.detail}`
      this.#notify()
    })
    socket.on("error", (cause) => {
      this.closedAt ??= performance.now()
      this.#failure ??= messageOf(cause)
      this.#notify()
    })
    socket.on("close", () => {
      this.closedAt ??= performance.now()
      this.#notify()
    })
  }

  static open(url: URL): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const port = Number(url.port || (url.protocol === "https:" ? 443 : 80))
      const host = url.hostname.replace(/^\[|\]$/g, "")
      const socket = url.protocol === "https:"
        ? tls.connect({
          host,
          port,
          ALPNProtocols: ["http/1.1"],
          ...(net.isIP(host) === 0 ? { servername: host } : {})
        })
        : net.connect({ host, port })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`connecting to ${url.host} timed out`))
      }, timeoutMs)
      socket.once(url.protocol === "https:" ? "secureConnect" : "connect", () => {
        clearTimeout(timer)
        socket.removeAllListeners("error")
        resolve(new RawConnection(socket))
      })
      socket.once("error", (cause) => {
        clearTimeout(timer)
        reject(new Error(`cannot connect to ${url.host}: ${messageOf(cause)}`))
      })
    })
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

  /** Sends a request head and waits for the whole response. */
  async exchange(head: string): Promise<{ readonly head: Http1.ResponseHead; readonly completedAt: number }> {
    // A close that came with the last response is seen before writing again.
    await new Promise((resolve) => setImmediate(resolve))
    if (this.closedAt !== undefined) throw new ExchangeError("closed", "the server closed the connection")
    this.#head = undefined
    this.#completedAt = undefined
    this.#parser.expect("GET")
    this.socket.write(head)
    const outcome = await this.#until(() => {
      if (this.#failure !== undefined) return "failed" as const
      if (this.#completedAt !== undefined) return "complete" as const
      if (this.closedAt !== undefined) return "closed" as const
      return undefined
    }, timeoutMs)
    if (outcome === "complete") return { head: this.#head!, completedAt: this.#completedAt! }
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
    this.socket.destroy()
  }
}

const requestHead = (url: URL, version: "1.0" | "1.1"): string =>
  `GET ${url.pathname}${url.search} HTTP/${version}\r\nHost: ${url.host}\r\n` +
  (version === "1.1" ? "Connection: keep-alive\r\n" : "") +
  "User-Agent: keepalive-probe\r\nAccept: */*\r\n\r\n"

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
  url: URL,
  options: { readonly maxRequests: number; readonly maxIdleMs: number },
  progress: (line: string) => void
): Promise<ProbeReport> => {
  // (1) and (2): requests on one connection until the server closes it, or the bound.
  progress(`requests on one connection (up to ${options.maxRequests})`)
  const first = await RawConnection.open(url)
  let served = 0
  let firstHead: Http1.ResponseHead | undefined
  let closedAfter: number | null = null
  try {
    while (served < options.maxRequests) {
      let head: Http1.ResponseHead
      try {
        head = (await first.exchange(requestHead(url, "1.1"))).head
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
  const http10 = await probeHttp10(url)

  // (3): the idle close, waited for directly rather than by trying gaps.
  let idleCloseAfterMs: number | null = null
  if (keepAlive) {
    progress(`waiting for the server to close an idle connection (up to ${options.maxIdleMs / 1000} s)`)
    const idle = await RawConnection.open(url)
    try {
      const { completedAt, head } = await idle.exchange(requestHead(url, "1.1"))
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
    url: url.href,
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

const probeHttp10 = async (url: URL): Promise<ProbeReport["http10"]> => {
  let connection: RawConnection | undefined
  try {
    connection = await RawConnection.open(url)
    const { head } = await connection.exchange(requestHead(url, "1.0"))
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
  const lines = [
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
  ]
  return lines
}

const run = (options: {
  readonly url: string
  readonly maxRequests: number
  readonly maxIdle: Duration.Duration
  readonly json: boolean
}) =>
  Effect.gen(function*() {
    const href = yield* Effect.try({
      try: () => checkUrl({ text: options.url, where: "the URL argument" }),
      catch: (error) => error instanceof UsageError ? error : new UsageError({ message: messageOf(error) })
    })
    const bounds = { maxRequests: options.maxRequests, maxIdleMs: Duration.toMillis(options.maxIdle) }
    const tty = process.stderr.isTTY === true && process.stdout.isTTY === true && !options.json
    const report = yield* Effect.tryPromise(() =>
      probe(new URL(href), bounds, (line) => {
        if (tty) process.stderr.write(`\r\x1b[Kprobing: ${line}…`)
      })
    ).pipe(
      Effect.ensuring(Effect.sync(() => tty && process.stderr.write("\r\x1b[K"))),
      Effect.catchAll((error) =>
        Effect.zipRight(
          Effect.sync(() => process.stderr.write(`keepalive: probe ${href} failed: ${messageOf(error.error)}\n`)),
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
  json: Options.boolean("json").pipe(Options.withDescription("print the report as one JSON object"))
}, run).pipe(
  Command.withDescription(
    "Measure a server's keep-alive: requests per connection, idle timeout, Keep-Alive hint, HTTP/1.0; and suggest Agent settings."
  )
)
