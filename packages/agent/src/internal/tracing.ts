import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Redacted from "effect/Redacted"
import type * as Tracer from "effect/Tracer"
import { AgentError } from "../AgentError.js"
import type { Origin } from "../Origin.js"

const ATTR_HTTP_REQUEST_METHOD = "http.request.method"
const ATTR_HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
const ATTR_SERVER_ADDRESS = "server.address"
const ATTR_SERVER_PORT = "server.port"
const ATTR_URL_FULL = "url.full"
const ATTR_URL_PATH = "url.path"
const ATTR_URL_SCHEME = "url.scheme"
const ATTR_URL_QUERY = "url.query"

/** The attribute of a header (`http.request.header.<name>`), made once per name. */
class HeaderKeys {
  readonly #keys = new Map<string, string>()
  constructor(readonly prefix: string) {}
  of(name: string): string {
    let key = this.#keys.get(name)
    if (key === undefined) {
      key = this.prefix + name
      // Bounded: names past the first few hundred are made each time.
      if (this.#keys.size < 256) this.#keys.set(name, key)
    }
    return key
  }
}

const requestHeaderKeys = new HeaderKeys("http.request.header.")
const responseHeaderKeys = new HeaderKeys("http.response.header.")

/** What a redacted header's attribute reads (`String` of a `Redacted`). */
const redactedValue = String(Redacted.make(""))

/**
 * Each header as a span attribute, its value redacted where `Headers.redact`
 * would redact it (a name equal to a redacted name in lower case, or matching
 * a redacted pattern), without copying the headers twice as that would.
 */
const headerAttributes = (
  span: Tracer.Span,
  keys: HeaderKeys,
  headers: Readonly<Record<string, string>>,
  redacted: ReadonlyArray<string | RegExp>
): void => {
  for (const name in headers) {
    span.attribute(keys.of(name), isRedacted(name, redacted) ? redactedValue : String(headers[name]))
  }
}

const isRedacted = (name: string, redacted: ReadonlyArray<string | RegExp>): boolean => {
  for (let i = 0; i < redacted.length; i++) {
    const pattern = redacted[i]!
    if (typeof pattern === "string" ? pattern.toLowerCase() === name : pattern.test(name)) return true
  }
  return false
}

/** Effect's own tracer, in place when no tracer was installed. */
const nativeTracer: Tracer.Tracer = Effect.runSync(Effect.tracer)

/**
 * A traced request: its span, which ends with the response head (whatever the
 * entry point does with the response after) or with the failure; the tracer
 * that made it (a connection opened for it is traced by the same, whatever the
 * Agent's own fiber has); and when it began to wait for a connection. A
 * class, as every object made per request (see ARCHITECTURE.md).
 *
 * @internal
 */
export class Trace {
  /** How long it waited for its connection (told by the pool). */
  waitedMillis = 0
  #ended = false
  constructor(readonly span: Tracer.Span, readonly settings: TraceSettings) {}

  /** It got the connection it waited for, after `seconds`. */
  waited(seconds: number): void {
    this.waitedMillis = seconds * 1000
  }

  /**
   * The request went out on connection `id`, through `proxy` (its key) if
   * any: what only the pool knows goes on its span.
   */
  sentOn(id: number, reused: boolean, proxy: string | undefined): void {
    this.span.attribute("keepalive.connection.id", id)
    this.span.attribute("keepalive.connection.reused", reused)
    this.span.attribute("keepalive.queue.wait_ms", this.waitedMillis)
    if (proxy !== undefined) this.span.attribute("keepalive.proxy", proxy)
  }

  /** The response head came: its status and headers (names in lower case) go on the span, which ends. */
  responded(status: number, headers: Readonly<Record<string, string>>, nowNanos: bigint): void {
    const span = this.span
    span.attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
    headerAttributes(span, responseHeaderKeys, headers, this.settings.redactedNames)
    this.#end(Exit.void, nowNanos)
  }

  /**
   * What a failure is told to the span as: the caller's own error for the
   * Agent's (the HttpClient adapter's `RequestError`), as the span of a
   * request that fails with it would end.
   */
  failureAs: ((error: AgentError) => unknown) | undefined = undefined

  /** The request ended: the span ends now, with its outcome, unless the head ended it. */
  ended(exit: Exit.Exit<unknown, unknown>, nowNanos: bigint): void {
    if (this.#ended) return
    const failureAs = this.failureAs
    this.#end(
      failureAs !== undefined && exit._tag === "Failure"
        ? Exit.mapError(exit, (error) => error instanceof AgentError ? failureAs(error) : error)
        : exit,
      nowNanos
    )
  }

  #end(exit: Exit.Exit<unknown, unknown>, nowNanos: bigint): void {
    if (this.#ended) return
    this.#ended = true
    this.span.end(nowNanos, exit)
  }

  /**
   * The `keepalive.connect` span around opening a connection for this
   * request, a child of its span; `proxy` is the key of the proxy it goes
   * through (`keepalive.proxy`), if any.
   */
  connect<A, E, R>(origin: Origin, effect: Effect.Effect<A, E, R>, proxy?: string): Effect.Effect<A, E, R> {
    return Effect.withTracer(
      Effect.withSpan(effect, "keepalive.connect", {
        kind: "client",
        parent: this.span,
        captureStackTrace: false,
        attributes: {
          [ATTR_SERVER_ADDRESS]: origin.host,
          [ATTR_SERVER_PORT]: origin.port,
          [ATTR_URL_SCHEME]: origin.scheme,
          "keepalive.tls": origin.scheme === "https",
          ...(proxy !== undefined ? { "keepalive.proxy": proxy } : undefined)
        }
      }),
      this.settings.tracer
    )
  }
}

/**
 * The tracing settings of the fiber sending a request, read as
 * `HttpClient.make` reads them.
 *
 * @internal
 */
export class TraceSettings {
  constructor(
    readonly tracer: Tracer.Tracer,
    readonly clock: Clock.Clock,
    readonly redactedNames: ReadonlyArray<string | RegExp>,
    readonly propagate: boolean,
    readonly name: string
  ) {}

  /**
   * For the HttpClient adapter: whenever the tracer is enabled and the
   * request is not excluded (`withTracerDisabledWhen`), as `HttpClient.make`.
   */
  static ofClient(
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    request: HttpClientRequest.HttpClientRequest
  ): TraceSettings | undefined {
    if (!fiber.getFiberRef(FiberRef.currentTracerEnabled) || fiber.getFiberRef(HttpClient.currentTracerDisabledWhen)(request)) {
      return undefined
    }
    return new TraceSettings(
      fiber.currentTracer,
      Context.get(fiber.currentDefaultServices, Clock.Clock),
      fiber.getFiberRef(Headers.currentRedactedNames),
      fiber.getFiberRef(HttpClient.currentTracerPropagation),
      Context.get(fiber.currentContext, HttpClient.SpanNameGenerator)(request)
    )
  }

  /**
   * For `Agent.request` and its kin: as for the adapter, and only when there
   * is a tracer to see the span (one other than Effect's own) or a span to
   * put it under. Without either, a span would cost every request for nobody.
   */
  static ofAgent(
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    request: HttpClientRequest.HttpClientRequest
  ): TraceSettings | undefined {
    if (fiber.currentTracer === nativeTracer && fiber.currentSpan === undefined) return undefined
    return TraceSettings.ofClient(fiber, request)
  }
}

/**
 * Sends `request` under the span `HttpClient.make` would make: its name,
 * attributes (headers redacted), trace propagation; `send` gets the `Trace`
 * to tell it the connection and the response head. With `sendEnds`, `send`
 * promises to call `trace.ended` with however it ends, interruption
 * included (the Agent's `execute` does, in the uninterruptible region it has
 * anyway); else the span is ended here, around it.
 *
 * @internal
 */
export const traced = <A, E, R>(
  send: (request: HttpClientRequest.HttpClientRequest, trace: Trace) => Effect.Effect<A, E, R>,
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  settings: TraceSettings,
  sendEnds = false
): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.makeSpan(settings.name, { kind: "client", captureStackTrace: false }), (span) => {
    span.attribute(ATTR_HTTP_REQUEST_METHOD, request.method)
    span.attribute(ATTR_SERVER_ADDRESS, url.origin)
    if (url.port !== "") span.attribute(ATTR_SERVER_PORT, +url.port)
    span.attribute(ATTR_URL_FULL, url.toString())
    span.attribute(ATTR_URL_PATH, url.pathname)
    span.attribute(ATTR_URL_SCHEME, url.protocol.slice(0, -1))
    const query = url.search.slice(1)
    if (query !== "") span.attribute(ATTR_URL_QUERY, query)
    headerAttributes(span, requestHeaderKeys, request.headers, settings.redactedNames)
    const sent = settings.propagate ? HttpClientRequest.setHeaders(request, HttpTraceContext.toHeaders(span)) : request
    const trace = new Trace(span, settings)
    // Only a Stream body runs the caller's code (and its spans) while the
    // request is sent: the span is made the parent for that case alone.
    const sending = request.body._tag === "Stream"
      ? Effect.withParentSpan(send(sent, trace), span)
      : send(sent, trace)
    if (sendEnds) return sending
    return Effect.onExit(sending, (exit) => Effect.sync(() => trace.ended(exit, settings.clock.unsafeCurrentTimeNanos())))
  })
