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
import * as Scope from "effect/Scope"
import { scopedRequests } from "../src/internal/httpClient.js"
import { asCloseable, ConnectionScope } from "../src/internal/scope.js"

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
