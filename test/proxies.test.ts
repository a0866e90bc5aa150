/**
 * The Agent through real proxies (`test/setup/proxies.ts`): squid (forwarding,
 * CONNECT, Basic auth), tinyproxy (another forwarding and CONNECT
 * implementation) and dante (SOCKS5), relaying to the test nginx and apache2
 * and to local servers of the test. squid's access log (`<squid's port>
 * <client's port> <method> <url> <status> <user>`) shows from the proxy's
 * side how many connections and CONNECTs the Agent made.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent, Proxy } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import * as zlib from "node:zlib"
import { inject } from "vitest"
import { apacheFileContent, apacheFiles } from "./setup/apache.js"
import { bigBody } from "./setup/global.js"
import { type TestCertificates, testCertificates } from "./setup/certificates.js"
import { provided } from "./setup/provided.js"
import { proxyRefusedHost, squidPassword, squidUser } from "./setup/proxies.js"

const server = (name: string, port: number, unavailable: string) => provided(name, port, unavailable, `${name} proxy tests`)

const nginx = server("nginx", inject("nginxPort"), inject("nginxUnavailable"))
const apache = server("apache2", inject("apachePort"), inject("apacheUnavailable"))
const squid = server("squid", inject("squidPort"), inject("squidUnavailable"))
const squidAuth = server("squid", inject("squidAuthPort"), inject("squidUnavailable"))
const tinyproxy = server("tinyproxy", inject("tinyproxyPort"), inject("tinyproxyUnavailable"))
const dante = server("dante", inject("dantePort"), inject("danteUnavailable"))
const certificates = testCertificates("proxy tests of https origins")
const squidLog = inject("squidAccessLog")
const danteLog = inject("danteLog")
const tinyproxyLog = inject("tinyproxyLog")

/** dante's lines since `from` that say it relayed a connection to `port`. */
const danteRelays = (from: number, port: number) =>
  Effect.promise(async () => {
    const relays = () =>
      fs.readFileSync(danteLog).subarray(from).toString("latin1").split("\n")
        .filter((line) => line.includes("tcp/connect [") && line.includes(`.${port}`) && !line.includes("block("))
    for (let i = 0; i < 50 && relays().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    return relays()
  })

interface Logged {
  readonly proxyPort: number
  readonly clientPort: number
  readonly method: string
  readonly url: string
  readonly status: number
}

/** squid's access log lines since `from` (a byte offset), for the proxy port `port`. */
const squidLines = (from: number, port: number): Array<Logged> =>
  fs.readFileSync(squidLog).subarray(from).toString("latin1").split("\n").filter((line) => line !== "").map((line) => {
    const [proxyPort, clientPort, method, url, status] = line.split(" ")
    return { proxyPort: +proxyPort!, clientPort: +clientPort!, method: method!, url: url!, status: +status! }
  }).filter((line) => line.proxyPort === port && line.method !== "-")

const logSize = (): number => fs.statSync(squidLog).size

/** squid writes a line when a request (or a tunnel) ends: waits until `count` lines are there. */
const waitForLines = (from: number, port: number, count: number) =>
  Effect.promise(async () => {
    for (let i = 0; i < 100; i++) {
      const lines = squidLines(from, port)
      if (lines.length >= count) return lines
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return squidLines(from, port)
  })

/** A local origin that counts the requests it got, by method and path, and echoes the body's length. */
const countingOrigin = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ readonly port: number; readonly seen: Array<string>; readonly server: http.Server }>((resolve) => {
      const seen: Array<string> = []
      const server = http.createServer((req, res) => {
        let length = 0
        req.on("data", (chunk: Buffer) => (length += chunk.length))
        req.on("end", () => {
          seen.push(`${req.method} ${req.url}`)
          res.end(`${req.method} ${req.url} ${length}`)
        })
      })
      server.listen(0, "127.0.0.1", () => resolve({ port: (server.address() as net.AddressInfo).port, seen, server }))
    })
  ),
  ({ server }) =>
    Effect.promise(() =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
    )
)

/**
 * A local https origin (localhost and 127.0.0.1) that counts its TCP
 * connections and full TLS handshakes, and answers with the path.
 */
const tlsOrigin = (certs: TestCertificates) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ readonly port: number; connections: number; requests: number; readonly server: https.Server }>(
        (resolve) => {
          const server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
            state.requests++
            res.end(`tls ${req.url}`)
          })
          const state = { port: 0, connections: 0, requests: 0, server }
          server.on("secureConnection", () => state.connections++)
          server.listen(0, "127.0.0.1", () => {
            state.port = (server.address() as net.AddressInfo).port
            resolve(state)
          })
        }
      )
    ),
    ({ server }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        })
      )
  )

const textOf = (url: string) => Agent.requestWith(HttpClientRequest.get(url), (response) => Effect.orDie(response.text))

const bytesOf = (url: string) =>
  Agent.requestWith(HttpClientRequest.get(url), (response) =>
    Effect.map(Effect.orDie(response.arrayBuffer), (body) => ({ status: response.status, body: new Uint8Array(body) })))

describe.skipIf(squid.skip || nginx.skip)("squid, forwarding http", () => {
  it.scopedLive("sequential requests go over one kept-alive connection to the proxy, in absolute-form", () =>
    Effect.gen(function*() {
      const from = logSize()
      for (let i = 0; i < 10; i++) {
        expect(Buffer.from((yield* bytesOf(`http://127.0.0.1:${nginx.port}/big`)).body).equals(bigBody())).toBe(true)
      }
      const stats = yield* Agent.stats
      expect(stats.opened).toBe(1)
      expect(stats.reused).toBe(9)
      const lines = yield* waitForLines(from, squid.port, 10)
      expect(lines).toHaveLength(10)
      expect(new Set(lines.map((l) => l.clientPort)).size).toBe(1)
      expect(lines.every((l) => l.method === "GET" && l.url === `http://127.0.0.1:${nginx.port}/big` && l.status === 200))
        .toBe(true)
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${squid.port}` }))))

  it.scopedLive.skipIf(apache.skip)("bodies arrive byte for byte, 0 B to 5 MiB, with a length or chunked", () =>
    Effect.gen(function*() {
      for (const [name, size] of Object.entries(apacheFiles)) {
        const { body, status } = yield* bytesOf(`http://127.0.0.1:${apache.port}/${name}`)
        expect(status).toBe(200)
        expect(body.length).toBe(size)
        // Compared as Buffers: toEqual on megabytes of a typed array takes minutes.
        expect(Buffer.from(body).equals(apacheFileContent(size))).toBe(true)
      }
      // nginx gzips /chunked and sends it chunked; squid passes it on as it came.
      const chunked = yield* Agent.requestWith(
        HttpClientRequest.get(`http://127.0.0.1:${nginx.port}/chunked`).pipe(
          HttpClientRequest.setHeader("accept-encoding", "gzip")
        ),
        (response) => Effect.map(Effect.orDie(response.arrayBuffer), (body) => ({ headers: response.headers, body }))
      )
      expect(chunked.headers["content-encoding"]).toBe("gzip")
      expect(chunked.headers["transfer-encoding"]).toBe("chunked")
      expect(zlib.gunzipSync(new Uint8Array(chunked.body)).equals(bigBody())).toBe(true)
      expect((yield* Agent.stats).opened).toBeLessThanOrEqual(2)
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${squid.port}` }))))

  it.scopedLive("a POST goes once, with its body", () =>
    Effect.gen(function*() {
      const origin = yield* countingOrigin
      const response = yield* Agent.requestWith(
        HttpClientRequest.post(`http://127.0.0.1:${origin.port}/form`).pipe(HttpClientRequest.bodyText("a=1&b=2")),
        (response) => response.text
      )
      expect(response).toBe("POST /form 7")
      expect(origin.seen).toEqual(["POST /form"])
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${squid.port}` }))))

  it.scopedLive("origins NO_PROXY names go direct, the others through the proxy", () =>
    Effect.gen(function*() {
      const from = logSize()
      expect((yield* bytesOf(`http://localhost:${nginx.port}/big`)).status).toBe(200)
      expect((yield* bytesOf(`http://127.0.0.1:${nginx.port}/big`)).status).toBe(200)
      const lines = yield* waitForLines(from, squid.port, 1)
      expect(lines.map((l) => l.url)).toEqual([`http://localhost:${nginx.port}/big`])
    }).pipe(
      Effect.provide(NodeAgent.layer({
        proxy: Proxy.fromEnv({ http_proxy: `127.0.0.1:${squid.port}`, no_proxy: "127.0.0.1" })
      }))
    ))
})

describe.skipIf(squidAuth.skip || nginx.skip)("squid with Basic auth", () => {
  const encoded = `${squidUser}:${encodeURIComponent(squidPassword)}`

  it.scopedLive("credentials from the proxy URL are sent, and the proxy lets the request through", () =>
    Effect.gen(function*() {
      const from = logSize()
      for (let i = 0; i < 3; i++) expect((yield* bytesOf(`http://127.0.0.1:${nginx.port}/big`)).status).toBe(200)
      const lines = yield* waitForLines(from, squidAuth.port, 3)
      expect(lines.map((l) => l.status)).toEqual([200, 200, 200])
      expect(new Set(lines.map((l) => l.clientPort)).size).toBe(1)
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://${encoded}@127.0.0.1:${squidAuth.port}` }))))

  it.scopedLive("without credentials, or with wrong ones, the 407 fails with Proxy, once, without the password", () =>
    Effect.gen(function*() {
      const from = logSize()
      const missing = yield* Effect.flip(bytesOf(`http://127.0.0.1:${nginx.port}/big`)).pipe(
        Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${squidAuth.port}` }))
      )
      expect(missing).toMatchObject({ reason: "Proxy", requestSent: false })
      expect(missing.detail).toContain("requires authentication (407")
      const wrong = yield* Effect.flip(bytesOf(`http://127.0.0.1:${nginx.port}/big`)).pipe(
        Effect.provide(NodeAgent.layer({ proxy: `http://${squidUser}:wrong-password@127.0.0.1:${squidAuth.port}` }))
      )
      expect(wrong.detail).toBe(`proxy http://127.0.0.1:${squidAuth.port} refused the credentials (407 Proxy Authentication Required)`)
      expect(`${wrong.message} ${JSON.stringify(wrong)}`).not.toContain("wrong-password")
      // Neither was retried: one request each reached the proxy.
      expect((yield* waitForLines(from, squidAuth.port, 2)).map((l) => l.status)).toEqual([407, 407])
    }))
})

describe.skipIf(tinyproxy.skip || nginx.skip)("tinyproxy, forwarding http", () => {
  it.scopedLive("requests go through; it closes after each response without saying so, and the Agent copes", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 5; i++) {
        expect(Buffer.from((yield* bytesOf(`http://127.0.0.1:${nginx.port}/big`)).body).equals(bigBody())).toBe(true)
        // Let its close arrive, as it would between real requests.
        yield* Effect.sleep("20 millis")
      }
      expect((yield* Agent.stats).opened).toBe(5)
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${tinyproxy.port}` }))))

  it.scopedLive("a POST goes once", () =>
    Effect.gen(function*() {
      const origin = yield* countingOrigin
      const text = yield* Agent.requestWith(
        HttpClientRequest.post(`http://127.0.0.1:${origin.port}/once`).pipe(HttpClientRequest.bodyText("xyz")),
        (response) => response.text
      )
      expect(text).toBe("POST /once 3")
      expect(origin.seen).toEqual(["POST /once"])
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${tinyproxy.port}` }))))
})

describe.skipIf(squid.skip || certificates === undefined)("squid, CONNECT tunnels to an https origin", () => {
  const certs = certificates!
  const layer = (proxy: string) => NodeAgent.layer({ proxy, maxConnectionsPerOrigin: 2 }, { tls: { ca: certs.ca } })

  it.scopedLive("one CONNECT per pooled connection: sequential requests reuse the tunnel and its TLS session", () =>
    Effect.gen(function*() {
      const origin = yield* tlsOrigin(certs)
      const from = logSize()
      yield* Effect.gen(function*() {
        for (let i = 0; i < 10; i++) expect(yield* textOf(`https://localhost:${origin.port}/${i}`)).toBe(`tls /${i}`)
        // Four at once take both connections the origin may have.
        yield* Effect.all(
          Array.from({ length: 4 }, (_, i) => textOf(`https://localhost:${origin.port}/p${i}`)),
          { concurrency: "unbounded" }
        )
        expect((yield* Agent.stats).opened).toBe(2)
      }).pipe(Effect.scoped, Effect.provide(layer(`http://127.0.0.1:${squid.port}`)))
      expect(origin.requests).toBe(14)
      expect(origin.connections).toBe(2)
      // squid logs a CONNECT when its tunnel closes: the Agent's scope closed both.
      const lines = yield* waitForLines(from, squid.port, 2)
      expect(lines.map((l) => `${l.method} ${l.url} ${l.status}`)).toEqual([
        `CONNECT localhost:${origin.port} 200`,
        `CONNECT localhost:${origin.port} 200`
      ])
    }))

  it.scopedLive("a CONNECT the proxy refuses fails with Proxy and its status; nothing is retried", () =>
    Effect.gen(function*() {
      const from = logSize()
      const error = yield* Effect.flip(textOf(`https://${proxyRefusedHost}:4443/`))
      expect(error).toMatchObject({ reason: "Proxy", requestSent: false, origin: `https://${proxyRefusedHost}:4443` })
      expect((error as { detail: string }).detail).toContain(`refused CONNECT to ${proxyRefusedHost}:4443: 403`)
      expect((yield* waitForLines(from, squid.port, 1)).map((l) => `${l.method} ${l.status}`)).toEqual(["CONNECT 403"])
    }).pipe(Effect.provide(layer(`http://127.0.0.1:${squid.port}`))))

  it.scopedLive.skipIf(squidAuth.skip)("CONNECT carries the proxy's credentials; without them the 407 is Proxy", () =>
    Effect.gen(function*() {
      const origin = yield* tlsOrigin(certs)
      const encoded = `${squidUser}:${encodeURIComponent(squidPassword)}`
      const ok = yield* textOf(`https://localhost:${origin.port}/auth`).pipe(
        Effect.provide(layer(`http://${encoded}@127.0.0.1:${squidAuth.port}`))
      )
      expect(ok).toBe("tls /auth")
      const error = yield* Effect.flip(textOf(`https://localhost:${origin.port}/none`)).pipe(
        Effect.provide(layer(`http://127.0.0.1:${squidAuth.port}`))
      )
      expect(error).toMatchObject({ reason: "Proxy", requestSent: false })
      expect(String((error as { detail: string }).detail)).toContain("407")
      expect(origin.requests).toBe(1)
    }))
})

describe.skipIf(tinyproxy.skip || certificates === undefined)("tinyproxy, CONNECT tunnels", () => {
  const certs = certificates!
  it.scopedLive("sequential requests to an https origin reuse one tunnel", () =>
    Effect.gen(function*() {
      const origin = yield* tlsOrigin(certs)
      const from = fs.statSync(tinyproxyLog).size
      for (let i = 0; i < 5; i++) expect(yield* textOf(`https://localhost:${origin.port}/${i}`)).toBe(`tls /${i}`)
      expect(origin.connections).toBe(1)
      expect((yield* Agent.stats).opened).toBe(1)
      const connects = fs.readFileSync(tinyproxyLog).subarray(from).toString("latin1").split("\n")
        .filter((line) => line.includes(`CONNECT localhost:${origin.port}`))
      expect(connects).toHaveLength(1)
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `http://127.0.0.1:${tinyproxy.port}` }, { tls: { ca: certs.ca } }))))
})

describe.skipIf(dante.skip || nginx.skip)("dante, SOCKS5", () => {
  for (const scheme of ["socks5", "socks5h"] as const) {
    it.scopedLive(`${scheme}: http requests reuse one SOCKS connection`, () =>
      Effect.gen(function*() {
        const from = fs.statSync(danteLog).size
        for (let i = 0; i < 5; i++) {
          expect(Buffer.from((yield* bytesOf(`http://localhost:${nginx.port}/big`)).body).equals(bigBody())).toBe(true)
        }
        expect((yield* Agent.stats).opened).toBe(1)
        expect(yield* danteRelays(from, nginx.port)).toHaveLength(1)
      }).pipe(Effect.provide(NodeAgent.layer({ proxy: `${scheme}://127.0.0.1:${dante.port}` }))))

    it.scopedLive.skipIf(certificates === undefined)(`${scheme}: an https origin, TLS inside, its name checked`, () =>
      Effect.gen(function*() {
        const origin = yield* tlsOrigin(certificates!)
        const from = fs.statSync(danteLog).size
        for (let i = 0; i < 3; i++) expect(yield* textOf(`https://localhost:${origin.port}/${i}`)).toBe(`tls /${i}`)
        expect(origin.connections).toBe(1)
        expect(yield* danteRelays(from, origin.port)).toHaveLength(1)
      }).pipe(
        Effect.provide(NodeAgent.layer({ proxy: `${scheme}://127.0.0.1:${dante.port}` }, { tls: { ca: certificates!.ca } }))
      ))
  }

  it.scopedLive("a destination the proxy's rules refuse fails with Proxy and the reply's meaning", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(textOf(`http://${proxyRefusedHost}:${nginx.port}/`))
      expect(error).toMatchObject({ reason: "Proxy", requestSent: false })
      expect((error as { detail: string }).detail).toContain("connection not allowed by ruleset")
    }).pipe(Effect.provide(NodeAgent.layer({ proxy: `socks5://127.0.0.1:${dante.port}` }))))
})
