/**
 * A node:https origin for the TLS tests, counting its handshakes so that a
 * test sees server-side whether a connection was reused or a session resumed.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as https from "node:https"
import type * as net from "node:net"
import type * as tls from "node:tls"

/** What the server saw of TLS, updated as handshakes complete. */
export interface Handshakes {
  readonly port: number
  /** Handshakes completed: one per TLS connection. */
  count: number
  /** Of those, the ones that resumed an earlier session. */
  resumed: number
  /** The server name each handshake asked for (SNI), `false` when none. */
  readonly servernames: Array<string | false>
}

/** A node:https server on 127.0.0.1 that answers `hello`, counting handshakes; closed with the scope. */
export const httpsServer = (
  options: https.ServerOptions
): Effect.Effect<{ readonly server: https.Server; readonly handshakes: Handshakes }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: https.Server; handshakes: Handshakes }>((resume) => {
      const server = https.createServer(options, (_request, response) => response.end("hello"))
      const handshakes: Handshakes = { port: 0, count: 0, resumed: 0, servernames: [] }
      server.on("secureConnection", (socket: tls.TLSSocket) => {
        handshakes.count++
        if (socket.isSessionReused()) handshakes.resumed++
        handshakes.servernames.push((socket as tls.TLSSocket & { servername: string | false }).servername)
      })
      server.listen(0, "127.0.0.1", () => {
        ;(handshakes as { port: number }).port = (server.address() as net.AddressInfo).port
        resume(Effect.succeed({ server, handshakes }))
      })
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )
