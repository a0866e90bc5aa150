/**
 * The rules of an HTTP/1.1 head, apart from reading or writing its bytes (as
 * h11 keeps them in `_headers.py` and `_keep_alive`): the field grammar's
 * character classes, what `Connection`, `Keep-Alive`, `Transfer-Encoding`
 * and `Content-Length` say, how a response body is framed, and whether (for
 * how long, for how many more requests) its connection may be reused. Pure
 * functions of values: the response reader and the request writer apply
 * them, and the connection carries out their answers.
 */
import type * as Http1 from "../Http1.js"

const HTAB = 0x09
/** The bytes the grammar names that the reader and the writer use (`LF`, `CR`, `SP`). @internal */
export const LF = 0x0a
/** @internal */
export const CR = 0x0d
/** @internal */
export const SP = 0x20

// Character classes, looked up per byte instead of branching on ranges.
/** @internal */
export const TOKEN = 1
/** field-vchar / obs-text / SP / HTAB: what a field value, reason phrase or chunk extension may hold. @internal */
export const FIELD_CHAR = 2

/** The classes (`TOKEN`, `FIELD_CHAR`) of each byte, as bits. @internal */
export const CHAR_CLASS = new Uint8Array(256)

for (let c = 0; c < 256; c++) {
  if (c === HTAB || (c >= SP && c !== 0x7f)) CHAR_CLASS[c] |= FIELD_CHAR
}
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  CHAR_CLASS[c.charCodeAt(0)] |= TOKEN
}

/** True when `s` is a token (RFC 9110 §5.6.2): one or more tchar. @internal */
export const isTokenString = (s: string): boolean => {
  const n = s.length
  if (n === 0) return false
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (c > 0xff || (CHAR_CLASS[c]! & TOKEN) === 0) return false
  }
  return true
}

/** True for optional whitespace (SP or HTAB). @internal */
export const isOws = (c: number): boolean => c === SP || c === HTAB

/** `s` without leading and trailing optional whitespace. @internal */
export const trimOws = (s: string): string => {
  let start = 0
  let end = s.length
  while (start < end && isOws(s.charCodeAt(start))) start++
  while (end > start && isOws(s.charCodeAt(end - 1))) end--
  return start === 0 && end === s.length ? s : s.slice(start, end)
}

/** Parses a plain decimal (digits only) as a safe integer, or returns -1. @internal */
export const parseDecimal = (s: string): number => {
  const n = s.length
  if (n === 0) return -1
  let value = 0
  for (let i = 0; i < n; i++) {
    const d = s.charCodeAt(i) - 0x30
    if (d < 0 || d > 9) return -1
    value = value * 10 + d
    if (value > Number.MAX_SAFE_INTEGER) return -1
  }
  return value
}

// --- Connection ---------------------------------------------------------------

/** @internal */
export const CONNECTION_CLOSE = 1
/** @internal */
export const CONNECTION_KEEP_ALIVE = 2
/** @internal */
export const CONNECTION_UPGRADE = 4

/** The `close`, `keep-alive` and `upgrade` tokens present in a Connection field value, as bits. @internal */
export const connectionTokens = (value: string): number => {
  if (value === "keep-alive") return CONNECTION_KEEP_ALIVE
  if (value === "close") return CONNECTION_CLOSE
  let bits = 0
  for (const element of value.split(",")) {
    switch (trimOws(element).toLowerCase()) {
      case "close":
        bits |= CONNECTION_CLOSE
        break
      case "keep-alive":
        bits |= CONNECTION_KEEP_ALIVE
        break
      case "upgrade":
        bits |= CONNECTION_UPGRADE
        break
    }
  }
  return bits
}

// --- Content-Length and Transfer-Encoding: the body's framing -------------------

/**
 * The body length a response's Content-Length field gives, or why it is
 * refused; `previous` is the length an earlier Content-Length field of the
 * same head gave (-1: none).
 *
 * @internal
 */
export const contentLength = (value: string, previous: number): number | string => {
  // RFC 9112 §6.3 lets a recipient accept repeated identical lengths; refusing them closes a smuggling vector.
  if (previous !== -1) return "more than one Content-Length"
  const length = parseDecimal(value)
  return length === -1 ? "invalid Content-Length" : length
}

/** No Transfer-Encoding. @internal */
export const TE_NONE = 0
/** A Transfer-Encoding whose final coding is chunked. @internal */
export const TE_CHUNKED = 1
/** A Transfer-Encoding whose final coding is anything else: the body runs until the connection closes. @internal */
export const TE_OTHER = 2

/**
 * Classifies a Transfer-Encoding field value by its final coding (chunked, or
 * anything else: read until the connection closes), or explains why it is
 * unacceptable.
 *
 * @internal
 */
export const transferCoding = (value: string): number | string => {
  let codings = 0
  let chunked = false
  let chunkedSeen = false
  for (const element of value.split(",")) {
    const coding = trimOws(element)
    if (coding === "") continue // RFC 9110 §5.6.1: empty list elements do not count
    const semicolon = coding.indexOf(";")
    const name = (semicolon === -1 ? coding : trimOws(coding.slice(0, semicolon))).toLowerCase()
    if (!isTokenString(name)) return "invalid transfer coding in Transfer-Encoding"
    if (name === "chunked") {
      if (chunkedSeen) return "chunked applied more than once in Transfer-Encoding"
      if (semicolon !== -1) return "chunked transfer coding with parameters"
      chunkedSeen = true
    }
    // RFC 9112 §6.3: chunked that is not the final coding frames nothing; the body runs to the close.
    chunked = name === "chunked"
    codings++
  }
  if (codings === 0) return "empty Transfer-Encoding"
  return chunked ? TE_CHUNKED : TE_OTHER
}

/**
 * The transfer coding of a response head (`TE_NONE`, `TE_CHUNKED` or
 * `TE_OTHER`) from its Transfer-Encoding field value (undefined: none), or
 * why the head is refused: a Transfer-Encoding beside a Content-Length
 * (`contentLength` is -1 without one), or in an HTTP/1.0 response, is a
 * framing two readers could disagree on.
 *
 * @internal
 */
export const responseTransferCoding = (
  transferEncoding: string | undefined,
  contentLength: number,
  httpVersion: "1.0" | "1.1"
): number | string => {
  if (transferEncoding === undefined) return TE_NONE
  if (contentLength !== -1) return "both Content-Length and Transfer-Encoding"
  if (httpVersion === "1.0") return "Transfer-Encoding in an HTTP/1.0 response"
  return transferCoding(transferEncoding)
}

/**
 * How the body of a final response is delimited (RFC 9112 §6.3): none for a
 * HEAD request, a 204 or a 304; else by its transfer coding; else by its
 * Content-Length (-1: none); else by the connection's close.
 *
 * @internal
 */
export const bodyFraming = (
  headRequest: boolean,
  status: number,
  coding: number,
  contentLength: number
): Http1.BodyFraming => {
  if (headRequest || status === 204 || status === 304) return "none"
  if (coding !== TE_NONE) return coding === TE_CHUNKED ? "chunked" : "close"
  return contentLength !== -1 ? "length" : "close"
}

// --- what may be reused ---------------------------------------------------------

/**
 * Whether the connection may persist after a final response (RFC 9112 §9.3):
 * HTTP/1.1 without a `close` token in its Connection field value (undefined:
 * none), or HTTP/1.0 with a `keep-alive` token and no `close` token; never
 * when the body runs until the close.
 *
 * @internal
 */
export const persists = (
  httpVersion: "1.0" | "1.1",
  connection: string | undefined,
  framing: Http1.BodyFraming
): boolean => {
  if (framing === "close") return false
  const tokens = connection === undefined ? 0 : connectionTokens(connection)
  return (tokens & CONNECTION_CLOSE) === 0 && (httpVersion === "1.1" || (tokens & CONNECTION_KEEP_ALIVE) !== 0)
}

/**
 * The whole-number value of the first `name` parameter (lower case) of a
 * Keep-Alive field value; -1 when absent or not a whole number.
 */
const keepAliveParameter = (value: string, name: string): number => {
  const n = value.length
  for (let start = 0; start < n;) {
    // Jumping from "=" to "=" keeps this linear however many parameters there are.
    const eq = value.indexOf("=", start)
    if (eq === -1) return -1
    const param = value.slice(value.lastIndexOf(",", eq) + 1, eq)
    let comma = value.indexOf(",", eq)
    if (comma === -1) comma = n
    if (trimOws(param).toLowerCase() === name) return parseDecimal(trimOws(value.slice(eq + 1, comma)))
    start = comma + 1
  }
  return -1
}

/** Milliseconds from the `timeout` parameter of a Keep-Alive field value, when it is a whole number of seconds. @internal */
export const keepAliveTimeout = (value: string): number | undefined => {
  const seconds = keepAliveParameter(value, "timeout")
  return seconds === -1 || seconds > Number.MAX_SAFE_INTEGER / 1000 ? undefined : seconds * 1000
}

/** The `max` parameter of a Keep-Alive field value, when it is a whole number. @internal */
export const keepAliveMax = (value: string): number | undefined => {
  const max = keepAliveParameter(value, "max")
  return max === -1 ? undefined : max
}

/**
 * The responses a connection may carry in all, once a response announced
 * `Keep-Alive: max=N` (undefined: no hint): `allowed` so far, `served` the
 * responses it carried, this one included.
 *
 * `max=N` counts the requests the server still takes after this response
 * (apache's MaxKeepAliveRequests 5 says 5 on a connection's first response,
 * 1 on its fifth, and closes after the sixth): `served + N` in all. The
 * lowest total any response announced stands, so no request goes out that
 * the server said it would refuse.
 *
 * @internal
 */
export const responsesAllowed = (allowed: number, served: number, keepAliveMax: number | undefined): number =>
  keepAliveMax === undefined ? allowed : Math.min(allowed, served + keepAliveMax)

/**
 * How much sooner than a server's `Keep-Alive: timeout` a connection stops
 * being reused: a request sent just before the server's own timeout could
 * cross its close.
 *
 * @internal
 */
export const KEEP_ALIVE_TIMEOUT_MARGIN_MILLIS = 1000

/**
 * How long a connection may stay idle after a response: `configuredMillis`,
 * shortened by the response's `Keep-Alive: timeout` hint in milliseconds
 * (undefined: none), less the margin. Zero or less: the server closes before
 * a next request could safely go out.
 *
 * @internal
 */
export const idleTimeoutAfter = (configuredMillis: number, keepAliveTimeout: number | undefined): number =>
  keepAliveTimeout === undefined
    ? configuredMillis
    : Math.min(configuredMillis, keepAliveTimeout - KEEP_ALIVE_TIMEOUT_MARGIN_MILLIS)
