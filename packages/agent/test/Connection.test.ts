import { describe, expect, it } from "@effect/vitest"
import * as Origin from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as TestClock from "effect/TestClock"
import { Connection } from "../src/internal/connection.js"
import { Watchdog } from "../src/internal/watchdog.js"
import type { PreparedRequest } from "../src/internal/connection.js"
import type { Deadline } from "../src/internal/watchdog.js"
import { ListNode } from "../src/internal/list.js"
import { MemoryServer, ServerSocket } from "./support/MemoryConnector.js"

const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
const encoder = new TextEncoder()
const request = (path: string): PreparedRequest => ({
  method: "GET",
  head: encoder.encode(`GET ${path} HTTP/1.1\r\nhost: a.test\r\n\r\n`),
  body: { _tag: "Empty" }
})

/** A 64 KiB piece of a chunked body: five more than one unread pass the 256 KiB mark. */
const piece = `10000\r\n${"x".repeat(64 * 1024)}\r\n`

/** A watchdog whose timer fibers run in the test's runtime, counted. */
const countedWatchdog = Effect.gen(function*() {
  const runtime = yield* Effect.runtime<never>()
  const counted = { watchdogs: 0 }
  const watchdog = new Watchdog(yield* Effect.clock, (effect) => {
    counted.watchdogs++
    return Runtime.runFork(runtime)(effect)
  })
  yield* Effect.addFinalizer(() => watchdog.shutdown())
  return { watchdog, counted }
})

/** A Connection over an in-memory socket, watched by `watchdog`. */
const connectionOn = (socket: ServerSocket, headersMillis: number, bodyMillis: number, watchdog: Watchdog) =>
  Effect.gen(function*() {
    return new Connection(socket.origin, socket, 4000, Infinity, { maxHeaderSize: 16384, maxHeaderCount: 100 }, {
      clock: yield* Effect.clock,
      headersMillis,
      bodyMillis,
      watchdog,
      shutdown: { cutShort: false }
    })
  })

/**
 * A Connection over an in-memory socket whose server never answers: the test
 * hands it the response's bytes (`conn.onData`).
 */
const unansweredConnection = (headersMillis: number, bodyMillis: number) =>
  Effect.gen(function*() {
    const socket = new ServerSocket(Origin.make("http", "a.test"), 1, new MemoryServer(() => {}))
    const { watchdog } = yield* countedWatchdog
    const conn = yield* connectionOn(socket, headersMillis, bodyMillis, watchdog)
    return { socket, conn }
  })

/** A transport whose destroy throws once (a buggy Connector). */
class ThrowingSocket extends ServerSocket {
  thrown = false
  override destroy(): void {
    super.destroy()
    if (!this.thrown) {
      this.thrown = true
      throw new Error("destroy failed")
    }
  }
}

/** Something to time out, for the watchdog alone. */
class Item implements Deadline {
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  expired = false
  constructor(public deadline: number, readonly onExpire: () => void = () => {}) {}
  expire(): void {
    this.expired = true
    this.onExpire()
  }
}

describe("Connection", () => {
  // `send` writes and sets its deadline when called, and returns the effect
  // that waits for the head; a fiber interrupted first never runs that effect.
  // The deadline must not depend on it (a watchdog started from inside that
  // effect would be lost this way): the next exchange still times out.
  it.scoped("a send whose effect never ran leaves the next exchange's headersTimeout working", () =>
    Effect.gen(function*() {
      const server = new MemoryServer((req) => {
        if (req.path === "/first") req.socket.respond("ok")
      })
      const socket = new ServerSocket(Origin.make("http", "a.test"), 1, server)
      const { watchdog } = yield* countedWatchdog
      const conn = yield* connectionOn(socket, 1000, 5000, watchdog)
      // Sent, but the effect is dropped (as by an interruption): the response still arrives.
      void conn.send(request("/first"))
      yield* settle
      expect(conn.responseComplete).toBe(true)
      expect(conn.finish(4000)).toBe(true)
      // The next request gets no answer: headersTimeout must still fire.
      const second = yield* Effect.fork(Effect.exit(conn.send(request("/second"))))
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      const exit = yield* Fiber.poll(second)
      expect(exit._tag).toBe("Some")
      const result = exit._tag === "Some" ? Exit.flatten(exit.value) : undefined
      expect(result !== undefined && Exit.isFailure(result) && result.cause._tag === "Fail" && result.cause.error)
        .toMatchObject({ reason: "Timeout", phase: "headers" })
    }))

  // A transport may still deliver a read that was under way when the
  // connection was given up mid-body: it must be dropped, not parsed into an
  // exchange that is gone.
  it.scoped("body bytes arriving after the response was given up mid-body are dropped, and the connection stays broken", () =>
    Effect.gen(function*() {
      const { conn, socket } = yield* unansweredConnection(1000, 5000)
      void conn.send(request("/x"))
      conn.onData(encoder.encode("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"))
      expect(conn.exchange?.head?.status).toBe(200)
      expect(conn.finish(4000)).toBe(false)
      expect(() => conn.onData(encoder.encode("world"))).not.toThrow()
      expect(conn.broken).toBe(true)
      expect(socket.destroyed).toBe(true)
    }))

  // One timer fiber for all connections, not one per request or per
  // connection: a fast response completes before the fiber first runs, and
  // the fiber must stay for the next exchanges instead of leaving at once.
  it.scoped("back-to-back exchanges on several connections share one watchdog fiber", () =>
    Effect.gen(function*() {
      const server = new MemoryServer((req) => req.socket.respond("ok"))
      const { counted, watchdog } = yield* countedWatchdog
      for (let c = 1; c <= 3; c++) {
        const socket = new ServerSocket(Origin.make("http", "a.test"), c, server)
        const conn = yield* connectionOn(socket, 1000, 1000, watchdog)
        for (let i = 0; i < 5; i++) {
          yield* conn.send(request(`/${i}`))
          yield* settle
          expect(conn.finish(4000)).toBe(true)
        }
      }
      expect(counted.watchdogs).toBe(1)
    }))

  it.scoped("a transport whose destroy throws does not stop the other connections' timeouts", () =>
    Effect.gen(function*() {
      const server = new MemoryServer(() => {})
      const { watchdog } = yield* countedWatchdog
      const bad = yield* connectionOn(new ThrowingSocket(Origin.make("http", "a.test"), 1, server), 1000, 1000, watchdog)
      const good = yield* connectionOn(new ServerSocket(Origin.make("http", "b.test"), 2, server), 1000, 1000, watchdog)
      const first = yield* Effect.fork(Effect.exit(bad.send(request("/"))))
      yield* settle
      yield* TestClock.adjust("500 millis")
      const second = yield* Effect.fork(Effect.exit(good.send(request("/"))))
      yield* settle
      yield* TestClock.adjust("5 seconds")
      yield* settle
      for (const fiber of [first, second]) {
        const exit = yield* Fiber.join(fiber)
        expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({ reason: "Timeout" })
      }
    }))

  it.scoped("each connection times out at its own deadline, and a closed one is no longer watched", () =>
    Effect.gen(function*() {
      // Nobody answers: every request waits for its head until headersTimeout.
      const server = new MemoryServer(() => {})
      const { counted, watchdog } = yield* countedWatchdog
      const conns: Array<Connection> = []
      for (let i = 1; i <= 3; i++) {
        conns.push(yield* connectionOn(new ServerSocket(Origin.make("http", "a.test"), i, server), 1000, 1000, watchdog))
      }
      const sent: Array<Fiber.RuntimeFiber<Exit.Exit<unknown, unknown>>> = []
      for (const conn of conns) {
        sent.push(yield* Effect.fork(Effect.exit(conn.send(request("/")))))
        yield* settle
        yield* TestClock.adjust("300 millis")
      }
      // Sent at 0, 300 and 600 ms: at 1000 ms only the first has timed out, at 1300 the second.
      yield* TestClock.adjust("100 millis")
      yield* settle
      const done = () => sent.map((f) => f.unsafePoll() !== null)
      expect(done()).toEqual([true, false, false])
      yield* TestClock.adjust("300 millis")
      yield* settle
      expect(done()).toEqual([true, true, false])
      const reasons = yield* Effect.forEach(sent.slice(0, 2), (f) => Fiber.join(f))
      for (const exit of reasons) {
        expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({ reason: "Timeout" })
      }
      // The third closes before its deadline: it is not timed out, and not kept.
      conns[2]!.destroy()
      yield* settle
      expect(watchdog.watching).toBe(0)
      const third = yield* Fiber.join(sent[2]!)
      expect(Exit.isFailure(third) && third.cause._tag === "Fail" && third.cause.error).toMatchObject({ reason: "Transport" })
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(counted.watchdogs).toBe(1)
    }))

  // A stream that lets more than 256 KiB pile up pauses the transport, and
  // with it the body deadline (the server's silence is then not its fault).
  // Whatever ends that pause must resume the transport: a whole-body read
  // (and re-arm the body deadline, the server's turn again), or the end of
  // the exchange (a connection kept paused would never read its next response).
  it.scoped("a whole-body read after a stream paused the transport resumes it, and the body deadline runs again", () =>
    Effect.gen(function*() {
      const { conn, socket } = yield* unansweredConnection(1000, 1000)
      const head = yield* Effect.fork(conn.send(request("/")))
      conn.onData(encoder.encode("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"))
      expect((yield* Fiber.join(head)).status).toBe(200)
      const ex = conn.exchange!
      // A stream waits for bytes, then its reader gives up.
      const waiting = yield* Effect.fork(ex.pull())
      yield* settle
      yield* Fiber.interrupt(waiting)
      for (let i = 0; i < 5; i++) conn.onData(encoder.encode(piece))
      expect(socket.paused).toBe(true)
      expect(conn.deadline).toBe(Infinity)
      const whole = yield* Effect.fork(ex.readAll())
      yield* settle
      expect(socket.paused).toBe(false)
      yield* TestClock.adjust("1 second")
      yield* settle
      const exit = Option.getOrUndefined(yield* Fiber.poll(whole))
      expect(exit !== undefined && Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error)
        .toMatchObject({ reason: "Timeout", phase: "body" })
    }))

  it.scoped("a complete response given back while its stream paused the transport leaves it resumed for the next exchange", () =>
    Effect.gen(function*() {
      const { conn, socket } = yield* unansweredConnection(1000, 1000)
      const head = yield* Effect.fork(conn.send(request("/")))
      conn.onData(encoder.encode("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + piece))
      yield* Fiber.join(head)
      const ex = conn.exchange!
      yield* ex.pull()
      // The rest of the body, all of it at once: past 256 KiB unread, and complete.
      conn.onData(encoder.encode(piece.repeat(5) + "0\r\n\r\n"))
      expect(socket.paused).toBe(true)
      expect(conn.responseComplete).toBe(true)
      expect(conn.finish(4000)).toBe(true)
      expect(socket.paused).toBe(false)
      const next = yield* Effect.fork(conn.send(request("/next")))
      conn.onData(encoder.encode("HTTP/1.1 204 No Content\r\n\r\n"))
      expect((yield* Fiber.join(next)).status).toBe(204)
    }))

  it.effect("the watchdog times out an item first watched while it expires another", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const watchdog = new Watchdog(clock, Runtime.runFork(yield* Effect.runtime<never>()))
      // `a` expiring gives `b` a deadline: b is listed during the scan, after its snapshot.
      const b = new Item(Infinity)
      const a = new Item(10, () => {
        b.deadline = 20
        watchdog.watch(b, 20)
      })
      watchdog.watch(a, 10)
      yield* TestClock.adjust(10)
      yield* settle
      expect(watchdog.watching).toBe(1)
      yield* TestClock.adjust(10)
      yield* settle
      expect(b.expired).toBe(true)
      expect(watchdog.watching).toBe(0)
    }))
})
