/**
 * Pins every private internal of Effect and @effect/platform the Agent relies
 * on (listed in ARCHITECTURE.md, "Couplings"). Each test fails when an
 * upgrade changes what the Agent's code assumes, before any behaviour does.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { scopedRequests } from "../src/internal/httpClient.js"
import { asCloseable, ConnectionScope } from "../src/internal/scope.js"
import { SemaphorePermits } from "../src/internal/semaphore.js"

describe("couplings to Effect's private scope protocol (ConnectionScope)", () => {
  it.effect("Effect's own scopes keep their state as { _tag: Open, finalizers: Map } then { _tag: Closed, exit }", () =>
    Effect.gen(function*() {
      // Effect.forkIn and Effect.forkScoped read and write this shape on
      // whatever scope they are given; ConnectionScope copies it.
      const scope = yield* Scope.make()
      const open = (scope as unknown as { state: { _tag: string; finalizers: unknown } }).state
      expect(open._tag).toBe("Open")
      expect(open.finalizers).toBeInstanceOf(Map)
      const own = new ConnectionScope()
      expect(own.state._tag).toBe("Open")
      expect(Object.keys(own.state).sort()).toEqual(Object.keys(open).sort())
      const exit = Exit.fail("why")
      yield* Scope.close(scope, exit)
      const closed = (scope as unknown as { state: { _tag: string; exit: unknown } }).state
      expect(closed._tag).toBe("Closed")
      expect(closed.exit).toBe(exit)
      own.unsafeClose(exit)
      expect(Object.keys(own.state).sort()).toEqual(Object.keys(closed).sort())
    }))

  it.effect("Effect's scopes have the fork, addFinalizer and close methods its Scope module calls", () =>
    Effect.gen(function*() {
      const scope = (yield* Scope.make()) as unknown as Record<string, unknown>
      for (const method of ["fork", "addFinalizer", "close"]) {
        expect(typeof scope[method], method).toBe("function")
        expect(typeof (new ConnectionScope() as unknown as Record<string, unknown>)[method], method).toBe("function")
      }
    }))

  it.effect("Effect.forkIn a ConnectionScope: the fiber is interrupted when the scope closes", () =>
    Effect.gen(function*() {
      const scope = new ConnectionScope()
      const fiber = yield* Effect.forkIn(Effect.never, asCloseable(scope))
      yield* scope.close(Exit.void)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
    }))
})

describe("coupling to Effect's private Semaphore state (SemaphorePermits)", () => {
  it.effect("a permit taken and given back without a step is one the Semaphore counts, as its own take and release do", () =>
    Effect.gen(function*() {
      const semaphore = yield* Effect.makeSemaphore(2)
      const permits = new SemaphorePermits(semaphore)
      // False here means the state moved: every take would fall back to the Semaphore's own (slower, not wrong).
      expect([permits.tryTakeNow(), permits.tryTakeNow(), permits.tryTakeNow()]).toEqual([true, true, false])
      expect(yield* semaphore.withPermitsIfAvailable(1)(Effect.void)).toEqual(Option.none())
      expect(permits.tryReleaseNow()).toBe(true)
      expect(yield* semaphore.withPermitsIfAvailable(1)(Effect.void)).toEqual(Option.some(undefined))
      yield* semaphore.release(1)
      expect(yield* semaphore.withPermitsIfAvailable(2)(Effect.void)).toEqual(Option.some(undefined))
    }))

  it.effect("with a take waiting, even one a release just woke, neither is done without a step: the waiting take gets the permit", () =>
    Effect.gen(function*() {
      const semaphore = yield* Effect.makeSemaphore(1)
      const permits = new SemaphorePermits(semaphore)
      expect(permits.tryTakeNow()).toBe(true)
      const waiting = yield* Effect.fork(semaphore.take(1))
      yield* Effect.yieldNow()
      expect(permits.tryReleaseNow()).toBe(false)
      expect(permits.tryTakeNow()).toBe(false)
      yield* permits.release
      // Woken but not yet run, the waiting take keeps its turn: a permit free is not taken past it.
      expect(permits.tryTakeNow()).toBe(false)
      expect(yield* Fiber.join(waiting)).toBe(1)
    }))
})

describe("coupling to @effect/platform's HttpClient.withScope registry", () => {
  it.scoped("withScope registers the request's AbortController under the global key the adapter reads, aborted when the scope closes", () =>
    Effect.gen(function*() {
      let seen: HttpClientRequest.HttpClientRequest | undefined
      const client = HttpClient.makeWith<HttpClientError.HttpClientError, never, HttpClientError.HttpClientError, never>(
        (effect) =>
          Effect.map(effect, (request) => {
            seen = request
            return HttpClientResponse.fromWeb(request, new Response("ok"))
          }),
        Effect.succeed
      )
      const inner = yield* Scope.make()
      yield* HttpClient.withScope(client).get("http://127.0.0.1/").pipe(Scope.extend(inner))
      expect(seen).toBeDefined()
      const controller = scopedRequests.get(seen!)
      expect(controller).toBeInstanceOf(AbortController)
      expect(controller!.signal.aborted).toBe(false)
      yield* Scope.close(inner, Exit.void)
      expect(controller!.signal.aborted).toBe(true)
    }))
})
