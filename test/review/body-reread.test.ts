import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import type { ServerSocket } from "../../packages/agent/test/support/MemoryConnector.js"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

describe("reading a body again after an interrupted read", () => {
  // readAll pulls chunks out of the exchange into a local array; interrupted
  // midway, those chunks are gone. The next read (bytes memoises the effect,
  // not the chunks) returns what is left as if it were the whole body.
  it.live("never returns a body with its beginning missing", () => {
    let socket: ServerSocket | undefined
    const server = new MemoryServer((req) => {
      socket = req.socket
      req.socket.send("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
    })
    return withAgent(server, {}, Effect.gen(function*() {
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const res = yield* Agent.request(HttpClientRequest.get("http://a.test/"))
        // The first read times out while waiting for the rest of the body.
        const first = yield* Effect.either(Effect.timeoutFail(res.text, { duration: "50 millis", onTimeout: () => "timeout" }))
        expect(first._tag).toBe("Left")
        socket!.send("world")
        yield* settle
        return yield* Effect.either(res.text)
      }))
      // Either the whole body or an error; never "world" alone.
      if (result._tag === "Right") expect(result.right).toBe("helloworld")
    }))
  })
})
