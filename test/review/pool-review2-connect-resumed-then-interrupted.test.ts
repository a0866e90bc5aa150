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
      let canceled = 0
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
                return Effect.sync(() => void canceled++)
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
      const stats = yield* Effect.provide(Agent.stats, context)
      expect({ canceled, destroyed: socket!.destroyed, open: stats.open }).toEqual({ canceled: 0, destroyed: true, open: 0 })
      yield* Scope.close(scope, Exit.void)
    })

  it.effect("destroys the transport it made when the Agent shuts down", () => scenario("shutdown"))
  it.effect("destroys the transport it made when the only request gives up", () => scenario("give up"))
})
