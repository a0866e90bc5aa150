/**
 * undici 7 from npm through the harness's squid:
 *
 * - `undici-proxy-agent`: `new ProxyAgent({ uri, connections })`, undici's
 *   defaults otherwise. Its default `proxyTunnel: true` puts an http origin
 *   in a CONNECT tunnel too, not only an https one.
 * - `undici-proxy-agent-forward`: the same with `proxyTunnel: false`, which
 *   forwards an http origin's requests in absolute-form. undici builds that
 *   Pool to the proxy with `connect` alone (no `connections`, so no cap), so
 *   the cap is handed to it through `factory`.
 * - `undici-env-proxy-agent`: `new EnvHttpProxyAgent({ httpProxy, httpsProxy,
 *   noProxy: "", connections })`, which builds a `ProxyAgent` per proxy with
 *   the same defaults (`noProxy: ""` so that no `NO_PROXY` of the
 *   environment sends 127.0.0.1 direct).
 *
 * The per-origin cap is the scenario's; each tunnel, or each forwarding
 * connection, is one connection to squid. An https origin's TLS inside the
 * tunnel trusts the bench's CA (`requestTls`).
 */
import { EnvHttpProxyAgent, Pool, ProxyAgent } from "undici"
import type { Dispatcher } from "undici"
import { closedLoop } from "../closedLoop.js"
import type { Runner } from "../closedLoop.js"
import { proxyUrl, type Scenario, tlsCa } from "../scenarios.js"
import { readBody } from "./undici.js"

const dispatcherRunner = (scenario: Scenario, urls: ReadonlyArray<string>, dispatcher: Dispatcher): Runner => {
  // Parsed once up front, as the Pool client does.
  const targets = new Map(urls.map((url) => [url, { origin: new URL(url).origin, path: new URL(url).pathname }]))
  const once = async (url: string) => {
    const { origin, path } = targets.get(url)!
    const { body } = await dispatcher.request({ origin, path, method: "GET" })
    return readBody(body, scenario.read)
  }
  return {
    run: (window) => closedLoop(window, urls, once),
    close: () => dispatcher.close()
  }
}

const settings = (scenario: Scenario) => {
  const uri = proxyUrl(scenario)
  if (uri === undefined) throw new Error(`scenario ${scenario.id} has no proxy`)
  const ca = tlsCa(scenario)
  return { uri, connections: scenario.connectionsPerOrigin, ...(ca === undefined ? {} : { requestTls: { ca } }) }
}

export const undiciProxyAgent = (scenario: Scenario, urls: ReadonlyArray<string>): Runner =>
  dispatcherRunner(scenario, urls, new ProxyAgent(settings(scenario)))

export const undiciProxyAgentForward = (scenario: Scenario, urls: ReadonlyArray<string>): Runner => {
  const options = settings(scenario)
  return dispatcherRunner(
    scenario,
    urls,
    new ProxyAgent({
      ...options,
      proxyTunnel: false,
      factory: (origin, poolOptions) => new Pool(origin, { ...poolOptions, connections: options.connections })
    })
  )
}

export const undiciEnvProxyAgent = (scenario: Scenario, urls: ReadonlyArray<string>): Runner => {
  const { uri, ...options } = settings(scenario)
  return dispatcherRunner(scenario, urls, new EnvHttpProxyAgent({ ...options, httpProxy: uri, httpsProxy: uri, noProxy: "" }))
}
