/**
 * The Agent as an `HttpClient` of `@effect/platform`, so that ordinary Effect
 * HTTP code runs over its persistent connections unchanged.
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Agent } from "./Agent.js"
import type * as AgentModule from "./Agent.js"
import * as internal from "./internal/httpClient.js"

/**
 * Wraps an Agent as an `HttpClient`. A response holds its connection until its
 * body is all here or was read to the end; a reader that gives up (interrupted,
 * or a stream ended early), `HttpClient.withScope`'s scope closing, or garbage
 * collection of the response frees it sooner, closing it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (agent: AgentModule.Service) => HttpClient.HttpClient = internal.make

/**
 * Provides `HttpClient.HttpClient` from the Agent in the context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<HttpClient.HttpClient, never, Agent> = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(Agent, make)
)
