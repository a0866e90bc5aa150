/**
 * The proxies of `test/setup/proxies.ts` work, end to end, without the
 * library: raw sockets speak to squid, tinyproxy and dante, which relay to the
 * test nginx (`test/setup/global.ts`). These tests also pin down how each
 * proxy behaves (keep-alive, refusals, auth), which the proxy tests rely on.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import { describe, expect, inject, it } from "vitest"
import { proxyRefusedHost, squidPassword, squidUser } from "./setup/proxies.js"

const inCi = process.env.CI === "true"
const nginxPort = inject("nginxPort")
const nginxUnavailable = inject("nginxUnavailable")

/** Whether a proxy's tests skip (locally, when it or nginx is missing); under CI they run and fail. */
const skipFor = (name: string, port: number, unavailable: string): boolean => {
  const reason = port === 0 ? `${name}: ${unavailable}` : nginxPort === 0 ? `nginx: ${nginxUnavailable}` : ""
  if (reason === "") return false
  if (inCi) return false
  console.warn(`${name} setup tests skipped: ${reason}`)
  return true
}

const required = (name: string, port: number, unavailable: string): number => {
  if (nginxPort === 0) throw new Error(`nginx is required under CI but unavailable: ${nginxUnavailable}`)
  if (port === 0) throw new Error(`${name} is required under CI but unavailable: ${unavailable}`)
  return port
}

interface Response {
  readonly status: number
  readonly reason: string
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** A client socket with a byte buffer to read HTTP or SOCKS answers from. */
class Wire {
  private buffer = Buffer.alloc(0)
  private ended = false
  private wake: (() => void) | undefined = undefined

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      this.notify()
    })
    const end = () => {
      this.ended = true
      this.notify()
    }
    socket.on("end", end)
    socket.on("close", end)
    socket.on("error", end)
  }

  static open(port: number): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port })
      socket.once("connect", () => resolve(new Wire(socket)))
      socket.once("error", reject)
    })
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  private next(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve
    })
  }

  write(data: string | Uint8Array): void {
    this.socket.write(data)
  }

  /** Exactly `n` bytes. */
  async take(n: number): Promise<Buffer> {
    while (this.buffer.length < n) {
      if (this.ended) throw new Error(`connection ended after ${this.buffer.length} of ${n} bytes`)
      await this.next()
    }
    const out = this.buffer.subarray(0, n)
    this.buffer = this.buffer.subarray(n)
    return out
  }

  /** The bytes up to and including `delimiter`. */
  async takeThrough(delimiter: string): Promise<Buffer> {
    for (;;) {
      const at = this.buffer.indexOf(delimiter)
      if (at >= 0) return this.take(at + delimiter.length)
      if (this.ended) throw new Error(`connection ended before ${JSON.stringify(delimiter)}: ${this.buffer.toString()}`)
      await this.next()
    }
  }

  /** Everything until the peer closes. */
  async takeRest(): Promise<Buffer> {
    while (!this.ended) await this.next()
    return this.take(this.buffer.length)
  }

  /** True when the peer closed within `ms`, with nothing more sent. */
  async closesWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms
    while (!this.ended && Date.now() < deadline) {
      await Promise.race([this.next(), new Promise((resolve) => setTimeout(resolve, deadline - Date.now()))])
    }
    return this.ended && this.buffer.length === 0
  }

  /** One HTTP/1.x response; `noBody` for a response to HEAD or a 2xx to CONNECT. */
  async response(noBody = false): Promise<Response> {
    const head = (await this.takeThrough("\r\n\r\n")).toString("latin1")
    const [statusLine, ...lines] = head.trimEnd().split("\r\n")
    const match = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine!)
    if (match === null) throw new Error(`not a status line: ${statusLine}`)
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(":")
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const status = Number(match[1])
    let body = ""
    if (noBody || status === 204 || status === 304) {
      // none
    } else if (headers["transfer-encoding"]?.toLowerCase().includes("chunked")) {
      for (;;) {
        const size = parseInt((await this.takeThrough("\r\n")).toString(), 16)
        if (size === 0) {
          await this.takeThrough("\r\n")
          break
        }
        body += (await this.take(size)).toString()
        await this.take(2)
      }
    } else if (headers["content-length"] !== undefined) {
      body = (await this.take(Number(headers["content-length"]))).toString()
    } else {
      body = (await this.takeRest()).toString()
    }
    return { status, reason: match[2]!, headers, body }
  }

  close(): void {
    this.socket.destroy()
  }
}

const origin = () => `127.0.0.1:${nginxPort}`

/** A request line and headers, CRLF-terminated. */
const request = (line: string, headers: Record<string, string> = {}): string =>
  `${line}\r\n${Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("")}\r\n`

/** nginx's `/conn` body: its connection serial number and the request count on it. */
const conn = (body: string) => {
  const [connection, requests] = body.trim().split(" ").map(Number)
  return { connection: connection!, requests: requests! }
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

/** Log lines that satisfy `test`, waiting up to 5 s for at least `count` of them. */
const logLines = async (file: string, count: number, test: (line: string) => boolean): Promise<Array<string>> => {
  const deadline = Date.now() + 5_000
  for (;;) {
    const lines = fs.readFileSync(file, "utf8").split("\n").filter(test)
    if (lines.length >= count || Date.now() > deadline) return lines
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

// squid ----------------------------------------------------------------------

const squidPortRaw = inject("squidPort")
const squidAuthPortRaw = inject("squidAuthPort")
const squidUnavailable = inject("squidUnavailable")
const squidAccessLog = inject("squidAccessLog")
const skipSquid = skipFor("squid", squidPortRaw, squidUnavailable)

describe.skipIf(skipSquid)("squid", () => {
  const squidPort = () => required("squid", squidPortRaw, squidUnavailable)
  const squidAuthPort = () => required("squid", squidAuthPortRaw, squidUnavailable)

  it("forwards two GETs on one client connection, keeping both sides persistent", async () => {
    const wire = await Wire.open(squidPort())
    const clientPort = wire.socket.localPort!
    try {
      const seen = []
      for (let i = 0; i < 2; i++) {
        wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, { Host: origin() }))
        const response = await wire.response()
        expect(response.status).toBe(200)
        expect(response.headers["connection"]).toBe("keep-alive")
        seen.push(conn(response.body))
      }
      // squid reused its own connection to nginx for the second request.
      expect(seen[1]).toEqual({ connection: seen[0]!.connection, requests: seen[0]!.requests + 1 })
      const logged = await logLines(squidAccessLog, 2, (line) => line.includes(` ${clientPort} GET `))
      expect(logged).toEqual([
        `${squidPortRaw} ${clientPort} GET http://${origin()}/conn 200 -`,
        `${squidPortRaw} ${clientPort} GET http://${origin()}/conn 200 -`
      ])
    } finally {
      wire.close()
    }
  })

  it("tunnels CONNECT to a high port, logging the CONNECT when the tunnel closes", async () => {
    const wire = await Wire.open(squidPort())
    const clientPort = wire.socket.localPort!
    wire.write(request(`CONNECT ${origin()} HTTP/1.1`, { Host: origin() }))
    const established = await wire.response(true)
    expect(established.status).toBe(200)
    expect(established.reason).toBe("Connection established")
    for (let i = 1; i <= 2; i++) {
      wire.write(request("GET /conn HTTP/1.1", { Host: origin() }))
      const inside = await wire.response()
      expect(inside.status).toBe(200)
      expect(conn(inside.body).requests).toBe(i)
    }
    const isConnect = (line: string) => line.includes(` ${clientPort} CONNECT `)
    expect(fs.readFileSync(squidAccessLog, "utf8").split("\n").filter(isConnect)).toEqual([])
    wire.close()
    expect(await logLines(squidAccessLog, 1, isConnect)).toEqual([
      `${squidPortRaw} ${clientPort} CONNECT ${origin()} 200 -`
    ])
  })

  it(`refuses CONNECT to ${proxyRefusedHost} with 403, keeping the connection`, async () => {
    const wire = await Wire.open(squidPort())
    try {
      wire.write(request(`CONNECT ${proxyRefusedHost}:${nginxPort} HTTP/1.1`, { Host: `${proxyRefusedHost}:${nginxPort}` }))
      const refused = await wire.response()
      expect(refused.status).toBe(403)
      expect(refused.headers["x-squid-error"]).toBe("ERR_ACCESS_DENIED 0")
      expect(refused.headers["connection"]).toBe("keep-alive")
      // Still open: a forwarded GET on the same connection.
      wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, { Host: origin() }))
      expect((await wire.response()).status).toBe(200)
    } finally {
      wire.close()
    }
  })

  it("answers a CONNECT to an unreachable target with 503, then closes the connection", async () => {
    const wire = await Wire.open(squidPort())
    try {
      // Nothing listens on port 1.
      wire.write(request("CONNECT 127.0.0.1:1 HTTP/1.1", { Host: "127.0.0.1:1" }))
      const unreachable = await wire.response()
      expect(unreachable.status).toBe(503)
      expect(unreachable.headers["x-squid-error"]).toBe("ERR_CONNECT_FAIL 111")
      // No `Connection: close`, yet squid closes: what followed the CONNECT may have been tunnel bytes.
      expect(unreachable.headers["connection"]).toBeUndefined()
      expect(await wire.closesWithin(2_000)).toBe(true)
    } finally {
      wire.close()
    }
  })

  it("on the auth port: 407 with a Basic challenge, then 200 with credentials on the same connection", async () => {
    const wire = await Wire.open(squidAuthPort())
    const clientPort = wire.socket.localPort!
    try {
      wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, { Host: origin() }))
      const challenged = await wire.response()
      expect(challenged.status).toBe(407)
      expect(challenged.headers["proxy-authenticate"]).toBe(`Basic realm="keepalive-test"`)
      expect(challenged.headers["connection"]).toBe("keep-alive")

      wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, {
        Host: origin(),
        "Proxy-Authorization": basic(squidUser, "wrong")
      }))
      expect((await wire.response()).status).toBe(407)

      wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, {
        Host: origin(),
        "Proxy-Authorization": basic(squidUser, squidPassword)
      }))
      expect((await wire.response()).status).toBe(200)

      const logged = await logLines(squidAccessLog, 3, (line) => line.includes(` ${clientPort} GET `))
      expect(logged.map((line) => line.split(" ").slice(4).join(" "))).toEqual(["407 -", "407 alice", "200 alice"])
      expect(logged.every((line) => line.startsWith(`${squidAuthPortRaw} `))).toBe(true)
    } finally {
      wire.close()
    }
  })

  it("on the auth port: CONNECT needs the credentials too", async () => {
    const bare = await Wire.open(squidAuthPort())
    try {
      bare.write(request(`CONNECT ${origin()} HTTP/1.1`, { Host: origin() }))
      const challenged = await bare.response()
      expect(challenged.status).toBe(407)
      expect(challenged.headers["proxy-authenticate"]).toBe(`Basic realm="keepalive-test"`)
    } finally {
      bare.close()
    }
    const wire = await Wire.open(squidAuthPort())
    try {
      wire.write(request(`CONNECT ${origin()} HTTP/1.1`, {
        Host: origin(),
        "Proxy-Authorization": basic(squidUser, squidPassword)
      }))
      expect((await wire.response(true)).status).toBe(200)
      wire.write(request("GET /conn HTTP/1.1", { Host: origin() }))
      expect((await wire.response()).status).toBe(200)
    } finally {
      wire.close()
    }
  })
})

// tinyproxy ------------------------------------------------------------------

const tinyproxyPortRaw = inject("tinyproxyPort")
const tinyproxyUnavailable = inject("tinyproxyUnavailable")
const tinyproxyLog = inject("tinyproxyLog")
const skipTinyproxy = skipFor("tinyproxy", tinyproxyPortRaw, tinyproxyUnavailable)

describe.skipIf(skipTinyproxy)("tinyproxy", () => {
  const tinyproxyPort = () => required("tinyproxy", tinyproxyPortRaw, tinyproxyUnavailable)

  it("forwards a GET, then closes the client connection without saying so", async () => {
    const wire = await Wire.open(tinyproxyPort())
    try {
      wire.write(request(`GET http://${origin()}/conn HTTP/1.1`, { Host: origin() }))
      const response = await wire.response()
      expect(response.status).toBe(200)
      // An HTTP/1.1 response without `Connection: close`: by the headers it could be reused; it cannot.
      expect(response.headers["connection"]).toBeUndefined()
      expect(await wire.closesWithin(2_000)).toBe(true)
      const logged = await logLines(tinyproxyLog, 1, (line) => line.includes(`GET http://${origin()}/conn HTTP/1.1`))
      expect(logged.length).toBeGreaterThanOrEqual(1)
    } finally {
      wire.close()
    }
  })

  it("tunnels CONNECT to a high port", async () => {
    const wire = await Wire.open(tinyproxyPort())
    try {
      wire.write(request(`CONNECT ${origin()} HTTP/1.1`, { Host: origin() }))
      const established = await wire.response(true)
      expect(established.status).toBe(200)
      expect(established.reason).toBe("Connection established")
      for (let i = 1; i <= 2; i++) {
        wire.write(request("GET /conn HTTP/1.1", { Host: origin() }))
        const inside = await wire.response()
        expect(inside.status).toBe(200)
        expect(conn(inside.body).requests).toBe(i)
      }
    } finally {
      wire.close()
    }
  })

  it(`refuses CONNECT to ${proxyRefusedHost} with 403 Filtered; an unreachable target gets 500`, async () => {
    const refused = await Wire.open(tinyproxyPort())
    try {
      refused.write(request(`CONNECT ${proxyRefusedHost}:${nginxPort} HTTP/1.1`, { Host: `${proxyRefusedHost}:${nginxPort}` }))
      const response = await refused.response()
      expect([response.status, response.reason]).toEqual([403, "Filtered"])
      expect(response.headers["connection"]).toBe("close")
    } finally {
      refused.close()
    }
    const unreachable = await Wire.open(tinyproxyPort())
    try {
      unreachable.write(request("CONNECT 127.0.0.1:1 HTTP/1.1", { Host: "127.0.0.1:1" }))
      const response = await unreachable.response()
      expect([response.status, response.reason]).toEqual([500, "Unable to connect"])
    } finally {
      unreachable.close()
    }
  })
})

// dante ----------------------------------------------------------------------

const dantePortRaw = inject("dantePort")
const danteUnavailable = inject("danteUnavailable")
const danteLog = inject("danteLog")
const skipDante = skipFor("dante", dantePortRaw, danteUnavailable)

/** SOCKS5 without auth, CONNECT to an IPv4 address: the reply code (0 is success). */
const socks5Connect = async (wire: Wire, host: string, port: number): Promise<number> => {
  // Greeting: version 5, one method, 0x00 (no authentication).
  wire.write(Uint8Array.of(5, 1, 0))
  expect([...(await wire.take(2))]).toEqual([5, 0])
  // Request: version 5, CONNECT, reserved, IPv4 address, port (big-endian).
  const address = host.split(".").map(Number)
  wire.write(Uint8Array.of(5, 1, 0, 1, ...address, port >> 8, port & 0xff))
  // Reply: version, code, reserved, address type (IPv4 here), address, port.
  const reply = await wire.take(4)
  expect(reply[0]).toBe(5)
  expect(reply[3]).toBe(1)
  await wire.take(4 + 2)
  return reply[1]!
}

describe.skipIf(skipDante)("dante", () => {
  const dantePort = () => required("dante", dantePortRaw, danteUnavailable)

  it("connects by SOCKS5 without auth; nginx keeps the connection alive through it", async () => {
    const wire = await Wire.open(dantePort())
    try {
      expect(await socks5Connect(wire, "127.0.0.1", nginxPort)).toBe(0)
      for (let i = 1; i <= 2; i++) {
        wire.write(request("GET /conn HTTP/1.1", { Host: origin() }))
        const response = await wire.response()
        expect(response.status).toBe(200)
        expect(conn(response.body).requests).toBe(i)
      }
      const logged = await logLines(danteLog, 1, (line) => line.includes(`tcp/connect [`) && line.includes(`127.0.0.1.${nginxPort}`))
      expect(logged.length).toBeGreaterThanOrEqual(1)
    } finally {
      wire.close()
    }
  })

  it(`refuses ${proxyRefusedHost} with reply 0x02; an unreachable target gets 0x05`, async () => {
    const refused = await Wire.open(dantePort())
    try {
      expect(await socks5Connect(refused, proxyRefusedHost, nginxPort)).toBe(2)
    } finally {
      refused.close()
    }
    const unreachable = await Wire.open(dantePort())
    try {
      expect(await socks5Connect(unreachable, "127.0.0.1", 1)).toBe(5)
    } finally {
      unreachable.close()
    }
  })
})
