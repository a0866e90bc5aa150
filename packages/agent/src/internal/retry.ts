/**
 * Which requests may be sent a second time. The Agent retries once, on a
 * fresh connection, a request whose reused connection closed before any
 * byte of the response (`Attempt.retryStale`); this decides whether the
 * request allows it, so that a request whose bytes may have reached the
 * server is never sent twice unless sending it twice is harmless.
 */

/**
 * Whether requests with this method are idempotent (RFC 9110 §9.2.2: GET,
 * HEAD, OPTIONS, TRACE, PUT, DELETE; method names are case-sensitive).
 *
 * @internal
 */
export const isIdempotentMethod = (method: string): boolean => {
  switch (method) {
    case "GET":
    case "HEAD":
    case "OPTIONS":
    case "TRACE":
    case "PUT":
    case "DELETE":
      return true
    default:
      return false
  }
}

/**
 * Whether a request may be sent again after a stale connection: its method
 * is idempotent or it carries an `Idempotency-Key` (`headers` lower-cased),
 * and its body can be sent again (`replayable`: not a stream, whose bytes
 * are gone once written).
 *
 * @internal
 */
export const isRetryable = (method: string, headers: Readonly<Record<string, string>>, replayable: boolean): boolean =>
  replayable && (isIdempotentMethod(method) || headers["idempotency-key"] !== undefined)
