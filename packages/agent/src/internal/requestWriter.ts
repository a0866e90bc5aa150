/**
 * The request writer: serialises request heads and chunked body framing
 * (h11's `_writers.py`), refusing a request that would be malformed or
 * ambiguous on the wire. Pure: strings in, bytes out.
 */
import type * as Http1 from "../Http1.js"
import { CHAR_CLASS, CONNECTION_UPGRADE, connectionTokens, CR, FIELD_CHAR, isTokenString, LF, parseDecimal, SP } from "./headRules.js"

const refusal = (detail: string): Http1.RequestRefusal => ({ _tag: "RequestRefusal", detail })

// Bits returned by scanFieldValue.
const VALUE_INVALID = 1
const VALUE_NOT_ASCII = 2

/** Checks a header value, host or path character by character: controls other than HTAB and anything above U+00FF are invalid. */
const scanFieldValue = (s: string): number => {
  let bits = 0
  for (let i = 0, n = s.length; i < n; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) {
      if ((CHAR_CLASS[c]! & FIELD_CHAR) === 0) return VALUE_INVALID
    } else if (c > 0xff) {
      return VALUE_INVALID
    } else {
      bits = VALUE_NOT_ASCII
    }
  }
  return bits
}

const encoder = new TextEncoder()

const encodeLatin1 = (s: string): Uint8Array => {
  const n = s.length
  const bytes = new Uint8Array(n)
  for (let i = 0; i < n; i++) bytes[i] = s.charCodeAt(i)
  return bytes
}

/** @internal */
export const encodeRequestHead = (input: Http1.RequestHeadInput): Uint8Array | Http1.RequestRefusal => {
  const { body, headers, method, path, persist } = input
  if (!isTokenString(method)) return refusal(`invalid method ${JSON.stringify(method)}`)
  let ascii = true
  if (!(path === "*" && method === "OPTIONS")) {
    if (path.charCodeAt(0) !== 0x2f) return refusal(`request target must start with "/": ${JSON.stringify(path)}`)
    for (let i = 0, n = path.length; i < n; i++) {
      const c = path.charCodeAt(i)
      if (c <= SP || c === 0x7f || c > 0xff) return refusal(`invalid character in request target ${JSON.stringify(path)}`)
      if (c > 0x7f) ascii = false
    }
  }
  let bodyLength: number
  switch (body._tag) {
    case "Empty":
      bodyLength = 0
      break
    case "Length":
      if (!Number.isSafeInteger(body.length) || body.length < 0) {
        return refusal(`invalid body length ${body.length}`)
      }
      bodyLength = body.length
      break
    case "Chunked":
      bodyLength = -1
      break
  }
  let host = input.host
  let seen = 0 // bits: 1 host, 2 content-length, 4 connection
  let fields = ""
  for (const name of Object.keys(headers)) {
    const value = headers[name]!
    if (!isTokenString(name)) return refusal(`invalid header name ${JSON.stringify(name)}`)
    const scan = scanFieldValue(value)
    if (scan === VALUE_INVALID) return refusal(`invalid character in the value of header ${name}`)
    if (scan === VALUE_NOT_ASCII) ascii = false
    const lower = name.toLowerCase()
    switch (lower) {
      case "host":
        if ((seen & 1) !== 0) return refusal("more than one host header")
        seen |= 1
        host = value
        continue
      case "content-length":
        if ((seen & 2) !== 0) return refusal("more than one content-length header")
        seen |= 2
        if (bodyLength === -1) return refusal("content-length set on a chunked request")
        if (parseDecimal(value) !== bodyLength) {
          return refusal(`content-length ${JSON.stringify(value)} does not match the body length ${bodyLength}`)
        }
        continue
      case "transfer-encoding":
        return refusal("transfer-encoding is set by the codec from the body framing")
      case "upgrade":
        return refusal("protocol upgrades are not supported")
      case "connection":
        if ((seen & 4) !== 0) return refusal("more than one connection header")
        seen |= 4
        if ((connectionTokens(value) & CONNECTION_UPGRADE) !== 0) return refusal("protocol upgrades are not supported")
        if (!persist) continue
        break
    }
    fields += lower + ": " + value + "\r\n"
  }
  if ((seen & 1) === 0) {
    const scan = scanFieldValue(host)
    if (scan === VALUE_INVALID) return refusal(`invalid character in host ${JSON.stringify(host)}`)
    if (scan === VALUE_NOT_ASCII) ascii = false
  }
  const absolute = input.absoluteOrigin
  if (absolute !== undefined && !isAbsoluteOrigin(absolute)) return refusal(`invalid absolute-form origin ${JSON.stringify(absolute)}`)
  // OPTIONS * forwarded: the absolute-form with an empty path (RFC 9112 §3.2.4); the last proxy sends `*`.
  const target = absolute === undefined ? path : path === "*" ? absolute : absolute + path
  let head = method + " " + target + " HTTP/1.1\r\nhost: " + host + "\r\n" + fields
  if (bodyLength === -1) {
    head += "transfer-encoding: chunked\r\n"
  } else if (body._tag === "Length" || method === "POST" || method === "PUT" || method === "PATCH") {
    head += "content-length: " + bodyLength + "\r\n"
  }
  // `keep-alive` asks for the server's Keep-Alive hint: some (apache2) send
  // `Keep-Alive: timeout=N` only to a request that says it.
  head += !persist ? "connection: close\r\n\r\n" : (seen & 4) === 0 ? "connection: keep-alive\r\n\r\n" : "\r\n"
  // TextEncoder is the faster path, and for ASCII its UTF-8 is the latin1 encoding.
  return ascii ? encoder.encode(head) : encodeLatin1(head)
}

/** `scheme://authority`, visible ASCII only, nothing after the authority. */
const absoluteOrigin = /^[a-z][a-z0-9+.-]*:\/\/[!$&-.0-;=@-~]+$/i
const isAbsoluteOrigin = (s: string): boolean => absoluteOrigin.test(s)

const EMPTY = new Uint8Array(0)

/** @internal */
export const encodeChunk = (data: Uint8Array): Uint8Array => {
  const n = data.length
  if (n === 0) return EMPTY
  const size = n.toString(16)
  const s = size.length
  const framed = new Uint8Array(s + n + 4)
  for (let i = 0; i < s; i++) framed[i] = size.charCodeAt(i)
  framed[s] = CR
  framed[s + 1] = LF
  framed.set(data, s + 2)
  framed[s + n + 2] = CR
  framed[s + n + 3] = LF
  return framed
}

/** @internal */
export const lastChunk: Uint8Array = encoder.encode("0\r\n\r\n")
