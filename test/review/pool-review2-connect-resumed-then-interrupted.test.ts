import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { Connector } from "@keepalive/agent/Connector"
import type { Origin } from "@keepalive/agent/Origin"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { MemoryServer, ServerSocket } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle } from "./harness.js"

// Found in review: a connect that resumes with a transport in the same tick
// as its opening is interrupted (a request giving up, or shutdown) lost the
// transport inside the fiber runtime: the connector's canceler does not run
// (its async had completed) and the pool never saw it, so the socket stayed
// open. The Connector contract now has connect register what it creates in
// the connection's scope before it waits (NodeConnector does); the pool
// closes that scope however the opening ends.
describe("a connect that completes in the tick its opening is called off", () => {
  const scenario = (ending: "shutdown" | "give up") =>
    Effect.gen(function*() {
      const server = new MemoryServer(() => {})
      let pending: (() => void) | undefined
      let origin: Origin | undefined
      let socket: ServerSocket | undefined
      const connector = Layer.succeed(Connector, {
        connect: (o) =>
          Effect.flatMap(
            Effect.acquireRelease(
              Effect.sync(() => {
                origin = o
                return socket = new ServerSocket(o, 1, server)
              }),
              (s) => Effect.sync(() => s.destroy())
            ),
            (s) =>
              Effect.async<ServerSocket>((resume) => {
                pending = () => resume(Effect.succeed(s))
                return Effect.void
              })
          ),
        yieldToIo: Effect.void
      })
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Agent.layer({}).pipe(Layer.provide(connector)), scope)
      const request = yield* Effect.fork(Effect.provide(Agent.requestString("http://a.test/"), context))
      yield* settle
      expect(pending).toBeDefined()
      expect(origin).toBeDefined()
      // The socket connects, and in the same tick the Agent shuts down
      // (the same happens when the only waiting request gives up).
      pending!()
      if (ending === "shutdown") yield* Scope.close(scope, Exit.void)
      else yield* Fiber.interrupt(request)
      yield* Fiber.await(request)
      yield* settle
      // Whichever of the two lands first, the transport is never lost: it is
      // closed, or (the connect won the race against a request giving up)
      // it is the pool's, idle, and closed with the Agent.
      const stats = yield* Effect.provide(Agent.stats, context)
      if (socket!.destroyed) expect(stats.open).toBe(0)
      else expect({ ending, open: stats.open, idle: stats.idle }).toEqual({ ending: "give up", open: 1, idle: 1 })
      yield* Scope.close(scope, Exit.void)
      yield* settle
      expect(socket!.destroyed).toBe(true)
    })

  it.effect("destroys the transport it made when the Agent shuts down", () => scenario("shutdown"))
  it.effect("destroys the transport it made when the only request gives up", () => scenario("give up"))
})
