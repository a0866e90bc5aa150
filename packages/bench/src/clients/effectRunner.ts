/**
 * What every Effect client of the bench shares: a GET through whatever
 * `HttpClient` is provided, and the closed loop run as one Effect on a layer
 * built once. It imports no HttpClient backend, so that keepalive's clients
 * load what a keepalive user loads and no more (@effect/platform-node's
 * clients bring undici and their own modules, megabytes of heap).
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import type { MeasurementWindow, Runner } from "../closedLoop.js"
import type { Scenario } from "../scenarios.js"

/**
 * A GET through whatever `HttpClient` is provided, the body read to the end,
 * the request and the read together inside `Effect.scoped`, as a program
 * written against `HttpClient` does it. Every HttpClient client runs this
 * same function, so none is measured with a shape the others are not.
 */
export const httpClientGet = (read: Scenario["read"]) => (url: string) =>
  Effect.scoped(
    HttpClient.get(url).pipe(
      Effect.flatMap((response) =>
        read === "whole"
          ? Effect.map(response.arrayBuffer, (body) => body.byteLength)
          : Stream.runFold(response.stream, 0, (size, chunk) => size + chunk.byteLength)
      )
    )
  )

/** The closed loop as one Effect: the workers are fibers, not promise chains. */
export const closedLoopEffect = <E, R>(
  window: MeasurementWindow,
  urls: ReadonlyArray<string>,
  once: (url: string) => Effect.Effect<number, E, R>
): Effect.Effect<void, never, R> =>
  Effect.forEach(
    urls,
    (url) =>
      Effect.whileLoop({
        while: () => !window.isOver,
        body: () =>
          Effect.matchCause(once(url), {
            onFailure: (cause) => window.fail(Cause.squash(cause)),
            onSuccess: (bodySize) => window.succeed(bodySize)
          }),
        step: () => {}
      }),
    { concurrency: "unbounded", discard: true }
  )

/**
 * Builds the layer once, before the window starts, and runs the whole closed
 * loop as one Effect, so the numbers are the client's and not `runPromise`'s.
 */
export const effectRunner = async <Out, LayerError, E, R extends Out>(
  layer: Layer.Layer<Out, LayerError>,
  urls: ReadonlyArray<string>,
  once: (url: string) => Effect.Effect<number, E, R>
): Promise<EffectRunner<Out>> => {
  const runtime = ManagedRuntime.make(layer)
  await runtime.runtime()
  return {
    run: (window) => runtime.runPromise(closedLoopEffect(window, urls, once)),
    close: () => runtime.dispose(),
    runPromise: (effect) => runtime.runPromise(effect)
  }
}

/** A runner on a layer built once, which can also run other effects on it (reading `Agent.stats` after the run). */
export interface EffectRunner<Out> extends Runner {
  readonly runPromise: <A, E>(effect: Effect.Effect<A, E, Out>) => Promise<A>
}
