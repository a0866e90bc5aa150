import type * as HttpBody from "@effect/platform/HttpBody"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as UrlParams from "@effect/platform/UrlParams"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { AgentError } from "../AgentError.js"
import type * as Http1 from "../Http1.js"
import type { Origin } from "../Origin.js"
import type { Connection, PreparedBody, PreparedRequest } from "./connection.js"
import * as InternalOrigin from "./origin.js"
import * as RequestWriter from "./requestWriter.js"
import * as Retry from "./retry.js"
import { direct, type Route, type Routes } from "./routes.js"

/** A request checked and serialised, ready for any connection to its origin. @internal */
export interface Prepared extends PreparedRequest {
  readonly origin: Origin
  /** How its connection reaches the origin: direct, or through a proxy. */
  readonly route: Route
  /** May be sent again after a stale connection: idempotent and replayable. */
  readonly retryable: boolean
}

const refuse = (origin: string, detail: string, cause?: unknown) =>
  new AgentError({ reason: "InvalidRequest", origin, detail, ...(cause !== undefined ? { cause } : {}) })

/** A streamed body gone wrong: the head, and maybe part of the body, went out. */
const abortBody = (origin: string, detail: string, cause?: unknown) =>
  new AgentError({ reason: "InvalidRequest", origin, detail, requestSent: true, ...(cause !== undefined ? { cause } : {}) })

/** Resolves the request's URL the way @effect/platform does. @internal */
export const resolveUrl = (request: HttpClientRequest.HttpClientRequest): URL | AgentError => {
  if (request.urlParams.length === 0 && request.hash._tag === "None") {
    try {
      return new URL(request.url)
    } catch (cause) {
      return refuse("", `invalid URL: ${request.url}`, cause)
    }
  }
  const result = UrlParams.makeUrl(request.url, request.urlParams, request.hash)
  return result._tag === "Left" ? refuse("", `invalid URL: ${request.url}`, result.left) : result.right
}

/** The origin of a URL, or why it has none we can reach. @internal */
export const originOf = (input: string | URL): Origin | AgentError => {
  let url: URL
  try {
    url = typeof input === "string" ? new URL(input) : input
  } catch (cause) {
    return refuse("", `invalid URL: ${String(input)}`, cause)
  }
  return InternalOrigin.fromUrl(url) ?? refuse("", `unsupported URL: ${url.href}`)
}

const stringHeaders = (headers: Readonly<Record<string, unknown>>): Record<string, string> => {
  // Headers may hold non-strings whose toString yields anything: validate the
  // string that would be written. Not a `{}` literal (see ARCHITECTURE.md, "Performance rules").
  const out: Record<string, string> = Object.create(null)
  for (const name in headers) {
    const value = headers[name]
    out[name] = typeof value === "string" ? value : String(value)
  }
  return out
}

const encodeHead = (
  origin: Origin,
  method: string,
  url: URL,
  headers: Record<string, string>,
  framing: Http1.RequestBodyFraming,
  persist: boolean,
  route: Route
): Uint8Array | AgentError => {
  const forwarded = route.forwarded
  // Forwarded to a proxy: the target in absolute-form, the proxy's own
  // credentials unless the caller gave a Proxy-Authorization of its own.
  if (forwarded && route.proxyAuthorization !== undefined && headers["proxy-authorization"] === undefined) {
    headers["proxy-authorization"] = route.proxyAuthorization
  }
  const head = RequestWriter.encodeRequestHead(
    new HeadInput(
      method,
      method === "OPTIONS" && url.pathname === "/*" ? "*" : url.pathname + url.search,
      origin.hostHeader,
      headers,
      framing,
      persist,
      forwarded ? origin.scheme + "://" + origin.hostHeader : undefined
    )
  )
  return head instanceof Uint8Array ? head : refuse(origin.key, head.detail)
}

const streamWriter = (stream: Stream.Stream<Uint8Array, unknown>, chunked: boolean, length: number | undefined) =>
(conn: Connection): Effect.Effect<void, AgentError> => {
  let sent = 0
  const body = Stream.runForEach(stream, (chunk) => {
    if (chunk.length === 0) return Effect.void
    if (!chunked && sent + chunk.length > length!) {
      // Bytes past the declared length would be read as the next request.
      return Effect.fail(abortBody(conn.origin.key, `the request body stream exceeds its declared ${length} bytes`))
    }
    sent += chunk.length
    return conn.write(chunked ? RequestWriter.encodeChunk(chunk) : chunk)
  }).pipe(
    Effect.mapError((cause) =>
      cause instanceof AgentError
        ? cause
        : abortBody(conn.origin.key, "the request body stream failed", cause)
    ),
    Effect.zipRight(Effect.suspend(() => {
      if (chunked) return conn.write(RequestWriter.lastChunk)
      if (sent !== length) {
        return Effect.fail(abortBody(conn.origin.key, `the request body had ${sent} bytes, not the declared ${length}`))
      }
      return Effect.void
    }))
  )
  return body
}

const encoder = new TextEncoder()

// The objects made for every request are class instances, not object literals (see ARCHITECTURE.md, "Performance rules").

class PreparedImpl implements Prepared {
  constructor(
    readonly origin: Origin,
    readonly route: Route,
    readonly method: string,
    readonly head: Uint8Array,
    readonly body: PreparedBody,
    readonly retryable: boolean
  ) {}
}

class BytesBody {
  readonly _tag = "Bytes"
  constructor(readonly bytes: Uint8Array) {}
}

class HeadInput implements Http1.RequestHeadInput {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly host: string,
    readonly headers: Record<string, string>,
    readonly body: Http1.RequestBodyFraming,
    readonly persist: boolean,
    readonly absoluteOrigin: string | undefined
  ) {}
}

const emptyBody: PreparedBody = { _tag: "Empty" }
const emptyFraming: Http1.RequestBodyFraming = { _tag: "Empty" }

/**
 * Checks and serialises a request: at once, or as an effect for a body that
 * must be encoded first (FormData). @internal
 */
export const prepare = (
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  persist: boolean,
  routes: Routes | undefined
): Prepared | AgentError | Effect.Effect<Prepared, AgentError> => {
  const origin = InternalOrigin.fromUrl(url)
  if (origin === undefined) return refuse("", `unsupported URL: ${url.href}`)
  const route = routes === undefined ? direct : routes.of(origin)
  const headers = stringHeaders(request.headers)
  const method = request.method
  const withBody = (body: PreparedBody, framing: Http1.RequestBodyFraming, contentType: string | undefined) => {
    if (contentType !== undefined && contentType !== "" && headers["content-type"] === undefined) {
      headers["content-type"] = contentType
    }
    const head = encodeHead(origin, method, url, headers, framing, persist, route)
    if (head instanceof AgentError) return head
    return new PreparedImpl(origin, route, method, head, body, Retry.isRetryable(method, headers, body._tag !== "Stream"))
  }
  const bytes = (data: Uint8Array, contentType: string | undefined) =>
    withBody(new BytesBody(data), { _tag: "Length", length: data.length }, contentType)
  const body: HttpBody.HttpBody = request.body
  switch (body._tag) {
    case "Empty":
      return withBody(emptyBody, emptyFraming, undefined)
    case "Uint8Array":
      return bytes(body.body, body.contentType)
    case "Raw": {
      const raw = body.body
      if (typeof raw === "string") return bytes(encoder.encode(raw), body.contentType)
      if (raw instanceof Uint8Array) return bytes(raw, body.contentType)
      if (raw instanceof ArrayBuffer) return bytes(new Uint8Array(raw), body.contentType)
      return refuse(origin.key, "a Raw body must be a string, Uint8Array or ArrayBuffer")
    }
    case "FormData":
      return Effect.flatMap(
        Effect.tryPromise({
          try: async () => {
            const encoded = new Response(body.formData)
            return {
              data: new Uint8Array(await encoded.arrayBuffer()),
              type: encoded.headers.get("content-type") ?? undefined
            }
          },
          catch: (cause) => refuse(origin.key, "the form data could not be encoded", cause)
        }),
        ({ data, type }) => {
          const prepared = bytes(data, type)
          return prepared instanceof AgentError ? Effect.fail(prepared) : Effect.succeed(prepared)
        }
      )
    case "Stream": {
      const length = body.contentLength
      const chunked = length === undefined
      return withBody(
        { _tag: "Stream", length, write: streamWriter(body.stream, chunked, length) },
        chunked ? { _tag: "Chunked" } : { _tag: "Length", length },
        body.contentType
      )
    }
  }
}
