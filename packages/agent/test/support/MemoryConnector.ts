import { AgentError } from "@keepalive/agent/AgentError"
import { Connector } from "@keepalive/agent/Connector"
import type { ConnectOptions, Transport, TransportListener } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A request as the in-memory server saw it. */
export interface SeenRequest {
  readonly method: string
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: string
  readonly socket: ServerSocket
}

/**
 * The server side of an in-memory connection. Bytes travel through
 * microtasks, never through timers, so TestClock governs only the Agent.
 */
export class ServerSocket implements Transport {
  listener: TransportListener | undefined = undefined
  destroyed = false
  paused = false
  received = ""
  #pending: Array<() => void> = []
  readonly remoteAddress = "memory"

  constructor(
    readonly origin: Origin,
    readonly id: number,
    readonly server: MemoryServer,
    /** What the Agent told the connector (the proxy, if any). */
    readonly options: ConnectOptions = {}
  ) {}

  // --- the client's view (Transport) ---
  listen(listener: TransportListener): void {
    this.listener = listener
    for (const run of this.#pending) run()
    this.#pending = []
  }
  write(chunk: Uint8Array): boolean {
    if (this.destroyed) return true
    this.received += decoder.decode(chunk)
    this.#parseRequests()
    return true
  }
  pause(): void {
    this.paused = true
  }
  resume(): void {
    this.paused = false
  }
  destroy(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.server.closedIds.push(this.id)
    queueMicrotask(() => this.listener?.onClose())
  }

  // --- the server's controls ---
  #deliver(run: (l: TransportListener) => void): void {
    queueMicrotask(() => {
      if (this.listener === undefined) this.#pending.push(() => run(this.listener!))
      else run(this.listener)
    })
  }
  /**
   * Sends raw response bytes. Like the Node connector, it only lends them:
   * once \`onData\` returns they are overwritten, so a client that keeps a
   * view instead of a copy reads garbage.
   */
  send(text: string): void {
    if (this.destroyed) return
    const bytes = encoder.encode(text)
    this.#deliver((l) => {
      l.onData(bytes)
      bytes.fill(0x23) // "#"
    })
  }
  /** Sends a complete 200 response with the body. */
  respond(body: string, headers: Record<string, string> = {}): void {
    let head = `HTTP/1.1 200 OK\r\ncontent-length: ${encoder.encode(body).length}\r\n`
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`
    this.send(head + "\r\n" + body)
  }
  /** FIN from the server, then close. */
  end(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.server.closedIds.push(this.id)
    this.#deliver((l) => {
      l.onEnd()
      l.onClose()
    })
  }

  #parseRequests(): void {
    for (;;) {
      const end = this.received.indexOf("\r\n\r\n")
      if (end < 0) return
      const lines = this.received.slice(0, end).split("\r\n")
      const [method, path] = lines[0]!.split(" ")
      const headers: Record<string, string> = {}
      for (const line of lines.slice(1)) {
        const i = line.indexOf(":")
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
      }
      const length = Number(headers["content-length"] ?? 0)
      if (this.received.length < end + 4 + length) return
      const body = this.received.slice(end + 4, end + 4 + length)
      this.received = this.received.slice(end + 4 + length)
      this.server.requests.push({ method: method!, path: path!, headers, body, socket: this })
      this.server.onRequest({ method: method!, path: path!, headers, body, socket: this })
    }
  }
}

/** An in-memory server: one handler for every origin, and what it saw. */
export class MemoryServer {
  readonly sockets: Array<ServerSocket> = []
  readonly requests: Array<SeenRequest> = []
  readonly closedIds: Array<number> = []
  refuse = false
  /** Connects never complete (until interrupted). */
  hang = false
  /** Connect attempts, and how many of them were interrupted while hanging. */
  connects = 0
  abortedConnects = 0
  /** I/O turns the Agent took before reusing an idle connection. */
  yields = 0
  /** Runs on every accepted connection before the client sees it. */
  onConnect: ((socket: ServerSocket) => void) | undefined = undefined

  constructor(public onRequest: (request: SeenRequest) => void) {}

  /** The first `destroy` of socket `id` throws, after destroying it (a buggy Connector). */
  destroyThrowsOnce(id: number): void {
    this.onConnect = (socket) => {
      if (socket.id !== id) return
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
  }

  /** Sockets not closed yet. */
  get openSockets(): Array<ServerSocket> {
    return this.sockets.filter((s) => !s.destroyed)
  }

  readonly layer: Layer.Layer<Connector> = Layer.succeed(Connector, {
    connect: (origin, options) =>
      Effect.suspend(() => {
        this.connects++
        if (this.hang) {
          return Effect.onInterrupt(Effect.never, () => Effect.sync(() => void this.abortedConnects++))
        }
        if (this.refuse) {
          return Effect.fail(new AgentError({ reason: "Connect", origin: origin.key, detail: "refused" }))
        }
        const socket = new ServerSocket(origin, this.sockets.length + 1, this, options)
        this.sockets.push(socket)
        this.onConnect?.(socket)
        return Effect.succeed(socket)
      }),
    yieldToIo: Effect.suspend(() => {
      this.yields++
      return Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    })
  })
}

/** A server that answers every request at once with its path. */
export const echoServer = (): MemoryServer => new MemoryServer((req) => req.socket.respond(`${req.method} ${req.path}`))

/**
 * A server that holds the requests `hold` picks (every one by default)
 * unanswered, in `held` in the order they arrived, for the test to answer;
 * the others it answers at once with `ok`.
 */
export const heldServer = (hold: (request: SeenRequest) => boolean = () => true) => {
  const held: Array<SeenRequest> = []
  const server = new MemoryServer((req) => hold(req) ? void held.push(req) : req.socket.respond("ok"))
  /** Answers every request held so far with `ok`. */
  const answerAll = (): void => {
    for (const req of held.splice(0)) req.socket.respond("ok")
  }
  return { server, held, answerAll }
}
