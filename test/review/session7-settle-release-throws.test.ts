import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

// Found in review of session 7. A connection is released from callbacks no
// fiber runs: Exchange.settle's microtask (a body completed after its head),
// HttpClient.withScope's abort listener, and the adapter's finalization
// registry. A connection that is not kept is closed there, and a transport
// whose destroy throws (a buggy Connector; the Agent's own tests cover it at
// shutdown) became an uncaught exception of the process. Inside an Effect the
// same throw is a defect of that Effect.

/** Runs `body` with the process's uncaught exceptions collected instead of reported. */
const collectingUncaught = <A, E>(body: (uncaught: Array<unknown>) => Effect.Effect<A, E>) => {
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
    () => body(uncaught),
    (previous) =>
      Effect.sync(() => {
        process.off("uncaughtException", onUncaught)
        for (const listener of previous) process.on("uncaughtException", listener)
      })
  )
}

/** /half sends 5 of 10 body bytes and closes after its response; anything else gets "ok". */
const halfServer = () => {
  const server = new MemoryServer((req) =>
    req.path === "/half"
      ? req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello")
      : req.socket.respond("ok")
  )
  server.destroyThrowsOnce(1)
  return server
}

/** After the throw: nothing escaped, the connection is closed, its permit back, and the next request is served. */
const noneEscaped = (server: MemoryServer, uncaught: Array<unknown>) =>
  Effect.gen(function*() {
    yield* settle
    expect(uncaught).toEqual([])
    expect(yield* Agent.stats).toMatchObject({ open: 0, busy: 0, idle: 0 })
    expect(server.openSockets.length).toBe(0)
    expect(yield* Agent.requestWith(HttpClientRequest.get("http://a.test/next"), (r) => r.text)).toBe("ok")
  })

/** Runs `release` against a /half server whose first connection's destroy throws, then checks `noneEscaped`. */
const releasedOutsideAFiber = (release: (server: MemoryServer) => Effect.Effect<void, unknown, Agent.Agent | HttpClient.HttpClient>) => {
  const server = halfServer()
  return collectingUncaught((uncaught) =>
    withAgent(server, {}, Effect.zipRight(release(server), Effect.suspend(() => noneEscaped(server, uncaught))))
  )
}

describe("a connection released outside any fiber, whose destroy throws", () => {
  it.live("by its last body byte (Exchange.settle's microtask)", () =>
    releasedOutsideAFiber((server) =>
      Effect.gen(function*() {
        const text = yield* Agent.requestWith(HttpClientRequest.get("http://a.test/half"), (r) =>
          Effect.gen(function*() {
            server.sockets[0]!.send("world")
            yield* settle
            return yield* r.text
          }))
        expect(text).toBe("helloworld")
      })
    ))

  it.live("by HttpClient.withScope's scope closing (its abort listener)", () =>
    releasedOutsideAFiber(() =>
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const scope = yield* Scope.make()
        yield* Scope.extend(client.pipe(HttpClient.withScope).get("http://a.test/half"), scope)
        yield* Scope.close(scope, Exit.void)
      })
    ))

  it.live("by the response garbage collected unread (the finalization registry)", () =>
    releasedOutsideAFiber(() =>
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        expect(yield* Effect.map(client.get("http://a.test/half"), (r) => r.status)).toBe(200)
        for (let i = 0; i < 50 && (yield* Agent.stats).busy > 0; i++) {
          gc()
          yield* settle
        }
      })
    ))
})
