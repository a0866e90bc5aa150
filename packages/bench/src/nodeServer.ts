/**
 * The fallback server when nginx is not installed, run in its own process:
 *
 *   node dist/nodeServer.js <basePort> <ports>
 *
 * Serves what the nginx config serves, on <ports> consecutive ports, with
 * nginx's keep-alive settings and the same `/status` text as nginx's
 * stub_status so the harness can count accepted connections either way.
 * Prints "ready" once every port listens.
 */
import * as http from "node:http"
import type * as net from "node:net"
import { bigBodySize, smallBody } from "./scenarios.js"

const [basePortArg, portsArg] = process.argv.slice(2)
const basePort = Number(basePortArg)
const ports = Number(portsArg)

const small = Buffer.from(smallBody)
const big = Buffer.alloc(bigBodySize, "0123456789abcdef")
let accepted = 0
let requests = 0

const handle = (request: http.IncomingMessage, response: http.ServerResponse) => {
  requests++
  // Any request body is drained so the connection stays usable.
  request.resume()
  if (request.url === "/small" || request.url === "/big") {
    const [body, type] = request.url === "/small" ? [small, "text/plain"] : [big, "application/octet-stream"]
    response.writeHead(200, { "content-type": type, "content-length": body.byteLength })
    response.end(body)
  } else if (request.url === "/status") {
    const text = `Active connections: 0 \nserver accepts handled requests\n ${accepted} ${accepted} ${requests} \n`
    response.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(text) })
    response.end(text)
  } else {
    response.writeHead(404, { "content-length": 0 })
    response.end()
  }
}

const listen = (port: number) =>
  new Promise<void>((resolve, reject) => {
    const server = http.createServer(handle)
    server.keepAliveTimeout = 75_000
    server.maxRequestsPerSocket = 0
    server.on("connection", (_socket: net.Socket) => accepted++)
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => resolve())
  })

await Promise.all(Array.from({ length: ports }, (_, i) => listen(basePort + i)))
process.stdout.write("ready\n")
// The harness holds our stdin open; when it goes away, so do we.
process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
