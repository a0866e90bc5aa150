/**
 * Which requests may be sent a second time: the rule the Agent's one retry
 * after a stale connection obeys (test/hostile/stale.test.ts sends them over
 * real sockets).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Http1 from "../src/Http1.js"
import { isIdempotentMethod, isRetryable } from "../src/internal/retry.js"

describe("isIdempotentMethod", () => {
  it.each(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])("%s is idempotent", (method) => {
    expect(isIdempotentMethod(method)).toBe(true)
    expect(Http1.isIdempotentMethod(method)).toBe(true)
  })
  it.each(["POST", "PATCH", "CONNECT", "get", "PROPFIND", ""])("%j is not", (method) => {
    expect(isIdempotentMethod(method)).toBe(false)
    expect(Http1.isIdempotentMethod(method)).toBe(false)
  })
})

describe("isRetryable", () => {
  const none: Record<string, string> = {}
  const keyed: Record<string, string> = { "idempotency-key": "8e03978e" }
  it.each([
    ["GET", none, true, true],
    ["DELETE", none, true, true],
    ["POST", none, true, false],
    ["PATCH", none, true, false],
    ["POST", keyed, true, true],
    ["PATCH", { "idempotency-key": "" }, true, true],
    // A streamed body is gone once written, whatever the method.
    ["PUT", none, false, false],
    ["POST", keyed, false, false],
    ["post", none, true, false],
    ["POST", { "Idempotency-Key": "k" }, true, false]
  ])("%s with %j, replayable %s: %s", (method, headers, replayable, expected) => {
    expect(isRetryable(method, headers, replayable)).toBe(expected)
  })
})
