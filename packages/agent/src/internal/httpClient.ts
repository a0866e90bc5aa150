import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import type { AgentError } from "../AgentError.js"
import { type Held, isInternalService } from "./agent.js"
import type { AgentResponse } from "./response.js"

const toRequestError = (request: HttpClientRequest.HttpClientRequest, error: AgentError) =>
  new HttpClientError.RequestError({
    request,
    reason: error.reason === "InvalidRequest" ? (error.origin === "" ? "InvalidUrl" : "Encode") : "Transport",
    cause: error,
    description: error.message
  })

const respond = (held: Held): Effect.Effect<AgentResponse> => {
  const { response, scope } = held
  const release = Scope.close(scope, Exit.void)
  if (response.connection.responseComplete) {
    // The whole response is here already: keep its bytes and free the
    // connection now rather than when the caller reads the body.
    return Effect.as(Effect.zipRight(Effect.ignore(response.bytes), release), response)
  }
  response.onBodyDone = release
  return Effect.map(Effect.runtime<never>(), (runtime) => {
    const runRelease = () => void Runtime.runFork(runtime)(release)
    // Unless the caller streams it, the body is buffered as it arrives:
    // once complete, the connection is free for others even if nobody
    // reads the response (a caller that only looks at the status).
    response.exchange.onSettled = () => {
      if (!response.exchange.streaming) runRelease()
    }
    // Aborted after a stream was read (harmless), or when the response is
    // garbage collected unread: closing the scope then closes the connection.
    response.onAbort = runRelease
    return response
  })
}

/** @internal */
export const make = (agent: Agent.Service): HttpClient.HttpClient => {
  const execute = isInternalService(agent)
    ? agent.execute
    : (request: HttpClientRequest.HttpClientRequest) =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.map(Scope.extend(agent.request(request), scope), (response) => ({
          response: response as AgentResponse,
          scope
        })))
  return HttpClient.make((request, url, signal) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.matchEffect(restore(execute(request, url)), {
        onFailure: (error) => Effect.fail(toRequestError(request, error)),
        onSuccess: (held) =>
          Effect.tap(respond(held), (response) => {
            if (response.onAbort !== undefined) signal.addEventListener("abort", response.onAbort, { once: true })
          })
      })
    )
  )
}
