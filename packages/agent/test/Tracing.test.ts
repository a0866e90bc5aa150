/**
 * Spans of the Agent's own entry points (`Agent.request` and its kin) and
 * what only the pool knows: the `keepalive.connect` span of a connection
 * opened for a request, and the connection and queue wait on the request's
 * span. (The adapter's span against HttpClient.make's is in AgentHttpClient.test.ts.)
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { agentOn, settle } from "./support/agent.js"
import { echoServer, heldServer } from "./support/MemoryConnector.js"
import { type RecordedSpan, recordingTracer } from "./support/tracing.js"

const parentOf = (span: RecordedSpan) => Option.getOrUndefined(Option.map(span.parent, (p) => p.spanId))

describe("Tracing: Agent.request", () => {
  it.effect("makes the adapter's span when a tracer is installed, with a keepalive.connect child for the connection it opened", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      yield* Agent.requestString("https://a.test/x?q=1").pipe(Effect.withTracer(tracer))
      expect(spans.map((s) => s.name)).toEqual(["http.client GET", "keepalive.connect"])
      const [request, connect] = spans as [RecordedSpan, RecordedSpan]
      expect(request.kind).toBe("client")
      expect(Object.fromEntries(request.attributes)).toMatchObject({
        "http.request.method": "GET",
        "url.full": "https://a.test/x?q=1",
        "url.query": "q=1",
        "http.response.status_code": 200,
        "keepalive.connection.reused": false,
        "keepalive.queue.wait_ms": 0
      })
      expect(parentOf(connect)).toBe(request.spanId)
      expect(Object.fromEntries(connect.attributes)).toEqual({
        "server.address": "a.test",
        "server.port": 443,
        "url.scheme": "https",
        "keepalive.tls": true
      })
      expect(connect.status._tag).toBe("Ended")
      // Propagated: the server saw the request span's ids.
      expect(server.requests[0]!.headers["traceparent"]).toContain(request.spanId)

      // The next request reuses the connection: no connect span, and the span says so.
      yield* Agent.requestString("https://a.test/y").pipe(Effect.withTracer(tracer))
      expect(spans.map((s) => s.name)).toEqual(["http.client GET", "keepalive.connect", "http.client GET"])
      expect(spans[2]!.attributes.get("keepalive.connection.reused")).toBe(true)
      expect(spans[2]!.attributes.get("keepalive.connection.id")).toBe(request.attributes.get("keepalive.connection.id"))
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("without a tracer of its own or a span to go under, or with tracing disabled, makes no span and sends no trace headers", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/plain")
      const { spans, tracer } = recordingTracer()
      yield* Agent.requestString("http://a.test/disabled").pipe(Effect.withTracerEnabled(false), Effect.withTracer(tracer))
      expect(spans).toEqual([])
      expect(server.requests.map((r) => r.headers["traceparent"])).toEqual([undefined, undefined])
      // Effect's own tracer, inside a span: the request's span goes under it.
      yield* Agent.requestString("http://a.test/nested").pipe(Effect.withSpan("outer"))
      expect(server.requests[2]!.headers["traceparent"]).toBeDefined()
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("the span ends with the response head, whatever requestWith's function does after", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const seen = yield* HttpClientRequest.get("http://a.test/").pipe(
        Agent.requestWith((response) => Effect.sync(() => ({ status: response.status, span: spans[0]!.status._tag }))),
        Effect.withTracer(tracer)
      )
      expect(seen).toEqual({ status: 200, span: "Ended" })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("the time a request waited for a connection is on its span", () => {
    const { held, server } = heldServer()
    return Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const first = yield* Effect.fork(Agent.requestString("http://a.test/1").pipe(Effect.withTracer(tracer)))
      yield* settle
      const second = yield* Effect.fork(Agent.requestString("http://a.test/2").pipe(Effect.withTracer(tracer)))
      yield* settle
      yield* TestClock.adjust("1500 millis")
      held.shift()!.socket.respond("1")
      yield* settle
      held.shift()!.socket.respond("2")
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      const requests = spans.filter((s) => s.name === "http.client GET")
      expect(requests.map((s) => s.attributes.get("keepalive.queue.wait_ms"))).toEqual([0, 1500])
      expect(requests.map((s) => s.attributes.get("keepalive.connection.reused"))).toEqual([false, true])
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("a connect that fails ends its span and the request's with the failure", () => {
    const server = echoServer()
    server.refuse = true
    return Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const error = yield* Effect.flip(Agent.requestString("http://a.test/").pipe(Effect.withTracer(tracer)))
      expect(error.reason).toBe("Connect")
      expect(spans.map((s) => [s.name, s.status._tag === "Ended" ? s.status.exit._tag : "open"])).toEqual([
        ["http.client GET", "Failure"],
        ["keepalive.connect", "Failure"]
      ])
      expect(spans[1]!.attributes.get("keepalive.tls")).toBe(false)
    }).pipe(Effect.provide(agentOn(server)))
  })
})
