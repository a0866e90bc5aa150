/**
 * keepalive's own clients: `Agent.request` directly (in `Effect.scoped`),
 * `Agent.requestWith` (no Scope; streamed bodies through `Agent.forEachChunk`),
 * and @effect/platform's `HttpClient` as the keepalive layer provides it, with
 * persistent connections or (`persist: false`) a connection per request.
 */
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
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

const readBody = (read: Scenario["read"]) => (response: HttpClientResponse.HttpClientResponse) =>
  read === "whole"
    ? Effect.map(response.arrayBuffer, (body) => body.byteLength)
    : Stream.runFold(response.stream, 0, (size, chunk) => size + chunk.byteLength)

const agentGet = (read: Scenario["read"]) => {
  const body = readBody(read)
  return (url: string) => Effect.scoped(Effect.flatMap(Agent.request(HttpClientRequest.get(url)), body))
}

// The Agent's own path: no Scope, and a streamed body read with forEachChunk
// (the pieces as they arrive, backpressured) rather than an Effect Stream.
const agentGetWith = (read: Scenario["read"]) => {
  const body = read === "whole"
    ? readBody(read)
    : (response: HttpClientResponse.HttpClientResponse) => {
      let size = 0
      const count = (chunk: Uint8Array) => Effect.sync(() => void (size += chunk.byteLength))
      return Effect.map(Agent.forEachChunk(response, count), () => size)
    }
  return (url: string) => Agent.requestWith(HttpClientRequest.get(url), body)
}

export const agentRequestWith = (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> =>
  effectRunner(layerFor(scenario, true), urls, agentGetWith(scenario.read))

export const agentRequest = (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  effectRunner(layerFor(scenario, persist), urls, agentGet(scenario.read))

export const agentHttpClient = (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  effectRunner(layerFor(scenario, persist), urls, httpClientGet(scenario.read))
