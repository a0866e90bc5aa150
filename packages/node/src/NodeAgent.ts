/**
 * The Agent on Node.js: one Layer for `Agent` and `@effect/platform`'s `HttpClient`.
 *
 * @since 0.1.0
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import * as Agent from "@keepalive/agent/Agent"
import * as AgentHttpClient from "@keepalive/agent/AgentHttpClient"
import * as Layer from "effect/Layer"
import * as NodeConnector from "./NodeConnector.js"

/**
 * Provides `Agent.Agent` and `HttpClient.HttpClient` over node:net/node:tls.
 *
 * @since 0.1.0
 * @category layers
 * @example
 * import { NodeAgent } from "@keepalive/node"
 * import { Agent } from "@keepalive/agent"
 * import { Effect } from "effect"
 * const AgentLive = NodeAgent.layer({ maxConnectionsPerOrigin: 2, idleTimeout: "4 seconds" })
 * Effect.runPromise(Agent.requestString("http://127.0.0.1:8080/").pipe(Effect.provide(AgentLive)))
 */
export const layer = (
  config?: Agent.Config,
  options?: NodeConnector.Options
): Layer.Layer<Agent.Agent | HttpClient.HttpClient> => {
  const agent = Agent.layer(config).pipe(
    Layer.provide(options === undefined ? NodeConnector.layer : NodeConnector.layerWith(options))
  )
  return Layer.provideMerge(AgentHttpClient.layer, agent)
}
