/**
 * Reading a response body: whole (text, arrayBuffer) or streamed (stream,
 * forEachChunk), as it arrives, with backpressure on the transport; several
 * reads of one body at once; a read again after one was interrupted; and a
 * whole-body read after a stream took the bytes.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import { agentOn, settle, withAgent } from "./support/agent.js"
import { MemoryServer } from "./support/MemoryConnector.js"
import type { ServerSocket } from "./support/MemoryConnector.js"

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

/** Counts the Effect steps run under it (with `RuntimeFlags.OpSupervision` on). */
class StepCounter extends Supervisor.AbstractSupervisor<void> {
  readonly value = Effect.void
  steps = 0
  override onEffect(): void {
    this.steps++
  }
}

describe("Body: streamed as it arrives", () => {
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
      expect(yield* Agent.stats).toMatchObject({ idle: 1, responses: 1 })
    }).pipe(Effect.provide(agentOn(server)))
  })

  it.effect("a stream pull hands over every piece buffered since the last one in one Chunk; a body cut short fails the stream with the Agent's error", () => {
    const server = new MemoryServer((req) => req.socket.send("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n"))
    const text = new TextDecoder()
    const decoded = (chunk: Chunk.Chunk<Uint8Array>) => Chunk.toArray(chunk).map((piece) => text.decode(piece))
    return Effect.gen(function*() {
      const response = yield* Agent.requestScoped(HttpClientRequest.get("http://a.test/"))
      const pull = yield* Stream.toPull(response.stream)
      expect(decoded(yield* pull)).toEqual(["abcd"])
      // Two pieces arrive while nobody pulls: the next pull takes both, in order, without waiting.
      server.sockets[0]!.send("4\r\nefgh\r\n")
      server.sockets[0]!.send("4\r\nijkl\r\n")
      yield* settle
      expect(decoded(yield* pull)).toEqual(["efgh", "ijkl"])
      // A pull that waits gets the next piece when it comes.
      const waiting = yield* Effect.fork(pull)
      yield* settle
      expect(waiting.unsafePoll()).toBeNull()
      server.sockets[0]!.send("4\r\nmnop\r\n")
      expect(decoded(yield* Fiber.join(waiting))).toEqual(["mnop"])
      // The server closes mid-body: the pull fails with a ResponseError carrying the Agent's error.
      const failing = yield* Effect.fork(Effect.flip(pull))
      yield* settle
      server.sockets[0]!.end()
      const failure = yield* Fiber.join(failing)
      expect(failure._tag).toBe("Some")
      expect(failure._tag === "Some" && failure.value).toMatchObject({
        _tag: "ResponseError",
        reason: "Decode",
        cause: { _tag: "AgentError", reason: "Truncated" }
      })
      expect(yield* Agent.stats).toMatchObject({ busy: 0 })
    }).pipe(Effect.scoped, Effect.provide(agentOn(server)))
  })

  it.effect("a body read through response.stream costs running a Stream and little more than forEachChunk of the same pieces", () => {
    const server = new MemoryServer((req) => req.socket.send(chunkedHead))
    const countSteps = (read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<unknown, unknown>) =>
      Effect.gen(function*() {
        const counter = new StepCounter()
        const response = yield* Agent.requestScoped(HttpClientRequest.get("http://a.test/"))
        const reading = yield* Effect.fork(read(response).pipe(
          Effect.supervised(counter),
          Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
        ))
        // Three more pieces, each arriving while the reader waits; the body ends with the last.
        for (let i = 0; i < 2; i++) {
          yield* settle
          server.sockets[0]!.send(piece)
        }
        yield* settle
        server.sockets[0]!.send(piece + "0\r\n\r\n")
        yield* Fiber.join(reading)
        return counter.steps
      }).pipe(Effect.scoped)
    return Effect.gen(function*() {
      const viaForEachChunk = yield* countSteps((response) => Agent.forEachChunk(response, () => Effect.void))
      const viaStream = yield* countSteps((response) => Stream.runDrain(response.stream))
      // The fixed cost of running any Stream, measured the same way: a stream of one chunk, already here.
      const oneChunkStream = Effect.suspend(() => Stream.runDrain(Stream.succeed(new Uint8Array(1))))
      const runningAStream = yield* countSteps(() => oneChunkStream)
      expect(viaStream).toBeLessThanOrEqual(runningAStream + viaForEachChunk + 20)
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
      expect(yield* Agent.stats).toMatchObject({ busy: 0, idle: 1, responses: 1 })
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
})

describe("Body: reading again", () => {
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

  // A whole-body read interrupted midway may have taken some of the body's
  // chunks already. A read after it must never return the rest as if it were
  // the whole body.
  it.live("a whole-body read after one interrupted midway fails with Closed, never returning the body with its beginning missing", () => {
    let socket: ServerSocket | undefined
    const server = new MemoryServer((req) => {
      socket = req.socket
      req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
    })
    return withAgent(server, {}, Effect.gen(function*() {
      const error = yield* Effect.scoped(Effect.gen(function*() {
        const res = yield* Agent.request(HttpClientRequest.get("http://a.test/"))
        // The first read times out while waiting for the rest of the body.
        const first = yield* Effect.either(Effect.timeoutFail(res.text, { duration: "50 millis", onTimeout: () => "timeout" }))
        expect(first._tag).toBe("Left")
        socket!.send("world")
        yield* settle
        return yield* Effect.flip(res.text)
      }))
      // The interrupted read gave the response up: neither "world" alone nor the whole body.
      expect(error.cause).toMatchObject({ _tag: "AgentError", reason: "Closed" })
    }))
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
})

// Several reads may wait on one body still arriving (text and json, or a read
// raced with another): every one of them must resume, with all of the body.
describe("Body: two reads of one body still arriving", () => {
  const decoder = new TextDecoder()
  // /chunked sends its body in chunked pieces (kept as separate chunks); /sized has a content-length.
  const server = () =>
    new MemoryServer((req) =>
      req.socket.send(
        req.path === "/chunked"
          ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
          : "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
      )
    )
  const rest = (path: string) => path === "/chunked" ? "5\r\nworld\r\n0\r\n\r\n" : "world"

  for (const path of ["/sized", "/chunked"]) {
    it.live(`both complete with all of it, through HttpClient (${path})`, () => {
      const memory = server()
      return withAgent(memory, {}, Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const response = yield* client.get(`http://a.test${path}`)
        const reads = yield* Effect.fork(Effect.all([
          response.text,
          Effect.map(response.arrayBuffer, (b) => decoder.decode(b))
        ], { concurrency: 2 }))
        yield* settle
        memory.sockets[0]!.send(rest(path))
        yield* settle
        expect(reads.unsafePoll()).toMatchObject({ _tag: "Success", value: ["helloworld", "helloworld"] })
        // Read again afterwards: the same bytes.
        expect(yield* response.text).toBe("helloworld")
      }))
    })

    it.live(`both complete with all of it, through Agent.request (${path})`, () => {
      const memory = server()
      return withAgent(memory, {}, Effect.gen(function*() {
        const scope = yield* Scope.make()
        const response = yield* Scope.extend(Agent.request(HttpClientRequest.get(`http://a.test${path}`)), scope)
        const reads = yield* Effect.fork(Effect.all([response.text, response.text, response.text], { concurrency: 3 }))
        yield* settle
        memory.sockets[0]!.send(rest(path))
        yield* settle
        expect(reads.unsafePoll()).toMatchObject({ _tag: "Success", value: ["helloworld", "helloworld", "helloworld"] })
        yield* Scope.close(scope, Exit.void)
      }))
    })
  }
})
