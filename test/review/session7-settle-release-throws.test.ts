import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// Held.freeWhenComplete (internal/agent.ts) hands `release` to
// Exchange.onSettled, which Exchange.settle runs with queueMicrotask
// (internal/connection.ts, settle()): outside any fiber. Before this change an
// Agent.request/requestWith response whose body completed after its head was
// released by an Effect (scope finalizer / requestWith's flatMap), where a
// throw is a defect of that Effect. Now a connection that is not reusable
// (here `connection: close`) is closed from the bare microtask, and a
// transport whose destroy throws (a case the Agent's own tests cover at
// shutdown) becomes an uncaught exception of the process.
describe("a connection freed by its last body byte, whose destroy throws", () => {
  it.live("does not throw out of a bare microtask", () => {
    const server = new MemoryServer((req) =>
      req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello")
    )
    server.onConnect = (socket) => {
      if (socket.id !== 1) return
      const destroy = socket.destroy.bind(socket)
      let first = true
      socket.destroy = () => {
        destroy()
        if (first) {
          first = false
          throw new Error("destroy threw")
        }
      }
    }
    const uncaught: Array<unknown> = []
    const onUncaught = (error: unknown) => void uncaught.push(error)
    return Effect.acquireUseRelease(
      Effect.sync(() => {
        // vitest's own listener would report it as an unhandled error: keep only ours while the test runs.
        const previous = process.listeners("uncaughtException")
        process.removeAllListeners("uncaughtException")
        process.on("uncaughtException", onUncaught)
        return previous
      }),
      () =>
        withAgent(server, {}, Effect.gen(function*() {
          const exit = yield* Effect.exit(Agent.requestWith(HttpClientRequest.get("http://a.test/"), (r) =>
            Effect.gen(function*() {
              server.sockets[0]!.send("world")
              yield* settle
              return yield* r.text
            })))
          yield* settle
          expect(uncaught).toEqual([])
          expect(exit).toMatchObject({ _tag: "Success", value: "helloworld" })
          // The connection was closed and its permit given back all the same.
          expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, idle: 0 })
          expect(server.openSockets.length).toBe(0)
          expect(yield* Agent.requestWith(HttpClientRequest.get("http://a.test/"), (r) => Effect.succeed(r.status))).toBe(200)
        })),
      (previous) =>
        Effect.sync(() => {
          process.off("uncaughtException", onUncaught)
          for (const listener of previous) process.on("uncaughtException", listener)
        })
    )
  })
})
