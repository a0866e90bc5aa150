/**
 * Requests the Agent must refuse before writing a byte: anything that could
 * inject a header or a second request, or frame the body differently from how
 * the Agent will send it. Each fails with reason InvalidRequest, and the server
 * never even sees a connection.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { expectClean, expectFailure, send, timeout, withAgent } from "./harness.js"
import * as Server from "./server.js"

type Build = (url: string) => HttpClientRequest.HttpClientRequest

/** A method the types do not allow: the Agent must check it all the same. */
const method = (m: string) => m as HttpClientRequest.HttpClientRequest["method"]

const controls = { CR: "\r", LF: "\n", NUL: "\u0000", CRLF: "\r\n" } as const

const cases: Array<{ readonly name: string; readonly build: Build }> = []

for (const [name, c] of Object.entries(controls)) {
  cases.push(
    {
      name: `${name} in a header name (setHeader)`,
      build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader(`x-a${c}x-b`, "v"))
    },
    {
      name: `${name} in a header value (setHeader)`,
      build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("x-a", `v${c}x-b: injected`))
    },
    {
      name: `${name} in a header value (make with headers)`,
      build: (url) => HttpClientRequest.make("GET")(url, { headers: { "x-a": `v${c}x-b: injected` } })
    },
    {
      name: `${name} in the Host header`,
      build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("host", `example.com${c}x: y`))
    },
    {
      name: `${name} in the method (make)`,
      build: (url) => HttpClientRequest.make(method(`GET${c}X`))(url)
    },
    {
      name: `${name} in the method (modify)`,
      build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.modify({ method: method(`GET / HTTP/1.1${c}x: y${c}`) }))
    }
  )
}

cases.push(
  {
    name: "a header value object whose toString yields CRLF",
    build: (url) =>
      HttpClientRequest.get(url).pipe(
        // The Headers type says string; at run time anything may come through.
        HttpClientRequest.setHeaders({ "x-a": { toString: () => "a\r\nx-b: injected" } as unknown as string })
      )
  },
  {
    name: "a header value array whose element holds CRLF",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeaders({ "x-a": ["a", "b\r\nx-b: injected"] }))
  },
  {
    name: "a header value above U+00FF",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("x-a", "snow \u2603"))
  },
  {
    name: "an empty header name",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("", "v"))
  },
  {
    name: "a header name with a space",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("x a", "v"))
  },
  {
    name: "a header name with a colon",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("x-a:", "v"))
  },
  { name: "a method that is not a token (GE T)", build: (url) => HttpClientRequest.make(method("GE T"))(url) },
  // make/modify ignore an empty method (it is falsy); setMethod takes it as is.
  { name: "an empty method", build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setMethod(method(""))) },
  { name: "a method with a slash", build: (url) => HttpClientRequest.make(method("GET/"))(url) },
  {
    name: "a caller-set Transfer-Encoding: chunked",
    build: (url) =>
      HttpClientRequest.post(url).pipe(
        HttpClientRequest.bodyText("hello"),
        HttpClientRequest.setHeader("transfer-encoding", "chunked")
      )
  },
  {
    name: "a caller-set Transfer-Encoding on a GET",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("Transfer-Encoding", "gzip"))
  },
  {
    name: "Connection: upgrade",
    build: (url) =>
      HttpClientRequest.get(url).pipe(
        HttpClientRequest.setHeader("connection", "upgrade"),
        HttpClientRequest.setHeader("upgrade", "websocket")
      )
  },
  {
    name: "Connection: keep-alive, Upgrade",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("connection", "keep-alive, Upgrade"))
  },
  {
    name: "an Upgrade header alone",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("upgrade", "h2c"))
  },
  {
    name: "a Content-Length shorter than the body",
    build: (url) =>
      HttpClientRequest.post(url).pipe(HttpClientRequest.bodyText("hello"), HttpClientRequest.setHeader("content-length", "3"))
  },
  {
    name: "a Content-Length longer than the body",
    build: (url) =>
      HttpClientRequest.post(url).pipe(HttpClientRequest.bodyText("hello"), HttpClientRequest.setHeader("content-length", "50"))
  },
  {
    name: "a Content-Length on a GET without a body",
    build: (url) => HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("content-length", "5"))
  },
  {
    name: "a non-numeric Content-Length",
    build: (url) =>
      HttpClientRequest.post(url).pipe(HttpClientRequest.bodyText("hello"), HttpClientRequest.setHeader("content-length", "5, 5"))
  },
  {
    name: "a Content-Length on a chunked (Stream) body",
    build: (url) =>
      HttpClientRequest.post(url).pipe(
        // Never pulled: the request must be refused first.
        HttpClientRequest.bodyStream(Stream.die("the body of a refused request was read")),
        HttpClientRequest.setHeader("content-length", "5")
      )
  }
)

describe("requests refused before a byte is written", () => {
  for (const c of cases) {
    it.scopedLive(`${JSON.stringify(c.name).slice(1, -1)}: InvalidRequest, no connection`, () =>
      Effect.gen(function*() {
        const server = yield* Server.make()
        yield* withAgent(server, Effect.gen(function*() {
          yield* expectFailure(send(c.build(server.url("/target"))), "InvalidRequest")
          // A connection would have been accepted by now.
          yield* Effect.sleep("20 millis")
          expect(server.sockets.length).toBe(0)
          yield* expectClean(0)
          // The refusal left nothing behind: a good request still goes through.
          expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        }), { maxConnections: 1, maxConnectionsPerOrigin: 1 })
      }), timeout)
  }
})

describe("control characters in the URL", () => {
  // The URL parser (WHATWG, used by @effect/platform too) strips CR, LF and
  // TAB and percent-encodes NUL and spaces: the request goes out once, with
  // the target as parsed, and no raw control character or second request
  // line reaches the wire.
  const stripped = "/ab%20HTTP/1.1x-injected:%201GET%20/smuggled"
  const targets: Record<keyof typeof controls, string> = {
    CR: stripped,
    LF: stripped,
    CRLF: stripped,
    NUL: "/a%00b%20HTTP/1.1%00x-injected:%201%00%00GET%20/smuggled"
  }
  for (const [name, c] of Object.entries(controls) as Array<[keyof typeof controls, string]>) {
    it.scopedLive(`${name} in the path reaches the wire only as the URL parser left it, in one request`, () =>
      Effect.gen(function*() {
        const server = yield* Server.make()
        yield* withAgent(server, Effect.gen(function*() {
          const url = `${server.origin}/a${c}b HTTP/1.1${c}x-injected: 1${c}${c}GET /smuggled`
          const response = yield* send(HttpClientRequest.get(url))
          expect(response).toMatchObject({ status: 200, body: `GET ${targets[name]}` })
          // Time for a smuggled second request to arrive.
          yield* Effect.sleep("20 millis")
          expect(server.arrivals.map((a) => [a.method, a.path, a.headers["x-injected"]])).toEqual([
            ["GET", targets[name], undefined]
          ])
          yield* expectClean()
        }))
      }), timeout)
  }
})

describe("a Stream body that contradicts its declared length", () => {
  // A streamed body cannot be checked before its head is written, but its
  // excess must never reach the wire: past the declared length the bytes
  // would be read by the server as the next request.
  const smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"

  it.scopedLive("longer than declared: the excess is never sent, the request fails and the connection is closed", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        const body = Stream.make(new TextEncoder().encode("hello"), new TextEncoder().encode(smuggled))
        const request = HttpClientRequest.post(server.url("/upload")).pipe(
          HttpClientRequest.bodyStream(body, { contentLength: 5 })
        )
        yield* expectFailure(send(request), "InvalidRequest")
        yield* Effect.sleep("50 millis")
        expect(server.count("GET", "/smuggled")).toBe(0)
        expect(server.arrivals.map((a) => `${a.method} ${a.path}`)).toEqual(["POST /upload"])
        yield* Server.until(() => server.sockets[0]!.closedBy === "client", () => "the connection is still open")
        yield* expectClean(0)
      }))
    }), timeout)

  it.scopedLive("shorter than declared: the request fails and the connection is closed, never reused", () =>
    Effect.gen(function*() {
      const server = yield* Server.make()
      yield* withAgent(server, Effect.gen(function*() {
        const body = Stream.make(new TextEncoder().encode("hel"))
        const request = HttpClientRequest.post(server.url("/upload")).pipe(
          HttpClientRequest.bodyStream(body, { contentLength: 5 })
        )
        yield* expectFailure(send(request), "InvalidRequest")
        yield* Server.until(() => server.sockets[0]!.closedBy === "client", () => "the connection is still open")
        expect(server.arrivals[0]!.bodyComplete).toBe(false)
        expect((yield* send(HttpClientRequest.get(server.url("/ok")))).body).toBe("GET /ok")
        expect(server.sockets.length).toBe(2)
        yield* expectClean(1)
      }), { headersTimeout: "2 seconds" })
    }), timeout)
})
