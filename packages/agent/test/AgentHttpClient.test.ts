import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { describe, expect, it } from "@effect/vitest"
import { vi } from "vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { MemoryServer } from "./support/MemoryConnector.js"

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

/** Lets microtask-delivered bytes and forked fibers run. */
const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))).pipe(
  Effect.zipRight(Effect.yieldNow()),
  Effect.repeatN(3)
)

/** A span that keeps what it was told. */
class RecordedSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly spanId: string
  readonly traceId: string
  readonly sampled = true
  readonly attributes = new Map<string, unknown>()
  status: Tracer.SpanStatus
  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Tracer.Span["context"],
    readonly links: Array<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind,
    id: number
  ) {
    this.status = { _tag: "Started", startTime }
    this.traceId = Option.isSome(parent) ? parent.value.traceId : id.toString(16).padStart(32, "0")
    this.spanId = id.toString(16).padStart(16, "0")
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }
  event(): void {}
  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

const recordingTracer = () => {
  const spans: Array<RecordedSpan> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const span = new RecordedSpan(name, parent, context, [...links], startTime, kind, spans.length + 1)
      spans.push(span)
      return span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}

/** What a span says, with its own ids replaced, so that two spans can be compared. */
const described = (span: RecordedSpan, outer: RecordedSpan) => ({
  name: span.name,
  kind: span.kind,
  childOfOuter: Option.isSome(span.parent) && span.parent.value.spanId === outer.spanId,
  attributes: Object.fromEntries(span.attributes),
  exit: span.status._tag === "Ended" ? span.status.exit._tag : "Started"
})

/** The trace headers a server saw, with the span's ids replaced. */
const traceHeaders = (headers: Record<string, string>, span: RecordedSpan) =>
  Object.fromEntries(
    Object.entries(headers)
      .filter(([key]) => key === "traceparent" || key.startsWith("b3") || key.startsWith("x-b3"))
      .map(([key, value]) => [key, value.replaceAll(span.traceId, "<trace>").replaceAll(span.spanId, "<span>")])
  )

const agentOn = (server: MemoryServer, config: Agent.Config = {}) =>
  Agent.layer(config).pipe(Layer.provide(server.layer))

describe("AgentHttpClient: tracing", () => {
  const server = new MemoryServer((req) =>
    req.path.startsWith("/refused")
      ? req.socket.end()
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
          return { spans, requests: server.requests.slice(seen) }
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
      // The server saw the span's own ids, in the same headers.
      expect(traceHeaders(ours.requests[0]!.headers, span)).toEqual(traceHeaders(reference.requests[0]!.headers, refSpan))
      expect(traceHeaders(ours.requests[0]!.headers, span)).toMatchObject({ traceparent: "00-<trace>-<span>-01" })
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

// /stall sends 3 of 10 body bytes and nothing more; bodyTimeout (60 s) is far off.
const stallingServer = () =>
  new MemoryServer((req) =>
    req.path === "/stall"
      ? req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      : req.socket.respond("ok")
  )

/** The two ways to a response that hold no scope: the HttpClient adapter, and `Agent.request`. */
const scopeFree: ReadonlyArray<{
  readonly name: string
  readonly get: (url: string) => Effect.Effect<HttpClientResponse.HttpClientResponse, unknown, Agent.Agent>
}> = [
  { name: "AgentHttpClient", get: (url) => Effect.flatMap(Agent.Agent, (agent) => AgentHttpClient.make(agent).get(url)) },
  { name: "Agent.request", get: (url) => Agent.request(HttpClientRequest.get(url)) }
]

for (const { get, name } of scopeFree) {
  describe(`${name}: a body still arriving is freed when its reader gives up`, () => {
    // One connection per origin: `next` is served only if the stalled response let it go.
    const next = Effect.flatMap(get("http://a.test/next"), (r) => r.text).pipe(Effect.timeout("1 second"))

    const freedAfter = (giveUp: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<unknown, unknown, Scope.Scope>) => {
      const server = stallingServer()
      return Effect.gen(function*() {
        yield* Effect.scoped(Effect.flatMap(get("http://a.test/stall"), giveUp))
        yield* settle
        expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
        expect(yield* next).toBe("ok")
        // The stalled connection was closed, not reused.
        expect(server.closedIds).toEqual([1])
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    }

    it.live("a whole-body read interrupted", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const read = yield* Effect.fork(response.text)
          yield* settle
          yield* Fiber.interrupt(read)
        })
      ))

    it.live("a stream ended early", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const first = yield* Stream.runCollect(Stream.take(response.stream, 1))
          expect(first.length).toBe(1)
        })
      ))

    it.live("Agent.forEachChunk whose function fails", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(Agent.forEachChunk(response, () => Effect.fail("enough")))
          expect(exit).toEqual(Exit.fail("enough"))
        })
      ))

    it.live("but not while another read of the body goes on: that one gets all of it", () => {
      const server = stallingServer()
      return Effect.gen(function*() {
        const response = yield* get("http://a.test/stall")
        const quitter = yield* Effect.fork(response.text)
        const reader = yield* Effect.fork(response.text)
        yield* settle
        yield* Fiber.interrupt(quitter)
        server.sockets[0]!.send("lo, wor")
        expect(yield* Fiber.join(reader)).toBe("hello, wor")
        yield* settle
        // Read to its end: the connection was kept and serves the next request.
        expect(yield* next).toBe("ok")
        expect(server.closedIds).toEqual([])
        expect(yield* Agent.stats).toMatchObject({ open: 1, opened: 1, reused: 1 })
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    })

    it.live("is watched for garbage collection only until its connection is freed", () => {
      // V8's scavenger keeps a registered object alive, and promotes it with its body.
      const server = stallingServer()
      const register = vi.spyOn(FinalizationRegistry.prototype, "register")
      const unregister = vi.spyOn(FinalizationRegistry.prototype, "unregister")
      const unregistered = (token: unknown) => unregister.mock.calls.some(([t]) => t === token)
      return Effect.gen(function*() {
        const response = yield* get("http://a.test/stall")
        const registered = register.mock.calls.filter(([target]) => target === response)
        expect(registered.length).toBe(1)
        const token = registered[0]![2]
        expect(token).toBeDefined()
        expect(unregistered(token)).toBe(false)
        server.sockets[0]!.send("lo, wor")
        yield* settle
        expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
        expect(unregistered(token)).toBe(true)
        expect(yield* response.text).toBe("hello, wor")
      }).pipe(
        Effect.provide(agentOn(server)),
        Effect.ensuring(Effect.sync(() => {
          register.mockRestore()
          unregister.mockRestore()
        }))
      )
    })

    it.live("the response garbage collected unread", () => {
      const server = stallingServer()
      return Effect.gen(function*() {
        // Nothing keeps the response: only its status leaves this effect.
        expect(yield* Effect.map(get("http://a.test/stall"), (r) => r.status)).toBe(200)
        expect(yield* Agent.stats).toMatchObject({ busy: 1 })
        for (let i = 0; i < 50 && (yield* Agent.stats).busy > 0; i++) {
          gc()
          yield* settle
        }
        expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
        expect(yield* next).toBe("ok")
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    })
  })
}

describe("AgentHttpClient: HttpClient.withScope frees a body still arriving", () => {
  const next = (client: HttpClient.HttpClient) =>
    Effect.flatMap(client.get("http://a.test/next"), (r) => r.text).pipe(Effect.timeout("1 second"))

  it.live("when its scope closes, the body unread", () => {
    const server = stallingServer()
    return Effect.gen(function*() {
      const client = AgentHttpClient.make(yield* Agent.Agent)
      yield* Effect.scoped(client.pipe(HttpClient.withScope).get("http://a.test/stall"))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
      expect(yield* next(client)).toBe("ok")
      expect(server.closedIds).toEqual([1])
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.live("when its scope closed before the response came", () => {
    const server = new MemoryServer((req) =>
      req.path === "/late-head"
        ? void 0 // answered by the test, once the scope is closed
        : req.socket.respond("ok")
    )
    return Effect.gen(function*() {
      const client = AgentHttpClient.make(yield* Agent.Agent)
      const scope = yield* Scope.make()
      const response = yield* Effect.fork(Scope.extend(client.pipe(HttpClient.withScope).get("http://a.test/late-head"), scope))
      yield* settle
      yield* Scope.close(scope, Exit.void)
      server.sockets[0]!.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      yield* settle
      expect((yield* Fiber.join(response)).status).toBe(200)
      expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
      expect(yield* next(client)).toBe("ok")
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })
})
