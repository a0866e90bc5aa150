/**
 * The response reader: the byte state machine of HTTP/1.1 responses (h11's
 * `_readers.py` and its connection states), sans-IO. Bytes in, handler calls
 * out (head, body pieces, complete), errors returned, never thrown. What a
 * head means (its framing, whether its connection may be reused) it asks the
 * head rules.
 */
import type * as Http1 from "../Http1.js"
import {
  bodyFraming,
  CHAR_CLASS,
  contentLength,
  CR,
  FIELD_CHAR,
  isOws,
  keepAliveMax,
  keepAliveTimeout,
  LF,
  persists,
  responseTransferCoding,
  SP,
  TOKEN
} from "./headRules.js"

const COLON = 0x3a
const SEMICOLON = 0x3b

const HEX_VALUE = new Int8Array(256).fill(-1)
// Single-character strings, lower-cased, so that decoding a name or value is one table read per byte.
const LOWER_CHAR: Array<string> = []
const CHAR: Array<string> = []

for (let c = 0; c < 256; c++) {
  CHAR.push(String.fromCharCode(c))
  LOWER_CHAR.push(String.fromCharCode(c >= 0x41 && c <= 0x5a ? c | 0x20 : c))
}
for (let d = 0; d < 16; d++) {
  HEX_VALUE[d.toString(16).charCodeAt(0)] = d
  HEX_VALUE[d.toString(16).toUpperCase().charCodeAt(0)] = d
}

// A chunk size above this, times 16 plus a digit, may exceed Number.MAX_SAFE_INTEGER.
const MAX_CHUNK_SIZE_BEFORE_DIGIT = Math.floor(Number.MAX_SAFE_INTEGER / 16)

/** `bytes[start, end)` without allocating when that is all of `bytes`. */
const view = (bytes: Uint8Array, start: number, end: number): Uint8Array =>
  start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end)

const KNOWN_NAMES: Array<Array<string> | undefined> = []
for (const name of [
  "accept-ranges", "access-control-allow-origin", "age", "alt-svc", "cache-control", "connection",
  "content-disposition", "content-encoding", "content-language", "content-length", "content-location",
  "content-range", "content-security-policy", "content-type", "date", "etag", "expires", "keep-alive",
  "last-modified", "link", "location", "pragma", "retry-after", "server", "set-cookie",
  "strict-transport-security", "trailer", "transfer-encoding", "upgrade", "vary", "via", "www-authenticate",
  "x-content-type-options", "x-frame-options", "x-powered-by", "x-request-id"
]) {
  ;(KNOWN_NAMES[name.length] ??= []).push(name)
}

/** Field values a parser remembers (see `#lastValues`): enough for a server's usual response head. */
const MAX_REMEMBERED_VALUES = 32

/**
 * The last value of each field seen, by field name: what `ResponseParser`
 * takes instead of building a value again when the bytes match. Parsers may
 * share one (the Agent's connections do: a connection per request would
 * otherwise start empty each time); a value is only ever taken for the very
 * bytes it was built from, whichever server sent them.
 *
 * @internal
 */
export type RememberedValues = Map<string, string>

/** `ParserOptions`, and the remembered values to use (a parser's own by default). @internal */
export interface InternalParserOptions extends Http1.ParserOptions {
  readonly remembered?: RememberedValues
}

/** The lower-cased name of the token at `bytes[start, end)`; common names come from a table, unallocated. */
const fieldName = (bytes: Uint8Array, start: number, end: number): string => {
  const candidates = KNOWN_NAMES[end - start]
  if (candidates !== undefined) {
    next: for (let k = 0; k < candidates.length; k++) {
      const candidate = candidates[k]!
      // Token bytes OR 0x20 equal a lower-case letter, digit or "-" only when they are that character in either case.
      for (let i = start, j = 0; i < end; i++, j++) {
        if ((bytes[i]! | 0x20) !== candidate.charCodeAt(j)) continue next
      }
      return candidate
    }
  }
  let name = ""
  for (let i = start; i < end; i++) name += LOWER_CHAR[bytes[i]!]
  return name
}

/** Decodes bytes one-to-one into code points (latin1), the way HTTP field bytes map to strings. */
const latin1 = (bytes: Uint8Array, start: number, end: number): string => {
  if (end - start <= 64) {
    let s = ""
    for (let i = start; i < end; i++) s += CHAR[bytes[i]!]
    return s
  }
  let s = ""
  // Bounded slices keep fromCharCode.apply below engines' argument-count limits.
  for (let i = start; i < end; i += 8192) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, Math.min(end, i + 8192)) as unknown as Array<number>)
  }
  return s
}

// Parser states. "head" covers STATUS_LINE and FIELDS; "body" covers everything up to DONE.
const IDLE = 0
const STATUS_LINE = 1
const FIELDS = 2
const BODY_LENGTH = 3
const BODY_CLOSE = 4
const CHUNK_SIZE_START = 5
const CHUNK_SIZE = 6
const CHUNK_SIZE_BWS = 7
const CHUNK_EXTENSION = 8
const CHUNK_SIZE_LF = 9
const CHUNK_DATA = 10
const CHUNK_DATA_CR = 11
const CHUNK_DATA_LF = 12
const TRAILERS = 13
const DONE = 14
const ERROR = 15

const PUBLIC_STATE: ReadonlyArray<Http1.ResponseParser["state"]> = [
  "idle",
  "head",
  "head",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "body",
  "done",
  "error"
]

const EMPTY_FIELDS: Record<string, string> = Object.freeze(Object.create(null))
const NO_SET_COOKIE: ReadonlyArray<string> = Object.freeze([])

const UNSOLICITED_AFTER_RESPONSE = "bytes received after the response was complete"

/**
 * Empty lines (CRLF) skipped between responses: after a body, between an
 * interim and the final response, before a status line, or on an idle
 * connection (some servers send one after a body). More is not a server
 * being sloppy.
 */
const MAX_EMPTY_LINES = 16

const CR_ONLY = Uint8Array.of(CR)

/** True when `chunk` holds a byte other than CR or LF. */
const hasResponseByte = (chunk: Uint8Array): boolean => {
  for (let i = 0; i < chunk.length; i++) {
    const c = chunk[i]
    if (c !== CR && c !== LF) return true
  }
  return false
}

// Chunk extension grammar states (see CHUNK_EXTENSION).
const EXT_BEFORE_NAME = 0
const EXT_NAME = 1
const EXT_AFTER_NAME = 2
const EXT_BEFORE_VALUE = 3
const EXT_TOKEN_VALUE = 4
const EXT_QUOTED = 5
const EXT_QUOTED_PAIR = 6
const EXT_AFTER_QUOTE = 7
const EXT_AFTER_VALUE = 8
const EXT_INVALID = 9
const EQUALS = 0x3d
const DQUOTE = 0x22
const BACKSLASH = 0x5c

const parseError = (reason: Http1.ParseErrorReason, detail: string): Http1.ParseError => ({
  _tag: "ParseError",
  reason,
  detail
})

const positiveIntegerOption = (name: string, value: number | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`Http1.ResponseParser: ${name} must be a positive integer, got ${value}`)
  }
  return value
}

/** @internal */
export class ResponseParser implements Http1.ResponseParser {
  readonly #handler: Http1.ResponseHandler
  readonly #maxHeaderSize: number
  readonly #maxHeaderCount: number
  readonly #maxChunkExtensionSize: number

  #state = IDLE
  #error: Http1.ParseError | undefined = undefined
  #headRequest = false
  // Whether a byte of the response arrived since expect() (empty lines before it
  // aside), to tell a connection closed unused from a cut-off head.
  #received = false
  #reusable = false
  // Set by #complete so that execute can tell a response ended inside the current call.
  #completed = false
  // Empty lines skipped since the last response (see MAX_EMPTY_LINES), and a CR
  // received between responses whose LF has not come yet.
  #emptyLines = 0
  #strayCR = false

  // The head (or trailer) line being read: bytes of a line split across chunks wait in #pending.
  #pending: Uint8Array | undefined = undefined
  #pendingLength = 0
  // Bytes and fields of complete lines in this head, trailers included.
  #headBytes = 0
  #fieldCount = 0

  #status = 0
  #statusText = ""
  #httpVersion: "1.0" | "1.1" = "1.1"
  #headers: Record<string, string> = EMPTY_FIELDS
  #contentLength = -1
  #setCookie: Array<string> | undefined = undefined
  #trailers: Record<string, string> = EMPTY_FIELDS
  // The last value of each field seen (on this connection, or on every
  // connection sharing the map): a server sends the same values response
  // after response, and a value whose bytes match is taken from here instead
  // of being built again.
  readonly #lastValues: RememberedValues

  // Body bytes left: of the Content-Length body, or of the current chunk (also its size while it is read).
  #remaining = 0
  #extensionSize = 0
  // Where in a chunk extension's grammar the parser is (EXT_*).
  #extState = EXT_BEFORE_NAME

  constructor(handler: Http1.ResponseHandler, options?: InternalParserOptions) {
    this.#handler = handler
    this.#lastValues = options?.remembered ?? new Map<string, string>()
    this.#maxHeaderSize = positiveIntegerOption("maxHeaderSize", options?.maxHeaderSize, 16384)
    this.#maxHeaderCount = positiveIntegerOption("maxHeaderCount", options?.maxHeaderCount, 100)
    this.#maxChunkExtensionSize = positiveIntegerOption(
      "maxChunkExtensionSize",
      options?.maxChunkExtensionSize,
      1024
    )
  }

  get state(): Http1.ResponseParser["state"] {
    return PUBLIC_STATE[this.#state]!
  }

  /**
   * True once a byte of the response arrived since `expect()`, empty lines
   * before it aside: a connection closed before that never began answering.
   */
  get received(): boolean {
    return this.#received
  }

  get canReuse(): boolean {
    return this.#state === DONE && this.#reusable && !this.#strayCR
  }

  expect(method: string): void {
    if (this.#state !== IDLE && this.#state !== DONE) {
      throw new Error(`Http1.ResponseParser.expect: a response can only be expected when idle or done, not ${this.state}`)
    }
    this.#headRequest = method === "HEAD"
    this.#received = false
    this.#reusable = false
    this.#trailers = EMPTY_FIELDS
    this.#startHead()
    if (this.#strayCR) {
      // Its LF, still to come, ends an empty line before the status line.
      this.#strayCR = false
      this.#appendPending(CR_ONLY, 0, 1)
    }
  }

  execute(chunk: Uint8Array): Http1.ParseError | undefined {
    if (this.#state === ERROR) return this.#error
    const end = chunk.length
    if (end === 0) return undefined
    if (this.#state === IDLE || this.#state === DONE) return this.#betweenResponses(chunk, 0)
    this.#completed = false
    if (!this.#received) this.#received = hasResponseByte(chunk)
    let pos = 0
    while (pos < end) {
      // Empty lines may follow a complete response; once a handler armed the
      // next one from onComplete, nothing may (it would be read as that one).
      if (this.#completed) {
        return this.#state === DONE ? this.#betweenResponses(chunk, pos) : this.#fail("Unsolicited", UNSOLICITED_AFTER_RESPONSE)
      }
      switch (this.#state) {
        case STATUS_LINE:
        case FIELDS:
        case TRAILERS: {
          pos = this.#readLines(chunk, pos)
          if (pos === -1) return this.#error
          break
        }
        case BODY_LENGTH: {
          const available = end - pos
          if (available < this.#remaining) {
            this.#remaining -= available
            this.#handler.onBody(view(chunk, pos, end))
            return undefined
          }
          const stop = pos + this.#remaining
          this.#remaining = 0
          const body = view(chunk, pos, stop)
          pos = stop
          this.#handler.onBody(body)
          this.#complete(EMPTY_FIELDS)
          break
        }
        case BODY_CLOSE: {
          this.#handler.onBody(view(chunk, pos, end))
          return undefined
        }
        case CHUNK_SIZE_START: {
          const digit = HEX_VALUE[chunk[pos]!]!
          if (digit === -1) return this.#fail("Protocol", "invalid chunk size")
          this.#remaining = digit
          this.#state = CHUNK_SIZE
          pos++
          break
        }
        case CHUNK_SIZE: {
          let size = this.#remaining
          while (pos < end) {
            const c = chunk[pos]!
            const digit = HEX_VALUE[c]!
            if (digit !== -1) {
              if (size > MAX_CHUNK_SIZE_BEFORE_DIGIT) return this.#fail("Protocol", "chunk size too large")
              size = size * 16 + digit
              pos++
              continue
            }
            if (c === CR) this.#state = CHUNK_SIZE_LF
            else if (c === SEMICOLON) {
              this.#state = CHUNK_EXTENSION
              this.#extState = EXT_BEFORE_NAME
            } else if (isOws(c)) this.#state = CHUNK_SIZE_BWS
            else return this.#fail("Protocol", "invalid chunk size")
            // Whitespace and extensions count from their first byte, so neither can grow without bound.
            this.#extensionSize = 1
            pos++
            break
          }
          this.#remaining = size
          break
        }
        case CHUNK_SIZE_BWS: {
          // RFC 9112 §7.1.1 allows whitespace before a chunk extension, and nowhere else on the line.
          const c = chunk[pos]!
          if (c === SEMICOLON) {
            this.#state = CHUNK_EXTENSION
            this.#extState = EXT_BEFORE_NAME
          } else if (!isOws(c)) return this.#fail("Protocol", "whitespace after a chunk size")
          if (++this.#extensionSize > this.#maxChunkExtensionSize) return this.#fail("Protocol", "chunk extension too large")
          pos++
          break
        }
        case CHUNK_EXTENSION: {
          // RFC 9112 §7.1.1: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ),
          // entered just after a ";". Read, checked and dropped: no extension is understood.
          const max = this.#maxChunkExtensionSize
          let size = this.#extensionSize
          let ext = this.#extState
          while (pos < end) {
            const c = chunk[pos]!
            if (c === CR && (ext === EXT_NAME || ext === EXT_TOKEN_VALUE || ext === EXT_AFTER_QUOTE)) {
              this.#state = CHUNK_SIZE_LF
              pos++
              break
            }
            if (++size > max) return this.#fail("Protocol", "chunk extension too large")
            const token = (CHAR_CLASS[c]! & TOKEN) !== 0
            const ows = isOws(c)
            switch (ext) {
              case EXT_BEFORE_NAME:
                ext = token ? EXT_NAME : ows ? EXT_BEFORE_NAME : EXT_INVALID
                break
              case EXT_NAME:
                ext = token ? EXT_NAME : ows ? EXT_AFTER_NAME : c === EQUALS ? EXT_BEFORE_VALUE : c === SEMICOLON ? EXT_BEFORE_NAME : EXT_INVALID
                break
              case EXT_AFTER_NAME:
                ext = ows ? EXT_AFTER_NAME : c === EQUALS ? EXT_BEFORE_VALUE : c === SEMICOLON ? EXT_BEFORE_NAME : EXT_INVALID
                break
              case EXT_BEFORE_VALUE:
                ext = token ? EXT_TOKEN_VALUE : ows ? EXT_BEFORE_VALUE : c === DQUOTE ? EXT_QUOTED : EXT_INVALID
                break
              case EXT_TOKEN_VALUE:
                ext = token ? EXT_TOKEN_VALUE : ows ? EXT_AFTER_VALUE : c === SEMICOLON ? EXT_BEFORE_NAME : EXT_INVALID
                break
              case EXT_QUOTED:
                // qdtext: HTAB, SP, VCHAR except DQUOTE and backslash, obs-text; a CR or LF never.
                ext = c === DQUOTE
                  ? EXT_AFTER_QUOTE
                  : c === BACKSLASH
                  ? EXT_QUOTED_PAIR
                  : (CHAR_CLASS[c]! & FIELD_CHAR) !== 0
                  ? EXT_QUOTED
                  : EXT_INVALID
                break
              case EXT_QUOTED_PAIR:
                ext = (CHAR_CLASS[c]! & FIELD_CHAR) !== 0 ? EXT_QUOTED : EXT_INVALID
                break
              case EXT_AFTER_QUOTE:
              case EXT_AFTER_VALUE:
                ext = ows ? EXT_AFTER_VALUE : c === SEMICOLON ? EXT_BEFORE_NAME : EXT_INVALID
                break
            }
            if (ext === EXT_INVALID) return this.#fail("Protocol", "invalid chunk extension")
            pos++
          }
          this.#extensionSize = size
          this.#extState = ext
          break
        }
        case CHUNK_SIZE_LF: {
          if (chunk[pos] !== LF) return this.#fail("Protocol", "chunk size line not ended by CRLF")
          pos++
          if (this.#remaining === 0) {
            this.#state = TRAILERS
          } else {
            this.#state = CHUNK_DATA
          }
          break
        }
        case CHUNK_DATA: {
          const available = end - pos
          if (available <= this.#remaining) {
            this.#remaining -= available
            if (this.#remaining === 0) this.#state = CHUNK_DATA_CR
            this.#handler.onBody(view(chunk, pos, end))
            return undefined
          }
          const stop = pos + this.#remaining
          this.#remaining = 0
          this.#state = CHUNK_DATA_CR
          const body = view(chunk, pos, stop)
          pos = stop
          this.#handler.onBody(body)
          break
        }
        case CHUNK_DATA_CR: {
          if (chunk[pos] !== CR) return this.#fail("Protocol", "chunk data not followed by CRLF")
          this.#state = CHUNK_DATA_LF
          pos++
          break
        }
        case CHUNK_DATA_LF: {
          if (chunk[pos] !== LF) return this.#fail("Protocol", "chunk data not followed by CRLF")
          this.#state = CHUNK_SIZE_START
          pos++
          break
        }
        case DONE: {
          return this.#betweenResponses(chunk, pos)
        }
      }
    }
    return undefined
  }

  /**
   * Bytes with no response under way (idle, or after a complete one): empty
   * lines (CRLF, a bounded number) are skipped and leave the parser as it
   * was; anything else is a response nobody asked for, and fails it.
   */
  #betweenResponses(chunk: Uint8Array, pos: number): Http1.ParseError | undefined {
    const end = chunk.length
    for (; pos < end; pos++) {
      const c = chunk[pos]
      if (this.#strayCR) {
        if (c !== LF || ++this.#emptyLines > MAX_EMPTY_LINES) break
        this.#strayCR = false
      } else if (c !== CR) {
        break
      } else {
        this.#strayCR = true
      }
    }
    if (pos === end) return undefined
    this.#strayCR = false
    return this.#fail(
      "Unsolicited",
      this.#state === IDLE ? "bytes received while no response is expected" : UNSOLICITED_AFTER_RESPONSE
    )
  }

  finish(): Http1.ParseError | undefined {
    switch (this.#state) {
      case IDLE:
      case DONE:
        return undefined
      case ERROR:
        return this.#error
      case BODY_CLOSE:
        this.#complete(EMPTY_FIELDS)
        return undefined
      case STATUS_LINE:
      case FIELDS:
        return this.#fail(
          "Truncated",
          this.#received
            ? "connection closed in the response head"
            : "connection closed before any byte of the response"
        )
      case BODY_LENGTH:
        return this.#fail("Truncated", "connection closed before the end of the Content-Length body")
      default:
        return this.#fail("Truncated", "connection closed before the end of the chunked body")
    }
  }

  #fail(reason: Http1.ParseErrorReason, detail: string): Http1.ParseError {
    const error = parseError(reason, detail)
    this.#error = error
    this.#state = ERROR
    this.#reusable = false
    this.#pending = undefined
    this.#pendingLength = 0
    return error
  }

  #startHead(): void {
    this.#state = STATUS_LINE
    this.#pendingLength = 0
    this.#headBytes = 0
    this.#fieldCount = 0
    this.#headers = Object.create(null)
    this.#contentLength = -1
    this.#setCookie = undefined
  }

  #complete(trailers: Record<string, string>): void {
    this.#state = DONE
    this.#completed = true
    this.#emptyLines = 0
    this.#headers = EMPTY_FIELDS
    this.#handler.onComplete(trailers)
  }

  /**
   * Reads CRLF-terminated lines of a head or trailer section from `pos` until the section
   * ends or the chunk runs out; returns the position after the bytes used, or -1 on failure.
   */
  #readLines(chunk: Uint8Array, pos: number): number {
    const end = chunk.length
    const max = this.#maxHeaderSize
    while (pos < end) {
      const lf = chunk.indexOf(LF, pos)
      if (lf === -1) {
        if (this.#headBytes + this.#pendingLength + (end - pos) > max) {
          this.#failTooLarge()
          return -1
        }
        this.#appendPending(chunk, pos, end)
        return end
      }
      if (this.#headBytes + this.#pendingLength + (lf + 1 - pos) > max) {
        this.#failTooLarge()
        return -1
      }
      let bytes = chunk
      let start = pos
      let stop = lf
      if (this.#pendingLength > 0) {
        this.#appendPending(chunk, pos, lf + 1)
        bytes = this.#pending!
        start = 0
        stop = this.#pendingLength - 1
        this.#pendingLength = 0
      }
      this.#headBytes += stop + 1 - start
      pos = lf + 1
      if (stop === start || bytes[stop - 1] !== CR) {
        this.#fail("Protocol", "line not ended by CRLF")
        return -1
      }
      if (!this.#line(bytes, start, stop - 1)) return -1
      const state = this.#state
      if (this.#completed || (state !== STATUS_LINE && state !== FIELDS && state !== TRAILERS)) return pos
    }
    return pos
  }

  #failTooLarge(): void {
    this.#fail(
      "HeadersTooLarge",
      this.#state === TRAILERS
        ? `head and trailers exceed ${this.#maxHeaderSize} bytes`
        : `response head exceeds ${this.#maxHeaderSize} bytes`
    )
  }

  #appendPending(chunk: Uint8Array, start: number, end: number): void {
    const needed = this.#pendingLength + end - start
    let pending = this.#pending
    if (pending === undefined || pending.length < needed) {
      const grown = new Uint8Array(Math.max(needed, Math.min(this.#maxHeaderSize, pending === undefined ? 256 : pending.length * 2)))
      if (pending !== undefined) grown.set(pending.subarray(0, this.#pendingLength))
      this.#pending = pending = grown
    }
    pending.set(chunk.subarray(start, end), this.#pendingLength)
    this.#pendingLength = needed
  }

  /** Handles one line without its CRLF; false when it failed the parser. */
  #line(bytes: Uint8Array, start: number, end: number): boolean {
    switch (this.#state) {
      case STATUS_LINE:
        return this.#statusLine(bytes, start, end)
      case FIELDS:
        return start === end ? this.#endOfHead() : this.#field(bytes, start, end, this.#headers, true)
      default:
        if (start === end) {
          this.#complete(this.#trailers)
          return true
        }
        if (this.#trailers === EMPTY_FIELDS) this.#trailers = Object.create(null)
        return this.#field(bytes, start, end, this.#trailers, false)
    }
  }

  #statusLine(bytes: Uint8Array, start: number, end: number): boolean {
    if (start === end) {
      if (++this.#emptyLines <= MAX_EMPTY_LINES) return true
      this.#fail("Protocol", `more than ${MAX_EMPTY_LINES} empty lines before a status line`)
      return false
    }
    // HTTP-version SP 3DIGIT [ SP reason-phrase ]; the reason phrase may be empty or, with its SP, absent.
    if (
      end - start < 12 ||
      bytes[start] !== 0x48 || // H
      bytes[start + 1] !== 0x54 || // T
      bytes[start + 2] !== 0x54 || // T
      bytes[start + 3] !== 0x50 || // P
      bytes[start + 4] !== 0x2f || // /
      bytes[start + 5] !== 0x31 || // 1
      bytes[start + 6] !== 0x2e || // .
      (bytes[start + 7] !== 0x30 && bytes[start + 7] !== 0x31) ||
      bytes[start + 8] !== SP
    ) {
      this.#fail("Protocol", "invalid status line")
      return false
    }
    const d1 = bytes[start + 9]! - 0x30
    const d2 = bytes[start + 10]! - 0x30
    const d3 = bytes[start + 11]! - 0x30
    if (d1 < 1 || d1 > 9 || d2 < 0 || d2 > 9 || d3 < 0 || d3 > 9) {
      this.#fail("Protocol", "invalid status code")
      return false
    }
    let statusText = ""
    if (end - start > 12) {
      if (bytes[start + 12] !== SP) {
        this.#fail("Protocol", "invalid status code")
        return false
      }
      for (let i = start + 13; i < end; i++) {
        if ((CHAR_CLASS[bytes[i]!]! & FIELD_CHAR) === 0) {
          this.#fail("Protocol", "invalid character in reason phrase")
          return false
        }
      }
      statusText = latin1(bytes, start + 13, end)
    }
    this.#httpVersion = bytes[start + 7] === 0x31 ? "1.1" : "1.0"
    this.#status = d1 * 100 + d2 * 10 + d3
    this.#statusText = statusText
    this.#state = FIELDS
    return true
  }

  #field(bytes: Uint8Array, start: number, end: number, target: Record<string, string>, inHead: boolean): boolean {
    if (++this.#fieldCount > this.#maxHeaderCount) {
      this.#fail("HeadersTooLarge", `more than ${this.#maxHeaderCount} header fields`)
      return false
    }
    const first = bytes[start]!
    if (isOws(first)) {
      this.#fail("Protocol", "obsolete line folding in a header field")
      return false
    }
    let i = start
    while (i < end && (CHAR_CLASS[bytes[i]!]! & TOKEN) !== 0) i++
    if (i === end || bytes[i] !== COLON) {
      this.#fail(
        "Protocol",
        i < end && isOws(bytes[i]!) ? "whitespace between a field name and colon" : "invalid character in a field name"
      )
      return false
    }
    if (i === start) {
      this.#fail("Protocol", "empty field name")
      return false
    }
    const name = fieldName(bytes, start, i)
    i++
    while (i < end && isOws(bytes[i]!)) i++
    let valueEnd = end
    while (valueEnd > i && isOws(bytes[valueEnd - 1]!)) valueEnd--
    const last = this.#lastValues.get(name)
    let same = last !== undefined && last.length === valueEnd - i
    for (let j = i; j < valueEnd; j++) {
      const c = bytes[j]!
      if ((CHAR_CLASS[c]! & FIELD_CHAR) === 0) return this.#invalidValue()
      if (same && last!.charCodeAt(j - i) !== c) same = false
    }
    let value: string
    if (same) {
      value = last!
    } else {
      value = latin1(bytes, i, valueEnd)
      if (last !== undefined || this.#lastValues.size < MAX_REMEMBERED_VALUES) this.#lastValues.set(name, value)
    }
    // Trailers never affect framing, so only head fields get a closer look.
    if (inHead) {
      if (name === "set-cookie") {
        // Joining Set-Cookie values with ", " is lossy (Expires holds a comma), so they are also kept apart.
        if (this.#setCookie === undefined) this.#setCookie = [value]
        else this.#setCookie.push(value)
      } else if (name === "content-length") {
        const length = contentLength(value, this.#contentLength)
        if (typeof length === "string") {
          this.#fail("Protocol", length)
          return false
        }
        this.#contentLength = length
      }
    }
    const previous = target[name]
    target[name] = previous === undefined ? value : previous + ", " + value
    return true
  }

  #invalidValue(): false {
    this.#fail("Protocol", "invalid character in a field value")
    return false
  }

  #endOfHead(): boolean {
    const status = this.#status
    const headers = this.#headers
    const coding = responseTransferCoding(headers["transfer-encoding"], this.#contentLength, this.#httpVersion)
    if (typeof coding === "string") {
      this.#fail("Protocol", coding)
      return false
    }
    if (status < 200) {
      if (status === 101) {
        this.#fail("Protocol", "101 Switching Protocols without an upgrade request")
        return false
      }
      // An interim response: drop it and read the next head.
      this.#startHead()
      return true
    }
    const framing = bodyFraming(this.#headRequest, status, coding, this.#contentLength)
    const keepAlive = persists(this.#httpVersion, headers["connection"], framing)
    const keepAliveField = headers["keep-alive"]
    const head = new Head(
      status,
      this.#statusText,
      this.#httpVersion,
      headers,
      this.#setCookie ?? NO_SET_COOKIE,
      keepAlive,
      keepAliveField === undefined ? undefined : keepAliveTimeout(keepAliveField),
      keepAliveField === undefined ? undefined : keepAliveMax(keepAliveField),
      framing,
      framing === "length" ? this.#contentLength : undefined
    )
    this.#reusable = keepAlive
    switch (framing) {
      case "none":
        this.#state = BODY_LENGTH
        this.#remaining = 0
        break
      case "length":
        this.#state = BODY_LENGTH
        this.#remaining = this.#contentLength
        break
      case "chunked":
        this.#state = CHUNK_SIZE_START
        break
      case "close":
        this.#state = BODY_CLOSE
        break
    }
    this.#handler.onHead(head)
    if (this.#state === BODY_LENGTH && this.#remaining === 0) this.#complete(EMPTY_FIELDS)
    return true
  }
}

/**
 * A response head. An instance of a class rather than an object literal, as
 * every object made per request should be: V8 may decide that the objects of
 * an object or array literal are long-lived and allocate them in the old
 * generation ("allocation-site pretenuring"), which it decides on sight of a
 * few survivors and does not take back. Everything young such an object points
 * to then survives each scavenge and is promoted, the garbage collector's most
 * expensive case. Instances of classes are never pretenured.
 */
class Head implements Http1.ResponseHead {
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly httpVersion: "1.0" | "1.1",
    readonly headers: Record<string, string>,
    readonly setCookie: ReadonlyArray<string>,
    readonly keepAlive: boolean,
    readonly keepAliveTimeout: number | undefined,
    readonly keepAliveMax: number | undefined,
    readonly framing: Http1.BodyFraming,
    readonly contentLength: number | undefined
  ) {}
}
