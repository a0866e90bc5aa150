/**
 * The client's own cost per request, with no network: keepalive's Agent over
 * an in-memory transport that answers every request at once (a microtask
 * later). `pnpm --filter @keepalive/bench memory` prints microseconds per
 * request for `Agent.request`, `Agent.requestScoped` (in `Effect.scoped`), `Agent.requestWith` and
 * the HttpClient adapter, one in flight and 16 in flight over 2 connections;
 * then a body read through `response.stream` and through `forEachChunk`, next
 * to the cost of running a one-chunk Effect Stream with no Agent at all (the
 * floor of scenario e through `stream`); last, a connection opened and closed
 * per request. Run it compiled (the script does).
 */
import { Agent, AgentHttpClient } from "@keepalive/agent"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { MemoryConnector } from "./memoryConnector.js"

const AgentLive = Agent.layer({}).pipe(Layer.provide(MemoryConnector))
const ClientLive = AgentHttpClient.layer.pipe(Layer.provideMerge(AgentLive))

const url = "http://memory.test:80/x"
const viaAgent = Agent.request(HttpClientRequest.get(url)).pipe(Effect.flatMap((r) => r.arrayBuffer))
const viaAgentScoped = Agent.requestScoped(HttpClientRequest.get(url)).pipe(
  Effect.flatMap((r) => r.arrayBuffer),
  Effect.scoped
)
const viaHttpClient = HttpClient.get(url).pipe(Effect.flatMap((r) => r.arrayBuffer))
// As `pnpm bench` runs every HttpClient client: the request and the read inside Effect.scoped.
const viaHttpClientScoped = Effect.scoped(viaHttpClient)
const viaAgentStream = Agent.request(HttpClientRequest.get(url)).pipe(
  Effect.flatMap((r) => Stream.runFold(r.stream, 0, (size, chunk) => size + chunk.byteLength))
)
const viaAgentWith = Agent.requestWith(HttpClientRequest.get(url), (r) => r.arrayBuffer)
const viaForEachChunk = Agent.requestWith(HttpClientRequest.get(url), (r) => {
  let size = 0
  return Effect.map(Agent.forEachChunk(r, (chunk) => Effect.sync(() => void (size += chunk.byteLength))), () => size)
})
// A connection opened and closed for every request (the layer is built once, around the measurement).
const NoPersist = Agent.layer({ persist: false }).pipe(Layer.provide(MemoryConnector))
// The floor of any streamed body in Effect 3: running a one-chunk Stream, no Agent at all.
const oneChunk = new Uint8Array(13)
const streamAlone = Effect.suspend(() => Stream.runFold(Stream.make(oneChunk), 0, (size, chunk) => size + chunk.byteLength))

const measure = <E, R>(name: string, once: Effect.Effect<unknown, E, R>, inFlight: number, total: number) =>
  Effect.gen(function*() {
    const run = (n: number) =>
      Effect.forEach(
        Array.from({ length: inFlight }, () => Math.ceil(n / inFlight)),
        (count) => Effect.repeatN(once, count - 1),
        { concurrency: "unbounded", discard: true }
      )
    yield* run(Math.min(total, 20_000)) // warm-up
    const samples: Array<number> = []
    for (let round = 0; round < 5; round++) {
      const start = performance.now()
      yield* run(total)
      samples.push(((performance.now() - start) * 1000) / total)
    }
    samples.sort((a, b) => a - b)
    console.log(`${name.padEnd(34)} ${samples[2]!.toFixed(1).padStart(6)} µs/request (min ${samples[0]!.toFixed(1)})`)
  })

const total = Number(process.env.MEMORY_REQUESTS ?? 50_000)
const program = Effect.gen(function*() {
  yield* measure("Agent.request, 1 in flight", viaAgent, 1, total)
  yield* measure("Agent.request, 16 in flight", viaAgent, 16, total)
  yield* measure("Agent.requestScoped + scoped, 16", viaAgentScoped, 16, total)
  yield* measure("Agent.requestWith, 1 in flight", viaAgentWith, 1, total)
  yield* measure("Agent.requestWith, 16 in flight", viaAgentWith, 16, total)
  yield* measure("HttpClient, 1 in flight", viaHttpClient, 1, total)
  yield* measure("HttpClient, 16 in flight", viaHttpClient, 16, total)
  yield* measure("HttpClient in Effect.scoped, 16", viaHttpClientScoped, 16, total)
  yield* measure("Agent.request, body via Stream", viaAgentStream, 16, total / 5)
  yield* measure("requestWith, body via forEachChunk", viaForEachChunk, 16, total / 5)
  yield* measure("Stream.runFold of Stream.make(x)", streamAlone, 16, total / 5)
  yield* Effect.provide(measure("persist: false (a connection each)", viaAgentWith, 4, total / 5), NoPersist)
})

Effect.runPromise(Effect.provide(program, ClientLive)).catch((error) => {
  console.error(error)
  process.exit(1)
})
