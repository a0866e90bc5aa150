import { describe, expect, it } from "@effect/vitest"
import * as Origin from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import * as TestClock from "effect/TestClock"
import { Connection } from "../src/internal/connection.js"
import type { PreparedRequest } from "../src/internal/connection.js"
import { MemoryServer, ServerSocket } from "./support/MemoryConnector.js"

const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
const request = (path: string): PreparedRequest => ({
  method: "GET",
  head: new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nhost: a.test\r\n\r\n`),
  body: { _tag: "Empty" }
})

/** A Connection over an in-memory socket, its watchdogs forked in the current scope and counted. */
const connectionOn = (socket: ServerSocket, headersMillis: number, bodyMillis: number) =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const runtime = yield* Effect.runtime<never>()
    const counted = { watchdogs: 0 }
    const conn = new Connection(socket.origin, socket, 4000, { maxHeaderSize: 16384, maxHeaderCount: 100 }, {
      clock: yield* Effect.clock,
      headersMillis,
      bodyMillis,
      fork: (watchdog) =>
        Effect.zipRight(
          Effect.sync(() => void counted.watchdogs++),
          Effect.asVoid(Effect.forkIn(Effect.interruptible(watchdog), scope))
        ),
      run: (effect) => {
        counted.watchdogs++
        Runtime.runFork(runtime)(effect)
      }
    })
    return { conn, counted }
  })

describe("Connection", () => {
  // `send` writes when called and returns the effect that waits for the head
  // (and starts the watchdog when none is running). A fiber interrupted
  // before it ran that effect dropped the watchdog's start; the connection
  // must not believe it has one.
  it.scoped("a watchdog start that never ran is started again by the next exchange", () =>
    Effect.gen(function*() {
      const server = new MemoryServer((req) => {
        if (req.path === "/first") req.socket.respond("ok")
      })
      const socket = new ServerSocket(Origin.make("http", "a.test"), 1, server)
      const { conn } = yield* connectionOn(socket, 1000, 5000)
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

  // The watchdog is one fiber per connection, not one per request: a fast
  // response completes before a freshly forked fiber first runs, and that
  // fiber must stay for the next exchanges instead of leaving at once.
  it.scoped("back-to-back exchanges with fast responses share one watchdog fiber", () =>
    Effect.gen(function*() {
      const server = new MemoryServer((req) => req.socket.respond("ok"))
      const socket = new ServerSocket(Origin.make("http", "a.test"), 1, server)
      const { conn, counted } = yield* connectionOn(socket, 1000, 1000)
      for (let i = 0; i < 5; i++) {
        yield* conn.send(request(`/${i}`))
        yield* settle
        expect(conn.finish(4000)).toBe(true)
      }
      expect(counted.watchdogs).toBe(1)
    }))
})
