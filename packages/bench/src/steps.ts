/**
 * Effect steps per request: every step the Effect runtime runs (counted with
 * a Supervisor under `RuntimeFlags.OpSupervision`), in the request's fiber
 * and in the fibers the Agent forks for it (opening and closing a
 * connection), divided by the number of requests. Time per step varies, but
 * with real sockets each one costs more than in a hot loop, and fewer steps
 * make the Agent faster more often than anything else (ARCHITECTURE.md,
 * "Performance rules").
 *
 * `pnpm --filter @keepalive/bench steps` prints, over the in-memory transport:
 * `requestWith`, `Agent.request` (alone, and 16 at once over the origin's
 * two connections, each waiting in its line, next to the same `forEach` of
 * `Effect.void`), `Agent.requestScoped` in `Effect.scoped`, the HttpClient
 * adapter (alone and inside `Effect.scoped`),
 * @effect/platform's `HttpClient.make` over a backend that answers at once
 * (what every HttpClient backend pays before its own work), and
 * `requestWith` with a connection per request (`persist: false`); then a
 * 64 KiB body arriving in four pieces, read with `Agent.forEachChunk` and
 * through `response.stream` (as scenario e reads it), next to running a Stream
 * with no Agent at all (empty, and one chunk): the fixed cost of any Stream.
 * With `STEPS_PORT=<port>` the last one runs over node:net against
 * `http://127.0.0.1:<port>/small` instead (the bench's nginx).
 */
import { Agent, AgentHttpClient } from "@keepalive/agent"
import { NodeConnector } from "@keepalive/node"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import { MemoryConnector, MemoryConnectorInPieces } from "./memoryConnector.js"

/** Counts steps while `counting` is on. */
class StepCounter extends Supervisor.AbstractSupervisor<void> {
  readonly value = Effect.void
  counting = false
  steps = 0
  override onEffect(): void {
    if (this.counting) this.steps++
  }
}

const requests = Number(process.env.STEPS_REQUESTS ?? 2_000)
const port = process.env.STEPS_PORT

/** `perRun` requests are made by each run of `once`. */
const measure = <E, R>(name: string, once: Effect.Effect<unknown, E, R>, layer: Layer.Layer<R, unknown>, perRun = 1) => {
  const counter = new StepCounter()
  const program = Effect.gen(function*() {
    yield* Effect.repeatN(once, 199) // warm-up: connections open, code paths taken
    counter.counting = true
    yield* Effect.repeatN(once, requests - 1)
    counter.counting = false
  }).pipe(Effect.provide(layer))
  return Effect.map(
    // The Agent's runtime is captured when its layer is built, inside this
    // region: the fibers it forks count too.
    program.pipe(
      Effect.supervised(counter),
      Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
    ),
    () => console.log(`${name.padEnd(54)} ${(counter.steps / (requests * perRun)).toFixed(1).padStart(6)} steps/request`)
  )
}

const url = "http://memory.test:80/x"
const sixteen = Array.from({ length: 16 }, (_, i) => i)
const agentOn = (config: Agent.Config) => Agent.layer(config).pipe(Layer.provide(MemoryConnector))
const clientOn = AgentHttpClient.layer.pipe(Layer.provideMerge(agentOn({})))
const requestWith = (target: string) => Agent.requestWith(HttpClientRequest.get(target), (r) => r.arrayBuffer)
/** @effect/platform's HttpClient.make over a backend that answers at once, from a web Response. */
const instant = HttpClient.make((request) =>
  Effect.succeed(HttpClientResponse.fromWeb(request, new Response("hello, world\n")))
)

const program = Effect.gen(function*() {
  yield* measure("requestWith, kept connection", requestWith(url), agentOn({}))
  yield* measure("Agent.request, kept connection", Effect.flatMap(Agent.request(HttpClientRequest.get(url)), (r) => r.arrayBuffer), agentOn({}))
  // Requests that wait in their origin's line: 16 at once over its 2 connections.
  const sixteenAtOnce = <A, E, R>(once: Effect.Effect<A, E, R>) =>
    Effect.forEach(sixteen, () => once, { concurrency: 16, discard: true })
  yield* measure(
    "Agent.request, 16 at once over 2 connections (wait)",
    sixteenAtOnce(Effect.flatMap(Agent.request(HttpClientRequest.get(url)), (r) => r.arrayBuffer)),
    agentOn({}),
    16
  )
  yield* measure("floor: forEach of 16 Effect.void at once, no Agent", sixteenAtOnce(Effect.void), Layer.empty, 16)
  yield* measure(
    "Agent.requestScoped in Effect.scoped, kept connection",
    Effect.scoped(Effect.flatMap(Agent.requestScoped(HttpClientRequest.get(url)), (r) => r.arrayBuffer)),
    agentOn({})
  )
  yield* measure("HttpClient (keepalive), kept connection", Effect.flatMap(HttpClient.get(url), (r) => r.arrayBuffer), clientOn)
  yield* measure(
    "HttpClient in Effect.scoped, kept connection",
    Effect.scoped(Effect.flatMap(HttpClient.get(url), (r) => r.arrayBuffer)),
    clientOn
  )
  yield* measure("HttpClient.make over an instant backend", Effect.flatMap(instant.get(url), (r) => r.arrayBuffer), Layer.empty)
  if (port === undefined) {
    yield* measure("requestWith, persist: false", requestWith(url), agentOn({ persist: false }))
  } else {
    const layer = Agent.layer({ persist: false }).pipe(Layer.provide(NodeConnector.layer))
    yield* measure(`requestWith, persist: false, node:net :${port}`, requestWith(`http://127.0.0.1:${port}/small`), layer)
  }
  const inPieces = Agent.layer({}).pipe(Layer.provide(MemoryConnectorInPieces))
  const clientInPieces = AgentHttpClient.layer.pipe(Layer.provideMerge(inPieces))
  const sizeOf = <E>(stream: Stream.Stream<Uint8Array, E>) => Stream.runFold(stream, 0, (size, chunk) => size + chunk.byteLength)
  yield* measure("Stream.runDrain(Stream.empty), no Agent", Effect.suspend(() => Stream.runDrain(Stream.empty)), Layer.empty)
  yield* measure("Stream.runFold of one chunk, no Agent", Effect.suspend(() => sizeOf(Stream.succeed(new Uint8Array(13)))), Layer.empty)
  yield* measure(
    "64 KiB in 4 pieces: Agent.request, forEachChunk",
    Effect.flatMap(Agent.request(HttpClientRequest.get(url)), (r) => Agent.forEachChunk(r, () => Effect.void)),
    inPieces
  )
  yield* measure(
    "64 KiB in 4 pieces: Agent.request, stream",
    Effect.flatMap(Agent.request(HttpClientRequest.get(url)), (r) => sizeOf(r.stream)),
    inPieces
  )
  yield* measure(
    "64 KiB in 4 pieces: HttpClient scoped, stream",
    Effect.scoped(Effect.flatMap(HttpClient.get(url), (r) => sizeOf(r.stream))),
    clientInPieces
  )
})

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
