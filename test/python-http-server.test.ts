/**
 * The Agent against Python's `http.server` (Debian's python3), a server that
 * answers a POST without reading its body, over HTTP/1.0, and closes: while
 * the request body is still being streamed. Its close makes the client's next
 * write fail (EPIPE) just after the answer arrived; the answer must win,
 * whatever the order in which the two reach the client.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { spawn, spawnSync } from "node:child_process"
import { findBinary, freePort, stop, waitForStart } from "./setup/servers.js"

const python = findBinary("python3")
const inCi = process.env.CI === "true"
if (python === undefined && !inCi) console.warn("python http.server tests skipped: no python3")

const script = `
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200)
        if self.path != "/close-delimited":
            self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
`

/** Python's http.server on a free port, stopped with the scope. */
const pythonServer = Effect.acquireRelease(
  Effect.promise(async () => {
    if (python === undefined) throw new Error("python3 is required under CI")
    const port = await freePort()
    const child = spawn(python, ["-c", script, String(port)], { stdio: "ignore" })
    if (!(await waitForStart(child, port))) {
      await stop(child)
      throw new Error(`python3 http.server did not start: ${spawnSync(python, ["--version"]).stdout}`)
    }
    return { port, child }
  }),
  ({ child }) => Effect.promise(() => stop(child))
)

const chunk = new Uint8Array(64 * 1024).fill(0x61)

describe.skipIf(python === undefined && !inCi)("python3 http.server (HTTP/1.0, answers without reading the body, then closes)", () => {
  for (const [framing, path] of [["Content-Length", "/upload"], ["close-delimited", "/close-delimited"]] as const) {
    it.scopedLive(`a response (${framing}) that came before the write failed wins, every time: 50 POSTs of a 16 MiB streamed body`, () =>
      Effect.gen(function*() {
        const { port } = yield* pythonServer
        const outcomes: Array<string> = []
        const started = performance.now()
        for (let i = 0; i < 50; i++) {
          const outcome = yield* Agent.request(
            HttpClientRequest.post(`http://127.0.0.1:${port}${path}`).pipe(
              HttpClientRequest.bodyStream(Stream.repeatValue(chunk).pipe(Stream.take(256)), {
                contentType: "application/octet-stream"
              })
            )
          ).pipe(
            Effect.flatMap((response) => Effect.map(response.text, (body) => `${response.status} ${body}`)),
            Effect.catchAll((error) => Effect.succeed(error.message))
          )
          outcomes.push(outcome)
        }
        expect(outcomes.filter((outcome) => outcome !== "200 ok")).toEqual([])
        expect(yield* Agent.stats).toMatchObject({ busy: 0, waiting: 0, opened: 50 })
        // The peer's EOF ends each wait, not the 200 ms a socket lingers at most.
        expect(performance.now() - started).toBeLessThan(50 * 100)
      }).pipe(Effect.provide(NodeAgent.layer())), 60_000)
  }
})
