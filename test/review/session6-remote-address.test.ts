import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

// Agent.request / requestWith now release a connection whose whole body came
// with its head before handing the response over. A connection that is not
// reusable (Connection: close, persist: false, maxConnectionAge) is destroyed
// by that release, and node's socket.remoteAddress is undefined once
// destroyed: the response's remoteAddress turns None, which the docs
// ("its bytes stay readable") do not say. Before d705432/2015b47 it was Some.
const withServer = <A, E, R>(body: (port: number) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.async<http.Server>((resume) => {
      const server = http.createServer((_req, res) => {
        res.setHeader("connection", "close")
        res.end("hi")
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => body((server.address() as AddressInfo).port),
    (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )

describe("remoteAddress of a response that came whole on a closing connection", () => {
  it.scoped("request: still the peer's address", () =>
    withServer((port) =>
      Effect.gen(function*() {
        const response = yield* Agent.request(HttpClientRequest.get(`http://127.0.0.1:${port}/`))
        expect(yield* response.text).toBe("hi")
        expect(response.remoteAddress).toEqual(Option.some("127.0.0.1"))
      })
    ).pipe(Effect.provide(NodeAgent.layer())), 5_000)

  it.effect("requestWith: f still sees the peer's address", () =>
    withServer((port) =>
      Effect.gen(function*() {
        const address = yield* Agent.requestWith(
          HttpClientRequest.get(`http://127.0.0.1:${port}/`),
          (response) => Effect.succeed(response.remoteAddress)
        )
        expect(address).toEqual(Option.some("127.0.0.1"))
      })
    ).pipe(Effect.provide(NodeAgent.layer())), 5_000)
})
