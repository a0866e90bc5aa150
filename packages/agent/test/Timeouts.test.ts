/**
 * The Agent's deadlines, driven by TestClock: connectTimeout, headersTimeout,
 * bodyTimeout, the idle timeout (and a server's Keep-Alive hint), and the
 * watchdog that times them out.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { agentOn, settle } from "./support/agent.js"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"

describe("Timeouts: connect", () => {
  it.effect("connectTimeout fails with reason Timeout, phase connect, and gives the permit back", () => {
    const server = echoServer()
    server.hang = true
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(Agent.requestString("http://a.test/")))
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
      expect(yield* Agent.requestString("http://b.test/")).toBe("GET /")
    }).pipe(Effect.provide(agentOn(server, { connectTimeout: "3 seconds", maxConnections: 1 })))
  })

  it.effect("one timer serves every opening: each connect times out at its own deadline, a connect that succeeds is left alone", () => {
    const server = echoServer()
    server.hang = true
    const timedOut = (exit: Exit.Exit<string, unknown>) =>
      Exit.isFailure(exit) && exit.cause._tag === "Fail" && (exit.cause.error as { reason: string; phase: string })
    return Effect.gen(function*() {
      const a = yield* Effect.fork(Effect.exit(Agent.requestString("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("1 second")
      const b = yield* Effect.fork(Effect.exit(Agent.requestString("http://b.test/")))
      yield* settle
      yield* TestClock.adjust("1 second")
      server.hang = false
      const c = yield* Effect.fork(Effect.exit(Agent.requestString("http://c.test/")))
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
      expect(yield* Agent.requestString("http://c.test/")).toBe("GET /")
      expect(yield* Agent.stats).toMatchObject({ open: 1, opened: 1, reused: 1, waiting: 0 })
    }).pipe(Effect.provide(agentOn(server, { connectTimeout: "3 seconds", idleTimeout: "30 seconds" })))
  })
})

describe("Timeouts: headers", () => {
  it.effect("headersTimeout fails with reason Timeout, phase headers, and closes the connection", () => {
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(Agent.requestString("http://a.test/")))
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
})

describe("Timeouts: body", () => {
  it.effect("bodyTimeout cuts off a server that stalls mid-body", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"))
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(Agent.requestString("http://a.test/")))
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
})

describe("Timeouts: idle", () => {
  it.effect("closes an idle connection exactly at idleTimeout", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/")
      yield* TestClock.adjust("2999 millis")
      yield* settle
      expect((yield* Agent.stats).open).toBe(1)
      expect(server.openSockets.length).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect((yield* Agent.stats).open).toBe(0)
      expect(server.openSockets.length).toBe(0)
      // The next request opens a new connection.
      yield* Agent.requestString("http://a.test/")
      expect(server.sockets.length).toBe(2)
    }).pipe(Effect.provide(agentOn(server, { idleTimeout: "3 seconds" })))
  })

  it.effect("a busy period restarts the idle clock", () => {
    const server = echoServer()
    return Effect.gen(function*() {
      yield* Agent.requestString("http://a.test/")
      yield* TestClock.adjust("2 seconds")
      yield* Agent.requestString("http://a.test/")
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
      yield* Agent.requestString("http://a.test/")
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
      yield* Agent.requestString("http://a.test/")
      yield* settle
      expect(server.openSockets.length).toBe(0)
      yield* Agent.requestString("http://a.test/")
      expect(server.sockets.length).toBe(2)
    }).pipe(Effect.provide(agentOn(server)))
  })
})

describe("Timeouts: the watchdog", () => {
  it.effect("the watchdog leaves no fiber behind once the Agent is shut down, whatever the order of its deadlines", () => {
    // The head comes at once, the body never: each body deadline is earlier than the pending head deadline.
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel"))
    return Effect.gen(function*() {
      const before = (yield* Fiber.roots).length
      const scope = yield* Scope.make()
      const agent = yield* Effect.provide(Agent.make({ headersTimeout: "60 seconds", bodyTimeout: "5 seconds", shutdownTimeout: 0 }), server.layer).pipe(
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
})
