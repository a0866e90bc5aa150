import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type * as Agent from "../Agent.js"
import type { AgentError } from "../AgentError.js"
import { Held, isInternalService } from "./agent.js"
import type { AgentResponse } from "./response.js"

const toRequestError = (request: HttpClientRequest.HttpClientRequest, error: AgentError) =>
  new HttpClientError.RequestError({
    request,
    reason: error.reason === "InvalidRequest" ? (error.origin === "" ? "InvalidUrl" : "Encode") : "Transport",
    cause: error,
    description: error.message
  })

const respond = (held: Held): Effect.Effect<AgentResponse> => {
  const { release, response } = held
  // Freed once the body is all here, rather than when the caller reads it
  // (or never, a caller that only looks at the status); else when the caller
  // read its end, or the response was aborted.
  if (held.freeWhenComplete()) return Effect.succeed(response)
  response.onBodyDone = Effect.sync(release)
  response.onAbort = release
  return Effect.succeed(response)
}

/** @internal */
export const make = (agent: Agent.Service): HttpClient.HttpClient => {
  const execute = isInternalService(agent)
    ? (request: HttpClientRequest.HttpClientRequest, url: URL) => agent.execute(request, url, respond)
    : (request: HttpClientRequest.HttpClientRequest) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Scope.make(), (scope) =>
          Effect.flatMap(
            Effect.exit(restore(Scope.extend(agent.request(request), scope))),
            (exit) =>
              Exit.isSuccess(exit)
                ? respond(
                  new Held(exit.value as AgentResponse, () => void Effect.runFork(Scope.close(scope, Exit.void)))
                )
                : Effect.zipRight(Scope.close(scope, exit), exit as Exit.Exit<never, AgentError>)
          ))
      )
  return HttpClient.make((request, url, signal) =>
    Effect.matchEffect(execute(request, url), {
      onFailure: (error) => Effect.fail(toRequestError(request, error)),
      onSuccess: (response) => {
        // Aborted after a stream was read (harmless), or when the response is
        // garbage collected unread: closing the scope then closes the connection.
        if (response.onAbort !== undefined) signal.addEventListener("abort", response.onAbort, { once: true })
        return Effect.succeed(response)
      }
    })
  )
}
