import { describe, expect, it } from "@effect/vitest"
import * as Http1 from "../src/Http1.js"
import { ResponseParser as InternalResponseParser } from "../src/internal/responseReader.js"

/** Latin1: every char of `s` becomes one byte, so fixtures can hold any byte. */
const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0))
const text = (b: Uint8Array): string => String.fromCharCode(...b)

// --- parser fixtures --------------------------------------------------------

/** Everything a parser reported for one fixture: feeding it in any pieces must give the same outcome. */
interface Outcome {
  readonly heads: Array<Http1.ResponseHead>
  readonly body: string
  readonly trailers: Array<Record<string, string>>
  readonly error: Http1.ParseError | undefined
  readonly state: Http1.ResponseParser["state"]
  readonly canReuse: boolean
}

interface Fixture {
  readonly name: string
  readonly response: string
  /** The request method the parser is armed with; GET unless given. */
  readonly method?: string
  readonly options?: Http1.ParserOptions
  /** Call finish() after the last byte, as if the server closed. */
  readonly eof?: boolean
  readonly head?: Partial<Http1.ResponseHead>
  readonly body?: string
  readonly trailers?: Record<string, string>
  readonly canReuse?: boolean
  /** The expected failure; without it the response must complete. */
  readonly error?: Http1.ParseErrorReason
}

const run = (fixture: Fixture, input: Uint8Array, cuts: ReadonlyArray<number>): Outcome => {
  const heads: Array<Http1.ResponseHead> = []
  const trailers: Array<Record<string, string>> = []
  let body = ""
  let piece = input
  const parser = new Http1.ResponseParser({
    onHead: (head) => heads.push(head),
    onBody: (chunk) => {
      // Body bytes are views of the chunk being executed, never copies and never empty.
      expect(chunk.length).toBeGreaterThan(0)
      expect(chunk.buffer).toBe(piece.buffer)
      expect(chunk.byteOffset).toBeGreaterThanOrEqual(piece.byteOffset)
      expect(chunk.byteOffset + chunk.length).toBeLessThanOrEqual(piece.byteOffset + piece.length)
      body += text(chunk)
    },
    onComplete: (t) => trailers.push({ ...t })
  }, fixture.options)
  parser.expect(fixture.method ?? "GET")
  let error: Http1.ParseError | undefined
  let from = 0
  for (const cut of [...cuts, input.length]) {
    piece = input.subarray(from, cut)
    from = cut
    error = parser.execute(piece)
    if (error !== undefined) break
  }
  if (error === undefined && fixture.eof === true) error = parser.finish()
  return { heads, body, trailers, error, state: parser.state, canReuse: parser.canReuse }
}

/** Runs a fixture fed whole, split in two at every offset, and one byte at a time; all outcomes must agree. */
const check = (fixture: Fixture): void => {
  const input = bytes(fixture.response)
  const whole = run(fixture, input, [])
  for (let i = 1; i < input.length; i++) {
    const split = run(fixture, input, [i])
    if (JSON.stringify(split) !== JSON.stringify(whole)) expect(split, `split at ${i}`).toEqual(whole)
  }
  const offsets = Array.from({ length: Math.max(0, input.length - 1) }, (_, i) => i + 1)
  expect(run(fixture, input, offsets), "one byte at a time").toEqual(whole)

  if (fixture.error !== undefined) {
    expect(whole.error?.reason, whole.error?.detail).toBe(fixture.error)
    expect(whole.state).toBe("error")
    expect(whole.canReuse).toBe(false)
  } else {
    expect(whole.error, whole.error?.detail).toBeUndefined()
    expect(whole.state).toBe("done")
    expect(whole.heads).toHaveLength(1)
    expect(whole.trailers).toEqual([fixture.trailers ?? {}])
    expect(whole.body).toBe(fixture.body ?? "")
  }
  if (fixture.head !== undefined) expect(whole.heads[0]).toMatchObject(fixture.head)
  if (fixture.error !== undefined && fixture.body !== undefined) expect(whole.body).toBe(fixture.body)
  if (fixture.canReuse !== undefined) expect(whole.canReuse).toBe(fixture.canReuse)
}

const fixtures = (name: string, table: ReadonlyArray<Fixture>) =>
  describe(name, () => {
    for (const fixture of table) it(fixture.name, () => check(fixture))
  })

/** A fixture that must fail with `error`. */
const failing = (error: Http1.ParseErrorReason) =>
(name: string, response: string, extra?: Partial<Fixture>): Fixture => ({ name, response, error, ...extra })
const protocol = failing("Protocol")
const tooLarge = failing("HeadersTooLarge")
const truncated = failing("Truncated")
const unsolicited = failing("Unsolicited")

const ok = "HTTP/1.1 200 OK\r\n"
const chunkedHead = ok + "Transfer-Encoding: chunked\r\n\r\n"
const withLength = (field: string) => ok + field + "\r\n\r\n"

fixtures("ResponseParser: framing", [
  {
    name: "Content-Length body",
    response: ok + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    head: {
      status: 200,
      statusText: "OK",
      httpVersion: "1.1",
      headers: { "content-type": "text/plain", "content-length": "5" },
      keepAlive: true,
      keepAliveTimeout: undefined,
      keepAliveMax: undefined,
      framing: "length",
      contentLength: 5
    },
    body: "hello",
    canReuse: true
  },
  {
    name: "Content-Length 0 completes right after the head",
    response: ok + "Content-Length: 0\r\n\r\n",
    head: { framing: "length", contentLength: 0 },
    canReuse: true
  },
  {
    name: "Content-Length at Number.MAX_SAFE_INTEGER is accepted (then truncated)",
    response: ok + "Content-Length: 9007199254740991\r\n\r\nab",
    eof: true,
    body: "ab",
    error: "Truncated"
  },
  {
    name: "chunked with extensions and trailers",
    response: ok + "Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
      "5;name=value\r\nhello\r\n" +
      "6 ; quoted=\"a b\" ;flag\r\n world\r\n" +
      "0;last\r\nX-Checksum: abc\r\nX-Other:  1 \r\nx-other: 2\r\n\r\n",
    head: { framing: "chunked", contentLength: undefined, keepAlive: true },
    body: "hello world",
    trailers: { "x-checksum": "abc", "x-other": "1, 2" },
    canReuse: true
  },
  {
    name: "chunk extensions as RFC 9112 writes them: BWS around ; and =, token and quoted values, quoted pairs",
    response: chunkedHead +
      "2 ; a = b ;c;d=\"x y\\\"z;\" ;e\r\nok\r\n" +
      "1;q=\"\"\r\n!\r\n" +
      "0;last=\"\\\\\"\r\n\r\n",
    body: "ok!"
  },
  {
    name: "chunked with hex sizes in both cases and leading zeros",
    response: chunkedHead + "0000a\r\n0123456789\r\nA\r\nabcdefghij\r\n00\r\n\r\n",
    body: "0123456789abcdefghij"
  },
  {
    name: "chunked extension of exactly maxChunkExtensionSize bytes",
    response: chunkedHead + "1;" + "e".repeat(1023) + "\r\nx\r\n0\r\n\r\n",
    body: "x"
  },
  {
    name: "chunked as the final coding of a list, across fields, in any case",
    response: ok + "Transfer-Encoding: gzip\r\nTransfer-Encoding: , Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    head: { framing: "chunked", headers: { "transfer-encoding": "gzip, , Chunked" } },
    body: "abc"
  },
  {
    name: "close-delimited body completes at EOF",
    response: ok + "Content-Type: text/plain\r\n\r\nall of it",
    eof: true,
    head: { framing: "close", keepAlive: false, contentLength: undefined },
    body: "all of it",
    canReuse: false
  },
  {
    name: "empty close-delimited body",
    response: ok + "\r\n",
    eof: true,
    head: { framing: "close", keepAlive: false },
    canReuse: false
  },
  {
    name: "a final coding other than chunked is read to EOF",
    response: ok + "Transfer-Encoding: gzip\r\n\r\nzipped",
    eof: true,
    head: { framing: "close", keepAlive: false },
    body: "zipped",
    canReuse: false
  },
  {
    name: "HEAD: Content-Length describes a body that is not sent",
    method: "HEAD",
    response: ok + "Content-Length: 1234\r\n\r\n",
    head: { framing: "none", contentLength: undefined, headers: { "content-length": "1234" } },
    canReuse: true
  },
  {
    name: "HEAD: chunked Transfer-Encoding sends no body either",
    method: "HEAD",
    response: chunkedHead,
    head: { framing: "none" },
    canReuse: true
  },
  {
    name: "HEAD: no framing at all is not close-delimited",
    method: "HEAD",
    response: ok + "\r\n",
    head: { framing: "none", keepAlive: true },
    canReuse: true
  },
  {
    name: "204 has no body, Content-Length ignored",
    response: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    head: { status: 204, framing: "none", contentLength: undefined },
    canReuse: true
  },
  {
    name: "304 has no body",
    response: "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
    head: { status: 304, framing: "none" },
    canReuse: true
  }
])

fixtures("ResponseParser: interim responses", [
  {
    name: "100 Continue then 200",
    response: "HTTP/1.1 100 Continue\r\n\r\n" + ok + "Content-Length: 2\r\n\r\nok",
    head: { status: 200, headers: { "content-length": "2" } },
    body: "ok"
  },
  {
    name: "102 and 103 with fields, then 200",
    response: "HTTP/1.1 102 Processing\r\n\r\n" +
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
      ok + "Content-Length: 0\r\n\r\n",
    head: { status: 200, headers: { "content-length": "0" } }
  },
  {
    name: "HEAD: 100 Continue then 200",
    method: "HEAD",
    response: "HTTP/1.1 100 Continue\r\n\r\n" + ok + "Content-Length: 9\r\n\r\n",
    head: { status: 200, framing: "none" }
  },
  {
    name: "101 Switching Protocols is refused",
    response: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    error: "Protocol"
  },
  {
    name: "101 after 100 is refused",
    response: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
    error: "Protocol"
  }
])

fixtures("ResponseParser: persistence", [
  {
    name: "HTTP/1.0 without keep-alive closes",
    response: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    head: { httpVersion: "1.0", keepAlive: false, framing: "length" },
    body: "ok",
    canReuse: false
  },
  {
    name: "HTTP/1.0 with Connection: Keep-Alive persists",
    response: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
    head: { httpVersion: "1.0", keepAlive: true },
    body: "ok",
    canReuse: true
  },
  {
    name: "HTTP/1.0 with keep-alive and close tokens closes",
    response: "HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: false },
    canReuse: false
  },
  {
    name: "HTTP/1.0 keep-alive with a close-delimited body closes",
    response: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nrest",
    eof: true,
    head: { keepAlive: false, framing: "close" },
    body: "rest",
    canReuse: false
  },
  {
    name: "Connection: close in upper case",
    response: ok + "Connection: CLOSE\r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: false },
    canReuse: false
  },
  {
    name: "Connection token list \"Keep-Alive, Close\"",
    response: ok + "Connection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: false },
    canReuse: false
  },
  {
    name: "close token in a second Connection field",
    response: ok + "Connection: keep-alive\r\nConnection:\tclose \r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: false, headers: { connection: "keep-alive, close", "content-length": "0" } },
    canReuse: false
  },
  {
    name: "a token that merely contains close is not close",
    response: ok + "Connection: closed, x-close\r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: true },
    canReuse: true
  },
  {
    name: "Keep-Alive: timeout=5, max=100",
    response: ok + "Keep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n",
    head: { keepAlive: true, keepAliveTimeout: 5000, keepAliveMax: 100 },
    canReuse: true
  },
  {
    name: "Keep-Alive timeout after max, with spaces and case",
    response: ok + "Keep-Alive: max=3, Timeout = 30\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: 30000, keepAliveMax: 3 }
  },
  {
    name: "Keep-Alive timeout that is not a whole number of seconds",
    response: ok + "Keep-Alive: timeout=1.5\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: undefined }
  },
  {
    name: "Keep-Alive timeout that is not a number",
    response: ok + "Keep-Alive: timeout=soon, max=5\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: undefined, keepAliveMax: 5 }
  },
  {
    name: "Keep-Alive timeout after a parameter without a value",
    response: ok + "Keep-Alive: a=b=c, flag, timeout=7\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: 7000 }
  },
  {
    name: "Keep-Alive without a timeout",
    response: ok + "Keep-Alive: max=5\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: undefined, keepAliveMax: 5 }
  },
  {
    name: "Keep-Alive: max=0 (no request after this response) is 0, not absent",
    response: ok + "Keep-Alive: timeout=5, max=0\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: 5000, keepAliveMax: 0 }
  },
  {
    name: "Keep-Alive max that is not a whole number",
    response: ok + "Keep-Alive: timeout=5, max=-1\r\nContent-Length: 0\r\n\r\n",
    head: { keepAliveTimeout: 5000, keepAliveMax: undefined }
  }
])

fixtures("ResponseParser: status line and fields", [
  {
    name: "no reason phrase and no SP",
    response: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    head: { status: 200, statusText: "" }
  },
  {
    name: "empty reason phrase",
    response: "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    head: { status: 404, statusText: "" }
  },
  {
    name: "reason phrase with spaces, HTAB and obs-text; status 999",
    response: "HTTP/1.1 999 Very\tOdd Caf\xe9\r\nContent-Length: 0\r\n\r\n",
    head: { status: 999, statusText: "Very\tOdd Caf\xe9" }
  },
  {
    name: "names lower-cased, OWS trimmed, repeats joined, empty and obs-text values kept",
    response: ok + "X-Multi: a\r\nx-multi:b\r\nX-Empty:\r\nX-Tab: a\tb\r\nX-Latin: \xe9t\xe9\r\n" +
      "Set-Cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
    head: {
      headers: {
        "x-multi": "a, b",
        "x-empty": "",
        "x-tab": "a\tb",
        "x-latin": "\xe9t\xe9",
        "set-cookie": "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT, b=2",
        "content-length": "0"
      },
      setCookie: ["a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"]
    }
  },
  {
    name: "field names in any case, and a near miss of a known name",
    response: ok + "CONTENT-TYPE: a\r\ncontent-Length: 3\r\nContent-Lenxth: 5\r\nX-UPPER: b\r\n\r\nabc",
    head: {
      framing: "length",
      contentLength: 3,
      headers: { "content-type": "a", "content-length": "3", "content-lenxth": "5", "x-upper": "b" }
    },
    body: "abc"
  },
  {
    name: "a long field value",
    response: ok + "X-Long: " + "v".repeat(300) + "\r\nContent-Length: 0\r\n\r\n",
    head: { headers: { "x-long": "v".repeat(300), "content-length": "0" }, setCookie: [] }
  },
  {
    name: "a head of exactly maxHeaderSize bytes",
    options: { maxHeaderSize: (ok + "Content-Length: 0\r\n\r\n").length },
    response: ok + "Content-Length: 0\r\n\r\n"
  },
  {
    name: "exactly maxHeaderCount fields",
    options: { maxHeaderCount: 2 },
    response: ok + "A: 1\r\nContent-Length: 0\r\n\r\n"
  }
])

fixtures("ResponseParser: rejected framing", [
  protocol("Content-Length and Transfer-Encoding", ok + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
  protocol("Transfer-Encoding and Content-Length", ok + "Transfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"),
  protocol("identical duplicate Content-Length", ok + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
  protocol("differing duplicate Content-Length", ok + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
  protocol("Content-Length list", withLength("Content-Length: 5, 5")),
  protocol("non-numeric Content-Length", withLength("Content-Length: five")),
  protocol("hex Content-Length", withLength("Content-Length: 0x5")),
  protocol("negative Content-Length", withLength("Content-Length: -5")),
  protocol("signed Content-Length", withLength("Content-Length: +5")),
  protocol("empty Content-Length", withLength("Content-Length: ")),
  protocol("Content-Length with inner space", withLength("Content-Length: 1 2")),
  protocol("Content-Length over Number.MAX_SAFE_INTEGER", withLength("Content-Length: 9007199254740992")),
  protocol("Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
  protocol("chunked twice in one field", ok + "Transfer-Encoding: chunked, chunked\r\n\r\n"),
  protocol("chunked twice across fields", ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
  protocol("chunked applied again after another coding", ok + "Transfer-Encoding: chunked, gzip, chunked\r\n\r\n"),
  protocol("chunked with parameters", ok + "Transfer-Encoding: chunked;q=1\r\n\r\n"),
  protocol("empty Transfer-Encoding", ok + "Transfer-Encoding: \r\n\r\n"),
  protocol("Transfer-Encoding coding that is not a token", ok + "Transfer-Encoding: gz/ip, chunked\r\n\r\n")
])

fixtures("ResponseParser: what a good response may carry around it", [
  {
    name: "chunked not the final coding (chunked, gzip): the body runs to the close, never reused",
    response: ok + "Transfer-Encoding: chunked, gzip\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    eof: true,
    body: "2\r\nab\r\n0\r\n\r\n",
    canReuse: false,
    head: { framing: "close" }
  },
  {
    name: "chunked not the final coding (chunked, identity): the body runs to the close",
    response: ok + "Transfer-Encoding: chunked, identity\r\n\r\nabc",
    eof: true,
    body: "abc",
    canReuse: false,
    head: { framing: "close" }
  },
  {
    name: "chunked then another coding across fields: the body runs to the close",
    response: ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    eof: true,
    body: "abc",
    canReuse: false,
    head: { framing: "close" }
  },
  {
    name: "an empty line before the status line is skipped",
    response: "\r\n" + ok + "Content-Length: 2\r\n\r\nok",
    body: "ok",
    canReuse: true
  },
  {
    name: "16 empty lines before the status line are skipped",
    response: "\r\n".repeat(16) + ok + "Content-Length: 0\r\n\r\n",
    canReuse: true
  },
  {
    name: "empty lines between a 100 Continue and the final response are skipped",
    response: "HTTP/1.1 100 Continue\r\n\r\n\r\n" + ok + "Content-Length: 2\r\n\r\nok",
    body: "ok",
    canReuse: true
  },
  {
    name: "a CRLF after a Content-Length body leaves the response complete and the connection reusable",
    response: ok + "Content-Length: 2\r\n\r\nok\r\n",
    body: "ok",
    canReuse: true
  },
  {
    name: "a CRLF after a 304 leaves it complete and reusable",
    response: "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n\r\n",
    canReuse: true
  },
  {
    name: "a lone CR after a body, its LF still to come: complete, not reusable yet",
    response: ok + "Content-Length: 2\r\n\r\nok\r",
    body: "ok",
    canReuse: false
  }
])

fixtures("ResponseParser: rejected chunked bodies", [
  protocol("non-hex chunk size", chunkedHead + "z\r\n"),
  protocol("hex digit then garbage", chunkedHead + "5z\r\nhello\r\n"),
  protocol("0x-prefixed chunk size", chunkedHead + "0x5\r\nhello\r\n"),
  protocol("empty chunk size", chunkedHead + "\r\nhello\r\n"),
  protocol("chunk size with a leading +", chunkedHead + "+5\r\nhello\r\n"),
  protocol("chunk size with a leading -", chunkedHead + "-5\r\nhello\r\n"),
  protocol("chunk size with a leading space", chunkedHead + " 5\r\nhello\r\n"),
  protocol("chunk size with trailing space and no extension", chunkedHead + "5 \r\nhello\r\n"),
  protocol("chunk size over Number.MAX_SAFE_INTEGER", chunkedHead + "20000000000000\r\n"),
  truncated(
    "chunk size of Number.MAX_SAFE_INTEGER is accepted (then truncated)",
    chunkedHead + "1fffffffffffff\r\nab",
    { eof: true, body: "ab" }
  ),
  protocol("chunk size line ended by bare LF", chunkedHead + "5\nhello\r\n0\r\n\r\n"),
  protocol("chunk size line ended by bare CR", chunkedHead + "5\rhello\r\n0\r\n\r\n"),
  protocol("extension ended by bare LF", chunkedHead + "5;a=b\nhello\r\n0\r\n\r\n"),
  protocol("chunk data ended by bare LF", chunkedHead + "5\r\nhello\n0\r\n\r\n", { body: "hello" }),
  protocol("chunk data ended by bare CR", chunkedHead + "5\r\nhello\r0\r\n\r\n", { body: "hello" }),
  protocol("chunk data longer than its size", chunkedHead + "5\r\nhello!\r\n0\r\n\r\n", { body: "hello" }),
  protocol("last chunk ended by bare LF", chunkedHead + "0\n\r\n"),
  protocol("chunked body ended by bare LF", chunkedHead + "0\r\n\n"),
  protocol("extension over maxChunkExtensionSize", chunkedHead + "1;" + "e".repeat(1024) + "\r\nx\r\n0\r\n\r\n"),
  protocol(
    "whitespace before an extension over maxChunkExtensionSize",
    chunkedHead + "1" + " ".repeat(1100) + ";e\r\nx\r\n0\r\n\r\n"
  ),
  protocol(
    "extension over a custom maxChunkExtensionSize",
    chunkedHead + "1;abcd\r\nx\r\n0\r\n\r\n",
    { options: { maxChunkExtensionSize: 4 } }
  ),
  protocol("control character in an extension", chunkedHead + "1;a\x01b\r\nx\r\n0\r\n\r\n"),
  protocol("an extension with no name (2;)", chunkedHead + "2;\r\nok\r\n0\r\n\r\n"),
  protocol("two semicolons (2;;)", chunkedHead + "2;;\r\nok\r\n0\r\n\r\n"),
  protocol("a value with no name (2;=x)", chunkedHead + "2;=x\r\nok\r\n0\r\n\r\n"),
  protocol("words with spaces (2;a b c)", chunkedHead + "2;a b c\r\nok\r\n0\r\n\r\n"),
  protocol("a value that is not a token (2;a=\\xff)", chunkedHead + "2;a=\xff\r\nok\r\n0\r\n\r\n"),
  protocol("a quoted value left open at the end of the line", chunkedHead + "5;a=\"abc;b=def\r\nhello\r\n0\r\n\r\n"),
  protocol("a CRLF inside a quoted value", chunkedHead + "2;a=\"x\r\ny\"\r\nok\r\n0\r\n\r\n"),
  protocol("whitespace before the CRLF that ends the extensions", chunkedHead + "2;a \r\nok\r\n0\r\n\r\n"),
  protocol("an empty value (2;a=)", chunkedHead + "2;a=\r\nok\r\n0\r\n\r\n"),
  protocol("text after a quoted value", chunkedHead + "2;a=\"x\"y\r\nok\r\n0\r\n\r\n"),
  protocol("trailer with invalid name", chunkedHead + "0\r\nBad Name: 1\r\n\r\n"),
  protocol("trailer with obs-fold", chunkedHead + "0\r\nX: 1\r\n 2\r\n\r\n"),
  protocol("trailer ended by bare LF", chunkedHead + "0\r\nX: 1\n\r\n"),
  tooLarge(
    "trailers over maxHeaderCount (head and trailers counted together)",
    chunkedHead + "0\r\nA: 1\r\nB: 2\r\n\r\n",
    { options: { maxHeaderCount: 2 } }
  ),
  tooLarge(
    "trailers over maxHeaderSize (head and trailers counted together)",
    chunkedHead + "0\r\nX-Trailer: 12345\r\n\r\n",
    { options: { maxHeaderSize: chunkedHead.length + 10 } }
  )
])

fixtures("ResponseParser: rejected heads", [
  protocol("HTTP/2.0 status line", "HTTP/2.0 200 OK\r\n\r\n"),
  protocol("HTTP/1.2 status line", "HTTP/1.2 200 OK\r\n\r\n"),
  protocol("lower-case protocol name", "http/1.1 200 OK\r\n\r\n"),
  protocol("not HTTP at all", "ICY 200 OK\r\n\r\n"),
  protocol("two-digit status", "HTTP/1.1 20 OK\r\n\r\n"),
  protocol("four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"),
  protocol("status below 100", "HTTP/1.1 099 OK\r\n\r\n"),
  protocol("status and reason without SP", "HTTP/1.1 200OK\r\n\r\n"),
  protocol("two SP before status", "HTTP/1.1  200 OK\r\n\r\n"),
  protocol("control character in reason phrase", "HTTP/1.1 200 O\x01K\r\n\r\n"),
  protocol("17 empty lines before the status line", "\r\n".repeat(17) + ok + "Content-Length: 0\r\n\r\n"),
  protocol("a bare LF before the status line", "\n" + ok + "Content-Length: 0\r\n\r\n"),
  protocol("bare LF line endings", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
  protocol("bare LF ending a field line", ok + "Content-Length: 0\n\r\n"),
  protocol("bare LF ending the head", ok + "Content-Length: 0\r\n\n"),
  protocol("bare CR in the status line", "HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n"),
  protocol("bare CR in a field value", ok + "X: a\rb\r\nContent-Length: 0\r\n\r\n"),
  protocol("bare CR ending a field line", ok + "X: a\rContent-Length: 0\r\n\r\n"),
  protocol("bare CR in a field name", ok + "X\r: a\r\nContent-Length: 0\r\n\r\n"),
  protocol("CR CR LF", ok + "X: a\r\r\nContent-Length: 0\r\n\r\n"),
  protocol("space between field name and colon", ok + "Content-Length : 0\r\n\r\n"),
  protocol("tab between field name and colon", ok + "X\t: 1\r\nContent-Length: 0\r\n\r\n"),
  protocol("obs-fold with SP", ok + "X: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
  protocol("obs-fold with HTAB", ok + "X: a\r\n\tb\r\nContent-Length: 0\r\n\r\n"),
  protocol("first field folded", ok + " X: a\r\nContent-Length: 0\r\n\r\n"),
  protocol("field name with a separator", ok + "X(y): 1\r\nContent-Length: 0\r\n\r\n"),
  protocol("field name with obs-text", ok + "X\xe9: 1\r\nContent-Length: 0\r\n\r\n"),
  protocol("empty field name", ok + ": 1\r\nContent-Length: 0\r\n\r\n"),
  protocol("field line without a colon", ok + "NoColon\r\nContent-Length: 0\r\n\r\n"),
  protocol("NUL in a field value", ok + "X: a\x00b\r\nContent-Length: 0\r\n\r\n"),
  protocol("control character in a field value", ok + "X: a\x1bb\r\nContent-Length: 0\r\n\r\n"),
  protocol("DEL in a field value", ok + "X: a\x7fb\r\nContent-Length: 0\r\n\r\n"),
  protocol(
    "invalid field in an interim response",
    "HTTP/1.1 100 Continue\r\nX : 1\r\n\r\n" + ok + "Content-Length: 0\r\n\r\n"
  ),
  tooLarge("head over the default maxHeaderSize", ok + "X-Big: " + "a".repeat(16384) + "\r\nContent-Length: 0\r\n\r\n"),
  tooLarge(
    "head one byte over maxHeaderSize",
    ok + "Content-Length: 0\r\n\r\n",
    { options: { maxHeaderSize: (ok + "Content-Length: 0\r\n\r\n").length - 1 } }
  ),
  tooLarge("status line over maxHeaderSize", ok + "\r\n", { options: { maxHeaderSize: 10 } }),
  tooLarge("more than the default 100 fields", ok + "X: 1\r\n".repeat(101) + "Content-Length: 0\r\n\r\n"),
  tooLarge(
    "more than maxHeaderCount fields",
    ok + "A: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n",
    { options: { maxHeaderCount: 2 } }
  )
])

fixtures("ResponseParser: truncated and unsolicited", [
  truncated("EOF before any byte of the status line", "", { eof: true }),
  truncated("EOF in the status line", "HTTP/1.1 20", { eof: true }),
  truncated("EOF in the fields", ok + "Content-Length: 5\r\n", { eof: true }),
  truncated("EOF after an interim response", "HTTP/1.1 100 Continue\r\n\r\n", { eof: true }),
  truncated("EOF in a Content-Length body", ok + "Content-Length: 10\r\n\r\nhello", { eof: true, body: "hello" }),
  truncated("EOF in chunk data", chunkedHead + "a\r\nhello", { eof: true, body: "hello" }),
  truncated("EOF before the last chunk", chunkedHead + "5\r\nhello\r\n", { eof: true, body: "hello" }),
  truncated("EOF in the chunk size line", chunkedHead + "5;ext", { eof: true }),
  truncated("EOF in the trailers", chunkedHead + "0\r\nX: 1\r\n", { eof: true }),
  unsolicited("bytes after a Content-Length body", ok + "Content-Length: 2\r\n\r\nokEXTRA", { body: "ok" }),
  unsolicited("bytes after a chunked body", chunkedHead + "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", { body: "ok" }),
  unsolicited("a body after a HEAD response", ok + "Content-Length: 2\r\n\r\nok", { method: "HEAD" }),
  unsolicited("a body after a 204", "HTTP/1.1 204 No Content\r\n\r\nbody"),
  unsolicited("a CRLF then bytes after a body", ok + "Content-Length: 2\r\n\r\nok\r\nX", { body: "ok" }),
  unsolicited("a CR followed by anything but LF after a body", ok + "Content-Length: 2\r\n\r\nok\rX", { body: "ok" }),
  unsolicited("17 empty lines after a body", ok + "Content-Length: 2\r\n\r\nok" + "\r\n".repeat(17), { body: "ok" }),
  unsolicited(
    "a second response pipelined behind the first",
    ok + "Content-Length: 0\r\n\r\n" + ok + "Content-Length: 0\r\n\r\n"
  )
])

// --- parser lifecycle -------------------------------------------------------

interface Recorder {
  readonly parser: Http1.ResponseParser
  readonly events: Array<string>
}

const recorder = (options?: Http1.ParserOptions): Recorder => {
  const events: Array<string> = []
  const parser: Http1.ResponseParser = new Http1.ResponseParser({
    onHead: (head) => events.push(`head ${head.status} ${parser.state}`),
    onBody: (chunk) => events.push(`body ${text(chunk)}`),
    onComplete: (trailers) => events.push(`complete ${JSON.stringify(trailers)} ${parser.state} ${parser.canReuse}`)
  }, options)
  return { parser, events }
}

describe("ResponseParser: lifecycle", () => {
  it("moves idle -> head -> body -> done", () => {
    const { events, parser } = recorder()
    expect(parser.state).toBe("idle")
    expect(parser.canReuse).toBe(false)
    parser.expect("GET")
    expect(parser.state).toBe("head")
    expect(parser.execute(bytes(ok + "Content-Length: 4\r\n"))).toBeUndefined()
    expect(parser.state).toBe("head")
    expect(parser.execute(bytes("\r\nab"))).toBeUndefined()
    expect(parser.state).toBe("body")
    expect(parser.canReuse).toBe(false)
    expect(parser.execute(bytes("cd"))).toBeUndefined()
    expect(parser.state).toBe("done")
    expect(parser.canReuse).toBe(true)
    expect(events).toEqual(["head 200 body", "body ab", "body cd", "complete {} done true"])
  })

  it("reuses one parser for sequential responses via expect()", () => {
    const { events, parser } = recorder()
    parser.expect("GET")
    expect(parser.execute(bytes(chunkedHead + "3\r\none\r\n0\r\nX: t\r\n\r\n"))).toBeUndefined()
    expect(parser.canReuse).toBe(true)
    parser.expect("HEAD")
    expect(parser.execute(bytes(ok + "Content-Length: 99\r\n\r\n"))).toBeUndefined()
    expect(parser.canReuse).toBe(true)
    parser.expect("POST")
    expect(parser.execute(bytes("HTTP/1.1 201 Created\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntwo"))).toBeUndefined()
    expect(parser.state).toBe("done")
    expect(parser.canReuse).toBe(false)
    expect(events).toEqual([
      "head 200 body",
      "body one",
      "complete {\"x\":\"t\"} done true",
      "head 200 body",
      "complete {} done true",
      "head 201 body",
      "body two",
      "complete {} done false"
    ])
  })

  it("reads each response's own field values when later heads repeat, change, lengthen or drop them", () => {
    const heads: Array<Record<string, string>> = []
    const parser = new Http1.ResponseParser({
      onHead: (head) => heads.push({ ...head.headers }),
      onBody: () => {},
      onComplete: () => {}
    })
    const values = ["abc", "abc", "abd", "abdd", "ab", "", "abc"]
    for (const value of values) {
      parser.expect("GET")
      const field = value === "" ? "" : `X-Value: ${value}\r\n`
      expect(parser.execute(bytes(`HTTP/1.1 200 OK\r\n${field}Server: same\r\nContent-Length: 0\r\n\r\n`))).toBeUndefined()
    }
    expect(heads.map((headers) => headers["x-value"])).toEqual(["abc", "abc", "abd", "abdd", "ab", undefined, "abc"])
    expect(heads.every((headers) => headers["server"] === "same")).toBe(true)
  })

  it("rejects bytes while idle", () => {
    const { events, parser } = recorder()
    expect(parser.execute(bytes("HTTP/1.1 200 OK\r\n"))).toMatchObject({ _tag: "ParseError", reason: "Unsolicited" })
    expect(parser.state).toBe("error")
    expect(events).toEqual([])
  })

  it("rejects bytes after a response, before the next expect()", () => {
    const { parser } = recorder()
    parser.expect("GET")
    expect(parser.execute(bytes(ok + "Content-Length: 0\r\n\r\n"))).toBeUndefined()
    expect(parser.execute(bytes("H"))).toMatchObject({ reason: "Unsolicited" })
    expect(parser.canReuse).toBe(false)
  })

  it("skips empty lines between responses, a CR and its LF in different reads, and stays reusable", () => {
    const { events, parser } = recorder()
    expect(parser.execute(bytes("\r\n"))).toBeUndefined()
    expect(parser.state).toBe("idle")
    parser.expect("GET")
    expect(parser.execute(bytes(ok + "Content-Length: 0\r\n\r\n\r"))).toBeUndefined()
    expect(parser.canReuse).toBe(false)
    expect(parser.execute(bytes("\n\r"))).toBeUndefined()
    expect(parser.canReuse).toBe(false)
    // The next request is sent before the LF arrives: it ends an empty line before the status line.
    parser.expect("GET")
    expect(parser.execute(bytes("\n" + ok + "Content-Length: 0\r\n\r\n"))).toBeUndefined()
    expect(parser.state).toBe("done")
    expect(parser.canReuse).toBe(true)
    expect(events.filter((event) => event.startsWith("head"))).toHaveLength(2)
  })

  it("empty lines before a status line are not a byte of the response: a close after them is a close before any byte", () => {
    const { parser } = recorder()
    parser.expect("GET")
    expect(parser.execute(bytes("\r\n\r\n"))).toBeUndefined()
    expect(parser.finish()).toMatchObject({ reason: "Truncated", detail: "connection closed before any byte of the response" })
    const started = recorder().parser
    started.expect("GET")
    expect(started.execute(bytes("\r\nHTTP/1.1 2"))).toBeUndefined()
    expect(started.finish()).toMatchObject({ reason: "Truncated", detail: "connection closed in the response head" })
  })

  it("keeps a leftover CRLF unsolicited too when onComplete arms the next response", () => {
    const parser: Http1.ResponseParser = new Http1.ResponseParser({
      onHead: () => {},
      onBody: () => {},
      onComplete: () => parser.expect("GET")
    })
    parser.expect("GET")
    expect(parser.execute(bytes(ok + "Content-Length: 0\r\n\r\n\r"))).toMatchObject({ reason: "Unsolicited" })
  })

  it("keeps leftover bytes unsolicited even when onComplete arms the next response", () => {
    const heads: Array<number> = []
    const parser: Http1.ResponseParser = new Http1.ResponseParser({
      onHead: (head) => heads.push(head.status),
      onBody: () => {},
      onComplete: () => parser.expect("GET")
    })
    parser.expect("GET")
    const error = parser.execute(bytes(ok + "Content-Length: 0\r\n\r\n" + "HTTP/1.1 204 No Content\r\n\r\n"))
    expect(error).toMatchObject({ reason: "Unsolicited" })
    expect(heads).toEqual([200])
  })

  it("ignores empty chunks, even while idle", () => {
    const { parser } = recorder()
    expect(parser.execute(new Uint8Array(0))).toBeUndefined()
    expect(parser.state).toBe("idle")
  })

  it("returns the same error forever once failed", () => {
    const { parser } = recorder()
    parser.expect("GET")
    const error = parser.execute(bytes("HTTP/9.9 200 OK\r\n"))
    expect(error).toMatchObject({ _tag: "ParseError", reason: "Protocol" })
    expect(parser.execute(bytes(ok))).toBe(error)
    expect(parser.finish()).toBe(error)
    expect(parser.state).toBe("error")
    expect(() => parser.expect("GET")).toThrow(Error)
  })

  it("expect() throws unless idle or done", () => {
    const { parser } = recorder()
    parser.expect("GET")
    expect(() => parser.expect("GET")).toThrow(/idle or done/)
    parser.execute(bytes(ok + "Content-Length: 2\r\n\r\n"))
    expect(parser.state).toBe("body")
    expect(() => parser.expect("GET")).toThrow(/idle or done/)
    parser.execute(bytes("ok"))
    expect(() => parser.expect("GET")).not.toThrow()
  })

  it("finish() is a no-op when idle or done", () => {
    const { parser } = recorder()
    expect(parser.finish()).toBeUndefined()
    expect(parser.state).toBe("idle")
    parser.expect("GET")
    parser.execute(bytes(ok + "Content-Length: 0\r\n\r\n"))
    expect(parser.finish()).toBeUndefined()
    expect(parser.state).toBe("done")
    expect(parser.canReuse).toBe(true)
  })

  it("finish() tells a connection closed before any byte from a cut-off head", () => {
    const unused = recorder().parser
    unused.expect("GET")
    expect(unused.finish()).toMatchObject({ reason: "Truncated", detail: expect.stringMatching(/before any byte/) })
    const cut = recorder().parser
    cut.expect("GET")
    cut.execute(bytes("HTTP/1.1 100 Continue\r\n\r\n"))
    expect(cut.finish()).toMatchObject({ reason: "Truncated", detail: expect.stringMatching(/in the response head/) })
  })

  it("finish() completes a close-delimited body, which is never reusable", () => {
    const { events, parser } = recorder()
    parser.expect("GET")
    parser.execute(bytes(ok + "\r\nabc"))
    expect(parser.finish()).toBeUndefined()
    expect(events).toEqual(["head 200 body", "body abc", "complete {} done false"])
  })

  it("hands out body bytes as views of the input chunk", () => {
    const seen: Array<Uint8Array> = []
    const parser = new Http1.ResponseParser({ onHead: () => {}, onBody: (b) => seen.push(b), onComplete: () => {} })
    parser.expect("GET")
    const first = bytes(ok + "Content-Length: 6\r\n\r\nabc")
    const second = bytes("def")
    parser.execute(first)
    parser.execute(second)
    expect(seen[0]!.buffer).toBe(first.buffer)
    expect(seen[0]!.byteOffset).toBe(first.length - 3)
    expect(seen[1]).toBe(second)
  })

  it("keeps headers on null-prototype records", () => {
    let head: Http1.ResponseHead | undefined
    const parser = new Http1.ResponseParser({ onHead: (h) => head = h, onBody: () => {}, onComplete: () => {} })
    parser.expect("GET")
    parser.execute(bytes(ok + "__proto__: x\r\nConstructor: y\r\ntoString: z\r\nContent-Length: 0\r\n\r\n"))
    expect(Object.getPrototypeOf(head!.headers)).toBeNull()
    expect(Object.keys(head!.headers)).toEqual(["__proto__", "constructor", "tostring", "content-length"])
    expect(head!.headers["constructor"]).toBe("y")
  })

  it("parsers sharing remembered field values each read the values of their own bytes", () => {
    const remembered = new Map<string, string>()
    const heads: Array<Http1.ResponseHead> = []
    const parse = (server: string) => {
      const parser = new InternalResponseParser({ onHead: (h) => heads.push(h), onBody: () => {}, onComplete: () => {} }, {
        remembered
      })
      parser.expect("GET")
      parser.execute(bytes(ok + `Server: ${server}\r\nContent-Length: 0\r\n\r\n`))
    }
    parse("one/1.0")
    parse("one/1.0")
    parse("two/1.0")
    parse("one/1.1")
    expect(heads.map((h) => h.headers["server"])).toEqual(["one/1.0", "one/1.0", "two/1.0", "one/1.1"])
    expect(remembered.get("server")).toBe("one/1.1")
  })

  it("refuses limits that are not positive integers", () => {
    const handler: Http1.ResponseHandler = { onHead: () => {}, onBody: () => {}, onComplete: () => {} }
    expect(() => new Http1.ResponseParser(handler, { maxHeaderSize: 0 })).toThrow(RangeError)
    expect(() => new Http1.ResponseParser(handler, { maxHeaderCount: Number.NaN })).toThrow(RangeError)
    expect(() => new Http1.ResponseParser(handler, { maxChunkExtensionSize: 1.5 })).toThrow(RangeError)
  })
})

// --- request serialiser -----------------------------------------------------

const empty: Http1.RequestBodyFraming = { _tag: "Empty" }
const chunked: Http1.RequestBodyFraming = { _tag: "Chunked" }
const length = (n: number): Http1.RequestBodyFraming => ({ _tag: "Length", length: n })

const request = (overrides: Partial<Http1.RequestHeadInput>): Http1.RequestHeadInput => ({
  method: "GET",
  path: "/",
  host: "example.com",
  headers: {},
  body: empty,
  persist: true,
  ...overrides
})

const encoded = (input: Http1.RequestHeadInput): string => {
  const head = Http1.encodeRequestHead(input)
  if (!(head instanceof Uint8Array)) throw new Error(`refused: ${head.detail}`)
  return text(head)
}

const refused = (input: Http1.RequestHeadInput): string => {
  const head = Http1.encodeRequestHead(input)
  if (head instanceof Uint8Array) throw new Error(`not refused: ${JSON.stringify(text(head))}`)
  expect(head._tag).toBe("RequestRefusal")
  return head.detail
}

describe("encodeRequestHead", () => {
  it("writes a GET", () => {
    expect(encoded(request({ path: "/search?q=a%20b&x=1", headers: { accept: "*/*", "user-agent": "keepalive" } })))
      .toBe("GET /search?q=a%20b&x=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nuser-agent: keepalive\r\nconnection: keep-alive\r\n\r\n")
  })

  it("writes a POST with a length", () => {
    expect(encoded(request({
      method: "POST",
      path: "/items",
      host: "example.com:8080",
      headers: { "content-type": "application/json", "content-length": "13" },
      body: length(13)
    }))).toBe(
      "POST /items HTTP/1.1\r\nhost: example.com:8080\r\ncontent-type: application/json\r\ncontent-length: 13\r\nconnection: keep-alive\r\n\r\n"
    )
  })

  it("writes content-length: 0 for an empty POST, PUT or PATCH only", () => {
    expect(encoded(request({ method: "POST" }))).toBe("POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
    expect(encoded(request({ method: "PATCH" }))).toBe("PATCH / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
    expect(encoded(request({ method: "DELETE" }))).toBe("DELETE / HTTP/1.1\r\nhost: example.com\r\nconnection: keep-alive\r\n\r\n")
    expect(encoded(request({ headers: { "content-length": "0" } }))).toBe("GET / HTTP/1.1\r\nhost: example.com\r\nconnection: keep-alive\r\n\r\n")
    expect(encoded(request({ method: "DELETE", body: length(0) })))
      .toBe("DELETE / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
  })

  it("writes a chunked PUT", () => {
    expect(encoded(request({ method: "PUT", path: "/upload", headers: { "content-type": "text/plain" }, body: chunked })))
      .toBe("PUT /upload HTTP/1.1\r\nhost: example.com\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n")
  })

  it("writes connection: close instead of the caller's connection header when not persisting", () => {
    expect(encoded(request({ headers: { connection: "keep-alive", accept: "*/*" }, persist: false })))
      .toBe("GET / HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nconnection: close\r\n\r\n")
    expect(encoded(request({ headers: { connection: "keep-alive" } })))
      .toBe("GET / HTTP/1.1\r\nhost: example.com\r\nconnection: keep-alive\r\n\r\n")
  })

  it("asks for keep-alive on a persistent request, and writes a caller's connection header instead, never both", () => {
    expect(encoded(request({}))).toBe("GET / HTTP/1.1\r\nhost: example.com\r\nconnection: keep-alive\r\n\r\n")
    expect(encoded(request({ headers: { Connection: "close" } })))
      .toBe("GET / HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n")
    expect(encoded(request({ persist: false }))).toBe("GET / HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n")
  })

  it("writes the caller's host header first, in place of input.host", () => {
    expect(encoded(request({ headers: { accept: "*/*", host: "other.test:81" } })))
      .toBe("GET / HTTP/1.1\r\nhost: other.test:81\r\naccept: */*\r\nconnection: keep-alive\r\n\r\n")
  })

  it("writes header values verbatim and names lower-cased", () => {
    const headers = { "X-Custom": "[object Object]", "constructor": "x", tostring: "", "x-tab": "a\tb" }
    expect(encoded(request({ headers })))
      .toBe("GET / HTTP/1.1\r\nhost: example.com\r\nx-custom: [object Object]\r\nconstructor: x\r\ntostring: \r\nx-tab: a\tb\r\nconnection: keep-alive\r\n\r\n")
  })

  it("writes latin1 values one byte per character", () => {
    const head = Http1.encodeRequestHead(request({ path: "/caf\xe9", headers: { "x-name": "Jos\xe9" } }))
    expect(head).toBeInstanceOf(Uint8Array)
    expect(Array.from(head as Uint8Array).filter((b) => b === 0xe9)).toHaveLength(2)
    expect(text(head as Uint8Array)).toBe("GET /caf\xe9 HTTP/1.1\r\nhost: example.com\r\nx-name: Jos\xe9\r\nconnection: keep-alive\r\n\r\n")
  })

  it("allows * only for OPTIONS", () => {
    expect(encoded(request({ method: "OPTIONS", path: "*" }))).toBe("OPTIONS * HTTP/1.1\r\nhost: example.com\r\nconnection: keep-alive\r\n\r\n")
    refused(request({ path: "*" }))
  })

  it.each([
    ["method with a space", { method: "GET /" }],
    ["empty method", { method: "" }],
    ["method with CR LF", { method: "GET\r\n" }],
    ["method with NUL", { method: "G\x00T" }],
    ["path without a leading slash", { path: "index.html" }],
    ["absolute-form path", { path: "http://example.com/" }],
    ["empty path", { path: "" }],
    ["path with a space", { path: "/a b" }],
    ["path with CR LF", { path: "/a\r\nx: y" }],
    ["path with LF", { path: "/a\nb" }],
    ["path with NUL", { path: "/a\x00" }],
    ["path with DEL", { path: "/a\x7f" }],
    ["path above U+00FF", { path: "/\u20ac" }],
    ["host with CR LF", { host: "example.com\r\nx: y" }],
    ["host above U+00FF", { host: "ex\u0101mple.com" }],
    ["header name with a space", { headers: { "x y": "1" } }],
    ["header name with a colon", { headers: { "x:y": "1" } }],
    ["empty header name", { headers: { "": "1" } }],
    ["header name with CR LF", { headers: { "x\r\ny": "1" } }],
    ["header name with NUL", { headers: { "x\x00": "1" } }],
    ["header name above U+00FF", { headers: { "x\u0100": "1" } }],
    ["header value with CR LF", { headers: { "x-a": "1\r\nx-b: 2" } }],
    ["header value with CR", { headers: { "x-a": "1\r2" } }],
    ["header value with LF", { headers: { "x-a": "1\n2" } }],
    ["header value with NUL", { headers: { "x-a": "1\x002" } }],
    ["header value with a control character", { headers: { "x-a": "1\x1b2" } }],
    ["header value with DEL", { headers: { "x-a": "1\x7f" } }],
    ["header value above U+00FF", { headers: { "x-a": "\u20ac" } }],
    ["caller host header with CR LF", { headers: { host: "a\r\nb" } }],
    ["host twice in different case", { headers: { host: "a", Host: "b" } }],
    ["caller transfer-encoding", { headers: { "transfer-encoding": "chunked" }, body: chunked }],
    ["caller Transfer-Encoding in another case", { headers: { "Transfer-Encoding": "gzip" } }],
    ["caller upgrade header", { headers: { upgrade: "websocket" } }],
    ["connection with an upgrade token", { headers: { connection: "keep-alive, Upgrade" } }],
    ["connection with an upgrade token when not persisting", { headers: { connection: "upgrade" }, persist: false }],
    ["content-length on a chunked body", { headers: { "content-length": "5" }, body: chunked }],
    ["content-length differing from the body length", { headers: { "content-length": "4" }, body: length(5) }],
    ["content-length on an empty body", { method: "POST", headers: { "content-length": "5" } }],
    ["content-length with a sign", { headers: { "content-length": "+5" }, body: length(5) }],
    ["content-length with whitespace", { headers: { "content-length": "5 " }, body: length(5) }],
    ["content-length in hex", { headers: { "content-length": "0x5" }, body: length(5) }],
    ["empty content-length", { headers: { "content-length": "" } }],
    ["content-length twice in different case", { headers: { "content-length": "5", "Content-Length": "5" }, body: length(5) }],
    ["negative body length", { method: "POST", body: length(-1) }],
    ["fractional body length", { method: "POST", body: length(1.5) }],
    ["unsafe body length", { method: "POST", body: length(2 ** 53) }]
  ] as ReadonlyArray<[string, Partial<Http1.RequestHeadInput>]>)("refuses %s", (_, overrides) => {
    expect(refused(request(overrides))).not.toBe("")
  })
})

describe("chunked request bodies", () => {
  it("encodeChunk frames data as hex size CRLF data CRLF", () => {
    expect(text(Http1.encodeChunk(bytes("hello")))).toBe("5\r\nhello\r\n")
    expect(text(Http1.encodeChunk(bytes("x".repeat(255))))).toBe("ff\r\n" + "x".repeat(255) + "\r\n")
    expect(text(Http1.encodeChunk(new Uint8Array(4096)).subarray(0, 6))).toBe("1000\r\n")
  })

  it("encodeChunk returns nothing for empty data, which would end the body", () => {
    expect(Http1.encodeChunk(new Uint8Array(0))).toHaveLength(0)
  })

  it("encodeChunk output parses back", () => {
    const { events, parser } = recorder()
    parser.expect("GET")
    const parts = [bytes(chunkedHead), Http1.encodeChunk(bytes("ab")), Http1.encodeChunk(bytes("cde")), Http1.lastChunk]
    for (const part of parts) expect(parser.execute(part)).toBeUndefined()
    expect(events).toEqual(["head 200 body", "body ab", "body cde", "complete {} done true"])
  })

  it("lastChunk is 0 CRLF CRLF", () => {
    expect(text(Http1.lastChunk)).toBe("0\r\n\r\n")
  })
})
