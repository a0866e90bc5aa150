/**
 * Interruption at random points: 1,000 requests against a live server that
 * answers after a random delay with a random body (sometimes chunked,
 * sometimes in two writes), each cut short at a random moment in one of
 * several ways. Afterwards nothing may be left busy or waiting, no answer may
 * have gone to the wrong request, and closing the Agent must close every
 * socket the server accepted.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { expectClean, readText, send, withAgent } from "./harness.js"
import * as Server from "./server.js"

/** A small seeded generator (mulberry32), so that a failing mix can be replayed. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** The body for a path: the path repeated, cut to `size`, so a misdelivered body is recognised. */
const bodyFor = (path: string, size: number): string => `${path};`.repeat(Math.ceil(size / (path.length + 1))).slice(0, size)

/** Holds requests to /barrier until 8 are in, then answers them all: only 8 requests in flight at once get through. */
const barrier = (held: Array<Server.Arrival>, request: Server.Arrival): void => {
  held.push(request)
  if (held.length < 8) return
  for (const r of held.splice(0)) r.socket.respond(r)
}

/** 8 requests at once all complete: no connection slot of the origin was lost. */
const fullCapacity = (server: Server.HostileServer) =>
  Effect.forEach(
    Array.from({ length: 8 }, () => HttpClientRequest.get(server.url("/barrier"))),
    send,
    { concurrency: "unbounded", discard: true }
  ).pipe(
    Effect.timeoutFail({
      duration: "2 seconds",
      onTimeout: () => new Error(`8 concurrent requests did not all get a connection; the server saw ${server.count("GET", "/barrier")}`)
    }),
    Effect.orDie
  )

const requests = 1000
const seed = 20_251_125

/** How far a request got: it reached the server, its head came back, its body was read. */
type Progress = "queued" | "sent" | "head" | "done"

describe("interruption at random points", () => {
  // Agent.request frees a connection itself when its reader gives up;
  // requestScoped also when its scope closes (the `Effect.scoped` below).
  it.scopedLive.each(["request", "requestScoped"] as const)("1,000 requests (Agent.%s) cut short at random leave nothing busy, waiting or open", (via) =>
    Effect.gen(function*() {
      const serverRandom = random(seed)
      const progress = new Map<number, Progress>()
      // Milestones a cut can wait for: "sent i" (the server has the request), "head i" (the client has the head).
      const fired = new Set<string>()
      const waiting = new Map<string, () => void>()
      const fire = (milestone: string) => {
        fired.add(milestone)
        waiting.get(milestone)?.()
      }
      const reached = (milestone: string) =>
        Effect.async<void>((resume) => {
          if (fired.has(milestone)) return resume(Effect.void)
          waiting.set(milestone, () => resume(Effect.void))
          return Effect.sync(() => waiting.delete(milestone))
        })
      const held: Array<Server.Arrival> = []
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path === "/barrier") return barrier(held, request)
          const i = Number(request.path.slice("/r/".length))
          if (progress.get(i) === "queued") progress.set(i, "sent")
          fire(`sent ${i}`)
          const size = Math.floor(serverRandom() * 20_000)
          const chunked = serverRandom() < 0.4 ? 1 + Math.floor(serverRandom() * 4096) : undefined
          const bytes = Server.render(request, {
            headers: { "x-size": String(size) },
            body: bodyFor(request.path, size),
            ...(chunked === undefined ? {} : { chunked })
          })
          // Some responses arrive in two writes, so that a cut can land mid-body.
          const split = serverRandom() < 0.5 ? Math.floor(serverRandom() * bytes.length) : bytes.length
          const gap = Math.floor(serverRandom() * 11)
          setTimeout(() => {
            request.socket.write(bytes.subarray(0, split))
            if (split < bytes.length) setTimeout(() => request.socket.write(bytes.subarray(split)), gap)
          }, Math.floor(serverRandom() * 6))
        }
      })
      const clientRandom = random(seed + 1)
      const outcomes = { ok: 0, cut: 0, released: 0, failed: [] as Array<string> }
      /** For cut requests: how far they got. */
      const cutAt: Record<Progress, number> = { queued: 0, sent: 0, head: 0, done: 0 }
      let maxOpen = 0
      let uncut = 0

      yield* withAgent(server, Effect.gen(function*() {
        /** One request and its body, checked against what was asked for. */
        const exchange = (i: number) => {
          const path = `/r/${i}`
          return Agent[via](HttpClientRequest.get(server.url(path))).pipe(
            Effect.tap(() =>
              Effect.sync(() => {
                progress.set(i, "head")
                fire(`head ${i}`)
              })
            ),
            Effect.flatMap((response) => Effect.map(readText(response), (body) => ({ response, body }))),
            Effect.scoped,
            Effect.map(({ body, response }) => {
              progress.set(i, "done")
              expect(response.status).toBe(200)
              expect(body).toBe(bodyFor(path, Number(response.headers["x-size"])))
            })
          )
        }
        /** Reads the head and at most the first chunk of the body, then lets go of the rest. */
        const abandon = (i: number) =>
          Agent[via](HttpClientRequest.get(server.url(`/r/${i}`))).pipe(
            Effect.flatMap((response) => Stream.runDrain(Stream.take(response.stream, 1))),
            Effect.scoped,
            Effect.orDie
          )

        /** Interrupts an exchange a random 0 to `jitter` ms after it reached `milestone`. */
        const cutAfter = (i: number, milestone: string, jitter: number) =>
          Effect.gen(function*() {
            const fiber = yield* Effect.fork(exchange(i))
            yield* Effect.raceFirst(reached(milestone), Fiber.await(fiber))
            yield* Effect.sleep(Math.floor(clientRandom() * (jitter + 1)))
            const exit = yield* Fiber.interrupt(fiber)
            if (Exit.isSuccess(exit)) return "ok" as const
            if (Exit.isInterrupted(exit)) return "cut" as const
            return yield* Effect.failCause(exit.cause)
          })

        const one = (i: number): Effect.Effect<void, never, Agent.Agent> => {
          progress.set(i, "queued")
          const how = Math.floor(clientRandom() * 6)
          const record = <E>(effect: Effect.Effect<"ok" | "cut" | "released", E, Agent.Agent>) =>
            Effect.flatMap(Effect.either(effect), (result) =>
              Effect.sync(() => {
                if (result._tag === "Left") return void outcomes.failed.push(`${i}: ${String(result.left)}`)
                outcomes[result.right]++
                if (result.right === "cut") cutAt[progress.get(i)!]++
              }))
          switch (how) {
            case 0:
              // Within 10 ms: mostly while waiting for a connection (50 requests share 8).
              return record(Effect.timeout(exchange(i), Math.floor(clientRandom() * 11)).pipe(
                Effect.as("ok" as const),
                Effect.catchTag("TimeoutException", () => Effect.succeed("cut" as const))
              ))
            case 1:
              // Within 150 ms: anywhere from the wait to the end of the body.
              return record(Effect.raceFirst(
                Effect.as(exchange(i), "ok" as const),
                Effect.as(Effect.sleep(Math.floor(clientRandom() * 151)), "cut" as const)
              ))
            case 2:
              // Once the request is on the wire, before (or as) the head comes back.
              return record(cutAfter(i, `sent ${i}`, 2))
            case 3:
              // Once the head is in, while the body is read.
              return record(cutAfter(i, `head ${i}`, 3))
            case 4:
              return record(Effect.as(abandon(i), "released" as const))
            default:
              // Uncut: it must finish, with its own body.
              uncut++
              return record(Effect.as(exchange(i), "ok" as const))
          }
        }

        const sampler = yield* Effect.fork(Effect.forever(Effect.flatMap(Agent.stats, (stats) =>
          Effect.sync(() => {
            maxOpen = Math.max(maxOpen, stats.open)
          })).pipe(Effect.zipLeft(Effect.sleep("1 millis")))))
        yield* Effect.forEach(Array.from({ length: requests }, (_, i) => i), one, { concurrency: 50, discard: true })
        yield* Fiber.interrupt(sampler)

        const summary = { ...outcomes, failed: outcomes.failed.slice(0, 5), cutAt, maxOpen }
        expect(outcomes.failed, JSON.stringify(summary)).toEqual([])
        expect(outcomes.ok + outcomes.cut + outcomes.released).toBe(requests)
        // The mix really cut requests short in every phase, and still let some finish.
        expect(cutAt.queued, JSON.stringify(summary)).toBeGreaterThan(20)
        expect(cutAt.sent, JSON.stringify(summary)).toBeGreaterThan(20)
        expect(cutAt.head, JSON.stringify(summary)).toBeGreaterThan(20)
        expect(outcomes.ok, JSON.stringify(summary)).toBeGreaterThanOrEqual(uncut)
        expect(uncut).toBeGreaterThan(100)
        expect(maxOpen).toBeLessThanOrEqual(8)
        yield* expectClean()
        expect((yield* Agent.stats).open).toBeLessThanOrEqual(8)

        // Every permit and place in line came back: the follow-up goes through,
        // and 8 requests can be in flight at once again.
        const after = yield* send(HttpClientRequest.get(server.url("/after")))
        expect(after.body).toBe(bodyFor("/after", Number(after.headers["x-size"])))
        yield* fullCapacity(server)
        yield* expectClean()
      }), { maxConnectionsPerOrigin: 8, headersTimeout: "2 seconds" })
    }), 15_000)

  it.scopedLive("300 requests through HttpClient cut short at random leave nothing busy, waiting or open", () =>
    Effect.gen(function*() {
      const serverRandom = random(seed + 2)
      const held: Array<Server.Arrival> = []
      const server = yield* Server.make({
        onRequest: (request) => {
          if (request.path === "/barrier") return barrier(held, request)
          const size = Math.floor(serverRandom() * 200_000)
          const bytes = Server.render(request, { headers: { "x-size": String(size) }, body: bodyFor(request.path, size) })
          const split = Math.floor(serverRandom() * bytes.length)
          setTimeout(() => {
            request.socket.write(bytes.subarray(0, split))
            setTimeout(() => request.socket.write(bytes.subarray(split)), Math.floor(serverRandom() * 11))
          }, Math.floor(serverRandom() * 6))
        }
      })
      const clientRandom = random(seed + 3)
      const outcomes = { ok: 0, cut: 0, failed: [] as Array<string> }
      yield* withAgent(server, Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const one = (i: number) => {
          const path = `/h/${i}`
          // One in four runs uncut, so that some always finish however slow the machine.
          const delay = clientRandom() < 0.25 ? undefined : Math.floor(clientRandom() * 81)
          const read = client.get(server.url(path)).pipe(
            Effect.flatMap((response) =>
              Effect.map(response.text, (body) => {
                expect(body).toBe(bodyFor(path, Number(response.headers["x-size"])))
              })
            )
          )
          return Effect.either(delay === undefined ? read : Effect.timeout(read, delay)).pipe(Effect.flatMap((result) =>
            Effect.sync(() => {
              if (result._tag === "Right") outcomes.ok++
              else if (result.left._tag === "TimeoutException") outcomes.cut++
              else outcomes.failed.push(`${i}: ${String(result.left)}`)
            })
          ))
        }
        yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), one, { concurrency: 50, discard: true })
        expect(outcomes.failed, JSON.stringify(outcomes)).toEqual([])
        expect(outcomes.cut, JSON.stringify(outcomes)).toBeGreaterThan(20)
        expect(outcomes.ok, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(50)
        yield* expectClean()
        const after = yield* send(HttpClientRequest.get(server.url("/after")))
        expect(after.body).toBe(bodyFor("/after", Number(after.headers["x-size"])))
        yield* fullCapacity(server)
        yield* expectClean()
      }), { maxConnectionsPerOrigin: 8, headersTimeout: "2 seconds" })
    }), 15_000)
})
