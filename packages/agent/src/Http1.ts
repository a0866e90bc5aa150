/**
 * The HTTP/1.1 codec: a sans-IO response parser and a request serialiser.
 *
 * Pure and synchronous: bytes in, handler calls out. The parser answers the one
 * question the connection layer cares about between exchanges, `canReuse`:
 * may this connection carry another request?
 *
 * @since 0.1.0
 */
import * as RequestWriter from "./internal/requestWriter.js"
import * as ResponseReader from "./internal/responseReader.js"
import * as Retry from "./internal/retry.js"

/**
 * Why a response could not be parsed.
 *
 * - `"Protocol"`: the bytes break RFC 9112 (or one of the stricter rules this codec keeps).
 * - `"HeadersTooLarge"`: the head (or head plus trailers) exceeds `maxHeaderSize` or `maxHeaderCount`.
 * - `"Truncated"`: the peer closed before the response was complete.
 * - `"Unsolicited"`: bytes arrived that no request asked for.
 *
 * @since 0.1.0
 * @category errors
 */
export type ParseErrorReason = "Protocol" | "HeadersTooLarge" | "Truncated" | "Unsolicited"

/**
 * A parse failure, returned (never thrown) by `execute` and `finish`.
 *
 * @since 0.1.0
 * @category errors
 */
export interface ParseError {
  readonly _tag: "ParseError"
  readonly reason: ParseErrorReason
  readonly detail: string
}

/**
 * How the body of a response is delimited: no body, `Content-Length`, chunked, or read until the peer closes.
 *
 * @since 0.1.0
 * @category models
 */
export type BodyFraming = "none" | "length" | "chunked" | "close"

/**
 * The status line and header section of a final (non-1xx) response.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResponseHead {
  readonly status: number
  /** The reason phrase, latin1-decoded; `""` when absent. */
  readonly statusText: string
  readonly httpVersion: "1.0" | "1.1"
  /**
   * A null-prototype record with lower-cased names and latin1-decoded values
   * (leading and trailing whitespace removed); repeated fields are joined with
   * `", "`, `set-cookie` included.
   */
  readonly headers: Record<string, string>
  /**
   * Each `Set-Cookie` field value on its own, in order (empty when there is none), because
   * the joined `headers["set-cookie"]` cannot be split back apart (RFC 9110 §5.3).
   */
  readonly setCookie: ReadonlyArray<string>
  /**
   * Whether the connection may persist after this response (RFC 9112 §9.3):
   * HTTP/1.1 without a `close` token in `Connection`, or HTTP/1.0 with a
   * `keep-alive` token and no `close` token; always false when framing is `"close"`.
   */
  readonly keepAlive: boolean
  /** Milliseconds from `Keep-Alive: timeout=N` (N whole seconds); undefined when absent or invalid. */
  readonly keepAliveTimeout: number | undefined
  /**
   * `Keep-Alive: max=N` (a whole number): the requests the server will still
   * take on this connection after this response (0: none); undefined when absent or invalid.
   */
  readonly keepAliveMax: number | undefined
  readonly framing: BodyFraming
  /** The body length when framing is `"length"`, otherwise undefined (a `Content-Length` on a HEAD, 204 or 304 response stays in `headers` only). */
  readonly contentLength: number | undefined
}

/**
 * Receives the parts of a response, synchronously from inside `execute` or `finish`.
 *
 * The parser is not re-entrant: a handler must not call `execute` or `finish`
 * (it may call `expect` from `onComplete`, though bytes left in the chunk are
 * still `"Unsolicited"`), and should not throw (a throw propagates out of `execute`, the rest of that
 * chunk is lost, and the connection should be discarded).
 *
 * @since 0.1.0
 * @category models
 */
export interface ResponseHandler {
  /** Called once per final response; interim 1xx responses are skipped. */
  onHead(head: ResponseHead): void
  /**
   * A piece of the (de-chunked) body: a view into the chunk given to `execute`,
   * never empty and never copied. Copy it if it must outlive the caller's buffer.
   */
  onBody(chunk: Uint8Array): void
  /**
   * The response is complete: `state` is already `"done"` and `canReuse` answers.
   * `trailers` is a null-prototype record like `headers`; without trailers it is a shared, frozen empty record.
   */
  onComplete(trailers: Record<string, string>): void
}

/**
 * Limits that bound the memory a response head may take.
 *
 * @since 0.1.0
 * @category models
 */
export interface ParserOptions {
  /** Bytes of the whole head, status line and CRLFs included, plus any trailer section; default 16384. */
  readonly maxHeaderSize?: number
  /** Header fields plus trailer fields; default 100. */
  readonly maxHeaderCount?: number
  /** Bytes of a chunk-size line after the size (the `;` extensions); default 1024. */
  readonly maxChunkExtensionSize?: number
}

/**
 * An incremental HTTP/1.1 response parser for one connection, reusable across responses via `expect`.
 *
 * @since 0.1.0
 * @category parsing
 */
export interface ResponseParser {
  /**
   * Arms the parser for the response to a request with this method (`"HEAD"` means no body).
   * Throws an `Error` unless `state` is `"idle"` or `"done"`: calling it at any other time is a bug.
   */
  expect(method: string): void
  /**
   * Feeds bytes and calls the handler synchronously. Returns undefined, or a
   * `ParseError` after which `state` is `"error"` and every later call returns that same error.
   * Empty lines (CRLF, at most 16 between two responses) are skipped before a
   * status line, after a complete response and while idle; any other byte that
   * arrives while no response is expected, or is left over in the chunk after
   * the response completed, is `"Unsolicited"`.
   */
  execute(chunk: Uint8Array): ParseError | undefined
  /**
   * Tells the parser the peer closed. A close-delimited body completes (`onComplete`
   * is called, undefined is returned); when idle or done it returns undefined;
   * anywhere else (mid-head, mid-body) it fails with `"Truncated"`.
   */
  finish(): ParseError | undefined
  /** `"head"` from `expect` until the final head is parsed, `"body"` until the body (and trailers) end. */
  readonly state: "idle" | "head" | "body" | "done" | "error"
  /**
   * True only when `state` is `"done"`, the response allows reuse (`keepAlive`,
   * and framing not `"close"`), and no CR after it still waits for its LF: so
   * it can turn false after `onComplete` answered, when a lone CR follows.
   */
  readonly canReuse: boolean
}

/**
 * The constructor of `ResponseParser`.
 *
 * @since 0.1.0
 * @category parsing
 */
export interface ResponseParserConstructor {
  new(handler: ResponseHandler, options?: ParserOptions): ResponseParser
}

/**
 * Creates a response parser that reports to `handler`; throws a `RangeError` when an option is not a positive integer.
 *
 * @example
 * ```ts
 * import * as Http1 from "@keepalive/agent/Http1"
 *
 * const parser = new Http1.ResponseParser({
 *   onHead: (head) => console.log(head.status),
 *   onBody: (chunk) => console.log(chunk.length),
 *   onComplete: () => console.log("reusable:", parser.canReuse)
 * })
 * parser.expect("GET")
 * const error = parser.execute(new TextEncoder().encode("HTTP/1.1 204 No Content\r\n\r\n"))
 * ```
 *
 * @since 0.1.0
 * @category parsing
 */
export const ResponseParser: ResponseParserConstructor = ResponseReader.ResponseParser

/**
 * How a request body is delimited on the wire: no body, a known length, or chunked.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestBodyFraming =
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Length"; readonly length: number }
  | { readonly _tag: "Chunked" }

/**
 * What `encodeRequestHead` needs to write a request head.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestHeadInput {
  readonly method: string
  /** The request-target in origin-form (path and query), or exactly `"*"` for OPTIONS. */
  readonly path: string
  /** The Host header value (e.g. `"example.com:8080"`), used unless `headers` has a `host`. */
  readonly host: string
  /** Header names are expected lower-case (as in `@effect/platform` Headers); they are written lower-cased. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: RequestBodyFraming
  /** False adds `connection: close` (replacing any caller `connection` header). */
  readonly persist: boolean
  /**
   * When set (`http://host:port`), the request-target is written in
   * absolute-form, this origin followed by `path` (alone for `OPTIONS *`,
   * as RFC 9112 §3.2.4 has it): a request forwarded by a proxy.
   */
  readonly absoluteOrigin?: string | undefined
}

/**
 * Why `encodeRequestHead` refused to write a request.
 *
 * @since 0.1.0
 * @category errors
 */
export interface RequestRefusal {
  readonly _tag: "RequestRefusal"
  readonly detail: string
}

/**
 * Serialises a request head (request line, headers, empty line) as latin1 bytes, or refuses a request that would be malformed or ambiguous on the wire.
 *
 * Written in order: the request line, `host`, the caller's headers (minus `host`
 * and `content-length`), `content-length` (for a `Length` body, and for an
 * `Empty` body of POST, PUT or PATCH) or `transfer-encoding: chunked`, then
 * `connection: close` when `persist` is false, else `connection: keep-alive`
 * unless the caller set a `connection` header (a server may send its
 * `Keep-Alive` hint only when asked).
 *
 * Refused: a method that is not a token; a path not starting with `/` (other
 * than `*` for OPTIONS) or holding SP, control characters or characters above
 * U+00FF; header names that are not tokens; header values (and `host`) with
 * control characters other than HTAB or characters above U+00FF; a caller
 * `transfer-encoding` or `upgrade` header; a caller `connection` header with an
 * `upgrade` token; a caller `content-length` that is not the plain decimal of the
 * body's length (0 for `Empty`, never allowed for `Chunked`); the same `host`,
 * `content-length` or `connection` name twice in different case; a `Length`
 * that is not a non-negative safe integer.
 *
 * @example
 * ```ts
 * import * as Http1 from "@keepalive/agent/Http1"
 *
 * const head = Http1.encodeRequestHead({
 *   method: "GET",
 *   path: "/search?q=effect",
 *   host: "example.com",
 *   headers: { accept: "application/json" },
 *   body: { _tag: "Empty" },
 *   persist: true
 * })
 * // "GET /search?q=effect HTTP/1.1\r\nhost: example.com\r\naccept: application/json\r\nconnection: keep-alive\r\n\r\n"
 * ```
 *
 * @since 0.1.0
 * @category serialization
 */
export const encodeRequestHead: (input: RequestHeadInput) => Uint8Array | RequestRefusal = RequestWriter.encodeRequestHead

/**
 * Frames one piece of a chunked body as a single new array (`hex-size CRLF data CRLF`), or returns an empty array for empty data, which must not be framed because a zero-size chunk ends the body.
 *
 * @since 0.1.0
 * @category serialization
 */
export const encodeChunk: (data: Uint8Array) => Uint8Array = RequestWriter.encodeChunk

/**
 * The bytes that end a chunked body without trailers, `0\r\n\r\n`; shared, so never mutate it.
 *
 * @since 0.1.0
 * @category serialization
 */
export const lastChunk: Uint8Array = RequestWriter.lastChunk

/**
 * Whether requests with this method may be retried (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE; method names are case-sensitive).
 *
 * Retry policy rather than codec: the Agent's own rule also lets a request
 * with an `Idempotency-Key` be retried, and never one whose body was a stream.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isIdempotentMethod: (method: string) => boolean = Retry.isIdempotentMethod
