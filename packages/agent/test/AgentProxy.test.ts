/**
 * The Agent's side of proxies, on the in-memory connector: which origins go
 * through which proxy, what the connector is told, what a forwarded request
 * looks like on the wire, how connections through a proxy are pooled, and
 * where the proxy shows (spans, metrics) and where it never does (its
 * credentials). The connector's side (CONNECT, SOCKS5) is tested against
 * real and hostile proxies in the top-level test/.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Proxy from "@keepalive/agent/Proxy"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import { agentOn } from "./support/agent.js"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"
import { type RecordedSpan, recordingTracer } from "./support/tracing.js"

const credentials = "alice:s3cret%3Ap%40ss"
const basic = `Basic ${Buffer.from("alice:s3cret:p@ss").toString("base64")}`

describe("Agent through a proxy", () => {
  it.effect("an http origin through an http proxy: absolute-form, the proxy's credentials, the origin's Host", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://origin.test:8080/a/b?c=d")
      yield* Agent.requestString("http://origin.test:8080/again")
      const [first, second] = server.requests
      expect(first).toMatchObject({ method: "GET", path: "http://origin.test:8080/a/b?c=d" })
      expect(first!.headers).toMatchObject({ host: "origin.test:8080", "proxy-authorization": basic })
      expect(second!.path).toBe("http://origin.test:8080/again")
      // One connection, kept alive and reused: the connector was told the proxy.
      expect(server.sockets).toHaveLength(1)
      const proxy = server.sockets[0]!.options.proxy!
      expect(proxy.key).toBe("http://proxy.test:3128")
      expect(Redacted.value(proxy.credentials!)).toEqual({ username: "alice", password: "s3cret:p@ss" })
      expect(server.sockets[0]!.origin.key).toBe("http://origin.test:8080")
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it.effect("a default port is left out of the absolute-form target as of the Host header", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://origin.test/x")
      yield* Agent.requestString("http://[::1]:81/y")
      expect(server.requests.map((r) => [r.path, r.headers["host"]])).toEqual([
        ["http://origin.test/x", "origin.test"],
        ["http://[::1]:81/y", "[::1]:81"]
      ])
      // No credentials in the proxy URL: no Proxy-Authorization.
      expect(server.requests[0]!.headers["proxy-authorization"]).toBeUndefined()
    }).pipe(Effect.provide(agentOn(server, { proxy: "proxy.test:3128" })))
  })

  it.effect("OPTIONS * forwarded: the absolute-form with an empty path; through a tunnel, `*`", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.request(HttpClientRequest.options("http://origin.test:8080/*")).pipe(Effect.scoped)
      yield* Agent.request(HttpClientRequest.options("http://origin.test/*")).pipe(Effect.scoped)
      yield* Agent.request(HttpClientRequest.options("https://origin.test/*")).pipe(Effect.scoped)
      expect(server.requests.map((r) => r.path)).toEqual(["http://origin.test:8080", "http://origin.test", "*"])
    }).pipe(Effect.provide(agentOn(server, { proxy: "http://proxy.test:3128" })))
  })

  it.effect("a connect through a proxy that times out names the proxy", () => {
    const server = echoServer()
    server.hang = true
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.flip(Agent.requestString("http://origin.test/")))
      yield* TestClock.adjust("2 seconds")
      expect(yield* Fiber.join(fiber)).toMatchObject({
        reason: "Timeout",
        phase: "connect",
        detail: "not connected within 2s through proxy http://proxy.test:3128"
      })
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128`, connectTimeout: "2 seconds" })))
  })

  it.effect("a caller's own Proxy-Authorization is sent as given, not replaced", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.request(HttpClientRequest.get("http://origin.test/").pipe(
        HttpClientRequest.setHeader("proxy-authorization", "Bearer mine")
      )).pipe(Effect.scoped)
      expect(server.requests[0]!.headers["proxy-authorization"]).toBe("Bearer mine")
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it.effect("an https origin through an http proxy: origin-form on the tunnel, no credentials in the request", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("https://origin.test/secure")
      yield* Agent.requestString("https://origin.test/again")
      expect(server.requests.map((r) => r.path)).toEqual(["/secure", "/again"])
      expect(server.requests[0]!.headers["proxy-authorization"]).toBeUndefined()
      expect(server.sockets).toHaveLength(1)
      expect(server.sockets[0]!.options.proxy?.key).toBe("http://proxy.test:3128")
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it.effect("a SOCKS proxy carries both schemes in origin-form; the scheme's own proxy wins over `all`", () => {
    const server = echoServer()
    const proxy = Proxy.make({ all: "socks5h://socks.test", https: "http://connect.test:8080" })
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/plain")
      yield* Agent.requestString("https://a.test/tls")
      expect(server.requests.map((r) => r.path)).toEqual(["/plain", "/tls"])
      expect(server.sockets.map((s) => [s.origin.key, s.options.proxy?.key])).toEqual([
        ["http://a.test:80", "socks5h://socks.test:1080"],
        ["https://a.test:443", "http://connect.test:8080"]
      ])
    }).pipe(Effect.provide(agentOn(server, { proxy })))
  })

  it.effect("one proxy address set for each scheme with other credentials: each scheme's origins get their own", () => {
    const server = echoServer()
    const proxy = Proxy.make({ http: "socks5://alice:a@socks.test:1080", https: "socks5://bob:b@socks.test:1080" })
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/")
      yield* Agent.requestString("https://a.test/")
      expect(server.sockets.map((s) => [s.origin.key, Redacted.value(s.options.proxy!.credentials!).username])).toEqual([
        ["http://a.test:80", "alice"],
        ["https://a.test:443", "bob"]
      ])
    }).pipe(Effect.provide(agentOn(server, { proxy })))
  })

  it.effect("origins that NO_PROXY matches go direct; others keep their proxy", () => {
    const server = echoServer()
    const proxy = Proxy.make({ all: "http://proxy.test:3128", noProxy: "localhost, .internal,10.0.0.0/8" })
    return Effect.gen(function*() {
      for (const url of ["http://localhost/", "http://api.internal/", "http://10.1.2.3/", "http://example.com/"]) {
        yield* Agent.requestString(url)
      }
      expect(server.sockets.map((s) => [s.origin.host, s.options.proxy?.key])).toEqual([
        ["localhost", undefined],
        ["api.internal", undefined],
        ["10.1.2.3", undefined],
        ["example.com", "http://proxy.test:3128"]
      ])
      expect(server.requests.map((r) => r.path)).toEqual(["/", "/", "/", "http://example.com/"])
    }).pipe(Effect.provide(agentOn(server, { proxy })))
  })

  it.effect("without a proxy, nothing changes: origin-form, no proxy told to the connector", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/x")
      expect(server.requests[0]!.path).toBe("/x")
      expect(server.sockets[0]!.options).toEqual({})
    }).pipe(Effect.provide(agentOn(server, { proxy: "" })))
  })

  it.effect("connections through a proxy are pooled per origin, under the per-origin cap", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Effect.all(
        Array.from({ length: 6 }, (_, i) => Agent.requestString(`http://${i % 2 === 0 ? "a" : "b"}.test/${i}`)),
        { concurrency: "unbounded" }
      )
      const stats = yield* Agent.stats
      expect(Object.keys(stats.origins).sort()).toEqual(["http://a.test:80", "http://b.test:80"])
      // One connection per origin, opened once and kept.
      expect(stats.origins["http://a.test:80"]).toMatchObject({ open: 1, opened: 1 })
      expect(stats.origins["http://b.test:80"]).toMatchObject({ open: 1, opened: 1 })
      expect(stats.opened).toBe(2)
      expect(server.sockets.every((s) => s.options.proxy?.key === "http://proxy.test:3128")).toBe(true)
    }).pipe(Effect.provide(agentOn(server, { proxy: "http://proxy.test:3128", maxConnectionsPerOrigin: 1 })))
  })

  it.effect("a forwarded request answered 407 fails with reason Proxy, its connection closed, the credentials nowhere", () => {
    const server = new MemoryServer((req) =>
      req.socket.send(
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"x\"\r\ncontent-length: 3\r\n\r\nno!"
      )
    )
    return Effect.gen(function*() {
      const error = yield* Effect.flip(Agent.request(HttpClientRequest.post("http://origin.test/form")))
      expect(error).toMatchObject({
        reason: "Proxy",
        origin: "http://origin.test:80",
        requestSent: false,
        detail: "proxy http://proxy.test:3128 refused the credentials (407 Proxy Authentication Required)"
      })
      expect(error.message).not.toContain("s3cret")
      expect(JSON.stringify(error)).not.toContain("s3cret")
      // Sent once, never retried, and its connection closed.
      expect(server.requests).toHaveLength(1)
      expect(server.openSockets).toHaveLength(0)
      expect((yield* Agent.stats).open).toBe(0)
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it.effect("a 407 without credentials says authentication is required", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"))
    return Effect.gen(function*() {
      const error = yield* Effect.flip(Agent.requestString("http://origin.test/"))
      expect(error.detail).toBe("proxy http://proxy.test:3128 requires authentication (407 Proxy Authentication Required)")
    }).pipe(Effect.provide(agentOn(server, { proxy: "http://proxy.test:3128" })))
  })

  it.effect("a 407 from the origin itself through a tunnel is the origin's response", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"))
    return Effect.gen(function*() {
      const response = yield* Agent.request(HttpClientRequest.get("https://origin.test/"))
      expect(response.status).toBe(407)
    }).pipe(Effect.scoped, Effect.provide(agentOn(server, { proxy: "http://proxy.test:3128" })))
  })

  it.effect("spans carry keepalive.proxy without credentials, on the request and on its connect span", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      yield* Agent.requestString("http://origin.test/").pipe(Effect.withTracer(tracer))
      yield* Agent.requestString("http://origin.test/").pipe(Effect.withTracer(tracer))
      expect(spans.map((s) => s.name)).toEqual(["http.client GET", "keepalive.connect", "http.client GET"])
      for (const span of spans as Array<RecordedSpan>) {
        expect(span.attributes.get("keepalive.proxy")).toBe("http://proxy.test:3128")
        expect(JSON.stringify([...span.attributes])).not.toContain("s3cret")
      }
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it.effect("metric series of an origin reached through a proxy are labelled with it", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://metrics-proxy.test/")
      const labels = Metric.globalMetricRegistry.snapshot()
        .filter((pair) => pair.metricKey.tags.some((t) => t.key === "server.address" && t.value === "metrics-proxy.test"))
        .map((pair) => Object.fromEntries(pair.metricKey.tags.map((t) => [t.key, t.value])))
      expect(labels.length).toBeGreaterThan(0)
      for (const tags of labels) expect(tags["keepalive.proxy"]).toBe("http://proxy.test:3128")
    }).pipe(Effect.provide(agentOn(server, { proxy: `http://${credentials}@proxy.test:3128` })))
  })

  it("a proxy string that cannot be used throws ProxyConfigError naming `proxy`, without its credentials", () => {
    const build = () => Effect.runSync(Effect.scoped(Agent.make({ proxy: "ftp://alice:hunter2@proxy.test" })).pipe(
      Effect.provide(echoServer().layer)
    ))
    // The message starts with the setting: `proxy: …`, not the `all: …` of the config it makes.
    expect(build).toThrow(/\bproxy: /)
    try {
      build()
    } catch (error) {
      expect(String(error)).not.toContain("hunter2")
    }
  })
})
