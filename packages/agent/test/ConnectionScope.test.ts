import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import { asCloseable, ConnectionScope } from "../src/internal/scope.js"

// The pool's scope per connection must behave as Effect's own `Scope.make()`
// for everything Effect's public API does with a scope.
describe("ConnectionScope", () => {
  it.effect("runs its finalizers last added first, with the exit it was closed with, once", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      const ran: Array<string> = []
      const closedWith: Array<Exit.Exit<unknown, unknown>> = []
      yield* Scope.addFinalizer(asCloseable(scope), Effect.sync(() => ran.push("first")))
      yield* Scope.addFinalizerExit(asCloseable(scope), (exit) => Effect.sync(() => closedWith.push(exit)))
      yield* Scope.addFinalizer(asCloseable(scope), Effect.sync(() => ran.push("third")))
      const exit = Exit.fail("why")
      yield* Scope.close(asCloseable(scope), exit)
      yield* Scope.close(asCloseable(scope), Exit.void)
      expect(ran).toEqual(["third", "first"])
      expect(closedWith).toEqual([exit])
      expect(scope.state._tag).toBe("Closed")
    }))

  it.effect("runs every finalizer when some die, and fails with all their defects, as Scope.make() does", () =>
    Effect.gen(function*() {
      const outcomes: Array<unknown> = []
      for (const scope of [asCloseable(new ConnectionScope()), yield* Scope.make()]) {
        const ran: Array<string> = []
        yield* Scope.addFinalizer(scope, Effect.sync(() => ran.push("first")))
        yield* Scope.addFinalizer(scope, Effect.die("died first"))
        yield* Scope.addFinalizer(scope, Effect.die("died last"))
        yield* Scope.addFinalizer(scope, Effect.sync(() => ran.push("fourth")))
        const closed = yield* Effect.exit(Scope.close(scope, Exit.void))
        expect(ran).toEqual(["fourth", "first"])
        if (Exit.isFailure(closed)) outcomes.push(Array.from(Cause.defects(closed.cause)))
      }
      expect(outcomes).toEqual([["died last", "died first"], ["died last", "died first"]])
    }))

  it.effect("a finalizer that throws instead of returning an effect does not stop the others", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      const ran: Array<string> = []
      yield* Scope.addFinalizer(asCloseable(scope), Effect.sync(() => ran.push("first")))
      yield* Scope.addFinalizerExit(asCloseable(scope), (): Effect.Effect<void> => {
        throw new Error("thrown")
      })
      const closed = yield* Effect.exit(Scope.close(asCloseable(scope), Exit.void))
      expect(ran).toEqual(["first"])
      expect(Exit.isFailure(closed) && Array.from(Cause.defects(closed.cause), (d) => (d as Error).message)).toEqual(["thrown"])
    }))

  it.effect("a finalizer added after close runs at once, as with Scope.make()", () =>
    Effect.gen(function*() {
      for (const scope of [asCloseable(new ConnectionScope()), yield* Scope.make()]) {
        const ran: Array<Exit.Exit<unknown, unknown>> = []
        yield* Scope.close(scope, Exit.void)
        yield* Scope.addFinalizerExit(scope, (exit) => Effect.sync(() => ran.push(exit)))
        expect(ran).toEqual([Exit.void])
      }
    }))

  it.effect("addNow adds without a step while open, and hands back the finalizer's run once closed", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      let ran = 0
      const finalizer = () => Effect.sync(() => void ran++)
      expect(scope.addNow(finalizer)).toBeUndefined()
      expect(ran).toBe(0)
      yield* scope.close(Exit.void)
      expect(ran).toBe(1)
      const late = scope.addNow(finalizer)
      expect(late).toBeDefined()
      yield* late!
      expect(ran).toBe(2)
    }))

  it.effect("Effect.forkIn and forkScoped work on it: the fiber is interrupted when the scope closes, or leaves it when done first", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      let interrupted = 0
      const forever = Effect.onInterrupt(Effect.never, () => Effect.sync(() => void interrupted++))
      yield* Effect.forkIn(forever, asCloseable(scope))
      yield* Scope.extend(Effect.forkScoped(forever), asCloseable(scope))
      const quick = yield* Effect.forkIn(Effect.void, asCloseable(scope))
      yield* Fiber.await(quick)
      // The quick fiber took itself out of the scope; the two others are in it.
      expect(scope.state._tag === "Open" && scope.state.finalizers.size).toBe(2)
      yield* Scope.close(asCloseable(scope), Exit.void)
      expect(interrupted).toBe(2)
      // Forked into a closed scope: interrupted at once, as with Scope.make().
      const late = yield* Effect.forkIn(forever, asCloseable(scope))
      expect(Exit.isInterrupted(yield* Fiber.await(late))).toBe(true)
    }))

  it.effect("a forked child closed first leaves its parent", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      const child = yield* Scope.fork(asCloseable(scope), ExecutionStrategy.sequential)
      expect(scope.state._tag === "Open" && scope.state.finalizers.size).toBe(1)
      yield* Scope.close(child, Exit.void)
      expect(scope.state._tag === "Open" && scope.state.finalizers.size).toBe(0)
    }))

  it.effect("acquireRelease, Scope.extend and Scope.fork work on it as on any scope", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      const released: Array<string> = []
      const value = yield* Scope.extend(
        Effect.acquireRelease(Effect.succeed("socket"), (s) => Effect.sync(() => released.push(s))),
        asCloseable(scope)
      )
      const child = yield* Scope.fork(asCloseable(scope), ExecutionStrategy.sequential)
      yield* Scope.addFinalizer(child, Effect.sync(() => released.push("child")))
      expect(value).toBe("socket")
      expect(released).toEqual([])
      yield* Scope.close(asCloseable(scope), Exit.void)
      // The child was forked last: it closes first.
      expect(released).toEqual(["child", "socket"])
    }))
})
