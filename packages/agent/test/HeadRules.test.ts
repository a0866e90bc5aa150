/**
 * The head rules on their own: what Connection, Keep-Alive, Transfer-Encoding
 * and Content-Length say, the framing they give, and the Keep-Alive arithmetic
 * a connection applies after each response. The response reader's fixtures
 * (Http1.test.ts) check the same rules through bytes.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  bodyFraming,
  CONNECTION_CLOSE,
  CONNECTION_KEEP_ALIVE,
  CONNECTION_UPGRADE,
  connectionTokens,
  contentLength,
  idleTimeoutAfter,
  keepAliveMax,
  keepAliveTimeout,
  persists,
  responsesAllowed,
  responseTransferCoding,
  TE_CHUNKED,
  TE_NONE,
  TE_OTHER,
  transferCoding
} from "../src/internal/headRules.js"

describe("connectionTokens", () => {
  it.each([
    ["close", CONNECTION_CLOSE],
    ["keep-alive", CONNECTION_KEEP_ALIVE],
    ["Keep-Alive", CONNECTION_KEEP_ALIVE],
    ["upgrade", CONNECTION_UPGRADE],
    [" CLOSE ", CONNECTION_CLOSE],
    ["keep-alive, Upgrade", CONNECTION_KEEP_ALIVE | CONNECTION_UPGRADE],
    ["te,\tclose ,keep-alive", CONNECTION_CLOSE | CONNECTION_KEEP_ALIVE],
    ["x-close, closed, keepalive", 0],
    ["", 0],
    [",,", 0]
  ])("%j has the bits %i", (value, bits) => {
    expect(connectionTokens(value)).toBe(bits)
  })
})

describe("contentLength", () => {
  it.each([
    ["0", -1, 0],
    ["5", -1, 5],
    ["9007199254740991", -1, Number.MAX_SAFE_INTEGER],
    ["9007199254740992", -1, "invalid Content-Length"],
    ["", -1, "invalid Content-Length"],
    ["-1", -1, "invalid Content-Length"],
    ["+5", -1, "invalid Content-Length"],
    ["5, 5", -1, "invalid Content-Length"],
    ["0x10", -1, "invalid Content-Length"],
    ["5", 5, "more than one Content-Length"],
    ["5", 0, "more than one Content-Length"]
  ])("%j after %i: %j", (value, previous, expected) => {
    expect(contentLength(value, previous)).toBe(expected)
  })
})

describe("transferCoding", () => {
  it.each([
    ["chunked", TE_CHUNKED],
    ["Chunked", TE_CHUNKED],
    ["gzip, chunked", TE_CHUNKED],
    ["gzip,,chunked, ", TE_CHUNKED],
    ["gzip", TE_OTHER],
    ["chunked, gzip", TE_OTHER],
    ["gzip;q=1", TE_OTHER],
    ["chunked, chunked", "chunked applied more than once in Transfer-Encoding"],
    ["chunked;x=1", "chunked transfer coding with parameters"],
    ["gz ip", "invalid transfer coding in Transfer-Encoding"],
    ["", "empty Transfer-Encoding"],
    [" , ", "empty Transfer-Encoding"]
  ])("%j: %j", (value, expected) => {
    expect(transferCoding(value)).toBe(expected)
  })
})

describe("responseTransferCoding", () => {
  it.each([
    [undefined, -1, "1.1", TE_NONE],
    [undefined, 10, "1.0", TE_NONE],
    ["chunked", -1, "1.1", TE_CHUNKED],
    ["gzip", -1, "1.1", TE_OTHER],
    ["chunked", 10, "1.1", "both Content-Length and Transfer-Encoding"],
    ["chunked", 0, "1.1", "both Content-Length and Transfer-Encoding"],
    ["chunked", -1, "1.0", "Transfer-Encoding in an HTTP/1.0 response"],
    ["chunked, chunked", -1, "1.1", "chunked applied more than once in Transfer-Encoding"]
  ] as const)("%j with Content-Length %i in HTTP/%s: %j", (value, length, version, expected) => {
    expect(responseTransferCoding(value, length, version)).toBe(expected)
  })
})

describe("bodyFraming", () => {
  it.each([
    [false, 200, TE_NONE, 5, "length"],
    [false, 200, TE_NONE, 0, "length"],
    [false, 200, TE_NONE, -1, "close"],
    [false, 200, TE_CHUNKED, -1, "chunked"],
    [false, 200, TE_OTHER, -1, "close"],
    [false, 404, TE_CHUNKED, -1, "chunked"],
    [true, 200, TE_CHUNKED, -1, "none"],
    [true, 200, TE_NONE, 5, "none"],
    [true, 200, TE_NONE, -1, "none"],
    [false, 204, TE_NONE, -1, "none"],
    [false, 304, TE_NONE, 5, "none"],
    [false, 205, TE_NONE, -1, "close"]
  ] as const)("HEAD request %s, status %i, coding %i, length %i: %s", (head, status, coding, length, framing) => {
    expect(bodyFraming(head, status, coding, length)).toBe(framing)
  })
})

describe("persists", () => {
  it.each([
    ["1.1", undefined, "length", true],
    ["1.1", "keep-alive", "chunked", true],
    ["1.1", "close", "length", false],
    ["1.1", "Keep-Alive, close", "none", false],
    ["1.1", undefined, "close", false],
    ["1.1", "keep-alive", "close", false],
    ["1.0", undefined, "length", false],
    ["1.0", "keep-alive", "length", true],
    ["1.0", "Keep-Alive", "none", true],
    ["1.0", "keep-alive, close", "length", false],
    ["1.0", "keep-alive", "close", false]
  ] as const)("HTTP/%s, Connection %j, framing %s: %s", (version, connection, framing, expected) => {
    expect(persists(version, connection, framing)).toBe(expected)
  })
})

describe("Keep-Alive parameters", () => {
  it.each([
    ["timeout=5, max=100", 5000, 100],
    ["max=100, timeout=5", 5000, 100],
    ["Timeout = 5 ,MAX= 0", 5000, 0],
    ["timeout=5", 5000, undefined],
    ["max=7", undefined, 7],
    ["timeout=0", 0, undefined],
    ["timeout=1.5, max=-1", undefined, undefined],
    ["timeout=, max=", undefined, undefined],
    ["timeout=5, timeout=9, max=3, max=8", 5000, 3],
    ["xtimeout=5, maxx=3", undefined, undefined],
    ["timeout", undefined, undefined],
    ["", undefined, undefined],
    [`timeout=${Number.MAX_SAFE_INTEGER}`, undefined, undefined]
  ])("%j: timeout %j ms, max %j", (value, timeout, max) => {
    expect(keepAliveTimeout(value)).toBe(timeout)
    expect(keepAliveMax(value)).toBe(max)
  })
})

describe("responsesAllowed", () => {
  it.each([
    // No hint: the total stands.
    [100, 1, undefined, 100],
    [Infinity, 3, undefined, Infinity],
    // max=N after the served-th response: served + N in all.
    [Infinity, 1, 5, 6],
    [100, 1, 5, 6],
    [100, 5, 1, 6],
    [100, 6, 0, 6],
    // A hint never raises the total: the lowest announced stands.
    [6, 2, 100, 6],
    [3, 1, 5, 3]
  ])("allowed %d, served %d, max %j: %d", (allowed, served, max, expected) => {
    expect(responsesAllowed(allowed, served, max)).toBe(expected)
  })

  it("follows apache's MaxKeepAliveRequests 5: max=5 down to max=0, six responses on one connection", () => {
    let allowed = Infinity
    let served = 0
    const maxes = [5, 4, 3, 2, 1, 0]
    for (const max of maxes) {
      // A response carried only while served < allowed.
      expect(served).toBeLessThan(allowed)
      served++
      allowed = responsesAllowed(allowed, served, max)
    }
    expect(served).toBe(6)
    expect(allowed).toBe(6)
  })
})

describe("idleTimeoutAfter", () => {
  it.each([
    [60_000, undefined, 60_000],
    [Infinity, undefined, Infinity],
    // The hint, less a second, when that is sooner.
    [60_000, 5_000, 4_000],
    [Infinity, 15_000, 14_000],
    [3_000, 5_000, 3_000],
    [4_000, 5_000, 4_000],
    // A hint of a second or less leaves nothing: the caller does not reuse.
    [60_000, 1_000, 0],
    [60_000, 0, -1_000]
  ])("configured %d ms, Keep-Alive timeout %j ms: %d ms", (configured, hint, expected) => {
    expect(idleTimeoutAfter(configured, hint)).toBe(expected)
  })
})
