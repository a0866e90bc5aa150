/**
 * node:http with its own `http.Agent`, capped per origin (`maxSockets`) and in
 * all (`maxTotalSockets`); `keepAlive: false` is the reference for scenario f.
 */
import * as http from "node:http"
import { closedLoop } from "../closedLoop.js"
import type { Runner } from "../closedLoop.js"
import type { Scenario } from "../scenarios.js"

export const nodeHttp = (scenario: Scenario, urls: ReadonlyArray<string>, keepAlive: boolean): Runner => {
  const agent = new http.Agent({
    keepAlive,
    maxSockets: scenario.connectionsPerOrigin,
    maxTotalSockets: scenario.maxConnections
  })
  const once = (url: string) =>
    new Promise<number>((resolve, reject) => {
      const request = http.get(url, { agent }, (response) => {
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
