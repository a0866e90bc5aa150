import type * as HttpClient from "@effect/platform/HttpClient"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { gc } from "./gc.js"
import type { MemoryServer } from "./MemoryConnector.js"

/** Lets microtask-delivered bytes and forked fibers run. */
export const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))).pipe(
  Effect.zipRight(Effect.yieldNow()),
  Effect.repeatN(3)
)

/**
 * An Agent over the in-memory server. Its shutdown does not wait for requests
 * in flight unless the test says so: under TestClock that wait lasts until the
 * test moves the clock, and a test failing with a request in flight would
 * time out instead of reporting its failure.
 */
export const agentOn = (server: MemoryServer, config: Agent.Config = {}) =>
  Agent.layer({ shutdownTimeout: 0, ...config }).pipe(Layer.provide(server.layer))

/**
 * Runs `body` with an Agent (and its HttpClient) on the in-memory server. The
 * Agent's scope is closed with a time limit: a leaked connection makes its
 * pool's shutdown wait forever, which must not hang the test run.
 */
export const withAgent = <A, E>(
  server: MemoryServer,
  config: Agent.Config,
  body: Effect.Effect<A, E, Agent.Agent | HttpClient.HttpClient>
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const agent = agentOn(server, config)
    const layer = Layer.merge(agent, AgentHttpClient.layer.pipe(Layer.provide(agent)))
    const context = yield* Layer.buildWithScope(layer, scope)
    const exit = yield* Effect.exit(Effect.provide(body, context))
    yield* Effect.ignore(Effect.timeout(Scope.close(scope, Exit.void), "200 millis"))
    return yield* exit
  })

/**
 * Collects garbage (up to 50 times, letting finalization callbacks run in
 * between) until the Agent has no busy connection: a response dropped unread
 * is given back by the finalization registry, at a time only GC decides.
 */
export const collectGarbageUntilIdle: Effect.Effect<void, never, Agent.Agent> = Effect.gen(function*() {
  for (let i = 0; i < 50 && (yield* Agent.stats).busy > 0; i++) {
    gc()
    yield* settle
  }
})
