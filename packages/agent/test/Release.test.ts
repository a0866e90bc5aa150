/**
 * Every way a connection is given back to the pool: its whole body here
 * (with the head, or with its last byte later), the function of requestWith
 * ending, the scope of requestScoped closing, a reader giving up,
 * HttpClient.withScope, garbage collection of a response dropped unread, and
 * a release whose transport throws. A connection given back with its body
 * read to the end is kept; one with its body unread is closed.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { describe, expect, it } from "@effect/vitest"
import { vi } from "vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { globalValue } from "effect/GlobalValue"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { agentOn, collectGarbageUntilIdle, settle, withAgent } from "./support/agent.js"
import { gc } from "./support/gc.js"
import { echoServer, MemoryServer } from "./support/MemoryConnector.js"

describe("Release: the whole body here, with its head or with its last byte", () => {
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
})

describe("Release: requestWith's function ends", () => {
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
      expect(yield* Agent.stats).toMatchObject({ opened: 1, reused: 2, responses: 3 })
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
})

describe("Release: requestScoped's scope closes", () => {
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
})

describe("Release: a request interrupted while it waits for its head", () => {
  it.effect("interruption while waiting for a head releases the connection, its permit and its place", () => {
    const server = new MemoryServer(() => {})
    return Effect.gen(function*() {
      const fibers = yield* Effect.forEach([0, 1, 2, 3], (i) => Effect.fork(Agent.requestString(`http://a.test/${i}`)))
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
      expect(yield* Agent.requestString("http://a.test/")).toBe("ok")
    }).pipe(Effect.provide(agentOn(server, { maxConnections: 2 })))
  })
})

// /stall sends 3 of 10 body bytes and nothing more; bodyTimeout (60 s) is far off.
const stallingServer = () =>
  new MemoryServer((req) =>
    req.path === "/stall"
      ? req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      : req.socket.respond("ok")
  )

/** The two ways to a response that hold no scope: the HttpClient adapter, and `Agent.request`. */
const scopeFree: ReadonlyArray<{
  readonly name: string
  readonly get: (url: string) => Effect.Effect<HttpClientResponse.HttpClientResponse, unknown, Agent.Agent>
}> = [
  { name: "AgentHttpClient", get: (url) => Effect.flatMap(Agent.Agent, (agent) => AgentHttpClient.make(agent).get(url)) },
  { name: "Agent.request", get: (url) => Agent.request(HttpClientRequest.get(url)) }
]

for (const { get, name } of scopeFree) {
  describe(`Release: ${name}: a body still arriving is freed when its reader gives up`, () => {
    // One connection per origin: `next` is served only if the stalled response let it go.
    const next = Effect.flatMap(get("http://a.test/next"), (r) => r.text).pipe(Effect.timeout("1 second"))

    const freedAfter = (giveUp: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<unknown, unknown, Scope.Scope>) => {
      const server = stallingServer()
      return Effect.gen(function*() {
        yield* Effect.scoped(Effect.flatMap(get("http://a.test/stall"), giveUp))
        yield* settle
        expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
        expect(yield* next).toBe("ok")
        // The stalled connection was closed, not reused.
        expect(server.closedIds).toEqual([1])
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    }

    it.live("a whole-body read interrupted", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const read = yield* Effect.fork(response.text)
          yield* settle
          yield* Fiber.interrupt(read)
        })
      ))

    it.live("a stream ended early", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const first = yield* Stream.runCollect(Stream.take(response.stream, 1))
          expect(first.length).toBe(1)
        })
      ))

    it.live("Agent.forEachChunk whose function fails", () =>
      freedAfter((response) =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(Agent.forEachChunk(response, () => Effect.fail("enough")))
          expect(exit).toEqual(Exit.fail("enough"))
        })
      ))

    it.live("but not while another read of the body goes on: that one gets all of it", () => {
      const server = stallingServer()
      return Effect.gen(function*() {
        const response = yield* get("http://a.test/stall")
        const quitter = yield* Effect.fork(response.text)
        const reader = yield* Effect.fork(response.text)
        yield* settle
        yield* Fiber.interrupt(quitter)
        server.sockets[0]!.send("lo, wor")
        expect(yield* Fiber.join(reader)).toBe("hello, wor")
        yield* settle
        // Read to its end: the connection was kept and serves the next request.
        expect(yield* next).toBe("ok")
        expect(server.closedIds).toEqual([])
        expect(yield* Agent.stats).toMatchObject({ open: 1, opened: 1, reused: 1 })
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    })

    /** Spies on the Agent's finalization registry: its `register` calls, and whether `token` was unregistered. */
    const watchingRegistry = () => {
      const registry = globalValue(Symbol.for("@keepalive/agent/unreadResponses"), () => undefined)
      const register = vi.spyOn(FinalizationRegistry.prototype, "register")
      const unregister = vi.spyOn(FinalizationRegistry.prototype, "unregister")
      return {
        registered: () => register.mock.calls.filter((_, i) => register.mock.contexts[i] === registry),
        unregistered: (token: unknown) => unregister.mock.calls.some(([t], i) => t === token && unregister.mock.contexts[i] === registry),
        restore: Effect.sync(() => {
          register.mockRestore()
          unregister.mockRestore()
        })
      }
    }

    it.live("an unread response is watched for garbage collection from a microtask later until its connection is freed", () => {
      // V8 keeps what a registry cell watches alive through every minor GC,
      // and promotes it: the response itself is never what is watched.
      const server = stallingServer()
      const spy = watchingRegistry()
      return Effect.gen(function*() {
        const response = yield* get("http://a.test/stall")
        expect(spy.registered()).toHaveLength(0)
        yield* settle
        const registered = spy.registered()
        expect(registered).toHaveLength(1)
        const [target, , token] = registered[0]!
        expect(target).not.toBe(response)
        expect(token).toBeDefined()
        expect(spy.unregistered(token)).toBe(false)
        server.sockets[0]!.send("lo, wor")
        yield* settle
        expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
        expect(spy.unregistered(token)).toBe(true)
        expect(yield* response.text).toBe("hello, wor")
        expect(spy.registered()).toHaveLength(1)
      }).pipe(Effect.provide(agentOn(server)), Effect.ensuring(spy.restore))
    })

    const readsAtOnce: ReadonlyArray<readonly [string, (r: HttpClientResponse.HttpClientResponse) => Effect.Effect<string, unknown>]> = [
      ["text", (r) => r.text],
      // Stream.run forks a fiber, which starts the read a microtask later.
      ["stream", (r) => Effect.map(Stream.runCollect(Stream.decodeText(r.stream)), (texts) => Chunk.join(texts, ""))]
    ]
    for (const [how, read] of readsAtOnce) {
      it.live(`a response whose read (${how}) starts at once is never watched for garbage collection`, () => {
        const server = stallingServer()
        const spy = watchingRegistry()
        return Effect.gen(function*() {
          const text = yield* Effect.fork(Effect.flatMap(get("http://a.test/stall"), read))
          yield* settle
          expect(yield* Agent.stats).toMatchObject({ busy: 1 })
          server.sockets[0]!.send("lo, wor")
          expect(yield* Fiber.join(text)).toBe("hello, wor")
          yield* settle
          expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1 })
          expect(spy.registered()).toHaveLength(0)
        }).pipe(Effect.provide(agentOn(server)), Effect.ensuring(spy.restore))
      })
    }

    it.live("the response garbage collected unread", () => {
      const server = stallingServer()
      return Effect.gen(function*() {
        // Nothing keeps the response: only its status leaves this effect.
        expect(yield* Effect.map(get("http://a.test/stall"), (r) => r.status)).toBe(200)
        expect(yield* Agent.stats).toMatchObject({ busy: 1 })
        yield* collectGarbageUntilIdle
        expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
        expect(yield* next).toBe("ok")
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    })

    it.live("a response kept unread keeps its connection through garbage collection, and its body", () => {
      // What the registry watches lives as long as the response, not less.
      const server = stallingServer()
      return Effect.gen(function*() {
        const response = yield* get("http://a.test/stall")
        yield* settle
        for (let i = 0; i < 5; i++) {
          gc()
          yield* settle
        }
        expect(yield* Agent.stats).toMatchObject({ busy: 1 })
        server.sockets[0]!.send("lo, wor")
        expect(yield* response.text).toBe("hello, wor")
      }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
    })
  })
}

describe("Release: HttpClient.withScope frees a body still arriving", () => {
  const next = (client: HttpClient.HttpClient) =>
    Effect.flatMap(client.get("http://a.test/next"), (r) => r.text).pipe(Effect.timeout("1 second"))

  it.live("when its scope closes, the body unread", () => {
    const server = stallingServer()
    return Effect.gen(function*() {
      const client = AgentHttpClient.make(yield* Agent.Agent)
      yield* Effect.scoped(client.pipe(HttpClient.withScope).get("http://a.test/stall"))
      yield* settle
      expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
      expect(yield* next(client)).toBe("ok")
      expect(server.closedIds).toEqual([1])
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })

  it.live("when its scope closed before the response came", () => {
    const server = new MemoryServer((req) =>
      req.path === "/late-head"
        ? void 0 // answered by the test, once the scope is closed
        : req.socket.respond("ok")
    )
    return Effect.gen(function*() {
      const client = AgentHttpClient.make(yield* Agent.Agent)
      const scope = yield* Scope.make()
      const response = yield* Effect.fork(Scope.extend(client.pipe(HttpClient.withScope).get("http://a.test/late-head"), scope))
      yield* settle
      yield* Scope.close(scope, Exit.void)
      server.sockets[0]!.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      yield* settle
      expect((yield* Fiber.join(response)).status).toBe(200)
      expect(yield* Agent.stats).toMatchObject({ busy: 0, open: 0 })
      expect(yield* next(client)).toBe("ok")
    }).pipe(Effect.provide(agentOn(server, { maxConnectionsPerOrigin: 1 })))
  })
})

// A connection can be released from callbacks no fiber runs: the microtask
// that settles an exchange whose body completes after its head,
// HttpClient.withScope's abort listener, and the adapter's finalization
// registry. A connection that is not kept is closed there. A transport whose
// destroy throws (a buggy Connector; "Agent: shutdown" covers the same throw
// at shutdown) must not become an uncaught exception of the process, as the
// same throw inside an Effect is a defect of that Effect.

/** Runs `body` with the process's uncaught exceptions collected instead of reported. */
const collectingUncaught = <A, E>(body: (uncaught: Array<unknown>) => Effect.Effect<A, E>) => {
  const uncaught: Array<unknown> = []
  const onUncaught = (error: unknown) => void uncaught.push(error)
  return Effect.acquireUseRelease(
    Effect.sync(() => {
      // vitest's own listener would report it as an unhandled error: keep only ours while the test runs.
      const others = process.listeners("uncaughtException")
      process.removeAllListeners("uncaughtException")
      process.on("uncaughtException", onUncaught)
      return others
    }),
    () => body(uncaught),
    (others) =>
      Effect.sync(() => {
        process.off("uncaughtException", onUncaught)
        for (const listener of others) process.on("uncaughtException", listener)
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

describe("Release: a connection released outside any fiber, whose destroy throws", () => {
  it.live("by its last body byte (the microtask that settles the exchange)", () =>
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
        yield* collectGarbageUntilIdle
      })
    ))
})
