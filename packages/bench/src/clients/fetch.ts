/**
 * Node's global `fetch` (the undici bundled with Node, not the npm one) on its
 * default dispatcher, which has no connection cap.
 */
import { closedLoop } from "../closedLoop.js"
import type { Runner } from "../closedLoop.js"
import type { Scenario } from "../scenarios.js"

export const globalFetch = (scenario: Scenario, urls: ReadonlyArray<string>): Runner => {
  const once = async (url: string) => {
    const response = await fetch(url)
    if (scenario.read === "whole") return (await response.arrayBuffer()).byteLength
    let size = 0
    const reader = response.body!.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) size += chunk.value.byteLength
    return size
  }
  return {
    run: (window) => closedLoop(window, urls, once),
    close: async () => {}
  }
}
