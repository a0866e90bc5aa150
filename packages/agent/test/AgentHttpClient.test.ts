/**
 * The @effect/platform HttpClient over the Agent: its tracing matches
 * HttpClient.make's, it works over any Agent.Service, and it frees a
 * connection whose response failed before the adapter had it. How the
 * adapter's responses give their connections back is in Release.test.ts.
 */
import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { identity } from "effect/Function"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Tracer from "effect/Tracer"
import { agentOn, settle, withAgent } from "./support/agent.js"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"
import type { ServerSocket } from "./support/MemoryConnector.js"
import { described, type RecordedSpan, recordingTracer, traceHeaders, withoutPool } from "./support/tracing.js"

describe("AgentHttpClient: tracing", () => {
  const server = new MemoryServer((req) =>
    req.path.startsWith("/refused")
      ? req.socket.end()
      : req.path.startsWith("/hang")
      ? undefined
      : req.socket.respond("hello", { "x-served-by": "memory", "set-cookie": "a=b" })
  )
  const request = HttpClientRequest.get("http://a.test:8080/p?q=1#h").pipe(
    HttpClientRequest.setHeader("x-custom", "v"),
    HttpClientRequest.setHeader("authorization", "Bearer secret")
  )

  /**
   * Runs `use` on the Agent's HttpClient and on @effect/platform's own
   * `HttpClient.make` over the same Agent (its tracing off underneath), each
   * inside an outer span, and returns what each traced and sent.
   */
  const both = (use: (client: HttpClient.HttpClient) => Effect.Effect<unknown, unknown>) =>
    Effect.gen(function*() {
      const ours = AgentHttpClient.make(yield* Agent.Agent)
      const untraced = ours.pipe(HttpClient.withTracerDisabledWhen(() => true))
      const reference = HttpClient.make((request) => untraced.execute(request))
      const run = (client: HttpClient.HttpClient) =>
        Effect.gen(function*() {
          const { spans, tracer } = recordingTracer()
          const seen = server.requests.length
          yield* Effect.exit(Effect.withSpan(use(client), "outer")).pipe(Effect.withTracer(tracer))
          yield* settle
          return { spans: withoutPool(spans), all: spans, requests: server.requests.slice(seen) }
        })
      return { ours: yield* run(ours), reference: yield* run(reference) }
    }).pipe(Effect.provide(agentOn(server)))

  it.effect("makes the span HttpClient.make makes: name, kind, parent, attributes (redacted), exit, and propagates it", () =>
    Effect.gen(function*() {
      const { ours, reference } = yield* both((client) => Effect.flatMap(client.execute(request), (r) => r.text))
      expect(ours.spans.map((s) => s.name)).toEqual(["outer", "http.client GET"])
      expect(reference.spans.map((s) => s.name)).toEqual(["outer", "http.client GET"])
      const [outer, span] = ours.spans as [RecordedSpan, RecordedSpan]
      const [refOuter, refSpan] = reference.spans as [RecordedSpan, RecordedSpan]
      expect(described(span, outer)).toEqual(described(refSpan, refOuter))
      expect(described(span, outer)).toMatchObject({
        kind: "client",
        childOfOuter: true,
        exit: "Success",
        attributes: {
          "http.request.method": "GET",
          "server.address": "http://a.test:8080",
          "server.port": 8080,
          "url.full": "http://a.test:8080/p?q=1#h",
          "url.path": "/p",
          "url.query": "q=1",
          "http.request.header.x-custom": "v",
          "http.request.header.authorization": "<redacted>",
          "http.response.status_code": 200,
          "http.response.header.x-served-by": "memory",
          "http.response.header.set-cookie": "<redacted>"
        }
      })
      // And what only the pool knows: the connection opened for it, under its span.
      expect(ours.all.map((s) => s.name)).toEqual(["outer", "http.client GET", "keepalive.connect"])
      const connect = ours.all[2]!
      expect(Option.map(connect.parent, (p) => p.spanId)).toEqual(Option.some(span.spanId))
      expect(span.attributes.get("keepalive.connection.reused")).toBe(false)
      expect(typeof span.attributes.get("keepalive.connection.id")).toBe("number")
      // The server saw the span's own ids, in the same headers.
      expect(traceHeaders(ours.requests[0]!.headers, span)).toEqual(traceHeaders(reference.requests[0]!.headers, refSpan))
      expect(traceHeaders(ours.requests[0]!.headers, span)).toMatchObject({ traceparent: "00-<trace>-<span>-01" })
    }))

  it.effect("redacts the headers HttpClient.make redacts under other redacted names, patterns included", () =>
    Effect.gen(function*() {
      const { ours, reference } = yield* Effect.locally(
        both((client) => Effect.flatMap(client.execute(request), (r) => r.text)),
        Headers.currentRedactedNames,
        ["X-Custom", /^x-served/]
      )
      const [outer, span] = ours.spans as [RecordedSpan, RecordedSpan]
      const [refOuter, refSpan] = reference.spans as [RecordedSpan, RecordedSpan]
      expect(described(span, outer)).toEqual(described(refSpan, refOuter))
      expect(described(span, outer)).toMatchObject({
        attributes: {
          "http.request.header.x-custom": "<redacted>",
          "http.request.header.authorization": "Bearer secret",
          "http.response.header.x-served-by": "<redacted>",
          "http.response.header.set-cookie": "a=b"
        }
      })
    }))

  it.effect("spans made while the request is sent (its body stream's) are children of its span, like HttpClient.make", () =>
    Effect.gen(function*() {
      const body = Stream.fromEffect(Effect.withSpan(Effect.succeed(new TextEncoder().encode("abc")), "produce"))
      const post = HttpClientRequest.post("http://a.test/upload").pipe(HttpClientRequest.bodyStream(body, { contentLength: 3 }))
      const { ours, reference } = yield* both((client) => Effect.flatMap(client.execute(post), (r) => r.text))
      for (const { requests, spans } of [ours, reference]) {
        expect(spans.map((s) => s.name)).toEqual(["outer", "http.client POST", "produce"])
        const [, span, produce] = spans as [RecordedSpan, RecordedSpan, RecordedSpan]
        expect(Option.map(produce.parent, (p) => p.spanId)).toEqual(Option.some(span.spanId))
        expect(requests[0]!.body).toBe("abc")
      }
    }))

  it.effect("a failed request ends its span with the failure, like HttpClient.make", () =>
    Effect.gen(function*() {
      const { ours, reference } = yield* both((client) => client.get("http://a.test/refused"))
      expect(described(ours.spans[1]!, ours.spans[0]!)).toEqual(described(reference.spans[1]!, reference.spans[0]!))
      expect(described(ours.spans[1]!, ours.spans[0]!)).toMatchObject({ exit: "Failure" })
      expect(ours.spans[1]!.attributes.has("http.response.status_code")).toBe(false)
      // Ended with the error the client fails with, as HttpClient.make's span is (exporters record it).
      const failure = (span: RecordedSpan) =>
        span.status._tag === "Ended" ? Option.getOrUndefined(Exit.causeOption(span.status.exit).pipe(Option.flatMap(Cause.failureOption))) : undefined
      expect(failure(ours.spans[1]!)).toBeInstanceOf(HttpClientError.RequestError)
      expect(failure(reference.spans[1]!)).toBeInstanceOf(HttpClientError.RequestError)
      expect((failure(ours.spans[1]!) as HttpClientError.RequestError).reason).toBe((failure(reference.spans[1]!) as HttpClientError.RequestError).reason)
    }))

  it.live("a request interrupted while it waits for its head ends its span interrupted, like HttpClient.make", () =>
    Effect.gen(function*() {
      const { ours, reference } = yield* both((client) => Effect.timeout(client.get("http://a.test/hang"), "20 millis"))
      for (const { spans } of [ours, reference]) {
        const span = spans[1]!
        expect(span.status._tag).toBe("Ended")
        if (span.status._tag === "Ended") expect(Exit.isInterrupted(span.status.exit)).toBe(true)
      }
    }))

  it.effect("honours withTracerDisabledWhen, withTracerPropagation, withSpanNameGenerator and a disabled tracer", () =>
    Effect.gen(function*() {
      const get = (client: HttpClient.HttpClient) => Effect.flatMap(client.execute(request), (r) => r.text)
      const disabled = yield* both((c) => get(c.pipe(HttpClient.withTracerDisabledWhen((r) => r.url.includes("/p")))))
      expect(disabled.ours.spans.map((s) => s.name)).toEqual(["outer"])
      expect(disabled.ours.requests[0]!.headers).not.toHaveProperty("traceparent")

      const unpropagated = yield* both((c) => get(c.pipe(HttpClient.withTracerPropagation(false))))
      expect(unpropagated.ours.spans.map((s) => s.name)).toEqual(["outer", "http.client GET"])
      expect(unpropagated.ours.requests[0]!.headers).not.toHaveProperty("traceparent")
      expect(unpropagated.ours.requests[0]!.headers).not.toHaveProperty("b3")

      const named = yield* both((c) => get(c.pipe(HttpClient.withSpanNameGenerator((r) => `fetch ${r.method}`))))
      expect(named.ours.spans.map((s) => s.name)).toEqual(["outer", "fetch GET"])

      const off = yield* both((c) => Effect.withTracerEnabled(get(c), false))
      expect(off.ours.spans.map((s) => s.name)).toEqual(["outer"])
      expect(off.ours.requests[0]!.headers).not.toHaveProperty("traceparent")
    }))
})

describe("AgentHttpClient: tracing under Effect's own tracer", () => {
  const server = new MemoryServer((req) => req.socket.respond("hello", { "x-served-by": "memory" }))
  const hex = (length: number) => new RegExp(`^[0-9a-f]{${length}}$`)

  /** What a span says, its ids as their shape, its parent as whether it is `outer`. */
  const describedNative = (span: Tracer.Span, outer: Tracer.AnySpan | undefined) => ({
    name: span.name,
    kind: span.kind,
    sampled: span.sampled,
    traceIdOfOuter: outer === undefined ? hex(32).test(span.traceId) : span.traceId === outer.traceId,
    spanId: hex(16).test(span.spanId),
    parentIsOuter: outer === undefined ? Option.isNone(span.parent) : Option.getOrUndefined(span.parent) === outer,
    attributes: Object.fromEntries([...span.attributes].filter(([key]) => !key.startsWith("keepalive."))),
    startTime: span.status.startTime,
    exit: span.status._tag === "Ended" ? span.status.exit._tag : "Started",
    links: span.links
  })

  /**
   * Posts through `client` with a body whose stream keeps the span it runs
   * under (the request's), inside an outer span or not, and inside `around`
   * within it; no tracer installed.
   */
  const sent = (
    client: HttpClient.HttpClient,
    outerSpan: boolean,
    around: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> = identity
  ) =>
    Effect.gen(function*() {
      let seen: Tracer.Span | undefined
      const body = Stream.fromEffect(Effect.map(Effect.orDie(Effect.currentSpan), (span) => {
        seen = span
        return new TextEncoder().encode("abc")
      }))
      const post = HttpClientRequest.post("http://a.test:8080/up?q=1").pipe(
        HttpClientRequest.setHeader("authorization", "Bearer secret"),
        HttpClientRequest.bodyStream(body, { contentLength: 3 })
      )
      const at = server.requests.length
      const send = around(Effect.flatMap(client.execute(post), (r) => r.text))
      const outer = outerSpan
        ? yield* Effect.withSpan(Effect.zipRight(send, Effect.orDie(Effect.currentSpan)), "outer")
        : yield* Effect.as(send, undefined)
      yield* settle
      return { span: seen!, outer, headers: server.requests[at]!.headers }
    })

  it.effect("the span a body's stream runs under, and the ids sent, are those HttpClient.make's would be", () =>
    Effect.gen(function*() {
      const ours = AgentHttpClient.make(yield* Agent.Agent)
      const reference = HttpClient.make((request) =>
        ours.pipe(HttpClient.withTracerDisabledWhen(() => true)).execute(request)
      )
      for (const outerSpan of [true, false]) {
        const a = yield* sent(ours, outerSpan)
        const b = yield* sent(reference, outerSpan)
        expect(describedNative(a.span, a.outer)).toEqual(describedNative(b.span, b.outer))
        expect(describedNative(a.span, a.outer)).toMatchObject({
          name: "http.client POST",
          traceIdOfOuter: true,
          spanId: true,
          parentIsOuter: true,
          exit: "Success",
          attributes: { "url.full": "http://a.test:8080/up?q=1", "http.response.status_code": 200 }
        })
        // What only the pool knows is there too, once read.
        expect(typeof a.span.attributes.get("keepalive.connection.id")).toBe("number")
        for (const { headers, span } of [a, b]) {
          expect(headers["traceparent"]).toBe(`00-${span.traceId}-${span.spanId}-01`)
          const parent = Option.getOrUndefined(span.parent)
          expect(headers["b3"]).toBe(`${span.traceId}-${span.spanId}-1${parent === undefined ? "" : `-${parent.spanId}`}`)
        }
      }
    }).pipe(Effect.provide(agentOn(server))))

  it.effect("with span annotations or links, under a span that disables propagation, or with tracer timing off, the span is the one HttpClient.make's would be", () =>
    Effect.gen(function*() {
      const ours = AgentHttpClient.make(yield* Agent.Agent)
      const reference = HttpClient.make((request) =>
        ours.pipe(HttpClient.withTracerDisabledWhen(() => true)).execute(request)
      )
      // Past zero, so that a span timed with timing off is told apart.
      yield* TestClock.adjust("1 second")
      const linked = Tracer.externalSpan({ traceId: "a".repeat(32), spanId: "b".repeat(16) })
      const settings: ReadonlyArray<[string, <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>]> = [
        ["annotated", (effect) => Effect.annotateSpans(effect, "tenant", "t1")],
        ["linked", (effect) => Effect.linkSpans(effect, linked, { why: "batch" })],
        ["inside a span that disables propagation", (effect) =>
          Effect.withSpan(effect, "hidden", { context: Tracer.DisablePropagation.context(true) })],
        ["timing off", (effect) => Effect.withTracerTiming(effect, false)]
      ]
      for (const [setting, around] of settings) {
        const a = yield* sent(ours, true, around)
        const b = yield* sent(reference, true, around)
        expect(describedNative(a.span, a.outer), setting).toEqual(describedNative(b.span, b.outer))
      }
    }).pipe(Effect.provide(agentOn(server))))

  it.effect("a span read while its request is sent gets the rest of its attributes as they come", () =>
    Effect.gen(function*() {
      const client = AgentHttpClient.make(yield* Agent.Agent)
      let during: ReadonlyArray<string> = []
      let span: Tracer.Span | undefined
      const body = Stream.fromEffect(Effect.map(Effect.orDie(Effect.currentSpan), (current) => {
        span = current
        during = [...current.attributes.keys()]
        return new TextEncoder().encode("abc")
      }))
      const post = HttpClientRequest.post("http://a.test/up").pipe(HttpClientRequest.bodyStream(body, { contentLength: 3 }))
      yield* Effect.withSpan(Effect.flatMap(client.execute(post), (r) => r.text), "outer")
      expect(during).toContain("url.full")
      expect(during).not.toContain("keepalive.connection.id")
      expect(during).not.toContain("http.response.status_code")
      const after = [...span!.attributes.keys()]
      expect(after.slice(0, during.length)).toEqual(during)
      expect(after).toContain("keepalive.connection.id")
      expect(span!.attributes.get("http.response.status_code")).toBe(200)
      expect(span!.attributes.get("http.response.header.x-served-by")).toBe("memory")
      expect(span!.status._tag).toBe("Ended")
    }).pipe(Effect.provide(agentOn(server))))
})

describe("AgentHttpClient: over any Agent.Service", () => {
  it.effect("AgentHttpClient.make works over any Agent.Service, and frees the connection after the body", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      // Only the public surface: the adapter's path for services other than its own.
      const client = AgentHttpClient.make({
        config: agent.config,
        request: agent.request,
        requestScoped: agent.requestScoped,
        requestWith: agent.requestWith,
        stats: agent.stats,
        preconnect: agent.preconnect
      })
      for (const path of ["/a", "/b"]) {
        const response = yield* client.get(`http://a.test${path}`)
        expect(yield* response.text).toBe(`GET ${path}`)
      }
      expect(server.sockets.length).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1, reused: 1 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })
})

/**
 * The first request gets `badAnswer`; its body read must fail, and with one
 * connection per origin the next request must still be served.
 */
const failsThenFreesTheConnection = (badAnswer: (socket: ServerSocket) => void) => {
  let n = 0
  const server = new MemoryServer((req) => {
    n++
    if (n === 1) badAnswer(req.socket)
    else req.socket.respond("ok")
  })
  return withAgent(server, { maxConnectionsPerOrigin: 1 }, Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const res = yield* client.get("http://a.test/bad")
    expect(res.status).toBe(200)
    const body = yield* Effect.either(res.text)
    expect(body._tag).toBe("Left")
    yield* settle
    const stats = yield* Agent.stats
    const next = yield* client.get("http://a.test/next").pipe(
      Effect.flatMap((r) => r.text),
      Effect.timeout("1 second"),
      Effect.either
    )
    expect(next).toMatchObject({ _tag: "Right", right: "ok" })
    expect(stats).toMatchObject({ open: 0, busy: 0, waiting: 0 })
  }))
}

describe("AgentHttpClient: a response that failed before the adapter had it", () => {
  // The head and a malformed chunk in one packet (or the data and the FIN in
  // one turn): the exchange fails inside the parser call that produced the
  // head, before the adapter has the response and can watch its body. The
  // body read then fails, and the connection, its place at its origin and its
  // global permit must be freed all the same.
  it.live("frees the connection after the body read failed (bad chunk framing in the head's packet)", () =>
    failsThenFreesTheConnection((socket) =>
      socket.send("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n")
    ))

  it.live("frees the connection after a truncated body (data and FIN in the same turn)", () =>
    failsThenFreesTheConnection((socket) => {
      socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      socket.end()
    }))
})
