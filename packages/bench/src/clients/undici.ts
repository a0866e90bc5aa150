/**
 * undici 7 from npm: a `Pool` per origin capped at the scenario's
 * per-origin connections, and the plain `request()` on undici's default
 * global Agent, which has no connection cap.
 */
import { getGlobalDispatcher, Pool, request } from "undici"
import type { Dispatcher } from "undici"
import { closedLoop } from "../closedLoop.js"
import type { Runner } from "../closedLoop.js"
import { type Scenario, tlsCa } from "../scenarios.js"

export const readBody = async (body: Dispatcher.ResponseData["body"], read: Scenario["read"]): Promise<number> => {
  if (read === "whole") return (await body.arrayBuffer()).byteLength
  let size = 0
  for await (const chunk of body) size += (chunk as Buffer).byteLength
  return size
}

export const undiciPool = (scenario: Scenario, urls: ReadonlyArray<string>): Runner => {
  const pools = new Map<string, Pool>()
  const ca = tlsCa(scenario)
  for (const url of urls) {
    const origin = new URL(url).origin
    if (!pools.has(origin)) {
      pools.set(origin, new Pool(origin, { connections: scenario.connectionsPerOrigin, ...(ca === undefined ? {} : { connect: { ca } }) }))
    }
  }
  // Resolved once up front: a Pool user holds its pools, it does not look them up per request.
  const targets = new Map(urls.map((url) => [url, { pool: pools.get(new URL(url).origin)!, path: new URL(url).pathname }]))
  const once = async (url: string) => {
    const { pool, path } = targets.get(url)!
    const { body } = await pool.request({ method: "GET", path })
    return readBody(body, scenario.read)
  }
  return {
    run: (window) => closedLoop(window, urls, once),
    close: async () => {
      await Promise.all([...pools.values()].map((pool) => pool.close()))
    }
  }
}

export const undiciRequest = (scenario: Scenario, urls: ReadonlyArray<string>): Runner => {
  const once = async (url: string) => {
    const { body } = await request(url)
    return readBody(body, scenario.read)
  }
  return {
    run: (window) => closedLoop(window, urls, once),
    close: () => getGlobalDispatcher().close()
  }
}
