/**
 * The Agent over real sockets: node:http and raw node:net servers on
 * 127.0.0.1, counting the sockets they accept, so that reuse and the
 * connection caps are observed from the server's side, not from the Agent's
 * own statistics alone.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent, AgentError, Connector, Origin } from "@keepalive/agent"
import { NodeAgent, NodeConnector } from "@keepalive/node"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as http from "node:http"
import * as net from "node:net"
import { gc } from "../packages/agent/test/support/gc.js"

/** Every test is quick; a hang must fail it rather than the whole run. */
const timeout = 5_000

// --- servers ----------------------------------------------------------------

/** Sockets accepted by one or more servers: in total, open now, and most open at once. */
class SocketCount {
  accepted = 0
  open = 0
  maxOpen = 0

  watch(server: net.Server): void {
    server.on("connection", (socket: net.Socket) => {
      this.accepted++
      this.open++
      this.maxOpen = Math.max(this.maxOpen, this.open)
      let gone = false
      // The client's FIN ("end") arrives before a connection it opens right
      // after closing this one; waiting for "close" would overlap the two.
      const onGone = () => {
        if (gone) return
        gone = true
        this.open--
      }
      socket.once("end", onGone)
      socket.once("close", onGone)
    })
  }
}

interface Recorded {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

interface TestServer {
  /** `http://127.0.0.1:PORT` */
  readonly origin: string
  readonly sockets: SocketCount
  readonly requests: Array<Recorded>
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void

const listen = (server: net.Server): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
  })

/** A node:http server that reads each request body whole before calling `handler`. */
const nodeServer = (handler: Handler, sockets = new SocketCount()): Effect.Effect<TestServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const requests: Array<Recorded> = []
      const server = http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          const body = Buffer.concat(chunks)
          requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body })
          handler(req, res, body)
        })
      })
      sockets.watch(server)
      return Effect.map(listen(server), (port) => ({
        server,
        test: { origin: `http://127.0.0.1:${port}`, sockets, requests } satisfies TestServer
      }))
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ test }) => test))

/** What a raw server writes for one request, and whether it closes the socket after. */
interface RawReply {
  readonly bytes: string
  readonly end?: boolean
}

/**
 * A node:net server that answers bodiless requests with exactly the bytes
 * given (latin1), for responses node:http will not write. It keeps a socket
 * open and answers further requests on it unless told to end it.
 */
const rawServer = (reply: (request: { readonly method: string; readonly path: string }) => RawReply) =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const sockets = new SocketCount()
      const requests: Array<Recorded> = []
      const open = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        open.add(socket)
        socket.on("close", () => open.delete(socket))
        socket.on("error", () => {})
        let buffered = ""
        let ended = false
        socket.on("data", (chunk: Buffer) => {
          buffered += chunk.toString("latin1")
          let end: number
          while (!ended && (end = buffered.indexOf("\r\n\r\n")) >= 0) {
            const head = buffered.slice(0, end)
            buffered = buffered.slice(end + 4)
            const [method = "", path = ""] = head.split("\r\n")[0]!.split(" ")
            requests.push({ method, url: path, headers: {}, body: Buffer.alloc(0) })
            const answer = reply({ method, path })
            socket.write(Buffer.from(answer.bytes, "latin1"))
            if (answer.end === true) {
              ended = true
              socket.end()
            }
          }
        })
      })
      sockets.watch(server)
      return Effect.map(listen(server), (port) => ({
        server,
        open,
        test: { origin: `http://127.0.0.1:${port}`, sockets, requests } satisfies TestServer
      }))
    }),
    ({ open, server }) =>
      Effect.async<void>((resume) => {
        for (const socket of open) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ test }) => test))

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
const closedPort: Effect.Effect<number> = Effect.suspend(() => {
  const server = net.createServer()
  return Effect.flatMap(listen(server), (port) =>
    Effect.async<number>((resume) => {
      server.close(() => resume(Effect.succeed(port)))
    }))
})

// --- client helpers -----------------------------------------------------------

const encoder = new TextEncoder()

/** GETs through the Agent and reads the body as text. */
const getText = (url: string) =>
  Agent.request(HttpClientRequest.get(url)).pipe(Effect.flatMap((response) => response.text))

/** Sends a request through the Agent and returns status, headers and the body read via `text`. */
const send = (request: HttpClientRequest.HttpClientRequest) =>
  Agent.request(request).pipe(
    Effect.flatMap((response) =>
      Effect.map(response.text, (body) => ({ status: response.status, headers: response.headers, body }))
    )
  )

/** GETs through the Agent and reads the body via `arrayBuffer`. */
const getArrayBuffer = (url: string) =>
  Agent.request(HttpClientRequest.get(url)).pipe(
    Effect.flatMap((response) => response.arrayBuffer),
    Effect.map((body) => Buffer.from(body).toString("latin1"))
  )

/** GETs through the Agent and reads the body via `stream`. */
const getStreamed = (url: string) =>
  Agent.request(HttpClientRequest.get(url)).pipe(
    Effect.flatMap((response) => Stream.runCollect(response.stream)),
    Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks)).toString("latin1"))
  )

/** A response written in pieces with `res.write`, so node:http sends it chunked. */
const writeInPieces = (res: http.ServerResponse, pieces: ReadonlyArray<string>): void => {
  res.writeHead(200, { "content-type": "text/plain" })
  pieces.forEach((piece, i) => setTimeout(() => i === pieces.length - 1 ? res.end(piece) : res.write(piece), i * 5))
}

// --- tests --------------------------------------------------------------------

describe("connection reuse", () => {
  it.scopedLive("10 sequential requests ride one socket", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("ok"))
      for (let i = 0; i < 10; i++) expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ opened: 1, reused: 9, responses: 10 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("HEAD, 204 and 304 responses have no body and leave the connection reusable", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((req, res) => {
        if (req.method === "HEAD") {
          // A Content-Length on a HEAD response describes the GET body: nothing follows.
          res.writeHead(200, { "content-type": "text/plain", "content-length": "11" })
          res.end()
        } else if (req.url === "/204") {
          res.writeHead(204)
          res.end()
        } else if (req.url === "/304") {
          res.writeHead(304, { etag: "\"v1\"" })
          res.end()
        } else {
          res.end("hello world")
        }
      })
      const head = yield* send(HttpClientRequest.head(`${server.origin}/`))
      expect(head).toMatchObject({ status: 200, body: "" })
      expect(head.headers["content-length"]).toBe("11")
      expect(yield* send(HttpClientRequest.get(`${server.origin}/204`))).toMatchObject({ status: 204, body: "" })
      expect(yield* send(HttpClientRequest.get(`${server.origin}/304`))).toMatchObject({ status: 304, body: "" })
      expect(yield* getText(`${server.origin}/`)).toBe("hello world")
      expect(server.sockets.accepted).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ opened: 1, reused: 3, responses: 4 })
    }).pipe(Effect.provide(NodeAgent.layer({ bodyTimeout: "1 second" }))), timeout)

  it.scopedLive("a chunked body is read whole via text, arrayBuffer and stream, and the connection is reused", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => writeInPieces(res, ["alpha-", "beta-", "gamma"]))
      const head = yield* send(HttpClientRequest.get(`${server.origin}/`))
      expect(head.headers["transfer-encoding"]).toBe("chunked")
      expect(head.body).toBe("alpha-beta-gamma")
      expect(yield* getArrayBuffer(`${server.origin}/`)).toBe("alpha-beta-gamma")
      expect(yield* getStreamed(`${server.origin}/`)).toBe("alpha-beta-gamma")
      expect(server.sockets.accepted).toBe(1)
      expect(yield* Agent.stats).toMatchObject({ opened: 1, reused: 2, responses: 3 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("arrayBuffer holds exactly the body when it arrived in one packet with the head", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("just the body"))
      expect(yield* getArrayBuffer(`${server.origin}/`)).toBe("just the body")
      expect(yield* getArrayBuffer(`${server.origin}/`)).toBe("just the body")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a plain HTTP/1.1 response from the raw server is reused (control for the raw-server tests)", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => ({ bytes: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" }))
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("an HTTP/1.0 response with Connection: keep-alive is reused", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => ({
        bytes: "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"
      }))
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})

describe("backpressure", () => {
  it.scopedLive("a stream read slowly stops the socket being read: the server blocks, and every byte arrives in order", () =>
    Effect.gen(function*() {
      // Far more than the kernel's socket buffers hold, so a client that
      // keeps reading while its caller sleeps lets the server finish.
      const total = 48 * 1024 * 1024
      const piece = Buffer.alloc(64 * 1024)
      for (let i = 0; i < piece.length; i++) piece[i] = i % 251
      let written = 0
      const server = yield* nodeServer((_req, res) => {
        res.writeHead(200, { "content-type": "application/octet-stream" })
        const pump = () => {
          while (written < total) {
            written += piece.length
            if (!res.write(piece)) return void res.once("drain", pump)
          }
          res.end()
        }
        pump()
      })
      const response = yield* Agent.request(HttpClientRequest.get(`${server.origin}/`))
      let received = 0
      let intact = true
      let writtenWhenResumed = -1
      yield* Stream.runForEach(response.stream, (chunk) =>
        Effect.gen(function*() {
          for (let i = 0; i < chunk.length; i++) {
            if (chunk[i] !== ((received + i) % (64 * 1024)) % 251) intact = false
          }
          received += chunk.length
          if (writtenWhenResumed === -1) {
            yield* Effect.sleep("300 millis")
            writtenWhenResumed = written
          }
        }))
      expect({ received, intact }).toEqual({ received: total, intact: true })
      // Paused at 256 KiB buffered, the client left the rest in the kernel and the server waited.
      expect(writtenWhenResumed).toBeLessThan(total / 2)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})

describe("connections that must not be reused", () => {
  it.scopedLive("a close-delimited body is read whole and its connection is not reused", () =>
    Effect.gen(function*() {
      const body = "read until the server closes; ".repeat(200)
      const server = yield* rawServer(() => ({
        bytes: `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n${body}`,
        end: true
      }))
      expect(yield* send(HttpClientRequest.get(`${server.origin}/`))).toMatchObject({ status: 200, body })
      expect(yield* getStreamed(`${server.origin}/`)).toBe(body)
      expect(server.sockets.accepted).toBe(2)
      expect(yield* Agent.stats).toMatchObject({ opened: 2, reused: 0, responses: 2 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("Connection: close from the server is obeyed even when the server keeps the socket open", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => ({
        bytes: "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
      }))
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(2)
      expect(yield* Agent.stats).toMatchObject({ opened: 2, reused: 0 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("an HTTP/1.0 response without keep-alive is not reused", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => ({ bytes: "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok" }))
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(2)
      expect(yield* Agent.stats).toMatchObject({ opened: 2, reused: 0 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("requestScoped: a response released by its scope with its body unread closes its connection", () =>
    Effect.gen(function*() {
      const size = 1024 * 1024
      const server = yield* nodeServer((req, res) => {
        if (req.url !== "/big") return res.end("small")
        res.writeHead(200, { "content-length": String(size) })
        res.write(Buffer.alloc(64 * 1024, 97))
        // The rest comes later, so the body is certainly unfinished when released.
        setTimeout(() => res.end(Buffer.alloc(size - 64 * 1024, 98)), 50)
      })
      const status = yield* Agent.requestScoped(HttpClientRequest.get(`${server.origin}/big`)).pipe(
        Effect.map((response) => response.status),
        Effect.scoped
      )
      expect(status).toBe(200)
      expect(yield* getText(`${server.origin}/small`)).toBe("small")
      expect(server.sockets.accepted).toBe(2)
      // The first connection is gone, not still receiving the body nobody reads.
      expect(yield* Agent.stats).toMatchObject({ opened: 2, reused: 0, open: 1 })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("persist: false opens a new socket per request and leaves none open", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("ok"))
      for (let i = 0; i < 5; i++) expect(yield* getText(`${server.origin}/`)).toBe("ok")
      expect(server.sockets.accepted).toBe(5)
      expect(server.requests.map((r) => r.headers.connection)).toEqual(Array(5).fill("close"))
      expect(yield* Agent.stats).toMatchObject({ open: 0, opened: 5, reused: 0 })
    }).pipe(Effect.provide(NodeAgent.layer({ persist: false }))), timeout)
})

describe("shutdown", () => {
  it.scopedLive("closing the Agent's scope leaves no socket open server-side: idle ones close at once, one in flight after shutdownTimeout", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((req, res) => {
        if (req.url !== "/hang") res.end("ok")
      })
      const scope = yield* Scope.make()
      const agent = yield* Agent.make({ shutdownTimeout: "300 millis" }).pipe(
        Effect.provide(NodeConnector.layer),
        Scope.extend(scope)
      )
      yield* Effect.all([0, 1].map(() => agent.requestWith(HttpClientRequest.get(`${server.origin}/ok`), (r) => r.text)), {
        concurrency: 2
      })
      const hanging = yield* Effect.fork(Effect.flip(agent.requestWith(HttpClientRequest.get(`${server.origin}/hang`), (r) => r.text)))
      yield* Effect.sleep("50 millis")
      expect(server.sockets.open).toBe(2)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Effect.sleep("100 millis")
      // The idle connection is gone; the one in flight has its shutdownTimeout.
      expect(server.sockets.open).toBe(1)
      expect(closing.unsafePoll()).toBeNull()
      yield* Fiber.join(closing)
      expect(yield* Fiber.join(hanging)).toMatchObject({ reason: "Closed", requestSent: true })
      yield* Effect.sleep("50 millis")
      expect(server.sockets.open).toBe(0)
    }), timeout)
})

describe("the Node connector", () => {
  it.scopedLive("a connect interrupted leaves no socket open", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("ok"))
      const connector = yield* Connector.Connector
      const origin = Origin.fromUrl(new URL(server.origin))!
      for (let i = 0; i < 5; i++) {
        const scope = yield* Scope.make()
        const connecting = yield* Effect.fork(Scope.extend(connector.connect(origin, {}), scope))
        // Interrupted once the server has the connection (the client may or may not have seen "connect" yet).
        while (server.sockets.accepted <= i) yield* Effect.sleep("1 millis")
        yield* Fiber.interrupt(connecting)
        yield* Scope.close(scope, Exit.void)
      }
      // Every socket must have been closed again.
      yield* Effect.sleep("100 millis")
      expect(server.sockets.accepted).toBe(5)
      expect(server.sockets.open).toBe(0)
    }).pipe(Effect.provide(NodeConnector.layer)), timeout)

  // Node keeps a closed socket's handle, and with it the socket, reachable
  // until a full GC: a closed transport must not keep its connection's
  // objects reachable through the socket's listeners all that time.
  it.scopedLive("a closed transport lets go of its listener", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("ok"))
      const connector = yield* Connector.Connector
      const origin = Origin.fromUrl(new URL(server.origin))!
      const transport = yield* connector.connect(origin, {})
      let closed = false
      let listener: Connector.TransportListener | undefined = {
        onData: () => {},
        onEnd: () => {},
        onError: () => {},
        onClose: () => {
          closed = true
        },
        onDrain: () => {}
      }
      const held = new WeakRef(listener)
      transport.listen(listener)
      listener = undefined
      transport.destroy()
      while (!closed) yield* Effect.sleep("1 millis")
      gc()
      expect(held.deref()).toBeUndefined()
      // The transport (and its socket) is still held here.
      expect(transport.remoteAddress).toBe("127.0.0.1")
    }).pipe(Effect.provide(NodeConnector.layer)), timeout)

  // The connector registers the socket's finalizer before it makes the
  // socket. In a scope that is closed already the finalizer runs at once, and
  // a socket made after it would be owned by nothing: the connect must stop
  // instead.
  it.live("a connect in a scope closed already is interrupted and opens no socket", () =>
    Effect.gen(function*() {
      let accepted = 0
      const server = net.createServer((socket) => {
        accepted++
        socket.destroy()
      })
      const port = yield* listen(server)
      const connector = yield* Effect.provide(Connector.Connector, NodeConnector.layer)
      const scope = yield* Scope.make()
      yield* Scope.close(scope, Exit.void)
      const origin = Origin.make("http", "127.0.0.1", port)
      const exit = yield* Effect.exit(Scope.extend(connector.connect(origin, {}), scope))
      expect(Exit.isInterrupted(exit)).toBe(true)
      // Open ones would have been accepted by now.
      yield* Effect.sleep("100 millis")
      expect(accepted).toBe(0)
      yield* Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
    }))
})

// A response whose whole body came with its head gives its connection back
// before it is handed over. On a connection that is not kept (Connection:
// close here) that destroys the socket, and node's socket.remoteAddress is
// undefined once destroyed: the response must still tell the peer's address,
// as its bytes stay readable.
describe("remoteAddress of a response that came whole on a closing connection", () => {
  const closing = nodeServer((_req, res) => {
    res.setHeader("connection", "close")
    res.end("hi")
  })

  it.scopedLive("request: still the peer's address", () =>
    Effect.gen(function*() {
      const server = yield* closing
      const response = yield* Agent.request(HttpClientRequest.get(`${server.origin}/`))
      expect(yield* response.text).toBe("hi")
      expect(response.remoteAddress).toEqual(Option.some("127.0.0.1"))
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("requestWith: f still sees the peer's address", () =>
    Effect.gen(function*() {
      const server = yield* closing
      const address = yield* Agent.requestWith(
        HttpClientRequest.get(`${server.origin}/`),
        (response) => Effect.succeed(response.remoteAddress)
      )
      expect(address).toEqual(Option.some("127.0.0.1"))
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})

describe("connection caps", () => {
  const slow: Handler = (_req, res) => {
    setTimeout(() => res.end("slow"), 20)
  }
  const concurrently = (n: number, url: (i: number) => string) =>
    Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) => getText(url(i)), { concurrency: "unbounded" })

  it.scopedLive("20 concurrent requests to one origin use at most 2 sockets by default", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer(slow)
      const bodies = yield* concurrently(20, () => `${server.origin}/`)
      expect(bodies).toEqual(Array(20).fill("slow"))
      expect(server.sockets.maxOpen).toBe(2)
      expect(server.sockets.accepted).toBe(2)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("maxConnectionsPerOrigin: 5 lets 20 concurrent requests use 5 sockets", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer(slow)
      const bodies = yield* concurrently(20, () => `${server.origin}/`)
      expect(bodies).toEqual(Array(20).fill("slow"))
      expect(server.sockets.maxOpen).toBe(5)
      expect(server.sockets.accepted).toBe(5)
    }).pipe(Effect.provide(NodeAgent.layer({ maxConnectionsPerOrigin: 5 }))), timeout)

  it.scopedLive("maxConnections: 3 caps open sockets over 3 origins", () =>
    Effect.gen(function*() {
      const sockets = new SocketCount()
      const servers = [yield* nodeServer(slow, sockets), yield* nodeServer(slow, sockets), yield* nodeServer(slow, sockets)]
      const bodies = yield* concurrently(30, (i) => `${servers[i % 3]!.origin}/`)
      expect(bodies).toEqual(Array(30).fill("slow"))
      expect(sockets.maxOpen).toBe(3)
      // Each origin got a connection at some point, so the cap was shared, not starved.
      for (const server of servers) expect(server.requests.length).toBe(10)
      expect((yield* Agent.stats).open).toBeLessThanOrEqual(3)
    }).pipe(Effect.provide(NodeAgent.layer({ maxConnections: 3 }))), timeout)
})

describe("request bodies", () => {
  const echo = () => nodeServer((_req, res, body) => res.end(String(body.length)))

  it.scopedLive("a POST with a string body is sent with its Content-Length", () =>
    Effect.gen(function*() {
      const server = yield* echo()
      const response = yield* send(
        HttpClientRequest.post(`${server.origin}/`).pipe(HttpClientRequest.bodyText("hello, keepalive"))
      )
      expect(response.body).toBe("16")
      const [seen] = server.requests
      expect(seen!.method).toBe("POST")
      expect(seen!.headers["content-length"]).toBe("16")
      expect(seen!.headers["transfer-encoding"]).toBeUndefined()
      expect(seen!.headers["content-type"]).toMatch(/^text\/plain/)
      expect(seen!.body.toString()).toBe("hello, keepalive")
      expect(yield* getText(`${server.origin}/`)).toBe("0")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a POST with a Uint8Array body arrives byte for byte", () =>
    Effect.gen(function*() {
      const server = yield* echo()
      const bytes = new Uint8Array([0, 1, 2, 13, 10, 127, 128, 254, 255])
      const response = yield* send(
        HttpClientRequest.post(`${server.origin}/`).pipe(HttpClientRequest.bodyUint8Array(bytes))
      )
      expect(response.body).toBe("9")
      const [seen] = server.requests
      expect(seen!.headers["content-length"]).toBe("9")
      expect([...seen!.body]).toEqual([...bytes])
      expect(yield* getText(`${server.origin}/`)).toBe("0")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a POST with a Stream body of unknown length is sent chunked", () =>
    Effect.gen(function*() {
      const server = yield* echo()
      const pieces = ["one,", "", "two,", "three"].map((s) => encoder.encode(s))
      const response = yield* send(
        HttpClientRequest.post(`${server.origin}/`).pipe(HttpClientRequest.bodyStream(Stream.fromIterable(pieces)))
      )
      expect(response.body).toBe("13")
      const [seen] = server.requests
      expect(seen!.headers["transfer-encoding"]).toBe("chunked")
      expect(seen!.headers["content-length"]).toBeUndefined()
      expect(seen!.body.toString()).toBe("one,two,three")
      expect(yield* getText(`${server.origin}/`)).toBe("0")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a PUT with a Stream body of known length (256 KiB) is sent with Content-Length", () =>
    Effect.gen(function*() {
      const server = yield* echo()
      const piece = (i: number) => new Uint8Array(16 * 1024).fill(i)
      const total = 16 * 16 * 1024
      const response = yield* send(
        HttpClientRequest.put(`${server.origin}/`).pipe(
          HttpClientRequest.bodyStream(Stream.map(Stream.range(0, 15), piece), { contentLength: total })
        )
      )
      expect(response.body).toBe(String(total))
      const [seen] = server.requests
      expect(seen!.method).toBe("PUT")
      expect(seen!.headers["content-length"]).toBe(String(total))
      expect(seen!.headers["transfer-encoding"]).toBeUndefined()
      expect(seen!.body.length).toBe(total)
      for (let i = 0; i < 16; i++) expect(seen!.body[i * 16 * 1024]).toBe(i)
      expect(yield* getText(`${server.origin}/`)).toBe("0")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})

describe("the @effect/platform HttpClient over the Agent", () => {
  it.scopedLive("HttpClient.get + json works and reuses one socket", () =>
    Effect.gen(function*() {
      let n = 0
      const server = yield* nodeServer((_req, res) => {
        res.setHeader("content-type", "application/json")
        res.end(JSON.stringify({ n: ++n }))
      })
      const values: Array<unknown> = []
      for (let i = 0; i < 5; i++) {
        values.push(yield* HttpClient.get(`${server.origin}/`).pipe(Effect.flatMap((response) => response.json)))
      }
      expect(values).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }])
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("HttpClient.execute with the body read via stream releases the connection for reuse", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => writeInPieces(res, ["a", "b", "c"]))
      for (let i = 0; i < 3; i++) {
        const response = yield* HttpClient.execute(HttpClientRequest.get(`${server.origin}/`))
        const chunks = yield* Stream.runCollect(response.stream)
        expect(Buffer.concat(Chunk.toArray(chunks)).toString()).toBe("abc")
      }
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a body that came with its head is all there when streamed, through HttpClient or after arrayBuffer", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("small body"))
      const collect = (stream: Stream.Stream<Uint8Array, unknown>) =>
        Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toArray(chunks)).toString())
      for (let i = 0; i < 3; i++) {
        // The adapter keeps a body that arrived whole and frees the connection at once.
        const response = yield* HttpClient.get(`${server.origin}/`)
        expect(yield* collect(response.stream)).toBe("small body")
      }
      const again = yield* Agent.request(HttpClientRequest.get(`${server.origin}/`)).pipe(
        Effect.flatMap((response) =>
          Effect.zip(Effect.map(response.arrayBuffer, (b) => Buffer.from(b).toString()), collect(response.stream))
        )
      )
      expect(again).toEqual(["small body", "small body"])
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("an unread HttpClient response does not hold the only connection forever", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((req, res) => {
        if (req.url !== "/slow") return res.end("second")
        res.writeHead(200, { "content-length": "10" })
        res.write("first")
        setTimeout(() => res.end("-done"), 100)
      })
      const first = yield* HttpClient.get(`${server.origin}/slow`)
      expect(first.status).toBe(200)
      const second = yield* HttpClient.get(`${server.origin}/`).pipe(
        Effect.flatMap((response) => response.text),
        Effect.timeout("1 second"),
        Effect.either
      )
      // Read the first body only now, so that the Agent can shut down either way.
      expect(yield* first.text).toBe("first-done")
      expect(second).toEqual(Either.right("second"))
    }).pipe(Effect.provide(NodeAgent.layer({ maxConnectionsPerOrigin: 1 }))), timeout)
})

describe("Agent.requestString", () => {
  it.scopedLive("returns the body as text, whatever the status", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((req, res) => {
        res.statusCode = req.url === "/missing" ? 404 : 200
        res.end(req.url === "/missing" ? "not here" : "plain text ✓")
      })
      expect(yield* Agent.requestString(`${server.origin}/`)).toBe("plain text ✓")
      expect(yield* Agent.requestString(new URL(`${server.origin}/missing`))).toBe("not here")
      expect(server.sockets.accepted).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})

describe("errors", () => {
  it.scopedLive("a closed port fails with Connect via the Agent and RequestError(Transport) via HttpClient", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const url = `http://127.0.0.1:${port}/`
      const viaAgent = yield* Effect.flip(Agent.requestString(url))
      expect(AgentError.isAgentError(viaAgent)).toBe(true)
      expect(viaAgent).toMatchObject({ reason: "Connect", origin: `http://127.0.0.1:${port}` })
      const viaClient = yield* Effect.flip(HttpClient.get(url))
      expect(viaClient._tag).toBe("RequestError")
      expect(viaClient).toMatchObject({ reason: "Transport" })
      expect(viaClient.cause).toMatchObject({ _tag: "AgentError", reason: "Connect" })
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)

  it.scopedLive("a header value with CR LF is refused before any connection is opened", () =>
    Effect.gen(function*() {
      const server = yield* nodeServer((_req, res) => res.end("ok"))
      const request = HttpClientRequest.get(`${server.origin}/`).pipe(
        HttpClientRequest.setHeader("x-note", "a\r\nx-injected: 1")
      )
      const viaAgent = yield* Effect.flip(Agent.request(request))
      expect(viaAgent).toMatchObject({ _tag: "AgentError", reason: "InvalidRequest" })
      const viaClient = yield* Effect.flip(HttpClient.execute(request))
      expect(viaClient).toMatchObject({ _tag: "RequestError", reason: "Encode" })
      // Give a stray connection attempt time to reach the server.
      yield* Effect.sleep("50 millis")
      expect(server.sockets.accepted).toBe(0)
      expect((yield* Agent.stats).opened).toBe(0)
    }).pipe(Effect.provide(NodeAgent.layer())), timeout)
})
