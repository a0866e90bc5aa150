import * as HttpClient from "@effect/platform/HttpClient"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import type { ServerSocket } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

/**
 * The first request gets `badAnswer`; its body read must fail, and with one
 * connection per origin the next request must still be served.
 */
const failsThenFreesTheConnection = (badAnswer: (socket: ServerSocket) => void) => {
  let n = 0
  const server = new MemoryServer((req) => {
    n++
    if (n === 1) badAnswer(req.socket)
    else req.socket.respond("ok")
  })
  return withAgent(server, { maxConnectionsPerOrigin: 1 }, Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const res = yield* client.get("http://a.test/bad")
    expect(res.status).toBe(200)
    const body = yield* Effect.either(res.text)
    expect(body._tag).toBe("Left")
    yield* settle
    const stats = yield* Agent.stats
    const next = yield* client.get("http://a.test/next").pipe(
      Effect.flatMap((r) => r.text),
      Effect.timeout("1 second"),
      Effect.either
    )
    expect(next).toMatchObject({ _tag: "Right", right: "ok" })
    expect(stats).toMatchObject({ open: 0, busy: 0, waiting: 0 })
  }))
}

describe("HttpClient adapter: a response that failed before the adapter saw it", () => {
  // Found when the pool was Effect's Pool (names below are from then); kept as a regression test.
  // Head and a malformed chunk arrive in one packet: the exchange fails inside
  // the same parser call, before respond() installs onSettled. The body read
  // then fails, onBodyDone never runs, and InterruptibleResponse unregisters the
  // GC fallback: the connection, its gate permit and global permit stay held.
  it.live("frees the connection after the body read failed (bad chunk framing in the head's packet)", () =>
    failsThenFreesTheConnection((socket) =>
      socket.send("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n")
    ))

  it.live("frees the connection after a truncated body (data and FIN in the same turn)", () =>
    failsThenFreesTheConnection((socket) => {
      socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
      socket.end()
    }))
})
