/**
 * keepalive's own clients: `Agent.request` directly, and @effect/platform's
 * `HttpClient` as the keepalive layer provides it, each with persistent
 * connections or (`persist: false`) a connection per request.
 */
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { Runner } from "../closedLoop.js"
import type { Scenario } from "../scenarios.js"
import { effectRunner, httpClientGet } from "./effectPlatform.js"

const layerFor = (scenario: Scenario, persist: boolean) =>
  NodeAgent.layer({
    maxConnectionsPerOrigin: scenario.connectionsPerOrigin,
    maxConnections: scenario.maxConnections,
    idleTimeout: "4 seconds",
    persist
  })

const agentGet = (read: Scenario["read"]) => (url: string) =>
  Agent.request(HttpClientRequest.get(url)).pipe(
    Effect.flatMap((response) =>
      read === "whole"
        ? Effect.map(response.arrayBuffer, (body) => body.byteLength)
        : Stream.runFold(response.stream, 0, (size, chunk) => size + chunk.byteLength)
    ),
    Effect.scoped
  )

export const agentRequest = (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  effectRunner(layerFor(scenario, persist), urls, agentGet(scenario.read))

export const agentHttpClient = (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  effectRunner(layerFor(scenario, persist), urls, httpClientGet(scenario.read))
