import * as Cookies from "@effect/platform/Cookies"
import * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Headers from "@effect/platform/Headers"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as UrlParams from "@effect/platform/UrlParams"
import * as Channel from "effect/Channel"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Inspectable from "effect/Inspectable"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { AgentError } from "../AgentError.js"
import type { ResponseHead } from "../Http1.js"
import type { Connection } from "./connection.js"
import type { Exchange } from "./exchange.js"

const decoder = new TextDecoder()

/**
 * Runs `f` on each piece of a response's body (the Agent's responses pull
 * from their exchange; others go through `response.stream`). @internal
 */
export const forEachChunk = <E, R>(
  response: HttpClientResponse.HttpClientResponse,
  f: (chunk: Uint8Array) => Effect.Effect<void, E, R>
): Effect.Effect<void, AgentError | HttpClientError.ResponseError | E, R> =>
  response instanceof AgentResponse ? response.forEachChunk(f) : Stream.runForEach(response.stream, f)

/** UTF-8 text of a body. @internal */
export const decode = (bytes: Uint8Array): string => decoder.decode(bytes)

/** Joins chunks without copying when there is only one. @internal */
export const concat = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  if (chunks.length === 1) return chunks[0]!
  let length = 0
  for (const chunk of chunks) length += chunk.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    out.set(chunk, offset)
    offset += chunk.length
  }
  return out
}

const toArrayBuffer = (bytes: Uint8Array): ArrayBuffer =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    // Uint8Array's slice copies; a Node Buffer's would return a view of the whole socket read.
    : Uint8Array.prototype.slice.call(bytes).buffer as ArrayBuffer

const readEnded = (watcher: ReadWatcher): Effect.Effect<void> => Effect.sync(() => watcher.readEnded())

/**
 * Told when reads of a response's body start and end (see release.ts: when
 * the last read under way ends, the connection is given back).
 *
 * @internal
 */
export interface ReadWatcher {
  readStarted(): void
  readEnded(): void
}

/**
 * A response read from one of the Agent's connections. Its body is read from
 * its exchange on demand; when to give the connection back is release.ts's.
 *
 * @internal
 */
export class AgentResponse extends Inspectable.Class implements HttpClientResponse.HttpClientResponse {
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  readonly [HttpClientResponse.TypeId]: HttpClientResponse.TypeId = HttpClientResponse.TypeId
  #body: Effect.Effect<Uint8Array, AgentError> | undefined = undefined
  #bytes: Uint8Array | undefined = undefined
  #headers: Headers.Headers | undefined = undefined
  #cookies: Cookies.Cookies | undefined = undefined
  /**
   * Watches the reads of the body, for a response that frees its connection
   * when its reader is done (see release.ts); undefined for the others.
   */
  readWatcher: ReadWatcher | undefined = undefined
  /**
   * An object only this response refers to, which the finalization registry
   * watches in its place (see release.ts); undefined when nothing watches.
   */
  watchedToken: object | undefined = undefined

  constructor(
    readonly request: HttpClientRequest.HttpClientRequest,
    readonly head: ResponseHead,
    readonly connection: Connection,
    readonly exchange: Exchange
  ) {
    super()
  }

  get status(): number {
    return this.head.status
  }

  get headers(): Headers.Headers {
    // A copy (unsafeFromRecord sets the prototype), made without an object
    // literal: see ARCHITECTURE.md, "Performance rules".
    return this.#headers ??= Headers.unsafeFromRecord(Object.assign(Object.create(null), this.head.headers))
  }

  get cookies(): Cookies.Cookies {
    if (this.#cookies !== undefined) return this.#cookies
    const header = this.head.setCookie
    return this.#cookies = header.length === 0 ? Cookies.empty : Cookies.fromSetCookie(header)
  }

  get remoteAddress(): Option.Option<string> {
    return Option.fromNullable(this.connection.remoteAddress)
  }

  /**
   * The body, when all of it is here already (a small response usually
   * arrives with its head): then reading it needs no waiting. Taken once, then kept.
   */
  #bodyNow(): Uint8Array | undefined {
    if (this.#bytes !== undefined) return this.#bytes
    const chunks = this.exchange.takeCompleteBody()
    return chunks === undefined ? undefined : this.#bytes = concat(chunks)
  }

  /**
   * Takes the body from its exchange into the response when all of it is here
   * (one array, not copied when it came in one piece). Not for the bytes' sake:
   * the exchange keeps them after its connection moved on. For the readers':
   * `forEachChunk` and `stream` then hand it over at once instead of pulling.
   */
  keepBody(): void {
    this.#bodyNow()
  }

  /** The whole body as bytes, failing with the Agent's own error. Read once, then kept. */
  get bytes(): Effect.Effect<Uint8Array, AgentError> {
    const now = this.#bodyNow()
    if (now !== undefined) return Effect.succeed(now)
    return this.#body ??= this.#guard(Effect.suspend(() => {
      if (this.#bytes !== undefined) return Effect.succeed(this.#bytes)
      return Effect.map(this.exchange.readAll(), (chunks) => this.#bytes = concat(chunks))
    }))
  }


  /** A read of the body, told to the `readWatcher` when there is one. */
  #guard<A, E, R>(read: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    const watcher = this.readWatcher
    if (watcher === undefined) return read
    return Effect.suspend(() => {
      watcher.readStarted()
      return Effect.ensuring(read, readEnded(watcher))
    })
  }

  #decodeError(cause: unknown): HttpClientError.ResponseError {
    return new HttpClientError.ResponseError({ request: this.request, response: this, reason: "Decode", cause })
  }

  /** The body turned into `A`: at once when it is all here. */
  #readBody<A>(f: (bytes: Uint8Array) => A): Effect.Effect<A, HttpClientError.ResponseError> {
    const now = this.#bodyNow()
    if (now !== undefined) return Effect.succeed(f(now))
    return Effect.mapBoth(this.bytes, { onFailure: (e) => this.#decodeError(e), onSuccess: f })
  }

  get arrayBuffer(): Effect.Effect<ArrayBuffer, HttpClientError.ResponseError> {
    return this.#readBody(toArrayBuffer)
  }

  get text(): Effect.Effect<string, HttpClientError.ResponseError> {
    return this.#readBody(decode)
  }

  get json(): Effect.Effect<unknown, HttpClientError.ResponseError> {
    return Effect.flatMap(this.text, (text) =>
      Effect.try({
        try: () => text === "" ? null : JSON.parse(text) as unknown,
        catch: (cause) => this.#decodeError(cause)
      }))
  }

  get urlParamsBody(): Effect.Effect<UrlParams.UrlParams, HttpClientError.ResponseError> {
    return Effect.flatMap(this.text, (text) =>
      Effect.try({
        try: () => UrlParams.fromInput(new URLSearchParams(text)),
        catch: (cause) => this.#decodeError(cause)
      }))
  }

  get formData(): Effect.Effect<FormData, HttpClientError.ResponseError> {
    return Effect.flatMap(this.bytes.pipe(Effect.mapError((e) => this.#decodeError(e))), (bytes) =>
      Effect.tryPromise({
        try: () => new Response(bytes as Uint8Array<ArrayBuffer>, { headers: this.head.headers }).formData(),
        catch: (cause) => this.#decodeError(cause)
      }))
  }

  /**
   * The body as a backpressured stream of chunks; a body already taken whole
   * (read before, or kept when it arrived with its head) as one chunk.
   */
  get stream(): Stream.Stream<Uint8Array, HttpClientError.ResponseError> {
    return Stream.suspend(() => {
      const kept = this.#bytes
      if (kept === undefined) {
        const watcher = this.readWatcher
        if (watcher === undefined) return this.#pulled()
        watcher.readStarted()
        return Stream.ensuring(this.#pulled(), readEnded(watcher))
      }
      return kept.length === 0 ? Stream.empty : Stream.succeed(kept)
    })
  }

  /** Runs `f` on each piece of the body as it arrives; the next is read once `f` is done. */
  forEachChunk<E, R>(f: (chunk: Uint8Array) => Effect.Effect<void, E, R>): Effect.Effect<void, AgentError | E, R> {
    return Effect.suspend(() => {
      const kept = this.#bytes
      if (kept !== undefined) return kept.length === 0 ? Effect.void : f(kept)
      const loop: Effect.Effect<void, AgentError | E, R> = Effect.flatMap(
        this.exchange.pull(),
        (next) => {
          if (Option.isNone(next)) return Effect.void
          const chunks = next.value
          return Effect.zipRight(
            chunks.length === 1 ? f(chunks[0]!) : Effect.forEach(chunks, f, { discard: true }),
            loop
          )
        }
      )
      return this.#guard(loop)
    })
  }

  /**
   * The body pulled from its exchange, a pull each time the consumer asks for
   * more: every piece buffered since the last pull, as one Chunk, or a wait for
   * the next piece. A channel written directly rather than a repeated effect:
   * pieces already here, and the end, are handed over without running an effect.
   */
  #pulled(): Stream.Stream<Uint8Array, HttpClientError.ResponseError> {
    const exchange = this.exchange
    type Body = Channel.Channel<Chunk.Chunk<Uint8Array>, unknown, AgentError>
    const emit = (chunks: ReadonlyArray<Uint8Array>): Body =>
      Channel.flatMap(Channel.write(Chunk.unsafeFromArray(chunks)), () => loop)
    const wait: Body = Channel.flatMap(
      Channel.fromEffect(exchange.pull()),
      (next) => Option.isNone(next) ? Channel.void : emit(next.value)
    )
    const loop: Body = Channel.suspend(() => {
      exchange.streaming = true
      const next = exchange.takeNext()
      if (next === undefined) return wait
      if (next instanceof AgentError) return Channel.fail(next)
      return next.length === 0 ? Channel.void : emit(next)
    })
    return Stream.fromChannel(Channel.mapError(loop, (e) => this.#decodeError(e)))
  }

  override toJSON(): unknown {
    return { _id: "@keepalive/agent/AgentResponse", status: this.status, headers: this.head.headers }
  }
}
