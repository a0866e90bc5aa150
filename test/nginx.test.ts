/**
 * The Agent against a real nginx (started by `test/setup/global.ts`): nginx's
 * own `$connection` / `$connection_requests` say whether connections were reused.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { gunzipSync } from "node:zlib"
import { inject } from "vitest"
import { bigBody, bigBodySize } from "./setup/global.js"
import { provided } from "./setup/provided.js"

const unavailable = inject("nginxUnavailable")
const nginx = provided("nginx", inject("nginxPort"), unavailable, "nginx tests")

const url = (path: string): string => `http://127.0.0.1:${nginx.port}${path}`

/** One `/conn` answer: nginx's connection serial number and the request count on it. */
const conn = Effect.gen(function*() {
  const text = yield* Agent.requestString(url("/conn"))
  const [connection, requests] = text.trim().split(" ").map(Number)
  return { connection: connection!, requests: requests! }
})

const getBytes = (path: string, headers: Record<string, string> = {}) =>
  Agent.request(HttpClientRequest.get(url(path)).pipe(HttpClientRequest.setHeaders(headers))).pipe(
    Effect.flatMap((response) => response.arrayBuffer),
    Effect.map((buffer) => new Uint8Array(buffer))
  )

const streamBytes = (path: string, headers: Record<string, string> = {}) =>
  Agent.request(HttpClientRequest.get(url(path)).pipe(HttpClientRequest.setHeaders(headers))).pipe(
    Effect.flatMap((response) =>
      Effect.map(Stream.runCollect(response.stream), (chunks) => ({
        pieces: Chunk.size(chunks),
        bytes: Buffer.concat(Chunk.toArray(chunks)),
        encoding: response.headers["transfer-encoding"]
      }))
    )
  )

describe.skipIf(nginx.skip)(`nginx${nginx.skip ? ` (skipped: ${unavailable})` : ""}`, () => {
  it.live("50 sequential requests ride one nginx connection", () =>
    Effect.gen(function*() {
      const seen: Array<{ readonly connection: number; readonly requests: number }> = []
      for (let i = 0; i < 50; i++) seen.push(yield* conn)
      expect(new Set(seen.map((s) => s.connection)).size).toBe(1)
      expect(seen.map((s) => s.requests)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    }).pipe(Effect.provide(NodeAgent.layer())))

  it.live("40 concurrent requests use exactly the default 2 connections", () =>
    Effect.gen(function*() {
      const seen = yield* Effect.forEach(Array.from({ length: 40 }), () => conn, { concurrency: "unbounded" })
      expect(new Set(seen.map((s) => s.connection)).size).toBe(2)
      const stats = yield* Agent.stats
      expect(stats.opened).toBe(2)
      expect(stats.responses).toBe(40)
    }).pipe(Effect.provide(NodeAgent.layer())))

  it.live("persist: false opens a new nginx connection per request", () =>
    Effect.gen(function*() {
      const seen: Array<{ readonly connection: number; readonly requests: number }> = []
      for (let i = 0; i < 5; i++) seen.push(yield* conn)
      expect(new Set(seen.map((s) => s.connection)).size).toBe(5)
      expect(seen.every((s) => s.requests === 1)).toBe(true)
      expect((yield* Agent.stats).open).toBe(0)
    }).pipe(Effect.provide(NodeAgent.layer({ persist: false }))))

  it.live("a 64 KiB static file arrives intact via arrayBuffer and via stream", () =>
    Effect.gen(function*() {
      const expected = bigBody()
      const whole = yield* getBytes("/big")
      expect(whole.length).toBe(bigBodySize)
      expect(Buffer.compare(Buffer.from(whole), Buffer.from(expected))).toBe(0)
      const streamed = yield* streamBytes("/big")
      expect(streamed.bytes.length).toBe(bigBodySize)
      expect(Buffer.compare(streamed.bytes, Buffer.from(expected))).toBe(0)
      // Both bodies and this request went over the one connection.
      expect(yield* conn).toMatchObject({ requests: 3 })
    }).pipe(Effect.provide(NodeAgent.layer({ maxConnectionsPerOrigin: 1 }))))

  it.live("a chunked (gzip) body from nginx is read whole and the connection is reused", () =>
    Effect.gen(function*() {
      const expected = Buffer.from(bigBody())
      const gzip = { "accept-encoding": "gzip" }
      const whole = yield* getBytes("/chunked", gzip)
      expect(Buffer.compare(gunzipSync(whole), expected)).toBe(0)
      const streamed = yield* streamBytes("/chunked", gzip)
      expect(streamed.encoding).toBe("chunked")
      expect(Buffer.compare(gunzipSync(streamed.bytes), expected)).toBe(0)
      expect(yield* conn).toMatchObject({ requests: 3 })
    }).pipe(Effect.provide(NodeAgent.layer({ maxConnectionsPerOrigin: 1 }))))
})
