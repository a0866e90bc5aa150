/**
 * The Agent with a `ConnectionPermits` service in its context (a fleet's
 * per-origin cap), on an in-memory permit store and the in-memory connector,
 * timed with TestClock: a permit before every connect, held for the
 * connection's life, given back after it closed; the wait timed by
 * `queueTimeout`, not `connectTimeout`, visible in `Agent.stats`, and
 * interruptible; a lost permit and a wanted origin acted on; an unavailable
 * store failing the request before anything is sent.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { settle } from "./support/agent.js"
import { echoServer, heldServer, MemoryServer } from "./support/MemoryConnector.js"
import { MemoryPermits } from "./support/MemoryPermits.js"

const A = "http://a.test:80"

const agentWith = (server: MemoryServer, permits: MemoryPermits, config: Agent.Config = {}) =>
  Agent.layer({ shutdownTimeout: 0, ...config }).pipe(Layer.provide(Layer.merge(server.layer, permits.layer)))

describe("ConnectionPermits: the Agent asks before it opens", () => {
  it.effect("the store's cap holds however many connections the Agent itself would open; each permit goes back after its connection closed", () => {
    const { answerAll, held, server } = heldServer()
    const permits = new MemoryPermits(1)
    return Effect.gen(function*() {
      const fibers = yield* Effect.forEach(
        [1, 2, 3, 4],
        (i) => Effect.fork(Agent.requestString(`http://a.test/${i}`)),
        { concurrency: "unbounded" }
      )
      yield* settle
      // One connection: the store gave one permit; the others wait in the origin's line.
      expect(server.sockets).toHaveLength(1)
      expect(held).toHaveLength(1)
      for (let i = 0; i < 4; i++) {
        answerAll()
        yield* settle
      }
      for (const fiber of fibers) expect(yield* Fiber.join(fiber)).toBe("ok")
      expect(server.sockets).toHaveLength(1)
      // The openings that waited for a permit for requests now served were called off.
      expect((yield* Agent.stats).awaitingPermit).toBe(0)
      expect(permits.interrupted).toBe(3)
      // Idle, it keeps its permit: a permit is held for the connection's whole life.
      expect(permits.heldOf(A)).toHaveLength(1)
      expect(yield* Agent.stats).toMatchObject({ open: 1, idle: 1 })
      yield* TestClock.adjust("5 seconds")
      yield* settle
      expect(server.openSockets).toHaveLength(0)
      expect(permits.heldOf(A)).toHaveLength(0)
      expect(permits.held).toHaveLength(1)
    }).pipe(Effect.provide(agentWith(server, permits, { maxConnectionsPerOrigin: 4 })))
  })

  it.effect("the connect is timed from when the permit came: a long wait for it is not a connect timeout", () => {
    const server = echoServer()
    const permits = new MemoryPermits(1)
    return Effect.gen(function*() {
      const other = permits.takeFor(A)!
      const fiber = yield* Effect.fork(Agent.requestString("http://a.test/"))
      yield* settle
      expect((yield* Agent.stats).awaitingPermit).toBe(1)
      expect((yield* Agent.stats).origins[A]).toMatchObject({ awaitingPermit: 1, waiting: 1, open: 0 })
      expect(server.connects).toBe(0)
      yield* TestClock.adjust("30 seconds")
      yield* settle
      expect(fiber.unsafePoll()).toBe(null)
      permits.release(other)
      yield* settle
      expect(yield* Fiber.join(fiber)).toBe("GET /")
      expect((yield* Agent.stats).awaitingPermit).toBe(0)
    }).pipe(Effect.provide(agentWith(server, permits, { connectTimeout: "1 second" })))
  })

  it.effect("waiting for a permit counts against queueTimeout; the request fails having sent nothing, and the store is left holding nothing for it", () => {
    const server = echoServer()
    const permits = new MemoryPermits(1)
    return Effect.gen(function*() {
      permits.takeFor(A)
      const fiber = yield* Effect.fork(Effect.exit(Agent.requestString("http://a.test/")))
      yield* settle
      yield* TestClock.adjust("2 seconds")
      yield* settle
      const exit = yield* Fiber.join(fiber)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({
        reason: "Timeout",
        phase: "queue",
        requestSent: false
      })
      expect(permits.interrupted).toBe(1)
      expect(permits.heldOf(A)).toHaveLength(1)
      expect(yield* Agent.stats).toMatchObject({ awaitingPermit: 0, waiting: 0, open: 0 })
      expect(server.connects).toBe(0)
    }).pipe(Effect.provide(agentWith(server, permits, { queueTimeout: "2 seconds" })))
  })

  it.effect("a request interrupted while its connection waits for a permit leaves nothing behind", () => {
    const server = echoServer()
    const permits = new MemoryPermits(1)
    return Effect.gen(function*() {
      permits.takeFor(A)
      const fiber = yield* Effect.fork(Agent.requestString("http://a.test/"))
      yield* settle
      yield* Fiber.interrupt(fiber)
      yield* settle
      expect(permits.interrupted).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ awaitingPermit: 0, waiting: 0, open: 0 })
      expect(server.connects).toBe(0)
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("a lost permit: the exchange under way ends, the connection carries nothing more and closes; the next request opens with a new permit", () => {
    const { answerAll, server } = heldServer()
    const permits = new MemoryPermits(2)
    return Effect.gen(function*() {
      const first = yield* Effect.fork(Agent.requestString("http://a.test/1"))
      yield* settle
      permits.heldOf(A)[0]!.holder.lost()
      answerAll()
      yield* settle
      expect(yield* Fiber.join(first)).toBe("ok")
      expect(server.openSockets).toHaveLength(0)
      expect(permits.heldOf(A)).toHaveLength(0)

      // Lost while idle: closed at once.
      const second = yield* Effect.fork(Agent.requestString("http://a.test/2"))
      yield* settle
      answerAll()
      expect(yield* Fiber.join(second)).toBe("ok")
      expect(server.openSockets).toHaveLength(1)
      permits.heldOf(A)[0]!.holder.lost()
      yield* settle
      expect(server.openSockets).toHaveLength(0)
      expect(permits.heldOf(A)).toHaveLength(0)
      expect(server.sockets).toHaveLength(2)
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("a permit that no longer holds by the service's own clock retires its connection before the next request, before any lost()", () => {
    const server = echoServer()
    const permits = new MemoryPermits(2)
    return Effect.gen(function*() {
      expect(yield* Agent.requestString("http://a.test/1")).toBe("GET /1")
      // The process stalled past its lease: the service has not run, so no lost() yet.
      permits.heldOf(A)[0]!.valid = false
      expect(yield* Agent.requestString("http://a.test/2")).toBe("GET /2")
      expect(server.sockets).toHaveLength(2)
      expect(server.sockets[0]!.destroyed).toBe(true)
      expect(server.requests.map((r) => r.socket.id)).toEqual([1, 2])
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("others waiting for the origin: an idle connection is closed and its permit given back; a busy one is left to its exchange", () => {
    const { answerAll, server } = heldServer()
    const permits = new MemoryPermits(2)
    return Effect.gen(function*() {
      const fibers = yield* Effect.forEach(["/1", "/2"], (p) => Effect.fork(Agent.requestString(`http://a.test${p}`)))
      yield* settle
      expect(server.sockets).toHaveLength(2)
      // One answered (idle now), one still busy.
      server.sockets[0]!.respond("ok")
      yield* settle
      expect(yield* Fiber.join(fibers[0]!)).toBe("ok")
      for (const held of permits.heldOf(A)) held.holder.wanted()
      yield* settle
      expect(server.sockets[0]!.destroyed).toBe(true)
      expect(server.sockets[1]!.destroyed).toBe(false)
      expect(permits.heldOf(A)).toHaveLength(1)
      answerAll()
      expect(yield* Fiber.join(fibers[1]!)).toBe("ok")
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("an unavailable store fails the request with Unavailable, having sent nothing; it is not retried", () => {
    const server = echoServer()
    const permits = new MemoryPermits(2)
    permits.unavailable = true
    return Effect.gen(function*() {
      const error = yield* Effect.flip(Agent.requestString("http://a.test/"))
      expect(error).toMatchObject({ reason: "Unavailable", requestSent: false, origin: A })
      expect(server.connects).toBe(0)
      expect(yield* Agent.stats).toMatchObject({ open: 0, waiting: 0, awaitingPermit: 0 })
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("a failed connect gives its permit back", () => {
    const server = echoServer()
    server.refuse = true
    const permits = new MemoryPermits(1)
    return Effect.gen(function*() {
      expect(yield* Effect.flip(Agent.requestString("http://a.test/"))).toMatchObject({ reason: "Connect" })
      yield* settle
      expect(permits.heldOf(A)).toHaveLength(0)
      expect(permits.held).toHaveLength(1)
    }).pipe(Effect.provide(agentWith(server, permits)))
  })

  it.effect("closing the Agent gives back every permit", () => {
    const server = echoServer()
    const permits = new MemoryPermits(4)
    return Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Effect.all([1, 2, 3].map((i) => Agent.requestString(`http://a.test/${i}`)), { concurrency: "unbounded" })
        expect(permits.heldOf(A).length).toBeGreaterThan(0)
      }).pipe(Effect.provide(agentWith(server, permits, { maxConnectionsPerOrigin: 3 }))))
      expect(permits.heldOf(A)).toHaveLength(0)
    })
  })
})
