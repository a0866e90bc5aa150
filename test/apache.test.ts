/**
 * The Agent against a real apache2 (mpm_event, started by
 * `test/setup/apache.ts`) with a short KeepAliveTimeout and a small
 * MaxKeepAliveRequests: its access log (`%k`: requests the connection carried
 * before this one; the client's port) shows server-side how connections were
 * reused, and that no request was sent twice.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { inject } from "vitest"
import { apacheFileContent, apacheFiles, apacheKeepAliveTimeoutSeconds, apacheMaxKeepAliveRequests } from "./setup/apache.js"
import { provided } from "./setup/provided.js"

const apache = provided("apache2", inject("apachePort"), inject("apacheUnavailable"), "apache2 tests")
const accessLog = inject("apacheAccessLog")

const url = (path: string): string => `http://127.0.0.1:${apache.port}${path}`

interface Logged {
  /** Requests the connection carried before this one. */
  readonly before: number
  /** The client's port: one per connection. */
  readonly clientPort: number
  readonly method: string
  readonly path: string
  readonly status: number
  /** When apache received the request, in µs since the epoch. */
  readonly receivedMicros: number
}

/**
 * The access log lines written since `from` (a byte offset of the log), in
 * the order apache received the requests: it writes a line once the response
 * is sent, and the last request of a connection it closes (a lingering close)
 * may be written after the first of the next connection.
 */
const loggedSince = (from: number): Array<Logged> =>
  fs.readFileSync(accessLog).subarray(from).toString("latin1").split("\n").filter((line) => line !== "").map((line) => {
    const match = /^(\d+) (\d+) "(\S+) (\S+) [^"]*" (\d+) \S+ (\d+)$/.exec(line)
    if (match === null) throw new Error(`unexpected access log line: ${line}`)
    return {
      before: +match[1]!,
      clientPort: +match[2]!,
      method: match[3]!,
      path: match[4]!,
      status: +match[5]!,
      receivedMicros: +match[6]!
    }
  }).sort((a, b) => a.receivedMicros - b.receivedMicros)

/** Runs `body` with a fresh Agent, and returns the access log lines it caused. */
const logged = <A, E>(body: Effect.Effect<A, E, Agent.Agent>) =>
  Effect.gen(function*() {
    const from = fs.statSync(accessLog).size
    const result = yield* body.pipe(Effect.provide(NodeAgent.layer()))
    // apache writes its log line once the response is sent: give the last one a moment.
    yield* Effect.sleep("50 millis")
    return { result, lines: loggedSince(from) }
  })

const get = (path: string, headers: Record<string, string> = {}) =>
  Agent.request(HttpClientRequest.get(url(path)).pipe(HttpClientRequest.setHeaders(headers))).pipe(
    Effect.flatMap((response) =>
      Effect.map(response.arrayBuffer, (body) => ({ status: response.status, headers: response.headers, body: new Uint8Array(body) }))
    )
  )

/** The requests of each connection, in the order apache received them. */
const byConnection = (lines: ReadonlyArray<Logged>): Array<Array<Logged>> => {
  const groups = new Map<number, Array<Logged>>()
  for (const line of lines) groups.set(line.clientPort, [...(groups.get(line.clientPort) ?? []), line])
  return [...groups.values()]
}

describe.skipIf(apache.skip)("apache2 (mpm_event, KeepAliveTimeout 2 s, MaxKeepAliveRequests 5)", () => {
  it.live("asked for keep-alive, it counts max down from 5; each connection carries the 6 requests it takes, 50 requests open 9 connections, and no request fails", () =>
    Effect.gen(function*() {
      const { lines, result } = yield* logged(Effect.gen(function*() {
        const responses = []
        for (let i = 0; i < 50; i++) responses.push(yield* get("/small.txt"))
        return { responses, stats: yield* Agent.stats }
      }))
      for (const response of result.responses) {
        expect(response.status).toBe(200)
        expect(response.body).toEqual(apacheFileContent(13))
      }
      // `max=N` counts the requests apache takes after the response that says
      // it: 5 on a connection's first response, down to 1 on its fifth; the
      // sixth says Connection: close.
      const perConnection = apacheMaxKeepAliveRequests + 1
      const announced = result.responses.slice(0, perConnection).map((r) => [r.headers["connection"], r.headers["keep-alive"]])
      expect(announced).toEqual([
        ...Array.from({ length: apacheMaxKeepAliveRequests }, (_, i) => [
          "Keep-Alive",
          `timeout=${apacheKeepAliveTimeoutSeconds}, max=${apacheMaxKeepAliveRequests - i}`
        ]),
        ["close", undefined]
      ])
      // Every request sent once, none refused.
      expect(lines).toHaveLength(50)
      const connections = byConnection(lines)
      // Eight connections of 6 requests, and one of 2.
      expect(connections).toHaveLength(9)
      // apache's %k: the requests the connection carried before this one.
      const full = Array.from({ length: perConnection }, (_, i) => i)
      expect(connections.map((requests) => requests.map((r) => r.before))).toEqual([
        ...Array.from({ length: 8 }, () => full),
        [0, 1]
      ])
      expect(result.stats).toMatchObject({ opened: 9, reused: 41, busy: 0, waiting: 0 })
    }))

  it.live("its Keep-Alive timeout is honoured: an idle connection is closed before apache would, and a POST after the idle gap goes out once, on a new connection", () =>
    Effect.gen(function*() {
      const { lines, result } = yield* logged(Effect.gen(function*() {
        yield* get("/small.txt")
        // The hint says 2 s: the Agent keeps it for at most 1 s, where its own default is 4 s.
        yield* Effect.sleep("1300 millis")
        const afterIdle = yield* Agent.stats
        const post = yield* Agent.request(
          HttpClientRequest.post(url("/small.txt")).pipe(HttpClientRequest.bodyText("data"))
        )
        yield* Effect.sleep(`${apacheKeepAliveTimeoutSeconds * 1000 + 300} millis`)
        const again = yield* Agent.request(
          HttpClientRequest.post(url("/small.txt")).pipe(HttpClientRequest.bodyText("data"))
        )
        return { afterIdle, post: post.status, again: again.status, stats: yield* Agent.stats }
      }))
      expect(result.afterIdle).toMatchObject({ open: 0, idle: 0 })
      expect(lines.filter((line) => line.method === "POST")).toHaveLength(2)
      expect(byConnection(lines)).toHaveLength(3)
      expect(result.post).toBe(result.again)
      expect(result.stats).toMatchObject({ opened: 3, busy: 0, waiting: 0 })
    }))

  for (const [name, size] of Object.entries(apacheFiles)) {
    it.live(`a body of ${size} bytes arrives byte-exact, read whole and piece by piece`, () =>
      Effect.gen(function*() {
        const { lines, result } = yield* logged(Effect.gen(function*() {
          const whole = yield* get(`/${name}`)
          let received = 0
          const expected = apacheFileContent(size)
          let mismatch = -1
          yield* Agent.requestWith(
            HttpClientRequest.get(url(`/${name}`)),
            Agent.forEachChunk((chunk) =>
              Effect.sync(() => {
                for (let i = 0; i < chunk.length; i++) {
                  if (mismatch === -1 && chunk[i] !== expected[received + i]) mismatch = received + i
                }
                received += chunk.length
              })
            )
          )
          return { whole, received, mismatch }
        }))
        expect(result.whole.status).toBe(200)
        expect(result.whole.body.length).toBe(size)
        expect(Buffer.from(result.whole.body).equals(Buffer.from(apacheFileContent(size)))).toBe(true)
        expect(result.received).toBe(size)
        expect(result.mismatch).toBe(-1)
        // Both on one connection.
        expect(lines.map((line) => line.before)).toEqual([0, 1])
      }))
  }

  it.live("HEAD and 304 leave the connection reusable", () =>
    Effect.gen(function*() {
      const { lines, result } = yield* logged(Effect.gen(function*() {
        const first = yield* get("/small.txt")
        const head = yield* Agent.request(HttpClientRequest.head(url("/small.txt")))
        const headBody = yield* head.arrayBuffer
        const notModified = yield* get("/small.txt", { "if-none-match": first.headers["etag"]! })
        const last = yield* get("/small.txt")
        return { head: head.status, headBody: headBody.byteLength, notModified, last }
      }))
      expect(result.head).toBe(200)
      expect(result.headBody).toBe(0)
      expect(result.notModified.status).toBe(304)
      expect(result.notModified.body.length).toBe(0)
      expect(result.last.body).toEqual(apacheFileContent(13))
      expect(byConnection(lines).map((requests) => requests.map((r) => `${r.method} ${r.status} ${r.before}`))).toEqual([
        ["GET 200 0", "HEAD 200 1", "GET 304 2", "GET 200 3"]
      ])
    }))

  it.live("POSTs across the server's closes after its max are each sent once, in order", () =>
    Effect.gen(function*() {
      const { lines, result } = yield* logged(Effect.gen(function*() {
        const statuses = []
        for (let i = 0; i < 14; i++) {
          const response = yield* Agent.request(
            HttpClientRequest.post(url(`/small.txt?n=${i}`)).pipe(HttpClientRequest.bodyText(`post ${i}`))
          )
          statuses.push(response.status)
        }
        return statuses
      }))
      const posts = lines.filter((line) => line.method === "POST").map((line) => line.path)
      expect(posts).toEqual(Array.from({ length: 14 }, (_, i) => `/small.txt?n=${i}`))
      expect(new Set(result).size).toBe(1)
      expect(byConnection(lines)).toHaveLength(3)
    }))
})
