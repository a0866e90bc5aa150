/**
 * @effect/platform's `HttpClient`, on the two backends @effect/platform-node
 * ships: `layerUndici` (a fresh undici Agent) and `layer` (node:http with
 * `new http.Agent()` defaults). Neither takes a connection cap. The keepalive
 * adapter runs through the same `httpClientGet` and `effectRunner`
 * (effectRunner.ts), so every HttpClient is driven the same way.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import type { Runner } from "../closedLoop.js"
import type { Scenario } from "../scenarios.js"
import { effectRunner, httpClientGet } from "./effectRunner.js"

export const effectUndici = (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> =>
  effectRunner(NodeHttpClient.layerUndici, urls, httpClientGet(scenario.read))

export const effectNode = (scenario: Scenario, urls: ReadonlyArray<string>): Promise<Runner> =>
  effectRunner(NodeHttpClient.layer, urls, httpClientGet(scenario.read))
