/**
 * The client side of the hostile-server tests: sending through the Agent,
 * telling outcomes apart, and checking that nothing leaked afterwards.
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { expect } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { AgentError, isAgentError } from "@keepalive/agent/AgentError"
import type { Phase, Reason } from "@keepalive/agent/AgentError"
import { NodeAgent } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"

/** Every hostile test is quick; a hang must fail it rather than the run. */
export const timeout = 8_000

/**
 * Runs `body` with a NodeAgent (and its HttpClient) made with `config`, then
 * waits until `server` has seen every connection it accepted closed: closing
 * the Agent closes them all, whatever the exchange left behind.
 */
export const withAgent = <A, E, R>(
  server: { readonly allClosed: Effect.Effect<void> },
  body: Effect.Effect<A, E, R>,
  config?: Agent.Config
): Effect.Effect<A, E, Exclude<R, Agent.Agent | HttpClient.HttpClient>> =>
  Effect.zipLeft(Effect.provide(body, NodeAgent.layer(config)), server.allClosed)

/** Reads a body as latin1 text, failing with the Agent's own error rather than a wrapper. */
export const readText = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string, AgentError> =>
  response.arrayBuffer.pipe(
    Effect.map((body) => Buffer.from(body).toString("latin1")),
    Effect.catchAll((error) => isAgentError(error.cause) ? Effect.fail(error.cause) : Effect.die(error))
  )

export interface Received {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** Sends a request through the Agent and reads the whole response. */
export const send = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<Received, AgentError, Agent.Agent> =>
  Agent.request(request).pipe(
    Effect.flatMap((response) =>
      Effect.map(readText(response), (body) => ({ status: response.status, headers: response.headers, body }))
    )
  )

/** Runs `effect` and returns its AgentError, failing the test when it succeeded or failed otherwise. */
export const failure = <A, R>(effect: Effect.Effect<A, AgentError, R>): Effect.Effect<AgentError, never, R> =>
  Effect.flatMap(Effect.either(effect), (result) => {
    if (Either.isRight(result)) {
      return Effect.die(new Error(`expected an AgentError, got success: ${JSON.stringify(result.right)}`))
    }
    expect(result.left).toBeInstanceOf(AgentError)
    return Effect.succeed(result.left)
  })

/** Runs `effect`, expecting an AgentError with this reason (and phase). */
export const expectFailure = <A, R>(
  effect: Effect.Effect<A, AgentError, R>,
  reason: Reason,
  phase?: Phase
): Effect.Effect<AgentError, never, R> =>
  Effect.tap(failure(effect), (error) => {
    expect({ reason: error.reason, phase: error.phase }, error.message).toEqual({ reason, phase })
  })

/**
 * Checks the Agent holds no busy connection and no waiter, and that `open`
 * (when given) settles at the expected count (an idle connection broken by
 * the peer leaves the pool from a forked fiber).
 */
export const expectClean = (open?: number): Effect.Effect<void, never, Agent.Agent> =>
  Effect.gen(function*() {
    let stats = yield* Agent.stats
    expect(stats, "busy or waiting right after the exchange").toMatchObject({ busy: 0, waiting: 0 })
    const deadline = performance.now() + 1000
    while (open !== undefined && stats.open !== open && performance.now() < deadline) {
      yield* Effect.sleep("2 millis")
      stats = yield* Agent.stats
    }
    expect(stats).toMatchObject({ busy: 0, waiting: 0, ...(open === undefined ? {} : { open }) })
  })
