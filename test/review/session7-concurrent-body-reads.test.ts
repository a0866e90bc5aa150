import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { MemoryServer } from "../../packages/agent/test/support/MemoryConnector.js"
import { settle, withAgent } from "./harness.js"

// Found in review of session 7 (older than it): an Exchange had one waiter
// slot, so of two reads waiting on the same body the first was overwritten and
// never resumed, and the reader resumed second took nothing. Two reads of one
// response (text and json, or a read raced with another) hung.
describe("two reads of one response body still arriving", () => {
  const decoder = new TextDecoder()
  // /chunked sends its body in chunked pieces (kept as separate chunks); /sized has a content-length.
  const server = () =>
    new MemoryServer((req) =>
      req.socket.send(
        req.path === "/chunked"
          ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
          : "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
      )
    )
  const rest = (path: string) => path === "/chunked" ? "5\r\nworld\r\n0\r\n\r\n" : "world"

  for (const path of ["/sized", "/chunked"]) {
    it.live(`both complete with all of it, through HttpClient (${path})`, () => {
      const memory = server()
      return withAgent(memory, {}, Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const response = yield* client.get(`http://a.test${path}`)
        const reads = yield* Effect.fork(Effect.all([
          response.text,
          Effect.map(response.arrayBuffer, (b) => decoder.decode(b))
        ], { concurrency: 2 }))
        yield* settle
        memory.sockets[0]!.send(rest(path))
        yield* settle
        expect(reads.unsafePoll()).toMatchObject({ _tag: "Success", value: ["helloworld", "helloworld"] })
        // Read again afterwards: the same bytes.
        expect(yield* response.text).toBe("helloworld")
      }))
    })

    it.live(`both complete with all of it, through Agent.request (${path})`, () => {
      const memory = server()
      return withAgent(memory, {}, Effect.gen(function*() {
        const scope = yield* Scope.make()
        const response = yield* Scope.extend(Agent.request(HttpClientRequest.get(`http://a.test${path}`)), scope)
        const reads = yield* Effect.fork(Effect.all([response.text, response.text, response.text], { concurrency: 3 }))
        yield* settle
        memory.sockets[0]!.send(rest(path))
        yield* settle
        expect(reads.unsafePoll()).toMatchObject({ _tag: "Success", value: ["helloworld", "helloworld", "helloworld"] })
        yield* Scope.close(scope, Exit.void)
      }))
    })
  }
})
