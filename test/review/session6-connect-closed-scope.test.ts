import { describe, expect, it } from "@effect/vitest"
import { Connector } from "@keepalive/agent/Connector"
import * as Origin from "@keepalive/agent/Origin"
import { NodeConnector } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as net from "node:net"
import type { AddressInfo } from "node:net"

// The Node connector registers the socket's finalizer before it makes the
// socket. In a scope that is closed already the finalizer runs at once, and
// then a socket would be made that nothing owns: the connect must stop instead.
describe("NodeConnector in a closed scope", () => {
  it.live("is interrupted and opens no socket", () =>
    Effect.gen(function*() {
      let accepted = 0
      const server = net.createServer((socket) => {
        accepted++
        socket.destroy()
      })
      yield* Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void)))
      const port = (server.address() as AddressInfo).port
      const connector = yield* Effect.provide(Connector, NodeConnector.layer)
      const scope = yield* Scope.make()
      yield* Scope.close(scope, Exit.void)
      const origin = Origin.make("http", "127.0.0.1", port)
      const exit = yield* Effect.exit(Scope.extend(connector.connect(origin, {}), scope))
      expect(Exit.isInterrupted(exit)).toBe(true)
      // Open ones would have been accepted by now.
      yield* Effect.sleep("100 millis")
      expect(accepted).toBe(0)
      yield* Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
    }))
})
