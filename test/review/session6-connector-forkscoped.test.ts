import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { Connector } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { echoServer } from "../../packages/agent/test/support/MemoryConnector.js"

// The Connector contract gives `connect` the connection's Scope.Scope. Effect's
// public `Effect.forkScoped` / `Effect.forkIn` read the scope's internal
// `state` field (effect/src/internal/effect/circular.ts forkIn), which
// ConnectionScope does not have: a connector that forks a helper fiber into
// the connection's scope (a TLS/proxy handshake watcher, a keep-alive pinger)
// dies with a TypeError, and every request fails with "the connector failed".
describe("a connector that forks into the connection's scope", () => {
  it.effect("Effect.forkScoped inside connect works, and the fiber is interrupted when the connection closes, not with the Agent", () =>
    Effect.gen(function*() {
      const server = echoServer()
      let helperInterrupted = 0
      const forking = Layer.effect(
        Connector,
        Effect.map(Connector, (inner) => ({
          connect: (origin, options) =>
            Effect.zipRight(
              Effect.forkScoped(Effect.onInterrupt(Effect.never, () => Effect.sync(() => void helperInterrupted++))),
              inner.connect(origin, options)
            ),
          yieldToIo: inner.yieldToIo
        }))
      ).pipe(Layer.provide(server.layer))
      const scope = yield* Scope.make()
      // persist: false: the connection closes after its response, long before the Agent.
      const context = yield* Layer.buildWithScope(Agent.layer({ persist: false }).pipe(Layer.provide(forking)), scope)
      const result = yield* Effect.exit(Effect.provide(Agent.requestString("http://a.test/x"), context))
      expect(result).toEqual(Exit.succeed("GET /x"))
      // The fiber was forked into the connection's own scope: closed with the connection.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      expect(helperInterrupted).toBe(1)
      yield* Scope.close(scope, Exit.void)
      expect(helperInterrupted).toBe(1)
    }))
})
