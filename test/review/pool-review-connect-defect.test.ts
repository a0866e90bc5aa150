import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import { Connector } from "@keepalive/agent/Connector"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { settle } from "./harness.js"

// KeyedPool.#openFailed fails waiters only when the opening's cause is a plain
// `Fail`. A connect that dies (a defect: e.g. tls.connect throwing
// synchronously on bad options inside NodeConnector's Effect.async register)
// fails nobody; #afterClose -> #dispatch sees the waiter still unserved and
// opens again, forever: the request never completes and connects spin.
describe("a connect that dies", () => {
  it.effect("ends the waiting request instead of reconnecting forever", () =>
    Effect.gen(function*() {
      let connects = 0
      const dying = Layer.succeed(Connector, {
        connect: () => Effect.suspend(() => {
          connects++
          // Bounded so that the bug shows as a failure, not a hung test run.
          return connects > 20 ? Effect.never : Effect.die(new Error("bad TLS options"))
        }),
        yieldToIo: Effect.void
      })
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Agent.layer({}).pipe(Layer.provide(dying)), scope)
      const fiber = yield* Effect.fork(Effect.provide(Agent.requestString("http://a.test/"), context))
      for (let i = 0; i < 5; i++) yield* settle
      const done = (yield* Fiber.poll(fiber))._tag
      const seen = connects
      yield* Fiber.interrupt(fiber)
      yield* Effect.ignore(Effect.timeout(Scope.close(scope, Exit.void), "200 millis"))
      expect({ done, connectsAtMost2: seen <= 2 }).toEqual({ done: "Some", connectsAtMost2: true })
    }))
})
