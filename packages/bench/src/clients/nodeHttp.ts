/**
 * node:http with its own `http.Agent`, capped per origin (`maxSockets`) and in
 * all (`maxTotalSockets`); node:https with the same options in the HTTPS
 * scenario.
 *
 * `keepAlive: false` is the reference for a connection per request (scenario
 * f), and takes no caps: node:http with `keepAlive: false` and a finite
 * `maxSockets` still sends `Connection: keep-alive` and hands a freed socket
 * to the next queued request (`ClientRequest`'s `shouldKeepAlive`), so it would
 * not open a connection per request. The closed loop's workers bound its
 * connections instead.
 */
import * as http from "node:http"
import * as https from "node:https"
import { closedLoop } from "../closedLoop.js"
import type { Runner } from "../closedLoop.js"
import { type Scenario, tlsCa } from "../scenarios.js"

export const nodeHttp = (scenario: Scenario, urls: ReadonlyArray<string>, keepAlive: boolean): Runner => {
  const ca = tlsCa(scenario)
  const options = keepAlive
    ? { keepAlive, maxSockets: scenario.connectionsPerOrigin, maxTotalSockets: scenario.maxConnections }
    : { keepAlive }
  // node:https for the HTTPS scenario: the same Agent options, and the bench's CA.
  const agent = ca === undefined ? new http.Agent(options) : new https.Agent({ ...options, ca })
  const get = ca === undefined ? http.get : https.get
  const once = (url: string) =>
    new Promise<number>((resolve, reject) => {
      const request = get(url, { agent }, (response) => {
        const chunks: Array<Buffer> = []
        let size = 0
        response.on("data", (chunk: Buffer) => {
          size += chunk.byteLength
          if (scenario.read === "whole") chunks.push(chunk)
        })
        response.on("end", () => resolve(scenario.read === "whole" ? Buffer.concat(chunks).byteLength : size))
        response.on("error", reject)
      })
      request.on("error", reject)
    })
  return {
    run: (window) => closedLoop(window, urls, once),
    close: async () => agent.destroy()
  }
}
