/**
 * The Agent's metrics, read back from Effect's metric registry as any
 * exporter reads them: names, attributes and values after known traffic.
 * Each test uses origins of its own (the registry is global).
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as TestClock from "effect/TestClock"
import { agentOn, settle } from "./support/agent.js"
import { echoServer, heldServer, MemoryServer } from "./support/MemoryConnector.js"

const names = Agent.metricNames

/** The series of `name` whose tags include `tags`. */
const series = (name: string, tags: Record<string, string>) =>
  Metric.globalMetricRegistry.snapshot().filter((pair) =>
    pair.metricKey.name === name &&
    Object.entries(tags).every(([key, value]) => pair.metricKey.tags.some((t) => t.key === key && t.value === value))
  )

/** The value of the one series of `name` with `tags`: a counter's count, a histogram's count and sum. */
const valueOf = (name: string, tags: Record<string, string>): number | { count: number; sum: number } | undefined => {
  const found = series(name, tags)
  if (found.length === 0) return undefined
  expect(found).toHaveLength(1)
  const state = found[0]!.metricState
  if (MetricState.isCounterState(state)) return Number(state.count)
  if (MetricState.isHistogramState(state)) return { count: state.count, sum: state.sum }
  throw new Error(`unexpected state of ${name}`)
}

const at = (host: string) => ({ "server.address": host, "server.port": "80", "url.scheme": "http" })

describe("Metrics", () => {
  it.effect("requests, connections and reuse of an origin, by OpenTelemetry's names and attributes", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/bad") req.socket.send("NOT HTTP\r\n\r\n")
      else req.socket.respond("ok")
    })
    return Effect.gen(function*() {
      const origin = at("m1.test")
      for (let i = 0; i < 3; i++) yield* Agent.requestString("http://m1.test/")
      expect(yield* Effect.flip(Agent.requestString("http://m1.test/bad"))).toMatchObject({ reason: "Protocol" })

      expect(valueOf(names.requestDuration, { ...origin, "http.request.method": "GET", "http.response.status_code": "200" }))
        .toMatchObject({ count: 3 })
      expect(valueOf(names.requestDuration, { ...origin, "http.request.method": "GET", "error.type": "Protocol" }))
        .toMatchObject({ count: 1 })
      expect(series(names.requestDuration, { ...origin, unit: "s" })).toHaveLength(2)
      expect(valueOf(names.connectionsOpened, origin)).toBe(1)
      // The failed request's connection had carried one before, but no response came on it.
      expect(valueOf(names.requestsReused, origin)).toBe(2)
      expect(valueOf(names.connectionsClosed, { ...origin, reason: "error" })).toBe(1)
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "active" })).toBe(0)
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "idle" })).toBe(0)
      expect(valueOf(names.activeRequests, origin)).toBe(0)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("request durations go to the series of their own outcome, however outcomes alternate", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/bad") req.socket.send("NOT HTTP\r\n\r\n")
      else req.socket.respond("ok")
    })
    return Effect.gen(function*() {
      const origin = { ...at("m6.test"), "http.request.method": "GET" }
      yield* Agent.requestString("http://m6.test/")
      yield* Effect.flip(Agent.requestString("http://m6.test/bad"))
      server.refuse = true
      expect(yield* Effect.flip(Agent.requestString("http://m6.test/"))).toMatchObject({ reason: "Connect" })
      server.refuse = false
      yield* Agent.requestString("http://m6.test/")
      yield* Agent.requestString("http://m6.test/")
      expect(valueOf(names.requestDuration, { ...origin, "http.response.status_code": "200" })).toMatchObject({ count: 3 })
      expect(valueOf(names.requestDuration, { ...origin, "error.type": "Protocol" })).toMatchObject({ count: 1 })
      expect(valueOf(names.requestDuration, { ...origin, "error.type": "Connect" })).toMatchObject({ count: 1 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("origins past the first 1,000 of an Agent share one series marked otel.metric.overflow", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      for (let i = 0; i <= 1000; i++) yield* Agent.requestString(`http://ov${i}.test/`)
      expect(valueOf(names.connectionsOpened, at("ov999.test"))).toBe(1)
      expect(series(names.connectionsOpened, { "server.address": "ov1000.test" })).toEqual([])
      expect(valueOf(names.connectionsOpened, { "otel.metric.overflow": "true" })).toBe(1)
    }).pipe(Effect.provide(agentOn(server, { persist: false })))
  })

  it.effect("open connections by state, waiting requests and the time they waited, as requests come and go", () => {
    const { held, server } = heldServer()
    return Effect.gen(function*() {
      const origin = at("m2.test")
      const first = yield* Effect.fork(Agent.requestString("http://m2.test/1"))
      yield* settle
      const second = yield* Effect.fork(Agent.requestString("http://m2.test/2"))
      yield* settle
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "active" })).toBe(1)
      expect(valueOf(names.requestsWaiting, origin)).toBe(1)
      expect(valueOf(names.activeRequests, origin)).toBe(2)
      yield* TestClock.adjust("2 seconds")
      held.shift()!.socket.respond("1")
      yield* settle
      // The first waited for its connection to open (no time under TestClock), the second 2 s for the first's.
      expect(valueOf(names.queueDuration, origin)).toEqual({ count: 2, sum: 2 })
      expect(valueOf(names.requestsWaiting, origin)).toBe(0)
      held.shift()!.socket.respond("2")
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      // The first took 2 s to its head, the second 2 s too (it waited, then was answered at once).
      expect(valueOf(names.requestDuration, { ...origin, "http.response.status_code": "200" })).toEqual({ count: 2, sum: 4 })
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "active" })).toBe(0)
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "idle" })).toBe(1)
      expect(valueOf(names.activeRequests, origin)).toBe(0)

      // It idles out: closed for idle_timeout, after living 6 s.
      yield* TestClock.adjust("4 seconds")
      expect(valueOf(names.openConnections, { ...origin, "http.connection.state": "idle" })).toBe(0)
      expect(valueOf(names.connectionsClosed, { ...origin, reason: "idle_timeout" })).toBe(1)
      expect(valueOf(names.connectionDuration, origin)).toEqual({ count: 1, sum: 6 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("connections closed are counted by reason: max_requests, server_close, evicted", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/close") req.socket.respond("bye", { connection: "close" })
      else req.socket.respond("ok")
    })
    return Effect.gen(function*() {
      const a = at("m3a.test")
      yield* Agent.requestString("http://m3a.test/")
      yield* Agent.requestString("http://m3a.test/")
      expect(valueOf(names.connectionsClosed, { ...a, reason: "max_requests" })).toBe(1)
      yield* Agent.requestString("http://m3a.test/close")
      expect(valueOf(names.connectionsClosed, { ...a, reason: "server_close" })).toBe(1)
      // The cap is 1: b's request closes a's idle connection to make room.
      yield* Agent.requestString("http://m3a.test/")
      yield* Agent.requestString("http://m3b.test/")
      expect(valueOf(names.connectionsClosed, { ...a, reason: "evicted" })).toBe(1)
    }).pipe(Effect.provide(agentOn(server, { maxRequestsPerConnection: 2, maxConnections: 1 })))
  })

  it.effect("the Agent's shutdown counts the connections it closes", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const agent = yield* Agent.make()
        yield* agent.requestWith(HttpClientRequest.get("http://m4.test/"), (r) => r.text)
      }).pipe(Effect.provide(server.layer)))
      expect(valueOf(names.connectionsClosed, { ...at("m4.test"), reason: "shutdown" })).toBe(1)
    })
  })

  it.effect("metrics: false records nothing", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://m5.test/")
      yield* TestClock.adjust("5 seconds")
      expect(Metric.globalMetricRegistry.snapshot().filter((pair) =>
        pair.metricKey.tags.some((t) => t.key === "server.address" && t.value === "m5.test")
      )).toEqual([])
    }).pipe(Effect.provide(agentOn(server, { metrics: false })))
  })
})
