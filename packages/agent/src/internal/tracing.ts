import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Tracer from "effect/Tracer"
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

/** The character codes of the hex digits. */
const hexCodes: ReadonlyArray<number> = Array.from("0123456789abcdef", (digit) => digit.charCodeAt(0))

/** The hex digit of `n`'s four bits from `shift`. */
const hexDigit = (n: number, shift: number): number => hexCodes[(n >>> shift) & 15]!

/**
 * Sixteen random hex digits: a span id, or half a trace id. One string, made
 * at once: `Number#toString(16)` and concatenating digits (the native span's
 * own way) each cost more.
 */
const randomHex16 = (): string => {
  const a = (Math.random() * 0x100000000) >>> 0
  const b = (Math.random() * 0x100000000) >>> 0
  return String.fromCharCode(
    hexDigit(a, 28), hexDigit(a, 24), hexDigit(a, 20), hexDigit(a, 16),
    hexDigit(a, 12), hexDigit(a, 8), hexDigit(a, 4), hexDigit(a, 0),
    hexDigit(b, 28), hexDigit(b, 24), hexDigit(b, 20), hexDigit(b, 16),
    hexDigit(b, 12), hexDigit(b, 8), hexDigit(b, 4), hexDigit(b, 0)
  )
}

/** The parent a span made now in this fiber gets, as `Effect.makeSpan` finds it (past spans that disable propagation). */
const parentOf = (span: Tracer.AnySpan | undefined): Option.Option<Tracer.AnySpan> => {
  while (span !== undefined) {
    if (!Context.get(span.context, Tracer.DisablePropagation)) return Option.some(span)
    span = span._tag === "Span" ? Option.getOrUndefined(span.parent) : undefined
  }
  return Option.none()
}

/**
 * The span Effect's own tracer makes (its `NativeSpan`): the same fields,
 * ids and behaviour, made without a step of the fiber, and with its
 * attributes written only when they are first read. Effect's own tracer
 * exports nothing: such a span is seen only by code that holds it (a Stream
 * body's, run under it; a `keepalive.connect` span, its child). What leaves
 * the process of most of them is the ids the request carries out, so a
 * request does not pay for the rest, nor keep it alive while it is in flight.
 *
 * @internal
 */
export class DeferredNativeSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly kind = "client"
  readonly sampled = true
  readonly context: Context.Context<never> = Context.empty()
  readonly traceId: string
  readonly spanId: string
  #attributes: Map<string, unknown> | undefined = undefined
  /** The trace whose attributes are written when they are first read. */
  #pending: Trace | undefined = undefined
  #status: Tracer.SpanStatus | undefined = undefined
  #endTime = 0n
  #exit: Exit.Exit<unknown, unknown> | undefined = undefined
  #links: Array<Tracer.SpanLink> | undefined = undefined
  #events: Array<[name: string, startTime: bigint, attributes: Record<string, unknown>]> | undefined = undefined

  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly startTime: bigint
  ) {
    this.traceId = parent._tag === "Some" ? parent.value.traceId : randomHex16() + randomHex16()
    this.spanId = randomHex16()
  }

  /**
   * A span of Effect's own tracer for a request sent now by `fiber`, or
   * undefined when `Effect.makeSpan` would make another: another tracer is
   * installed, or the fiber has span annotations or links to put on it.
   */
  static of(fiber: Fiber.RuntimeFiber<unknown, unknown>, settings: TraceSettings): DeferredNativeSpan | undefined {
    if (
      settings.tracer !== nativeTracer ||
      HashMap.size(fiber.getFiberRef(FiberRef.currentTracerSpanAnnotations)) > 0 ||
      Chunk.isNonEmpty(fiber.getFiberRef(FiberRef.currentTracerSpanLinks))
    ) return undefined
    const startTime = fiber.getFiberRef(FiberRef.currentTracerTimingEnabled)
      ? settings.clock.unsafeCurrentTimeNanos()
      : 0n
    return new DeferredNativeSpan(settings.name, parentOf(fiber.currentSpan), startTime)
  }

  /** Whether its attributes are still to be written by `trace` (see `defer`). */
  get deferring(): boolean {
    return this.#pending !== undefined
  }

  /** `trace` writes the attributes when they are first read. */
  defer(trace: Trace): void {
    this.#pending = trace
  }

  get attributes(): Map<string, unknown> {
    if (this.#attributes !== undefined) return this.#attributes
    const attributes = this.#attributes = new Map()
    const pending = this.#pending
    this.#pending = undefined
    pending?.writeAttributes(this)
    return attributes
  }

  get status(): Tracer.SpanStatus {
    return this.#status ??= this.#exit === undefined
      ? { _tag: "Started", startTime: this.startTime }
      : { _tag: "Ended", startTime: this.startTime, endTime: this.#endTime, exit: this.#exit }
  }

  get links(): Array<Tracer.SpanLink> {
    return this.#links ??= []
  }

  get events(): Array<[name: string, startTime: bigint, attributes: Record<string, unknown>]> {
    return this.#events ??= []
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.#endTime = endTime
    this.#exit = exit
    this.#status = undefined
  }

  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    this.events.push([name, startTime, attributes ?? {}])
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

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
  /** What `sentOn` was told, kept for a span whose attributes are written later (`DeferredNativeSpan`). */
  #connectionId = -1
  #reused = false
  #proxy: string | undefined = undefined
  /** What `responded` was told, kept likewise. */
  #status = 0
  #responseHeaders: Readonly<Record<string, string>> | undefined = undefined

  constructor(
    readonly span: Tracer.Span,
    readonly settings: TraceSettings,
    readonly request: HttpClientRequest.HttpClientRequest,
    readonly url: URL
  ) {}

  /** Whether the span's attributes are written later, when first read. */
  #deferred(): boolean {
    const span = this.span
    return span instanceof DeferredNativeSpan && span.deferring
  }

  /** Writes every attribute told so far: for a `DeferredNativeSpan` whose attributes are read. */
  writeAttributes(span: Tracer.Span): void {
    requestAttributes(span, this.request, this.url, this.settings.redactedNames)
    if (this.#connectionId !== -1) this.#writeSentOn(span)
    if (this.#responseHeaders !== undefined) this.#writeResponded(span, this.#responseHeaders)
  }

  /** It got the connection it waited for, after `seconds`. */
  waited(seconds: number): void {
    this.waitedMillis = seconds * 1000
  }

  /**
   * The request went out on connection `id`, through `proxy` (its key) if
   * any: what only the pool knows goes on its span.
   */
  sentOn(id: number, reused: boolean, proxy: string | undefined): void {
    this.#connectionId = id
    this.#reused = reused
    this.#proxy = proxy
    if (!this.#deferred()) this.#writeSentOn(this.span)
  }

  #writeSentOn(span: Tracer.Span): void {
    span.attribute("keepalive.connection.id", this.#connectionId)
    span.attribute("keepalive.connection.reused", this.#reused)
    span.attribute("keepalive.queue.wait_ms", this.waitedMillis)
    if (this.#proxy !== undefined) span.attribute("keepalive.proxy", this.#proxy)
  }

  /** The response head came: its status and headers (names in lower case) go on the span, which ends. */
  responded(status: number, headers: Readonly<Record<string, string>>, nowNanos: bigint): void {
    this.#status = status
    this.#responseHeaders = headers
    if (!this.#deferred()) this.#writeResponded(this.span, headers)
    this.#end(Exit.void, nowNanos)
  }

  #writeResponded(span: Tracer.Span, headers: Readonly<Record<string, string>>): void {
    span.attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, this.#status)
    headerAttributes(span, responseHeaderKeys, headers, this.settings.redactedNames)
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

/** The request's attributes, as `HttpClient.make` puts them on its span. */
const requestAttributes = (
  span: Tracer.Span,
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  redactedNames: ReadonlyArray<string | RegExp>
): void => {
  span.attribute(ATTR_HTTP_REQUEST_METHOD, request.method)
  span.attribute(ATTR_SERVER_ADDRESS, url.origin)
  if (url.port !== "") span.attribute(ATTR_SERVER_PORT, +url.port)
  span.attribute(ATTR_URL_FULL, url.toString())
  span.attribute(ATTR_URL_PATH, url.pathname)
  span.attribute(ATTR_URL_SCHEME, url.protocol.slice(0, -1))
  const query = url.search.slice(1)
  if (query !== "") span.attribute(ATTR_URL_QUERY, query)
  headerAttributes(span, requestHeaderKeys, request.headers, redactedNames)
}

/**
 * Sends `request` under the span `HttpClient.make` would make: its name,
 * attributes (headers redacted), trace propagation; `send` gets the `Trace`
 * to tell it the connection and the response head. With `sendEnds`, `send`
 * promises to call `trace.ended` with however it ends, interruption
 * included (the Agent's `execute` does, in the uninterruptible region it has
 * anyway); else the span is ended here, around it. Under Effect's own tracer
 * the span is a `DeferredNativeSpan`, made at once; under another, the
 * tracer's, made by `Effect.makeSpan`. Called from a step of `fiber`, the
 * one that sends.
 *
 * @internal
 */
export const traced = <A, E, R>(
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  send: (request: HttpClientRequest.HttpClientRequest, trace: Trace) => Effect.Effect<A, E, R>,
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  settings: TraceSettings,
  sendEnds = false
): Effect.Effect<A, E, R> => {
  const native = DeferredNativeSpan.of(fiber, settings)
  if (native !== undefined) return sendUnder(native, send, request, url, settings, sendEnds)
  return Effect.flatMap(
    Effect.makeSpan(settings.name, { kind: "client", captureStackTrace: false }),
    (span) => sendUnder(span, send, request, url, settings, sendEnds)
  )
}

/** `traced` once its span is made. */
const sendUnder = <A, E, R>(
  span: Tracer.Span,
  send: (request: HttpClientRequest.HttpClientRequest, trace: Trace) => Effect.Effect<A, E, R>,
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  settings: TraceSettings,
  sendEnds: boolean
): Effect.Effect<A, E, R> => {
  const trace = new Trace(span, settings, request, url)
  if (span instanceof DeferredNativeSpan) span.defer(trace)
  else requestAttributes(span, request, url, settings.redactedNames)
  const sent = settings.propagate ? HttpClientRequest.setHeaders(request, HttpTraceContext.toHeaders(span)) : request
  // Only a Stream body runs the caller's code (and its spans) while the
  // request is sent: the span is made the parent for that case alone.
  const sending = request.body._tag === "Stream"
    ? Effect.withParentSpan(send(sent, trace), span)
    : send(sent, trace)
  if (sendEnds) return sending
  return Effect.onExit(sending, (exit) => Effect.sync(() => trace.ended(exit, settings.clock.unsafeCurrentTimeNanos())))
}
