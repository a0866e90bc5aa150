/**
 * keepalive's own clients: `Agent.request` (no Scope; a streamed body read with
 * `Agent.forEachChunk`), `Agent.requestScoped` in `Effect.scoped` with
 * `response.stream` (the Effect idioms, Scope and Stream, at their cost),
 * `Agent.requestWith`, and @effect/platform's `HttpClient` as the keepalive
 * layer provides it, with persistent connections or (`persist: false`) a
 * connection per request. In the proxied scenarios each goes through the
 * harness's squid (`proxy`). `keepalive-fleet` (scenarios bf, df) is in
 * `keepaliveFleet.ts`, so that only it loads `@keepalive/redis`.
 */
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { ClientCounts, MeasurementWindow, Runner } from "../closedLoop.js"
import { proxyUrl, type Scenario, tlsCa } from "../scenarios.js"
import { effectRunner, type EffectRunner, httpClientGet } from "./effectRunner.js"

export const layerFor = (scenario: Scenario, persist: boolean) => {
  const ca = tlsCa(scenario)
  // Through squid in the proxied scenarios: one URL for both schemes.
  const proxy = proxyUrl(scenario)
  return NodeAgent.layer({
    maxConnectionsPerOrigin: scenario.connectionsPerOrigin,
    maxConnections: scenario.maxConnections,
    idleTimeout: "4 seconds",
    persist,
    ...(proxy === undefined ? {} : { proxy })
  }, ca === undefined ? undefined : { tls: { ca } })
}

const wholeBody = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.arrayBuffer, (body) => body.byteLength)

/** The Agent's own reads: the whole body, or its pieces as they arrive (backpressured), with no Effect Stream. */
const readBody = (read: Scenario["read"]) =>
  read === "whole" ? wholeBody : (response: HttpClientResponse.HttpClientResponse) => {
    let size = 0
    const count = (chunk: Uint8Array) => Effect.sync(() => void (size += chunk.byteLength))
    return Effect.map(Agent.forEachChunk(response, count), () => size)
  }

export const agentGet = (read: Scenario["read"]) => {
  const body = readBody(read)
  return (url: string) => Effect.flatMap(Agent.request(HttpClientRequest.get(url)), body)
}

const agentGetScoped = (read: Scenario["read"]) => {
  const body = read === "whole"
    ? wholeBody
    : (response: HttpClientResponse.HttpClientResponse) =>
      Stream.runFold(response.stream, 0, (size, chunk) => size + chunk.byteLength)
  return (url: string) => Effect.scoped(Effect.flatMap(Agent.requestScoped(HttpClientRequest.get(url)), body))
}

const agentGetWith = (read: Scenario["read"]) => {
  const body = readBody(read)
  return (url: string) => Agent.requestWith(HttpClientRequest.get(url), body)
}

/** Adds `Agent.stats.opened` (and whatever else `more` counted) to a runner's report. */
export const withCounts = (runner: EffectRunner<Agent.Agent>, more?: (window: MeasurementWindow) => ClientCounts): Runner => ({
  ...runner,
  counts: async (window) => ({ agentOpened: (await runner.runPromise(Agent.stats)).opened, ...more?.(window) })
})

export const agentRequestWith = (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> =>
  effectRunner(layerFor(scenario, true), urls, agentGetWith(scenario.read))

export const agentRequest = async (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  withCounts(await effectRunner(layerFor(scenario, persist), urls, agentGet(scenario.read)))

export const agentRequestScoped = (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> =>
  effectRunner(layerFor(scenario, true), urls, agentGetScoped(scenario.read))

export const agentHttpClient = (scenario: Scenario, urls: ReadonlyArray<string>, persist: boolean): Promise<Runner> =>
  effectRunner(layerFor(scenario, persist), urls, httpClientGet(scenario.read))
