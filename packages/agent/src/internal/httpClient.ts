import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as UrlParams from "@effect/platform/UrlParams"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { globalValue } from "effect/GlobalValue"
import type * as Agent from "../Agent.js"
import type { AgentError } from "../AgentError.js"
import { AgentService } from "./agent.js"
import { handOver, type Held } from "./release.js"
import type { AgentResponse } from "./response.js"
import { type Trace, traced, TraceSettings } from "./tracing.js"

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


/** Sends a request through the Agent, its failure as @effect/platform's. */
type Send = (
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  keep: Respond,
  trace: Trace | undefined
) => Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.RequestError>

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
    ? (request: HttpClientRequest.HttpClientRequest, url: URL, keep: Respond, trace: Trace | undefined) =>
      agent.execute(request, url, keep, trace)
    : (request: HttpClientRequest.HttpClientRequest, _url: URL, _keep: Respond, trace: Trace | undefined) =>
      trace === undefined ? agent.request(request) : Effect.flatMap(agent.request(request), (response) =>
        Effect.map(Clock.currentTimeNanos, (now) => {
          trace.responded(response.status, response.headers, now)
          return response
        }))
  // `Effect.mapError`'s mapping, in a frame a success passes without a step.
  const send: Send = (request, url, keep, trace) =>
    Effect.catchAllCause(execute(request, url, keep, trace), (cause) => {
      const failure = Cause.failureOrCause(cause)
      return failure._tag === "Left" ? Effect.fail(toRequestError(request, failure.left)) : Effect.failCause(failure.right)
    })
  const sendOne = (
    request: HttpClientRequest.HttpClientRequest
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> =>
    Effect.withFiberRuntime((fiber) => {
      const url = UrlParams.makeUrl(request.url, request.urlParams, request.hash)
      if (url._tag === "Left") {
        return Effect.fail(new HttpClientError.RequestError({ request, reason: "InvalidUrl", cause: url.left }))
      }
      // Looked up by the request as given: the traced one sent is a copy.
      const scoped = scopedRequests.get(request)
      const keep = scoped === undefined ? handOver : respondScoped(scoped)
      const settings = TraceSettings.ofClient(fiber, request)
      if (settings === undefined) return send(request, url.right, keep, undefined)
      if (!(agent instanceof AgentService)) {
        return traced(fiber, (sent, trace) => send(sent, url.right, keep, trace), request, url.right, settings)
      }
      // The Agent ends the span itself (with the error this client fails with), in its own region.
      return traced(fiber, (sent, trace) => {
        trace.failureAs = (error) => toRequestError(sent, error)
        return send(sent, url.right, keep, trace)
      }, request, url.right, settings, true)
    })
  const postprocess = (
    effect: Effect.Effect<HttpClientRequest.HttpClientRequest, HttpClientError.HttpClientError>
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> =>
    // A request given as it is (no `mapRequestEffect` before) is an Exit already: no step to unwrap it.
    Exit.isExit(effect) && Exit.isSuccess(effect)
      ? sendOne(effect.value as HttpClientRequest.HttpClientRequest)
      : Effect.flatMap(effect, sendOne)
  return HttpClient.makeWith(postprocess, Effect.succeed)
}
