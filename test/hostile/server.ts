/**
 * A scriptable node:net HTTP/1.1 server on 127.0.0.1 for the hostile-server
 * tests. It records every socket it accepts, every request head that arrives
 * (with its body once complete) and who closed each socket first, and lets a
 * test answer with well-formed responses, raw bytes, a FIN or an RST.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"

/** A request as the server saw it: the head at once, the body once complete. */
export interface Arrival {
  readonly method: string
  readonly path: string
  /** Lower-cased names; a repeated field keeps its last value. */
  readonly headers: Readonly<Record<string, string>>
  readonly socket: ServerSocket
  /** Position on its socket: 0 for the first request a socket carried. */
  readonly index: number
  body: Buffer
  bodyComplete: boolean
}

/** What a request handler may do; each hook runs synchronously on the socket's data event. */
export interface Script {
  /** A request head arrived (its body may not have). */
  readonly onHead?: (request: Arrival) => void
  /** The whole request arrived. Default: 200 with body `METHOD PATH`. */
  readonly onRequest?: (request: Arrival) => void
}

/** How a well-formed response is written. */
export interface Reply {
  readonly status?: number
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: string | Uint8Array
  /** Sends the body as chunks of at most this many bytes with Transfer-Encoding: chunked. */
  readonly chunked?: number
}

type BodyState =
  | { readonly _tag: "Head" }
  | { readonly _tag: "Length"; remaining: number }
  | { readonly _tag: "ChunkSize" }
  | { readonly _tag: "ChunkData"; remaining: number }
  | { readonly _tag: "ChunkDataEnd" }
  | { readonly _tag: "Trailers" }
  | { readonly _tag: "Ignore" }

/** The bytes of a well-formed response to `request` (no body for HEAD). */
export const render = (request: Arrival, reply: Reply = {}): Buffer => {
  const body = reply.body === undefined
    ? Buffer.from(`${request.method} ${request.path}`, "latin1")
    : typeof reply.body === "string"
    ? Buffer.from(reply.body, "latin1")
    : Buffer.from(reply.body)
  const status = reply.status ?? 200
  let head = `HTTP/1.1 ${status} ${status === 200 ? "OK" : "Whatever"}\r\n`
  for (const [name, value] of Object.entries(reply.headers ?? {})) head += `${name}: ${value}\r\n`
  if (reply.chunked === undefined) head += `content-length: ${body.length}\r\n`
  else head += "transfer-encoding: chunked\r\n"
  head += "\r\n"
  if (request.method === "HEAD") return Buffer.from(head, "latin1")
  if (reply.chunked === undefined) return Buffer.concat([Buffer.from(head, "latin1"), body])
  const parts: Array<Buffer> = [Buffer.from(head, "latin1")]
  for (let i = 0; i < body.length; i += reply.chunked) {
    const piece = body.subarray(i, i + reply.chunked)
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`, "latin1"), piece, Buffer.from("\r\n", "latin1"))
  }
  parts.push(Buffer.from("0\r\n\r\n", "latin1"))
  return Buffer.concat(parts)
}

/** One accepted socket. */
export class ServerSocket {
  readonly arrivals: Array<Arrival> = []
  bytesReceived = 0
  /** Who closed the socket first, once either did. */
  closedBy: "client" | "server" | undefined = undefined
  /** The socket is fully closed ('close' event). */
  closed = false
  #buffer: Buffer = Buffer.alloc(0)
  #state: BodyState = { _tag: "Head" }
  #current: Arrival | undefined = undefined

  constructor(readonly id: number, readonly socket: net.Socket, readonly owner: HostileServer) {
    socket.setNoDelay(true)
    socket.on("data", (chunk: Buffer) => this.#onData(chunk))
    // FIN or RST from the client before the server closed: the client closed it.
    socket.on("end", () => this.#closing("client"))
    socket.on("error", () => this.#closing("client"))
    socket.on("close", () => {
      this.#closing("client")
      this.closed = true
    })
  }

  #closing(by: "client" | "server"): void {
    if (this.closedBy === undefined) this.closedBy = by
  }

  get closedByClient(): boolean {
    return this.closedBy === "client"
  }

  /** Writes raw bytes (strings as latin1) unless the socket is gone. */
  write(bytes: string | Uint8Array): void {
    if (this.socket.destroyed || this.closedBy === "server") return
    this.socket.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes)
  }

  /** Writes a well-formed response to `request` (no body for HEAD). */
  respond(request: Arrival, reply: Reply = {}): void {
    this.write(render(request, reply))
  }

  /** Half-closes: sends a FIN, reads nothing more as requests. */
  fin(): void {
    this.#closing("server")
    this.#state = { _tag: "Ignore" }
    this.socket.end()
  }

  /** Aborts with an RST. */
  reset(): void {
    this.#closing("server")
    this.#state = { _tag: "Ignore" }
    this.socket.resetAndDestroy()
  }

  /** Stops reading from the socket (the kernel buffers fill up, the peer's writes stall). */
  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  #onData(chunk: Buffer): void {
    this.bytesReceived += chunk.length
    if (this.#state._tag === "Ignore") return
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk])
    this.#parse()
  }

  #parse(): void {
    for (;;) {
      const state = this.#state
      switch (state._tag) {
        case "Ignore":
          this.#buffer = Buffer.alloc(0)
          return
        case "Head": {
          const end = this.#buffer.indexOf("\r\n\r\n")
          if (end === -1) return
          const lines = this.#buffer.subarray(0, end).toString("latin1").split("\r\n")
          this.#buffer = this.#buffer.subarray(end + 4)
          const [method = "", path = ""] = lines[0]!.split(" ")
          const headers: Record<string, string> = {}
          for (const line of lines.slice(1)) {
            const colon = line.indexOf(":")
            headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
          }
          const arrival: Arrival = {
            method,
            path,
            headers,
            socket: this,
            index: this.arrivals.length,
            body: Buffer.alloc(0),
            bodyComplete: false
          }
          this.arrivals.push(arrival)
          this.owner.arrivals.push(arrival)
          this.#current = arrival
          if (headers["transfer-encoding"] !== undefined) this.#state = { _tag: "ChunkSize" }
          else this.#state = { _tag: "Length", remaining: Number(headers["content-length"] ?? 0) }
          this.owner.script.onHead?.(arrival)
          break
        }
        case "Length": {
          const take = Math.min(state.remaining, this.#buffer.length)
          this.#body(this.#buffer.subarray(0, take))
          this.#buffer = this.#buffer.subarray(take)
          state.remaining -= take
          if (state.remaining > 0) return
          this.#requestDone()
          break
        }
        case "ChunkSize": {
          const eol = this.#buffer.indexOf("\r\n")
          if (eol === -1) return
          const size = parseInt(this.#buffer.subarray(0, eol).toString("latin1"), 16)
          this.#buffer = this.#buffer.subarray(eol + 2)
          this.#state = size === 0 ? { _tag: "Trailers" } : { _tag: "ChunkData", remaining: size }
          break
        }
        case "ChunkData": {
          const take = Math.min(state.remaining, this.#buffer.length)
          this.#body(this.#buffer.subarray(0, take))
          this.#buffer = this.#buffer.subarray(take)
          state.remaining -= take
          if (state.remaining > 0) return
          this.#state = { _tag: "ChunkDataEnd" }
          break
        }
        case "ChunkDataEnd": {
          if (this.#buffer.length < 2) return
          this.#buffer = this.#buffer.subarray(2)
          this.#state = { _tag: "ChunkSize" }
          break
        }
        case "Trailers": {
          const eol = this.#buffer.indexOf("\r\n")
          if (eol === -1) return
          this.#buffer = this.#buffer.subarray(eol + 2)
          if (eol === 0) this.#requestDone()
          break
        }
      }
    }
  }

  #body(bytes: Buffer): void {
    const arrival = this.#current!
    // Large streamed bodies are counted, not kept.
    if (arrival.body.length < 1024 * 1024) arrival.body = Buffer.concat([arrival.body, bytes])
  }

  #requestDone(): void {
    const arrival = this.#current!
    arrival.bodyComplete = true
    this.#state = { _tag: "Head" }
    this.#current = undefined
    const onRequest = this.owner.script.onRequest
    if (onRequest !== undefined) onRequest(arrival)
    else this.respond(arrival)
  }
}

/** The server and what it saw. */
export class HostileServer {
  readonly sockets: Array<ServerSocket> = []
  readonly arrivals: Array<Arrival> = []

  constructor(readonly port: number, public script: Script) {}

  get origin(): string {
    return `http://127.0.0.1:${this.port}`
  }

  url(path: string): string {
    return `${this.origin}${path}`
  }

  /** How many request heads arrived with this method and path. */
  count(method: string, path: string): number {
    return this.arrivals.filter((a) => a.method === method && a.path === path).length
  }

  get openSockets(): Array<ServerSocket> {
    return this.sockets.filter((s) => !s.closed)
  }

  /** Waits until every accepted socket is fully closed. */
  get allClosed(): Effect.Effect<void> {
    return until(() => this.sockets.every((s) => s.closed), () =>
      `sockets still open on the server: ${this.openSockets.map((s) => s.id).join(", ")}`)
  }
}

/**
 * Polls `done` every few milliseconds; dies with `explain()` once `millis`
 * passed without it holding.
 */
export const until = (done: () => boolean, explain: () => string, millis = 2000): Effect.Effect<void> =>
  Effect.suspend(() => {
    const deadline = performance.now() + millis
    const poll: Effect.Effect<void> = Effect.suspend(() => {
      if (done()) return Effect.void
      if (performance.now() > deadline) return Effect.die(new Error(`timed out waiting: ${explain()}`))
      return Effect.zipRight(Effect.sleep("5 millis"), poll)
    })
    return poll
  })

/** Starts a server in the scope; closing the scope destroys its sockets and stops it. */
export const make = (script: Script = {}): Effect.Effect<HostileServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; hostile: HostileServer }>((resume) => {
      let hostile: HostileServer | undefined
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        hostile!.sockets.push(new ServerSocket(hostile!.sockets.length + 1, socket, hostile!))
      })
      server.listen(0, "127.0.0.1", () => {
        hostile = new HostileServer((server.address() as net.AddressInfo).port, script)
        resume(Effect.succeed({ server, hostile }))
      })
    }),
    ({ hostile, server }) =>
      Effect.async<void>((resume) => {
        for (const s of hostile.sockets) s.socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ hostile }) => hostile))
