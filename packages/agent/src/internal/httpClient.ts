import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import * as UrlParams from "@effect/platform/UrlParams"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"
import type * as Agent from "../Agent.js"
import type { AgentError } from "../AgentError.js"
import { AgentService } from "./agent.js"
import { handOver, type Held } from "./release.js"
import type { AgentResponse } from "./response.js"

const toRequestError = (request: HttpClientRequest.HttpClientRequest, error: AgentError) =>
  new HttpClientError.RequestError({
    request,
    reason: error.reason === "InvalidRequest" ? (error.origin === "" ? "InvalidUrl" : "Encode") : "Transport",
    cause: error,
    description: error.message
  })

/**
 * What `HttpClient.withScope` registers: the request's AbortController, aborted
 * when the scope closes. @effect/platform keeps it under this global key, and
 * `HttpClient.make` reads it from there; so do we. A private internal of
 * @effect/platform: `Couplings.test.ts` fails if it moves. @internal
 */
export const scopedRequests = globalValue(
  "@effect/platform/HttpClient/scopedRequests",
  () => new WeakMap<HttpClientRequest.HttpClientRequest, AbortController>()
)

/** Takes charge of a response: frees its connection when it should (see release.ts). */
type Respond = (held: Held) => Effect.Effect<AgentResponse>

/** `Respond` for a request in `HttpClient.withScope`: its scope's closing frees the connection too. */
const respondScoped = (scoped: AbortController): Respond => (held) => Effect.succeed(held.handOver(scoped.signal))


const ATTR_HTTP_REQUEST_METHOD = "http.request.method"
const ATTR_HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
const ATTR_SERVER_ADDRESS = "server.address"
const ATTR_SERVER_PORT = "server.port"
const ATTR_URL_FULL = "url.full"
const ATTR_URL_PATH = "url.path"
const ATTR_URL_SCHEME = "url.scheme"
const ATTR_URL_QUERY = "url.query"

/** Sends a request through the Agent, its failure as @effect/platform's. */
type Send = (
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  keep: Respond
) => Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.RequestError>

/**
 * The span `HttpClient.make` would make: its name, attributes (headers
 * redacted), trace propagation, and the tracer switches
 * (`withTracerDisabledWhen`, `withTracerPropagation`, `withSpanNameGenerator`),
 * read from the same FiberRefs and services.
 */
const traced = (
  send: Send,
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  keep: Respond,
  redactedNames: ReadonlyArray<string | RegExp>,
  propagate: boolean,
  name: string
) =>
  Effect.useSpan(name, { kind: "client", captureStackTrace: false }, (span) => {
    span.attribute(ATTR_HTTP_REQUEST_METHOD, request.method)
    span.attribute(ATTR_SERVER_ADDRESS, url.origin)
    if (url.port !== "") span.attribute(ATTR_SERVER_PORT, +url.port)
    span.attribute(ATTR_URL_FULL, url.toString())
    span.attribute(ATTR_URL_PATH, url.pathname)
    span.attribute(ATTR_URL_SCHEME, url.protocol.slice(0, -1))
    const query = url.search.slice(1)
    if (query !== "") span.attribute(ATTR_URL_QUERY, query)
    const requestHeaders = Headers.redact(request.headers, redactedNames)
    for (const key in requestHeaders) span.attribute(`http.request.header.${key}`, String(requestHeaders[key]))
    const sent = propagate ? HttpClientRequest.setHeaders(request, HttpTraceContext.toHeaders(span)) : request
    // Only a Stream body runs the caller's code (and its spans) while the
    // request is sent: the span is made the parent for that case alone.
    const sending = request.body._tag === "Stream"
      ? Effect.withParentSpan(send(sent, url, keep), span)
      : send(sent, url, keep)
    return Effect.map(sending, (response) => {
      span.attribute(ATTR_HTTP_RESPONSE_STATUS_CODE, response.status)
      const responseHeaders = Headers.redact(response.headers, redactedNames)
      for (const key in responseHeaders) span.attribute(`http.response.header.${key}`, String(responseHeaders[key]))
      return response
    })
  })

/**
 * The Agent as an HttpClient. Built with `HttpClient.makeWith`, not
 * `HttpClient.make`: that one gives every request an AbortController, a
 * FinalizationRegistry entry and a wrapper around the response whose body
 * reads abort on interruption. The Agent frees a connection itself (when the
 * body is all here, read, or given up), so only a response whose body is
 * still arriving is registered, and the response is the Agent's own.
 *
 * @internal
 */
export const make = (agent: Agent.Service): HttpClient.HttpClient => {
  // Another implementation of the service (a test double, say) frees its
  // connections its own way.
  const execute = agent instanceof AgentService
    ? (request: HttpClientRequest.HttpClientRequest, url: URL, keep: Respond) => agent.execute(request, url, keep)
    : (request: HttpClientRequest.HttpClientRequest) => agent.request(request)
  const send: Send = (request, url, keep) =>
    Effect.mapError(execute(request, url, keep), (error) => toRequestError(request, error))
  const postprocess = (
    effect: Effect.Effect<HttpClientRequest.HttpClientRequest, HttpClientError.HttpClientError>
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> =>
    Effect.flatMap(effect, (request) =>
      Effect.withFiberRuntime((fiber) => {
        const url = UrlParams.makeUrl(request.url, request.urlParams, request.hash)
        if (url._tag === "Left") {
          return Effect.fail(new HttpClientError.RequestError({ request, reason: "InvalidUrl", cause: url.left }))
        }
        // Looked up by the request as given: the traced one sent is a copy.
        const scoped = scopedRequests.get(request)
        const keep = scoped === undefined ? handOver : respondScoped(scoped)
        const tracing = fiber.getFiberRef(FiberRef.currentTracerEnabled) &&
          !fiber.getFiberRef(HttpClient.currentTracerDisabledWhen)(request)
        if (!tracing) return send(request, url.right, keep)
        return traced(
          send,
          request,
          url.right,
          keep,
          fiber.getFiberRef(Headers.currentRedactedNames),
          fiber.getFiberRef(HttpClient.currentTracerPropagation),
          Context.get(fiber.currentContext, HttpClient.SpanNameGenerator)(request)
        )
      }))
  return HttpClient.makeWith(postprocess, Effect.succeed)
}
