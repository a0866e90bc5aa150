import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"

/** Lets microtask-delivered bytes and forked fibers run. */
export const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))).pipe(
  Effect.zipRight(Effect.yieldNow()),
  Effect.repeatN(3)
)

/**
 * Runs `body` with an Agent (and its HttpClient) on the in-memory server. The
 * Agent's scope is closed with a time limit: a leaked connection makes its
 * Pool's shutdown wait forever, which must not hang the test run.
 */
export const withAgent = <A, E>(
  server: MemoryServer,
  config: Agent.Config,
  body: Effect.Effect<A, E, Agent.Agent | HttpClient.HttpClient>
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const agent = Agent.layer(config).pipe(Layer.provide(server.layer))
    const layer = Layer.merge(agent, AgentHttpClient.layer.pipe(Layer.provide(agent)))
    const context = yield* Layer.buildWithScope(layer, scope)
    const exit = yield* Effect.exit(Effect.provide(body, context))
    yield* Effect.ignore(Effect.timeout(Scope.close(scope, Exit.void), "200 millis"))
    return yield* exit
  })
