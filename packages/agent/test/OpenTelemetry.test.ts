/**
 * The Agent's spans and metrics as OpenTelemetry sees them, through
 * @effect/opentelemetry's NodeSdk with in-memory exporters: what a user who
 * wires up OpenTelemetry gets without doing anything for the Agent.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as HttpClient from "@effect/platform/HttpClient"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import { AggregationTemporality, MetricReader } from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { agentOn } from "./support/agent.js"
import { echoServer } from "./support/MemoryConnector.js"

/** A reader that collects when asked. */
class OnDemandReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE })
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
}

describe("OpenTelemetry", () => {
  it.effect("spans and metrics reach NodeSdk's exporters with OpenTelemetry's names", () => {
    const server = echoServer()
    const spans = new InMemorySpanExporter()
    const reader = new OnDemandReader()
    const otel = NodeSdk.layer(() => ({
      resource: { serviceName: "keepalive-test" },
      spanProcessor: new SimpleSpanProcessor(spans),
      metricReader: reader
    }))
    const agent = agentOn(server)
    return Effect.gen(function*() {
      yield* Agent.requestString("http://otel.test/a")
      const client = yield* HttpClient.HttpClient
      yield* Effect.flatMap(client.get("http://otel.test/b"), (r) => r.text)

      const finished = spans.getFinishedSpans()
      expect(finished.map((s) => s.name).sort()).toEqual(["http.client GET", "http.client GET", "keepalive.connect"])
      const connect = finished.find((s) => s.name === "keepalive.connect")!
      const first = finished.find((s) => s.attributes["url.full"] === "http://otel.test/a")!
      const second = finished.find((s) => s.attributes["url.full"] === "http://otel.test/b")!
      expect(connect.parentSpanContext?.spanId).toBe(first.spanContext().spanId)
      expect(first.attributes).toMatchObject({ "keepalive.connection.reused": false, "http.response.status_code": 200 })
      expect(second.attributes).toMatchObject({ "keepalive.connection.reused": true, "http.response.status_code": 200 })
      // The server saw the propagated context of each request's span.
      expect(server.requests[1]!.headers["traceparent"]).toContain(second.spanContext().spanId)

      const { resourceMetrics } = yield* Effect.promise(() => reader.collect())
      const metrics = resourceMetrics.scopeMetrics.flatMap((scope) => scope.metrics)
      const named = (name: string) => metrics.find((m) => m.descriptor.name === name)
      const duration = named(Agent.metricNames.requestDuration)!
      expect(duration.descriptor.unit).toBe("s")
      const points = duration.dataPoints.filter((p) => p.attributes["server.address"] === "otel.test")
      expect(points).toHaveLength(1)
      expect(points[0]!.attributes).toMatchObject({
        "server.port": "80",
        "http.request.method": "GET",
        "http.response.status_code": "200"
      })
      expect((points[0]!.value as { count: number }).count).toBe(2)
      const opened = named(Agent.metricNames.connectionsOpened)!
      expect(opened.dataPoints.find((p) => p.attributes["server.address"] === "otel.test")?.value).toBe(1)
      // A sum that is not monotonic (an up-down counter): open connections go up and down.
      expect(named(Agent.metricNames.openConnections)).toMatchObject({ isMonotonic: false })
      expect(named(Agent.metricNames.connectionsOpened)).toMatchObject({ isMonotonic: true })
    }).pipe(Effect.provide(Layer.mergeAll(agent, AgentHttpClient.layer.pipe(Layer.provide(agent)), otel)))
  })
})
