/**
 * HTTPS against a local node:https server whose CA and certificates are made
 * at test time with Debian's `openssl` (no key is committed): verification on
 * by default, SNI, reuse proven server-side (one handshake for many
 * requests), and every failed handshake one readable line, reason `Connect`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@keepalive/agent"
import { NodeAgent, NodeConnector } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as http from "node:http"
import * as net from "node:net"
import type * as tls from "node:tls"
import { SessionCache } from "../packages/node/src/internal/nodeConnector.js"
import { testCertificates } from "./setup/certificates.js"
import { httpsServer } from "./setup/https.js"
import { freePort } from "./setup/servers.js"

const certificates = testCertificates("HTTPS tests")

const agentWith = (options: NodeConnector.Options) =>
  Agent.layer().pipe(Layer.provide(NodeConnector.layerWith(options)))

const connectFailure = (url: string) =>
  Agent.requestString(url).pipe(
    Effect.flip,
    Effect.map((error) => ({ reason: error.reason, detail: error.detail }))
  )

describe.skipIf(certificates === undefined)("HTTPS", () => {
  const certs = certificates!

  it.scopedLive("with the test CA trusted: 5 sequential requests share one TLS handshake, SNI sent for a host name", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      const bodies = yield* Effect.forEach(
        [1, 2, 3, 4, 5],
        () => Agent.requestString(`https://localhost:${handshakes.port}/`)
      ).pipe(Effect.provide(agentWith({ tls: { ca: certs.ca } })))
      expect(bodies).toEqual(["hello", "hello", "hello", "hello", "hello"])
      expect(handshakes.count).toBe(1)
      expect(handshakes.servernames).toEqual(["localhost"])
    }))

  it.scopedLive("a new connection to a server that had one resumes its TLS session; another Connector's options never share it", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      const url = `https://localhost:${handshakes.port}/`
      // A connection each: idle connections are closed before the next request.
      const oneAtATime = (options: NodeConnector.Options) =>
        Effect.forEach([1, 2, 3], () => Effect.zipRight(Agent.requestString(url), Effect.sleep("150 millis"))).pipe(
          Effect.provide(Agent.layer({ idleTimeout: "50 millis" }).pipe(Layer.provide(NodeConnector.layerWith(options))))
        )
      yield* oneAtATime({ tls: { ca: certs.ca } })
      expect({ count: handshakes.count, resumed: handshakes.resumed }).toEqual({ count: 3, resumed: 2 })
      // Other TLS options, another Connector: its first connection resumes nothing.
      yield* oneAtATime({ tls: { ca: certs.ca, minVersion: "TLSv1.2" } })
      expect({ count: handshakes.count, resumed: handshakes.resumed }).toEqual({ count: 6, resumed: 4 })
    }))

  it.scopedLive("no SNI for an IP literal", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      expect(yield* Agent.requestString(`https://127.0.0.1:${handshakes.port}/`).pipe(
        Effect.provide(agentWith({ tls: { ca: certs.ca } }))
      )).toBe("hello")
      expect(handshakes.servernames).toEqual([false])
    }))

  it.scopedLive("verification is on by default: an untrusted CA fails with Connect, one readable line, nothing sent", () =>
    Effect.gen(function*() {
      let requests = 0
      const { handshakes, server } = yield* httpsServer({ key: certs.key, cert: certs.cert })
      server.on("request", () => requests++)
      const failure = yield* connectFailure(`https://localhost:${handshakes.port}/`).pipe(Effect.provide(NodeAgent.layer()))
      expect(failure.reason).toBe("Connect")
      expect(failure.detail).toMatch(/^TLS: the server's certificate is not signed by a trusted CA \([A-Z_]+\)$/)
      expect(requests).toBe(0)
    }))

  it.scopedLive("a certificate for another host name fails with Connect, naming the host", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.otherKey, cert: certs.otherCert })
      const failure = yield* connectFailure(`https://localhost:${handshakes.port}/`).pipe(
        Effect.provide(agentWith({ tls: { ca: certs.ca } }))
      )
      expect(failure).toEqual({
        reason: "Connect",
        detail: "TLS: the server's certificate is not valid for localhost (ERR_TLS_CERT_ALTNAME_INVALID)"
      })
    }))

  it.scopedLive("an expired certificate fails with Connect: CERT_HAS_EXPIRED", () =>
    Effect.gen(function*() {
      const { handshakes } = yield* httpsServer({ key: certs.expiredKey, cert: certs.expiredCert })
      const failure = yield* connectFailure(`https://localhost:${handshakes.port}/`).pipe(
        Effect.provide(agentWith({ tls: { ca: certs.ca } }))
      )
      expect(failure).toEqual({ reason: "Connect", detail: "TLS: the server's certificate has expired (CERT_HAS_EXPIRED)" })
    }))

  it.scopedLive("mutual TLS: a client certificate the server trusts is accepted; without one the server refuses, in one readable line", () =>
    Effect.gen(function*() {
      const { handshakes, server } = yield* httpsServer({
        key: certs.key,
        cert: certs.cert,
        ca: certs.ca,
        requestCert: true,
        rejectUnauthorized: true
      })
      const subjects: Array<string> = []
      server.on("secureConnection", (socket: tls.TLSSocket) => subjects.push(String(socket.getPeerCertificate().subject?.CN)))
      const accepted = yield* Agent.requestString(`https://localhost:${handshakes.port}/`).pipe(
        Effect.provide(agentWith({ tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } }))
      )
      expect(accepted).toBe("hello")
      expect(subjects).toEqual(["client"])
      const refused = yield* Agent.requestString(`https://localhost:${handshakes.port}/`).pipe(
        Effect.flip,
        Effect.provide(agentWith({ tls: { ca: certs.ca } }))
      )
      // TLS 1.3 finishes the client's side of the handshake first: the server's
      // refusal (an alert) comes after the request was written, so the request
      // fails as a fresh connection's transport error, in one readable line.
      expect(refused.reason).toBe("Transport")
      expect(refused.detail).toBe(
        "Error: TLS: the server refused the client certificate, or its absence (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED)"
      )
      expect(refused.detail).not.toMatch(/:error:[0-9A-F]+:/)
    }))

  it.scopedLive("https: to a plain HTTP port fails with Connect and a readable line, not OpenSSL's", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(
        Effect.async<http.Server>((resume) => {
          const plain = http.createServer((_request, response) => response.end("plain"))
          plain.listen(0, "127.0.0.1", () => resume(Effect.succeed(plain)))
        }),
        (plain) => Effect.async<void>((resume) => {
          plain.closeAllConnections()
          plain.close(() => resume(Effect.void))
        })
      )
      const port = (server.address() as net.AddressInfo).port
      const failure = yield* connectFailure(`https://127.0.0.1:${port}/`).pipe(Effect.provide(NodeAgent.layer()))
      expect(failure).toEqual({
        reason: "Connect",
        detail: "TLS: the server did not answer in TLS (a plain HTTP port?) (ERR_SSL_WRONG_VERSION_NUMBER)"
      })
    }))

  it.scopedLive("a failure before any handshake keeps Node's own line, as for http: a refused connect is not called a TLS failure", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      const failure = yield* connectFailure(`https://127.0.0.1:${port}/`).pipe(Effect.provide(NodeAgent.layer()))
      expect(failure).toEqual({ reason: "Connect", detail: `connect ECONNREFUSED 127.0.0.1:${port}` })
    }))

  it.scopedLive("the handshake counts against connectTimeout: a server that accepts but never answers it times the connect out", () =>
    Effect.gen(function*() {
      const sockets: Array<net.Socket> = []
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const silent = net.createServer((socket) => void sockets.push(socket))
          silent.listen(0, "127.0.0.1", () => resume(Effect.succeed(silent)))
        }),
        (silent) =>
          Effect.async<void>((resume) => {
            for (const socket of sockets) socket.destroy()
            silent.close(() => resume(Effect.void))
          })
      )
      const port = (server.address() as net.AddressInfo).port
      const started = performance.now()
      const failure = yield* Agent.requestString(`https://127.0.0.1:${port}/`).pipe(
        Effect.flip,
        Effect.provide(Agent.layer({ connectTimeout: "300 millis" }).pipe(Layer.provide(NodeConnector.layer)))
      )
      expect({ reason: failure.reason, phase: failure.phase }).toEqual({ reason: "Timeout", phase: "connect" })
      expect(sockets.length).toBe(1)
      expect(performance.now() - started).toBeLessThan(3000)
    }))

  it.scopedLive("a server that closes during the handshake fails with Connect", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const closing = net.createServer((socket) => socket.destroy())
          closing.listen(0, "127.0.0.1", () => resume(Effect.succeed(closing)))
        }),
        (closing) =>
          Effect.async<void>((resume) => {
            closing.close(() => resume(Effect.void))
          })
      )
      const port = (server.address() as net.AddressInfo).port
      const failure = yield* connectFailure(`https://127.0.0.1:${port}/`).pipe(Effect.provide(NodeAgent.layer()))
      expect(failure.reason).toBe("Connect")
      expect(failure.detail).toMatch(/^TLS: the server closed the connection during the handshake \([A-Z_]+\)$/)
    }))
})

describe("the TLS session cache", () => {
  it("keeps at most its bound, dropping the least recently used; a read counts as a use", () => {
    const cache = new SessionCache(2)
    const session = (n: number) => Buffer.from([n])
    cache.set("a", session(1))
    cache.set("b", session(2))
    expect(cache.get("a")).toEqual(session(1))
    cache.set("c", session(3))
    expect([cache.get("a"), cache.get("b"), cache.get("c")]).toEqual([session(1), undefined, session(3)])
    cache.set("a", session(4))
    expect(cache.get("a")).toEqual(session(4))
    cache.delete("a")
    expect(cache.get("a")).toBeUndefined()
  })
})
