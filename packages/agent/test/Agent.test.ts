import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"
import type { SeenRequest } from "./support/MemoryConnector.js"

const agentOn = (server: MemoryServer, config: Agent.Config = {}) =>
  Agent.layer(config).pipe(Layer.provide(server.layer))

/** Lets microtask-delivered bytes and forked fibers run. */
const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))).pipe(
  Effect.zipRight(Effect.yieldNow()),
  Effect.repeatN(3)
)

const get = (url: string) => Agent.requestString(url)

/** A 64 KiB piece of a chunked body. */
const piece = `10000\r\n${"x".repeat(64 * 1024)}\r\n`
/** The head of a chunked response, with its first piece. */
const chunkedHead = `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${piece}`

/**
 * Reads `path` (a chunked body the server starts with `chunkedHead`) with a
 * `forEachChunk` reader stuck on its first piece until `gate` opens, then
 * sends five more pieces: 320 KiB buffered, above the 256 KiB mark, so the
 * transport is paused.
 */
const stuckReader = (server: MemoryServer, path: string, onChunk: (chunk: Uint8Array) => void = () => {}) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const reading = yield* Effect.fork(HttpClientRequest.get(`http://a.test${path}`).pipe(
      Agent.requestWith(Agent.forEachChunk((chunk) => Effect.zipRight(Deferred.await(gate), Effect.sync(() => onChunk(chunk)))))
    ))
    yield* settle
    for (let i = 0; i < 5; i++) server.sockets[0]!.send(piece)
    yield* settle
    return { gate, reading }
  })

describe("Agent over the in-memory transport", () => {
  it.effect("a URL that does not parse fails with InvalidRequest, through request and requestWith, and opens nothing", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      const request = HttpClientRequest.get("not a url")
      const viaRequest = yield* Effect.flip(Agent.request(request))
      const viaWith = yield* Effect.flip(Agent.requestWith(request, (r) => r.text))
      for (const error of [viaRequest, viaWith]) expect(error).toMatchObject({ _tag: "AgentError", reason: "InvalidRequest" })
      expect(server.connects).toBe(0)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("reuses one connection for sequential requests", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      for (let i = 0; i < 5; i++) expect(yield* get(`http://a.test/${i}`)).toBe(`GET /${i}`)
      expect(server.sockets.length).toBe(1)
      const stats = yield* Agent.stats
      expect(stats).toMatchObject({ open: 1, idle: 1, busy: 0, waiting: 0, opened: 1, reused: 4, requests: 5 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("normalises origins: case and default port share a connection", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://A.test/x")
      yield* get("http://a.test:80/y")
      expect(server.sockets.length).toBe(1)
      expect(server.requests.map((r) => r.headers["host"])).toEqual(["a.test", "a.test"])
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("closes an idle connection exactly at idleTimeout", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      yield* TestClock.adjust("2999 millis")
      yield* settle
      expect((yield* Agent.stats).open).toBe(1)
      expect(server.openSockets.length).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect((yield* Agent.stats).open).toBe(0)
      expect(server.openSockets.length).toBe(0)
      // The next request opens a new connection.
      yield* get("http://a.test/")
      expect(server.sockets.length).toBe(2)
    }).pipe(Effect.provide(agentOn(server, { idleTimeout: "3 seconds" })))
  })

  it.effect("a busy period restarts the idle clock", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      yield* TestClock.adjust("2 seconds")
      yield* get("http://a.test/")
      yield* TestClock.adjust("2 seconds")
      yield* settle
      expect(server.openSockets.length).toBe(1)
      yield* TestClock.adjust("1 seconds")
      yield* settle
      expect(server.openSockets.length).toBe(0)
      expect(server.sockets.length).toBe(1)
    }).pipe(Effect.provide(agentOn(server, { idleTimeout: "3 seconds" })))
  })

  it.effect("a Keep-Alive: timeout=N hint shortens the idle timeout to N - 1 seconds", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "timeout=2" }))
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      yield* TestClock.adjust("999 millis")
      yield* settle
      expect(server.openSockets.length).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(server.openSockets.length).toBe(0)
    }).pipe(Effect.provide(agentOn(server, { idleTimeout: "4 seconds" })))
  })

  it.effect("a Keep-Alive timeout of 1 second or less means: do not keep it", () => {
    const server = new MemoryServer((req) => req.socket.respond("ok", { "keep-alive": "timeout=1" }))
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      yield* settle
      expect(server.openSockets.length).toBe(0)
      yield* get("http://a.test/")
      expect(server.sockets.length).toBe(2)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("waits in FIFO order at the per-origin cap", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => held.push(req))
    return Effect.gen(function*() {
      const done: Array<number> = []
      const fibers: Array<Fiber.RuntimeFiber<void, unknown>> = []
      for (let i = 0; i < 6; i++) {
        fibers.push(yield* Effect.fork(Effect.map(get(`http://a.test/${i}`), () => void done.push(i))))
        yield* settle
      }
      expect(server.sockets.length).toBe(2)
      expect((yield* Agent.stats).waiting).toBe(4)
      // Answer whatever arrives, one at a time; completion follows arrival order.
      while (done.length < 6) {
        yield* settle
        const next = held.shift()
        if (next === undefined) continue
        next.socket.respond("ok")
        yield* settle
      }
      yield* Fiber.joinAll(fibers)
      expect(done).toEqual([0, 1, 2, 3, 4, 5])
      expect(server.requests.map((r) => r.path)).toEqual(["/0", "/1", "/2", "/3", "/4", "/5"])
      expect(server.sockets.length).toBe(2)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("at the global cap, the least recently used idle connection of another origin makes room", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      yield* TestClock.adjust("10 millis")
      yield* get("http://b.test/")
      yield* TestClock.adjust("10 millis")
      yield* get("http://a.test/again") // a is now more recently used than b
      yield* get("http://c.test/")
      yield* settle
      const open = server.openSockets.map((s) => s.origin.host).sort()
      expect(open).toEqual(["a.test", "c.test"])
      expect((yield* Agent.stats).open).toBe(2)
    }).pipe(Effect.provide(agentOn(server, { maxConnections: 2 })))
  })

  it.effect("at the global cap with no idle connection, a request waits until one is released", () => {
    const held: Array<SeenRequest> = []
    const server = new MemoryServer((req) => req.path === "/slow" ? held.push(req) : req.socket.respond("ok"))
    return Effect.gen(function*() {
      const slow = yield* Effect.fork(get("http://a.test/slow"))
      yield* settle
      const other = yield* Effect.fork(get("http://b.test/"))
      yield* settle
      expect(server.sockets.length).toBe(1)
      held.shift()!.socket.respond("done")
      expect(yield* Fiber.join(slow)).toBe("done")
      expect(yield* Fiber.join(other)).toBe("ok")
      // a's connection was closed to let b's open: never more than one.
      expect(server.sockets.length).toBe(2)
      expect(server.openSockets.map((s) => s.origin.host)).toEqual(["b.test"])
    }).pipe(Effect.provide(agentOn(server, { maxConnections: 1 })))
  })

  it.effect("interruption while waiting for a head releases the connection, its permit and its place", () => {
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const fibers = yield* Effect.forEach([0, 1, 2, 3], (i) => Effect.fork(get(`http://a.test/${i}`)))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ open: 2, busy: 2, waiting: 2 })
      yield* Fiber.interruptAll(fibers)
      yield* settle
      // The connections that carried a request are closed. A connection opened
      // for a request still in line when a slot came free stays, idle and unused.
      const stats = yield* Agent.stats
      expect(stats).toMatchObject({ busy: 0, waiting: 0 })
      expect(stats.idle).toBe(stats.open)
      expect(server.openSockets.length).toBe(stats.open)
      expect(server.openSockets.every((socket) => socket.received === "")).toBe(true)
      expect(server.requests.length).toBe(2)
      // Permits are back: a fresh request goes through.
      server.onRequest = (req) => req.socket.respond("ok")
      expect(yield* get("http://a.test/")).toBe("ok")
    }).pipe(Effect.provide(agentOn(server, { maxConnections: 2 })))
  })

  it.effect("a request that gives up while its connection is being opened stops the connect and frees the permit", () => {
    const server = echoServer()
    server.hang = true
    return Effect.gen(function*() {
      const gaveUp = yield* Effect.fork(Effect.timeout(get("http://a.test/"), "1 second"))
      yield* settle
      yield* TestClock.adjust("1 second")
      expect(Exit.isFailure(yield* Fiber.await(gaveUp))).toBe(true)
      yield* settle
      expect(server.abortedConnects).toBe(1)
      // The only permit is free at once, not after the 60 s connectTimeout.
      server.hang = false
      const next = yield* Effect.fork(get("http://b.test/"))
      yield* settle
      yield* settle
      expect(yield* Fiber.poll(next)).toMatchObject({ _tag: "Some" })
      expect(yield* Fiber.join(next)).toBe("GET /")
      expect(yield* Agent.stats).toMatchObject({ open: 1, waiting: 0 })
    }).pipe(Effect.provide(agentOn(server, { connectTimeout: "60 seconds", maxConnections: 1 })))
  })

  it.effect("a failed connect fails every request waiting for an origin that has no connection", () => {
    const server = echoServer()
    server.refuse = true
    return Effect.gen(function*() {
      const exits = yield* Effect.forEach([0, 1, 2, 3, 4], (i) => Effect.exit(get(`http://a.test/${i}`)), {
        concurrency: "unbounded"
      })
      expect(exits.map((exit) => Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error.reason))
        .toEqual(["Connect", "Connect", "Connect", "Connect", "Connect"])
      // Two openings (the per-origin cap) answered all five, not one connect each.
      expect(server.connects).toBe(2)
      expect(yield* Agent.stats).toMatchObject({ open: 0, waiting: 0 })
      server.refuse = false
      expect(yield* get("http://a.test/")).toBe("GET /")
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.live("a connection handed straight from one request to the next takes no I/O turn first", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://a.test/warm")
      yield* Effect.sleep("5 millis")
      // Idle for 5 ms: the first reuse looks for a FIN first. The hand-overs
      // that follow (8 requests, 2 connections) come straight from a request.
      yield* Effect.forEach([0, 1, 2, 3, 4, 5, 6, 7], (i) => get(`http://a.test/${i}`), { concurrency: "unbounded" })
      expect(server.yields).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ opened: 2, requests: 9 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("a connection the server closes as soon as it is open fails the request with Connect, not a loop", () => {
    const server = echoServer()
    server.onConnect = (socket) => socket.end()
    return Effect.gen(function*() {
      // The FIN is in before the connection reaches the request (it used to
      // make the pool reconnect forever).
      const exit = yield* Effect.exit(get("http://a.test/"))
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error.reason).toBe("Connect")
      expect(server.connects).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ open: 0, waiting: 0 })
      server.onConnect = undefined
      expect(yield* get("http://a.test/")).toBe("GET /")
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.live("with more origins than the global cap, origins take turns of several requests, not a connection each", () => {
    const server = new MemoryServer((req) => setTimeout(() => req.socket.respond(req.path), 0))
    return Effect.gen(function*() {
      const worker = (origin: string) =>
        Effect.forEach(Array.from({ length: 20 }), (_, i) => get(`http://${origin}.test/${i}`), { discard: true })
      yield* Effect.all(["a", "a", "b", "b", "c", "c"].map(worker), { concurrency: "unbounded", discard: true })
      const stats = yield* Agent.stats
      expect(stats.requests).toBe(120)
      // A connection per request would be 120; a turn is 8 requests.
      expect(stats.opened).toBeLessThanOrEqual(120 / 8 + 3)
      expect(server.sockets.length).toBe(stats.opened)
    }).pipe(Effect.provide(agentOn(server, { maxConnections: 2, maxConnectionsPerOrigin: 1 })))
  })

  it.effect("persist: false opens a fresh connection per request and closes it", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      for (let i = 0; i < 3; i++) yield* get("http://a.test/")
      yield* settle
      expect(server.sockets.length).toBe(3)
      expect(server.openSockets.length).toBe(0)
      expect(server.requests.every((r) => r.headers["connection"] === "close")).toBe(true)
      expect(yield* Agent.stats).toMatchObject({ open: 0, opened: 3, reused: 0, requests: 3 })
    }).pipe(Effect.provide(agentOn(server, { persist: false })))
  })

  it.effect("requestScoped: a response released by its scope with its body unread closes its connection", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"))
    return Effect.gen(function*() {
      const status = yield* Effect.scoped(Effect.map(Agent.requestScoped(HttpClientRequest.get("http://a.test/")), (r) => r.status))
      expect(status).toBe(200)
      yield* settle
      expect(server.openSockets.length).toBe(0)
      expect((yield* Agent.stats).open).toBe(0)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("headersTimeout fails with reason Timeout, phase headers, and closes the connection", () => {
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(get("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("5 seconds")
      const exit = yield* Fiber.join(fiber)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({
        reason: "Timeout",
        phase: "headers"
      })
      yield* settle
      expect(server.openSockets.length).toBe(0)
      expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, waiting: 0 })
    }).pipe(Effect.provide(agentOn(server, { headersTimeout: "5 seconds" })))
  })

  it.effect("connectTimeout fails with reason Timeout, phase connect, and gives the permit back", () => {
    const server = echoServer()
    server.hang = true
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(get("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("2999 millis")
      yield* settle
      expect(fiber.unsafePoll()).toBe(null)
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.join(fiber)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({
        reason: "Timeout",
        phase: "connect"
      })
      expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, waiting: 0 })
      // The only global permit is free again.
      server.hang = false
      expect(yield* get("http://b.test/")).toBe("GET /")
    }).pipe(Effect.provide(agentOn(server, { connectTimeout: "3 seconds", maxConnections: 1 })))
  })

  it.effect("one timer serves every opening: each connect times out at its own deadline, a connect that succeeds is left alone", () => {
    const server = echoServer()
    server.hang = true
    const timedOut = (exit: Exit.Exit<string, unknown>) =>
      Exit.isFailure(exit) && exit.cause._tag === "Fail" && (exit.cause.error as { reason: string; phase: string })
    return Effect.gen(function*() {
      const a = yield* Effect.fork(Effect.exit(get("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("1 second")
      const b = yield* Effect.fork(Effect.exit(get("http://b.test/")))
      yield* settle
      yield* TestClock.adjust("1 second")
      server.hang = false
      const c = yield* Effect.fork(Effect.exit(get("http://c.test/")))
      yield* settle
      expect(yield* Fiber.join(c)).toEqual(Exit.succeed("GET /"))
      // t = 3 s: a's deadline only.
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(timedOut(yield* Fiber.join(a))).toMatchObject({ reason: "Timeout", phase: "connect" })
      expect(b.unsafePoll()).toBe(null)
      // t = 4 s: b's, after the timer slept again.
      yield* TestClock.adjust("1 second")
      expect(timedOut(yield* Fiber.join(b))).toMatchObject({ reason: "Timeout", phase: "connect" })
      // t = 5.5 s: past the deadline c's connect had; its connection is still good.
      yield* TestClock.adjust("1500 millis")
      expect(yield* get("http://c.test/")).toBe("GET /")
      expect(yield* Agent.stats).toMatchObject({ open: 1, opened: 1, reused: 1, waiting: 0 })
    }).pipe(Effect.provide(agentOn(server, { connectTimeout: "3 seconds", idleTimeout: "30 seconds" })))
  })

  it.effect("a body of known length streamed in pieces: each read gets the new bytes only, and keeps them", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nabcd"))
    const text = new TextDecoder()
    return Effect.gen(function*() {
      const pieces = yield* Effect.fork(Effect.scoped(Effect.flatMap(
        Agent.request(HttpClientRequest.get("http://a.test/")),
        (response) => Stream.runCollect(response.stream)
      )))
      yield* settle
      server.sockets[0]!.send("efgh")
      yield* settle
      server.sockets[0]!.send("ijkl")
      const chunks = Array.from(yield* Fiber.join(pieces), (chunk) => text.decode(chunk))
      // Read after all three arrived (and after the server scribbled over what it lent).
      expect(chunks).toEqual(["abcd", "efgh", "ijkl"])
      expect(yield* Agent.stats).toMatchObject({ idle: 1, requests: 1 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("requestScoped: a response that arrived whole frees its connection at once; one still arriving holds it until the scope closes", () => {
    const server = new MemoryServer((req) =>
      req.socket.send(
        req.path === "/partial" ? "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello" : `HTTP/1.1 200 OK\r\ncontent-length: ${req.path.length}\r\n\r\n${req.path}`
      )
    )
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      // One connection, and every response kept in one open scope: without the
      // early release the second request would wait for the scope forever.
      const first = yield* Scope.extend(Agent.requestScoped(HttpClientRequest.get("http://a.test/first")), scope)
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
      const second = yield* Scope.extend(Agent.requestScoped(HttpClientRequest.get("http://a.test/second")), scope)
      // Read after the connection carried another exchange: the bytes were kept.
      expect(yield* first.text).toBe("/first")
      expect(yield* second.text).toBe("/second")
      const partial = yield* Scope.extend(Agent.requestScoped(HttpClientRequest.get("http://a.test/partial")), scope)
      expect(partial.status).toBe(200)
      expect(yield* Agent.stats).toMatchObject({ busy: 1, idle: 0 })
      yield* Scope.close(scope, Exit.void)
      yield* settle
      // Released with its body unread: closed, not reused.
      expect(yield* Agent.stats).toMatchObject({ open: 0, opened: 1, reused: 2 })
      expect(server.sockets.length).toBe(1)
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("a body that completes after its head frees the connection with its last byte, while the caller still holds or streams it", () => {
    // /late sends half its body with the head; the test sends the rest.
    const server = new MemoryServer((req) =>
      req.socket.send(
        req.path === "/late" ? "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello" : `HTTP/1.1 200 OK\r\ncontent-length: ${req.path.length}\r\n\r\n${req.path}`
      )
    )
    const text = new TextDecoder()
    const late = HttpClientRequest.get("http://a.test/late")
    // One connection per origin: each `next` is served only if the held response let it go.
    const next = HttpClientRequest.get("http://a.test/next").pipe(Agent.requestWith((r) => r.text))
    // Held busy until the rest of the body comes, then free while still held, and serving `next`.
    const freedByTheRest = Effect.gen(function*() {
      expect(yield* Agent.stats).toMatchObject({ busy: 1, idle: 0 })
      server.sockets[0]!.send("world")
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
      expect(yield* next).toBe("/next")
    })
    const texts = (chunks: Chunk.Chunk<Uint8Array>) => Chunk.toArray(chunks).map((c) => text.decode(c))
    return Effect.gen(function*() {
      // Agent.request, its stream read halfway (the scope is the pull's).
      const scope = yield* Scope.make()
      const response = yield* Agent.request(late)
      const pull = yield* Scope.extend(Stream.toPull(response.stream), scope)
      expect(texts(yield* pull)).toEqual(["hello"])
      yield* freedByTheRest
      // The rest of the body is still the response's after its connection carried another exchange.
      expect(texts(yield* pull)).toEqual(["world"])
      expect(yield* Effect.flip(pull)).toEqual(Option.none())
      yield* Scope.close(scope, Exit.void)

      // requestScoped, its scope still open and the body unread.
      const held = yield* Scope.make()
      const scoped = yield* Scope.extend(Agent.requestScoped(late), held)
      yield* freedByTheRest
      expect(yield* scoped.text).toBe("helloworld")
      yield* Scope.close(held, Exit.void)

      // requestWith, its function still waiting.
      const gate = yield* Deferred.make<void>()
      const slow = yield* Effect.fork(
        Agent.requestWith(late, (r) => Effect.zipRight(Deferred.await(gate), r.text))
      )
      yield* settle
      yield* freedByTheRest
      yield* Deferred.succeed(gate, void 0)
      expect(yield* Fiber.join(slow)).toBe("helloworld")

      // Through HttpClient, streamed by a reader that stops after the first piece.
      const client = AgentHttpClient.make(yield* Agent.Agent)
      const streamGate = yield* Deferred.make<void>()
      const streamed = yield* client.execute(late)
      const collected = yield* Effect.fork(Stream.runCollect(Stream.tap(streamed.stream, () => Deferred.await(streamGate))))
      yield* settle
      yield* freedByTheRest
      yield* Deferred.succeed(streamGate, void 0)
      expect(texts(yield* Fiber.join(collected))).toEqual(["hello", "world"])

      yield* settle
      // Every body was read to its end: one connection carried all eight exchanges.
      expect(yield* Agent.stats).toMatchObject({ open: 1, opened: 1, reused: 7, busy: 0 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("requestWith needs no Scope and gives the connection back when its function ends", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      for (const path of ["/a", "/b", "/c"]) {
        const text = yield* HttpClientRequest.get(`http://a.test${path}`).pipe(
          Agent.requestWith((response) => response.text)
        )
        expect(text).toBe(`GET ${path}`)
        expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
      }
      expect(server.sockets.length).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ opened: 1, reused: 2, requests: 3 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("requestWith: a body that came with its head frees the connection before f runs; one still arriving is held until f ends", () => {
    const server = new MemoryServer((req) =>
      req.socket.send(
        req.path === "/partial" ? "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello" : `HTTP/1.1 200 OK\r\ncontent-length: ${req.path.length}\r\n\r\n${req.path}`
      )
    )
    return Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      // f waits on the gate, then reads: the body was kept when the connection went back.
      const slow = yield* Effect.fork(HttpClientRequest.get("http://a.test/slow").pipe(
        Agent.requestWith((response) => Effect.zipRight(Deferred.await(gate), response.text))
      ))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
      // One connection per origin: this one is served while the slow f still runs.
      expect(yield* HttpClientRequest.get("http://a.test/next").pipe(Agent.requestWith((r) => r.text))).toBe("/next")
      const partial = yield* Effect.fork(HttpClientRequest.get("http://a.test/partial").pipe(
        Agent.requestWith((response) => Effect.as(Deferred.await(gate), response.status))
      ))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 1, idle: 0 })
      yield* Deferred.succeed(gate, void 0)
      expect(yield* Fiber.join(slow)).toBe("/slow")
      expect(yield* Fiber.join(partial)).toBe(200)
      yield* settle
      // The partial body was left unread: closed, not reused.
      expect(yield* Agent.stats).toMatchObject({ open: 0, opened: 1, reused: 2 })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("requestWith gives the connection back when its function fails, dies, throws or is interrupted", () => {
    // The body of /slow never completes: a connection left with it unread is closed.
    const server = new MemoryServer((req) =>
      req.socket.send(
        req.path === "/slow"
          ? "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"
          : "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
      )
    )
    return Effect.gen(function*() {
      const agent = yield* Agent.Agent
      const get = HttpClientRequest.get("http://a.test/")
      const failed = yield* Effect.exit(agent.requestWith(get, () => Effect.fail("nope" as const)))
      expect(failed).toStrictEqual(Exit.fail("nope"))
      const died = yield* Effect.exit(agent.requestWith(get, () => Effect.die("boom")))
      expect(Exit.isFailure(died) && died.cause._tag).toBe("Die")
      const threw = yield* Effect.exit(agent.requestWith(get, (): Effect.Effect<void> => {
        throw new Error("thrown")
      }))
      expect(Exit.isFailure(threw) && threw.cause._tag).toBe("Die")
      // Each response was complete: the one connection went back idle each time.
      expect(yield* Agent.stats).toMatchObject({ open: 1, idle: 1, busy: 0, opened: 1, reused: 2 })
      const reading = yield* Effect.fork(agent.requestWith(HttpClientRequest.get("http://a.test/slow"), (r) => r.text))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 1 })
      yield* Fiber.interrupt(reading)
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, waiting: 0 })
      expect(server.openSockets.length).toBe(0)
      // The same endings while the body is still arriving (the connection is
      // held by f then): each gives it back, closed, since its body was not read.
      const slow = HttpClientRequest.get("http://a.test/slow")
      const endings: ReadonlyArray<() => Effect.Effect<void, string>> = [
        () => Effect.fail("nope"),
        () => Effect.die("boom"),
        () => {
          throw new Error("thrown")
        }
      ]
      for (const [i, ending] of endings.entries()) {
        expect(Exit.isFailure(yield* Effect.exit(agent.requestWith(slow, ending)))).toBe(true)
        yield* settle
        expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, opened: 2 + i })
      }
      expect(server.openSockets.length).toBe(0)
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("forEachChunk hands over each piece as it arrives, in order, and frees the connection at the end", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n"))
    const text = new TextDecoder()
    return Effect.gen(function*() {
      const seen: Array<string> = []
      const reading = yield* Effect.fork(HttpClientRequest.get("http://a.test/").pipe(
        Agent.requestWith(Agent.forEachChunk((chunk) => Effect.sync(() => seen.push(text.decode(chunk)))))
      ))
      yield* settle
      expect(seen).toEqual(["abcd"])
      server.sockets[0]!.send("4\r\nefgh\r\n")
      yield* settle
      expect(seen).toEqual(["abcd", "efgh"])
      server.sockets[0]!.send("0\r\n\r\n")
      yield* Fiber.join(reading)
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1, requests: 1 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("forEachChunk: a slow reader pauses the transport and loses nothing; a body cut short fails it", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/cut") return req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      req.socket.send(chunkedHead)
    })
    return Effect.gen(function*() {
      let size = 0
      const { gate, reading } = yield* stuckReader(server, "/", (chunk) => {
        size += chunk.length
      })
      expect(server.sockets[0]!.paused).toBe(true)
      server.sockets[0]!.send("0\r\n\r\n")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(reading)
      expect(size).toBe(6 * 64 * 1024)
      expect(server.sockets[0]!.paused).toBe(false)
      const cut = yield* Effect.fork(Effect.exit(HttpClientRequest.get("http://a.test/cut").pipe(
        Agent.requestWith(Agent.forEachChunk(() => Effect.void))
      )))
      yield* settle
      server.sockets[0]!.end()
      const exit = yield* Fiber.join(cut)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({ reason: "Truncated" })
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.effect("the watchdog leaves no fiber behind once the Agent is shut down, whatever the order of its deadlines", () => {
    // The head comes at once, the body never: each body deadline is earlier than the pending head deadline.
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"))
    return Effect.gen(function*() {
      const before = (yield* Fiber.roots).length
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ headersTimeout: "60 seconds", bodyTimeout: "5 seconds" }), server.layer).pipe(
        Scope.extend(scope)
      )
      const reads = yield* Effect.forEach(["/a", "/b"], (path) =>
        Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get(`http://a.test${path}`), (r) => r.text))))
      yield* settle
      expect((yield* Fiber.roots).length).toBeGreaterThan(before)
      yield* Scope.close(scope, Exit.void)
      yield* settle
      expect((yield* Fiber.roots).length).toBe(before)
      for (const read of reads) expect(Exit.isFailure(yield* Fiber.join(read))).toBe(true)
    })
  })

  it.effect("shutting the Agent down closes the connections still in use, and nothing opens after", () => {
    // Nobody answers: both connections are busy when the Agent's scope closes.
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ persist: true }), server.layer).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach(["http://a.test/", "http://b.test/"], (url) =>
        Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get(url), (r) => r.text))))
      yield* settle
      expect(server.openSockets.length).toBe(2)
      yield* Scope.close(scope, Exit.void)
      yield* settle
      expect(server.openSockets.length).toBe(0)
      for (const request of requests) expect(Exit.isFailure(yield* Fiber.join(request))).toBe(true)
      // A request after the shutdown opens nothing.
      const late = yield* Effect.exit(agent.requestWith(HttpClientRequest.get("http://c.test/"), (r) => r.text))
      expect(late).toMatchObject({ _tag: "Failure" })
      expect(server.sockets.length).toBe(2)
    })
  })

  it.effect("at shutdown every busy connection closes, even when one transport's destroy throws", () => {
    const server = new MemoryServer(() => {})
    server.destroyThrowsOnce(1)
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make(), server.layer).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach(["http://a.test/", "http://b.test/"], (url) =>
        Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get(url), (r) => r.text))))
      yield* settle
      expect(server.openSockets.length).toBe(2)
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      yield* settle
      // The defect is reported, and nothing is left open or hanging.
      expect(Exit.isFailure(closed)).toBe(true)
      expect(server.openSockets.length).toBe(0)
      expect(requests.map((request) => request.unsafePoll() !== null)).toEqual([true, true])
    })
  })

  it.effect("at shutdown a busy connection closes, even when an idle one's destroy throws", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/ok") req.socket.respond("ok")
    })
    server.destroyThrowsOnce(1)
    return Effect.gen(function*() {
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make(), server.layer).pipe(Scope.extend(scope))
      // Socket 1 idle, socket 2 busy.
      yield* agent.requestWith(HttpClientRequest.get("http://a.test/ok"), (r) => r.text)
      const busy = yield* Effect.fork(Effect.exit(agent.requestWith(HttpClientRequest.get("http://b.test/hang"), (r) => r.text)))
      yield* settle
      const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
      yield* settle
      expect(Exit.isFailure(closed)).toBe(true)
      expect(server.openSockets.length).toBe(0)
      expect(busy.unsafePoll()).not.toBeNull()
    })
  })

  it.effect("a reader still waiting when its response is given back fails instead of hanging", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"))
    return Effect.gen(function*() {
      // The reader is forked off, waits for the rest of the body, and outlives
      // the function that held the connection.
      const reader = yield* HttpClientRequest.get("http://a.test/").pipe(
        Agent.requestWith((response) => Effect.tap(Effect.fork(Agent.forEachChunk(response, () => Effect.void)), () => settle))
      )
      const exit = yield* Fiber.join(reader).pipe(Effect.exit)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({ reason: "Closed" })
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("reading an earlier response late neither resumes nor re-arms the paused exchange in flight", () => {
    const server = new MemoryServer((req) => {
      if (req.path === "/small") return req.socket.respond("first")
      req.socket.send(chunkedHead)
    })
    return Effect.gen(function*() {
      // A complete response escapes its function unread: the connection moves on.
      const first = yield* HttpClientRequest.get("http://a.test/small").pipe(Agent.requestWith(Effect.succeed))
      const { gate, reading: second } = yield* stuckReader(server, "/big")
      expect(server.sockets[0]!.paused).toBe(true)
      // The earlier body, streamed now, comes from its own exchange.
      const text = yield* Stream.runCollect(first.stream).pipe(
        Effect.map((chunks) => new TextDecoder().decode(Chunk.toReadonlyArray(chunks)[0]))
      )
      expect(text).toBe("first")
      expect(server.sockets[0]!.paused).toBe(true)
      // Paused by the client: the server's silence is no body timeout.
      yield* TestClock.adjust("2 seconds")
      yield* settle
      expect(second.unsafePoll()).toBeNull()
      server.sockets[0]!.send("0\r\n\r\n")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(second)
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1, bodyTimeout: "1 second" })))
  })

  it.effect("requestScoped: a body read interrupted while it waits takes nothing: the next read gets every byte", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n"))
    const text = new TextDecoder()
    return Effect.gen(function*() {
      const response = yield* Agent.requestScoped(HttpClientRequest.get("http://a.test/"))
      // Two reads wait for bytes and are interrupted: a stream pull and a whole-body read.
      const pulling = yield* Effect.fork(Stream.runCollect(response.stream))
      const whole = yield* Effect.fork(response.arrayBuffer)
      yield* settle
      yield* Fiber.interrupt(pulling)
      yield* Fiber.interrupt(whole)
      // The bytes arrive after the interruptions, while the waits may still be registered.
      server.sockets[0]!.send("abcd")
      yield* settle
      server.sockets[0]!.send("efgh")
      yield* settle
      expect(text.decode(yield* response.arrayBuffer)).toBe("abcdefgh")
    }).pipe(Effect.scoped, Effect.provide(agentOn(server)))
  })
  it.effect("a whole-body read after a stream took the body fails with Closed, rather than pass a part off as the whole", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"))
    const text = new TextDecoder()
    const streamedAway = { reason: "Closed", detail: "the body was read as a stream, which keeps no bytes" }
    return Effect.gen(function*() {
      // Streamed to its end.
      const whole = yield* Agent.request(HttpClientRequest.get("http://a.test/"))
      const streamed = yield* Effect.fork(Stream.runCollect(whole.stream))
      yield* settle
      server.sockets[0]!.send("world")
      expect(Chunk.toArray(yield* Fiber.join(streamed)).map((c) => text.decode(c)).join("")).toBe("helloworld")
      expect((yield* Effect.flip(whole.text)).cause).toMatchObject(streamedAway)
      // Its first piece taken by forEachChunk, the rest still to come (the scope holds the connection).
      const part = yield* Agent.requestScoped(HttpClientRequest.get("http://a.test/"))
      expect(yield* Effect.exit(Agent.forEachChunk(part, () => Effect.fail("enough")))).toEqual(Exit.fail("enough"))
      const rest = yield* Effect.fork(Effect.flip(part.arrayBuffer))
      yield* settle
      server.sockets.at(-1)!.send("world")
      expect((yield* Fiber.join(rest)).cause).toMatchObject(streamedAway)
    }).pipe(Effect.scoped, Effect.provide(agentOn(server)))
  })

  it.effect("bodyTimeout cuts off a server that stalls mid-body", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"))
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(get("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("2 seconds")
      const exit = yield* Fiber.join(fiber)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({
        reason: "Timeout",
        phase: "body"
      })
      yield* settle
      expect(server.openSockets.length).toBe(0)
    }).pipe(Effect.provide(agentOn(server, { bodyTimeout: "2 seconds" })))
  })

  it.effect("an idle connection that receives bytes or a FIN is closed, never read as a response", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* get("http://a.test/")
      server.sockets[0]!.send("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale")
      yield* settle
      expect((yield* Agent.stats).open).toBe(0)
      expect(yield* get("http://a.test/x")).toBe("GET /x")
      server.sockets[1]!.end()
      yield* settle
      expect((yield* Agent.stats).open).toBe(0)
      expect(yield* get("http://a.test/y")).toBe("GET /y")
      expect(server.sockets.length).toBe(3)
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.live("at the global cap, origins keep their connections for their own waiters and none starves", () => {
    const server = new MemoryServer((req) => setTimeout(() => req.socket.respond(req.path), 0))
    return Effect.gen(function*() {
      const served = new Map<string, number>()
      // 6 origins x 4 workers, 4 connections per origin, 8 in all: two
      // origins wait for a first connection while the others are busy.
      const worker = (origin: number) =>
        Effect.forEach(Array.from({ length: 25 }), () =>
          Effect.map(get(`http://o${origin}.test/`), () => {
            served.set(`o${origin}`, (served.get(`o${origin}`) ?? 0) + 1)
          }), { discard: true })
      yield* Effect.all(Array.from({ length: 24 }, (_, i) => worker(i % 6)), { concurrency: "unbounded", discard: true })
      expect([...served.values()]).toEqual([100, 100, 100, 100, 100, 100])
      const stats = yield* Agent.stats
      expect(stats).toMatchObject({ busy: 0, waiting: 0, requests: 600 })
      expect(stats.open).toBeLessThanOrEqual(8)
      // Closing and reopening at every release would open hundreds.
      expect(stats.opened).toBeLessThan(60)
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 4, maxConnections: 8 })))
  }, 20_000)

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
        stats: agent.stats
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
