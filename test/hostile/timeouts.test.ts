/**
 * Servers that stall: at connect, before the response head, mid-body, or by
 * dripping bytes. Each ends in reason Timeout with the right phase, the client
 * closes the socket, and the Agent is left with nothing busy or waiting.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as net from "node:net"
import { Worker } from "node:worker_threads"
import { expectClean, expectFailure, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"
import type { Arrival } from "./server.js"

/** Writes `bytes` one at a time, `every` milliseconds apart, while the socket lives. */
const drip = (request: Arrival, bytes: string, every: number): void => {
  let i = 0
  const timer = setInterval(() => {
    if (i >= bytes.length || request.socket.closedBy !== undefined) return clearInterval(timer)
    request.socket.write(bytes[i++]!)
  }, every)
}

/**
 * A listening socket whose owner never accepts: a worker thread listens with
 * a backlog of 1 and then blocks its event loop. Once the kernel's accept
 * queue is full, further SYNs are dropped and a connect attempt just hangs,
 * which is what a black-holed address looks like, without leaving 127.0.0.1.
 */
const unacceptingListener = Effect.acquireRelease(
  Effect.async<{ readonly worker: Worker; readonly port: number; readonly release: Int32Array }>((resume) => {
    const release = new Int32Array(new SharedArrayBuffer(4))
    const worker = new Worker(
      `
      const { parentPort, workerData } = require("node:worker_threads")
      const net = require("node:net")
      const server = net.createServer(() => {})
      server.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
        parentPort.postMessage(server.address().port)
        Atomics.wait(workerData, 0, 0)
        server.close()
      })
      `,
      { eval: true, workerData: release }
    )
    worker.once("message", (port: number) => resume(Effect.succeed({ worker, port, release })))
  }),
  ({ release, worker }) =>
    Effect.promise(async () => {
      Atomics.store(release, 0, 1)
      Atomics.notify(release, 0)
      await worker.terminate()
    })
)

/** Connects raw sockets to `port` until one does not connect within 100 ms: the accept queue is then full. */
const fillAcceptQueue = (port: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const sockets: Array<net.Socket> = []
      for (let i = 0; i < 16; i++) {
        const socket = net.connect({ host: "127.0.0.1", port })
        socket.on("error", () => {})
        sockets.push(socket)
        const connected = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 100)
          socket.once("connect", () => {
            clearTimeout(timer)
            resolve(true)
          })
        })
        if (!connected) return { sockets, full: true }
      }
      return { sockets, full: false }
    }),
    ({ sockets }) => Effect.sync(() => sockets.forEach((s) => s.destroy()))
  )

describe("connect timeout", () => {
  it.scopedLive("a connect that hangs fails with Timeout (connect) and gives its permit back", () =>
    Effect.gen(function*() {
      const listener = yield* unacceptingListener
      const { full } = yield* fillAcceptQueue(listener.port)
      expect(full, "could not fill the accept queue of the unaccepting listener").toBe(true)
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        const started = performance.now()
        yield* expectFailure(send(HttpClientRequest.get(`http://127.0.0.1:${listener.port}/`)), "Timeout", "connect")
        expect(performance.now() - started).toBeLessThan(1000)
        yield* expectClean(0)
        // maxConnections is 1: the timed-out attempt must have released its permit.
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        yield* expectClean(1)
      }), { connectTimeout: "200 millis", maxConnections: 1 })
    }), timeout)
})

describe("headers timeout", () => {
  it.scopedLive("a server that reads the request and never answers: Timeout (headers), socket closed by the client", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path !== "/hang") request.socket.respond(request)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* send(HttpClientRequest.get(server.url("/warm")))
        const started = performance.now()
        yield* expectFailure(send(HttpClientRequest.get(server.url("/hang"))), "Timeout", "headers")
        const elapsed = performance.now() - started
        expect(elapsed).toBeGreaterThanOrEqual(250)
        expect(elapsed).toBeLessThan(1500)
        // A timed-out GET is not retried.
        expect(server.count("GET", "/hang")).toBe(1)
        const socket = server.sockets[0]!
        yield* Server.until(() => socket.closedBy !== undefined, () => "the hung socket is still open")
        expect(socket.closedBy).toBe("client")
        yield* expectClean(0)
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(server.sockets.length).toBe(2)
      }), { headersTimeout: "300 millis" })
    }), timeout)

  it.scopedLive("a head dripped slowly: headersTimeout bounds the whole head, not the gaps", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => drip(request, "HTTP/1.1 200 OK\r\nx-slow: " + "a".repeat(60) + "\r\ncontent-length: 0\r\n\r\n", 10)
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* expectFailure(send(HttpClientRequest.get(server.url("/slow-head"))), "Timeout", "headers")
        const socket = server.sockets[0]!
        yield* Server.until(() => socket.closedBy !== undefined, () => "the slow socket is still open")
        expect(socket.closedBy).toBe("client")
        yield* expectClean(0)
      }), { headersTimeout: "300 millis" })
    }), timeout)
})

describe("body timeout", () => {
  it.scopedLive("a server that sends the head and half the body, then stalls: Timeout (body)", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => request.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* expectFailure(send(HttpClientRequest.get(server.url("/half"))), "Timeout", "body")
        const socket = server.sockets[0]!
        yield* Server.until(() => socket.closedBy !== undefined, () => "the stalled socket is still open")
        expect(socket.closedBy).toBe("client")
        yield* expectClean(0)
      }), { bodyTimeout: "100 millis" })
    }), timeout)

  it.scopedLive("a chunked body that stalls mid-chunk: Timeout (body)", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => request.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\nhello")
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* expectFailure(send(HttpClientRequest.get(server.url("/half"))), "Timeout", "body")
        yield* Server.until(() => server.sockets[0]!.closedBy === "client", () => "the stalled socket is still open")
        yield* expectClean(0)
      }), { bodyTimeout: "100 millis" })
    }), timeout)

  it.scopedLive("a body dripped one byte every 200 ms with bodyTimeout 100 ms: Timeout (body)", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          request.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
          drip(request, "0123456789", 200)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        yield* expectFailure(send(HttpClientRequest.get(server.url("/drip"))), "Timeout", "body")
        const socket = server.sockets[0]!
        yield* Server.until(() => socket.closedBy !== undefined, () => "the dripping socket is still open")
        expect(socket.closedBy).toBe("client")
        yield* expectClean(0)
      }), { bodyTimeout: "100 millis" })
    }), timeout)

  it.scopedLive("control: a body dripped every 20 ms outlasts a 100 ms bodyTimeout, which bounds silence, not the body", () =>
    Effect.gen(function*() {
      const server = yield* Server.make({
        onRequest: (request) => {
          request.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n")
          drip(request, "abcdefghijklmno", 20)
        }
      })
      yield* withAgent(server, Effect.gen(function*() {
        const started = performance.now()
        expect((yield* send(HttpClientRequest.get(server.url("/drip")))).body).toBe("abcdefghijklmno")
        expect(performance.now() - started).toBeGreaterThan(200)
        yield* expectClean(1)
      }), { bodyTimeout: "100 millis" })
    }), timeout)
})
