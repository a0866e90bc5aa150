/**
 * The `keepalive` command line, run as a process (bundled from its TypeScript
 * sources when the tests start) against local node:http servers and a
 * private nginx, directly and through the test proxies (squid, dante), and
 * in a fleet on the test Redis: its JSON lines, summaries, exit codes, and
 * its view on a terminal.
 */
import { describe, expect, it } from "@effect/vitest"
import type { RedisModule } from "../packages/node/src/internal/cli/fleet.js"
import { execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { build } from "esbuild"
import { afterAll, beforeAll, inject } from "vitest"
import { findNginx, startNginx } from "./setup/nginx.js"
import { provided } from "./setup/provided.js"
import { squidPassword, squidUser } from "./setup/proxies.js"
import { findBinary } from "./setup/servers.js"

const root = path.join(import.meta.dirname, "..")
const sources = path.join(root, "packages/node/src/bin.ts")
/**
 * The command line bundled into one file, as `pnpm demo` would run it but
 * without tsx compiling the sources again at each start. The file is three
 * directories below packages/node, as src/internal/cli/cli.ts is, where the
 * CLI looks for its package.json.
 */
const bundled = path.join(root, "packages/node/node_modules/.cache", `cli-test-${process.pid}`, "bin.mjs")
beforeAll(async () => {
  await build({
    entryPoints: [sources],
    outfile: bundled,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    conditions: ["keepalive-source"],
    logLevel: "error"
  })
}, 60_000)
afterAll(() => fs.rmSync(path.dirname(bundled), { recursive: true, force: true }))

/**
 * How to start the command line with `args`. `--fleet` imports
 * @keepalive/redis when it runs, from that package's TypeScript sources in
 * this workspace: only tsx loads those.
 */
const bin = (args: ReadonlyArray<string>): Array<string> =>
  args.includes("--fleet")
    ? ["--import", "tsx", "--conditions=keepalive-source", sources, ...args]
    : [bundled, ...args]
const version = JSON.parse(fs.readFileSync(path.join(root, "packages/node/package.json"), "utf8")).version as string

interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Variables that choose a proxy: none reaches a run unless a test sets it. */
const proxyVariable = /^(?:(?:http|https|all|no)_proxy|request_method)$/i

/** This process's environment without proxy settings, plus `env`. */
const environment = (env: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !proxyVariable.test(name))),
  ...env
})

const run = (
  command: string,
  args: ReadonlyArray<string>,
  input?: string,
  env?: Readonly<Record<string, string>>
): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env: environment(env), stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.once("error", reject)
    child.once("close", (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input ?? "")
  })

/** Runs the command line, in an environment without proxy settings but those of `env`. */
const keepalive = (args: ReadonlyArray<string>, input?: string, env?: Readonly<Record<string, string>>): Promise<Ran> =>
  run(process.execPath, bin(args), input, env)

/** A secret that must appear in no output of a run. */
const expectNoSecret = (ran: Ran, secret: string) => {
  expect(ran.stdout).not.toContain(secret)
  expect(ran.stderr).not.toContain(secret)
}

const jsonLines = (stdout: string): Array<any> =>
  stdout.trim().split("\n").map((line) => JSON.parse(line))

/** A node:http server that counts the connections it accepted and what it was sent. */
interface TestServer {
  readonly port: number
  readonly base: string
  accepted: number
  readonly seen: Array<{ readonly method: string; readonly url: string; readonly headers: http.IncomingHttpHeaders; readonly body: string }>
  readonly server: http.Server
}

const startServer = (
  configure: (server: http.Server) => void = () => {},
  respond: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void = (req, res) =>
    setTimeout(() => res.end(`body of ${req.url}`), 2)
): Promise<TestServer> =>
  new Promise((resolve) => {
    const state = { accepted: 0, seen: [] as TestServer["seen"][number][] }
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (chunk: Buffer) => (body += chunk.toString()))
      req.on("end", () => {
        state.seen.push({ method: req.method!, url: req.url!, headers: req.headers, body })
        respond(req, res, body)
      })
    })
    server.keepAliveTimeout = 10_000
    configure(server)
    server.on("connection", () => state.accepted++)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      resolve(Object.assign(state, { port, base: `http://127.0.0.1:${port}`, server }) as TestServer)
    })
  })

const stopServer = (s: TestServer) =>
  new Promise<void>((resolve) => {
    s.server.closeAllConnections()
    s.server.close(() => resolve())
  })

/** A port on which nothing listens: one a server had a moment ago. */
const closedPort = async (): Promise<number> => {
  const s = await startServer()
  await stopServer(s)
  return s.port
}

// The help, --version and refusals in full are tested in this process, without
// spawning one per case: packages/node/test/cli.test.ts. Here, the process around them.
describe("keepalive: usage", () => {
  it("--version prints the package version, one line, and exits 0", async () => {
    const ran = await keepalive(["--version"])
    expect(ran).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" })
  })

  it("--help: plain text through a pipe, usage lines that start with 'keepalive', exit code 0", async () => {
    const ran = await keepalive(["fetch", "--help"])
    expect(ran.code).toBe(0)
    expect(ran.stderr).toBe("")
    expect(ran.stdout).not.toContain("\x1b[")
    expect(ran.stdout).toMatch(/^USAGE\n\nkeepalive fetch \[\(-i, --input FILE\|-\)\] /m)
    expect(ran.stdout).not.toMatch(/^\$ /m)
    expect(ran.stdout).not.toContain("A user-defined piece of text.")
  })

  it("bad input gets one line on stderr, no stack, exit code 2, and nothing sent", async () => {
    const server = await startServer()
    try {
      const [unknown, scheme] = await Promise.all([
        keepalive(["frobnicate", `${server.base}/ok`]),
        keepalive(["fetch", `${server.base}/ok`, "ftp://127.0.0.1/file"])
      ])
      expect(unknown).toEqual({
        code: 2,
        stdout: "",
        stderr: "keepalive: unknown command 'frobnicate'; commands: fetch, probe, demo\n"
      })
      expect(scheme).toEqual({
        code: 2,
        stdout: "",
        stderr: "keepalive: unsupported scheme 'ftp' in 'ftp://127.0.0.1/file' (argument 2): only http and https\n"
      })
      expect(server.seen).toEqual([])
    } finally {
      await stopServer(server)
    }
  })
})

describe("keepalive fetch", () => {
  const servers: Array<TestServer> = []
  beforeAll(async () => {
    for (let i = 0; i < 3; i++) servers.push(await startServer())
  })
  afterAll(async () => {
    await Promise.all(servers.map(stopServer))
  })

  it("--json: a line per URL, then a summary that agrees with the lines and with the servers", async () => {
    const accepted = servers.reduce((n, s) => n + s.accepted, 0)
    const urls = Array.from({ length: 60 }, (_, i) => `${servers[i % 3]!.base}/item/${i}`)
    const ran = await keepalive(["fetch", "--json", "--concurrency", "8", "--max-per-origin", "2", ...urls])
    expect(ran.code).toBe(0)
    const lines = jsonLines(ran.stdout)
    expect(lines).toHaveLength(61)
    const responses = lines.slice(0, 60)
    const { summary } = lines[60]
    expect(responses.map((r) => r.url).sort()).toEqual([...urls].sort())
    for (const r of responses) {
      expect(r).toEqual({ url: r.url, proxy: null, status: 200, bytes: `body of ${new URL(r.url).pathname}`.length, ms: expect.any(Number), reused: expect.any(Boolean) })
    }
    const opened = servers.reduce((n, s) => n + s.accepted, 0) - accepted
    // Each connection's first request is the only one not on a reused connection.
    expect(responses.filter((r) => !r.reused)).toHaveLength(opened)
    expect(summary).toEqual({
      requests: 60,
      proxy: null,
      failed: 0,
      failuresByReason: {},
      connectionsOpened: opened,
      reuseRatio: Math.round((60 - opened) / 60 * 1000) / 1000,
      maxOpen: expect.any(Number),
      maxOpenPerOrigin: expect.any(Number),
      bytes: responses.reduce((n, r) => n + r.bytes, 0),
      p50Ms: expect.any(Number),
      p90Ms: expect.any(Number),
      p99Ms: expect.any(Number),
      fleet: null
    })
    expect(opened).toBeLessThanOrEqual(6)
    expect(summary.maxOpenPerOrigin).toBeGreaterThanOrEqual(1)
    expect(summary.maxOpenPerOrigin).toBeLessThanOrEqual(2)
    expect(summary.maxOpen).toBeLessThanOrEqual(6)
    expect(summary.p50Ms).toBeLessThanOrEqual(summary.p90Ms)
    expect(summary.p90Ms).toBeLessThanOrEqual(summary.p99Ms)
  })

  it("--no-persist: a connection per request, none reused", async () => {
    const accepted = servers[0]!.accepted
    const urls = Array.from({ length: 5 }, (_, i) => `${servers[0]!.base}/fresh/${i}`)
    const ran = await keepalive(["fetch", "--json", "--no-persist", ...urls])
    expect(ran.code).toBe(0)
    const lines = jsonLines(ran.stdout)
    expect(lines.slice(0, 5).every((r) => r.reused === false)).toBe(true)
    expect(lines[5].summary).toMatchObject({ requests: 5, connectionsOpened: 5, reuseRatio: 0 })
    expect(servers[0]!.accepted - accepted).toBe(5)
  })

  it("a failed request: its error line, failuresByReason, and exit code 1", async () => {
    const port = await closedPort()
    const good = `${servers[0]!.base}/good`
    const bad = `http://127.0.0.1:${port}/refused`
    const ran = await keepalive(["fetch", "--json", good, bad, `${bad}/again`])
    expect(ran.code).toBe(1)
    const lines = jsonLines(ran.stdout)
    expect(lines.find((l) => l.url === good)).toMatchObject({ status: 200 })
    expect(lines.find((l) => l.url === bad)).toEqual({
      url: bad,
      proxy: null,
      error: { reason: "Connect", message: expect.stringContaining("ECONNREFUSED") }
    })
    expect(lines[3].summary).toMatchObject({ requests: 3, failed: 2, failuresByReason: { Connect: 2 } })
  })

  it("the readable summary, and exit code 1 on a failure", async () => {
    const port = await closedPort()
    const ran = await keepalive(["fetch", "--concurrency", "1", `${servers[1]!.base}/a`, `${servers[1]!.base}/b`, `http://127.0.0.1:${port}/`])
    expect(ran.code).toBe(1)
    expect(ran.stdout).toMatch(/^requests +3 in [\d.]+ s \(\d+ req\/s\), 1 failed$/m)
    expect(ran.stdout).toMatch(/^connections +1 opened; 50\.0% of responses on a reused connection$/m)
    expect(ran.stdout).toMatch(/^latency +p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms$/m)
    expect(ran.stdout).toMatch(/^failures +Connect 1$/m)
    expect(ran.stderr).toContain(`failed http://127.0.0.1:${port}/`)
  })

  it("--output writes each body to its own file inside the directory", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-cli-output-"))
    try {
      const base = servers[2]!.base
      // The same URL twice, and paths that would leave the directory if used as they are.
      const urls = [`${base}/same`, `${base}/same`, `${base}/../../etc/passwd`, `${base}/a/b?c=..%2F..`]
      const ran = await keepalive(["fetch", "--output", path.join(dir, "bodies"), ...urls])
      expect(ran.code).toBe(0)
      const files = fs.readdirSync(path.join(dir, "bodies")).sort()
      expect(files).toHaveLength(4)
      expect(fs.readdirSync(dir)).toEqual(["bodies"])
      const bodies = files.map((f) => fs.readFileSync(path.join(dir, "bodies", f), "utf8"))
      expect(bodies).toEqual(["body of /same", "body of /same", "body of /etc/passwd", "body of /a/b?c=..%2F.."])
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("--input FILE and - (stdin), with the positional URLs; comments and blank lines skipped", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-cli-input-"))
    try {
      const base = servers[0]!.base
      const file = path.join(dir, "urls.txt")
      fs.writeFileSync(file, `# a comment\n${base}/from-file/1\n\n  ${base}/from-file/2  \r\n`)
      const fromFile = await keepalive(["fetch", "--json", "--input", file, `${base}/positional`])
      expect(fromFile.code).toBe(0)
      expect(jsonLines(fromFile.stdout).slice(0, 3).map((l) => new URL(l.url).pathname).sort()).toEqual(
        ["/from-file/1", "/from-file/2", "/positional"]
      )
      const fromStdin = await keepalive(["fetch", "--json", "--input", "-"], `${base}/stdin/1\n# skip\n${base}/stdin/2\n`)
      expect(fromStdin.code).toBe(0)
      const stdinLines = jsonLines(fromStdin.stdout)
      expect(stdinLines.slice(0, 2).map((l) => l.url).sort()).toEqual([`${base}/stdin/1`, `${base}/stdin/2`])
      expect(stdinLines[2].summary).toMatchObject({ requests: 2, failed: 0 })
      // A bad line in the file is named, and nothing is sent.
      const before = servers[0]!.seen.length
      fs.writeFileSync(file, `${base}/fine\nnot a url\n`)
      const bad = await keepalive(["fetch", "--input", file])
      expect(bad.code).toBe(2)
      expect(bad.stderr).toBe(`keepalive: malformed URL 'not a url' (${file} line 2)\n`)
      expect(servers[0]!.seen.length).toBe(before)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("--data, --header and --method shape the request; --data makes it a POST", async () => {
    const s = servers[1]!
    const before = s.seen.length
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-cli-data-"))
    try {
      fs.writeFileSync(path.join(dir, "body.json"), "{\"from\":\"file\"}")
      const posted = await keepalive(["fetch", "--data", "a=1", "-H", "X-Test: one", "--header", "X-Other:two", `${s.base}/post`])
      const put = await keepalive([
        "fetch", "--method", "PUT", "--data", `@${path.join(dir, "body.json")}`, "--header", "content-type: application/json", `${s.base}/put`
      ])
      expect([posted.code, put.code]).toEqual([0, 0])
      const [p, u] = s.seen.slice(before)
      expect(p).toMatchObject({ method: "POST", url: "/post", body: "a=1", headers: { "x-test": "one", "x-other": "two" } })
      expect(u).toMatchObject({ method: "PUT", url: "/put", body: "{\"from\":\"file\"}", headers: { "content-type": "application/json" } })
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("on a terminal: the progress line redrawn with \\r, then the summary", async () => {
    const script = findBinary("script")
    if (script === undefined) throw new Error("util-linux `script` is needed for the terminal test")
    const slow = await startServer(undefined, (_req, res) => setTimeout(() => res.end("slow"), 10))
    try {
      const urls = Array.from({ length: 60 }, (_, i) => `${slow.base}/${i}`)
      const command = [process.execPath, ...bin(["fetch", "--concurrency", "2", ...urls])].map((a) => `'${a}'`).join(" ")
      // Not spawnSync: the server answering it runs in this process.
      const ran = await run(script, ["-qfec", command, "/dev/null"])
      expect(ran.code).toBe(0)
      const out = ran.stdout
      expect(out).toMatch(/\r\[[#-]{24}\] \d+\/60 {2}\d+ req\/s {2}open \d+ {2}waiting \d+/)
      // Cleared at the end, then the summary.
      const cleared = out.lastIndexOf("\r\x1b[K")
      expect(cleared).toBeGreaterThan(-1)
      expect(out.slice(cleared)).toMatch(/requests +60 in/)
      expect(out.indexOf("requests      60")).toBeGreaterThan(out.indexOf("] "))
    } finally {
      await stopServer(slow)
    }
  })
})

describe("keepalive fetch --fleet", () => {
  const redis = provided("redis-server", inject("redisPort"), inject("redisUnavailable"), "fleet CLI tests")
  const redisUrl = () => `redis://127.0.0.1:${redis.port}`
  /** Keys of this run's own: the test Redis is shared with the tests of @keepalive/redis. */
  const keyPrefix = () => `keepalive:cli:${randomBytes(6).toString("hex")}`

  /** A server that counts the connections open at once, from accept until the client's FIN. */
  const startCounting = async (delayMs: number) => {
    const counts = { open: 0, peak: 0 }
    const server = await startServer((s) => {
      s.on("connection", (socket: net.Socket) => {
        counts.open++
        counts.peak = Math.max(counts.peak, counts.open)
        let counted = true
        const closed = () => {
          if (counted) counts.open--
          counted = false
        }
        // The client's FIN is the first the server knows of a close; its "close" event comes later.
        socket.once("end", closed)
        socket.once("close", closed)
      })
    }, (req, res) => setTimeout(() => res.end(`body of ${req.url}`), delayMs))
    return Object.assign(server, { counts })
  }

  it("@keepalive/redis has what the command loads of it", async () => {
    // The command types the package, an optional peer, by its own view of it: the package must fit that view.
    const loaded: RedisModule = await import("@keepalive/redis")
    expect(typeof loaded.RedisPermits.layer).toBe("function")
  })

  it.skipIf(redis.skip)("two processes share --fleet-max-per-origin: the origin never sees more, every request is served", async () => {
    const server = await startCounting(40)
    try {
      const prefix = keyPrefix()
      // Each process would open 4 connections on its own; the fleet allows 2 in all.
      const args = (name: string) => [
        "--concurrency", "8", "--max-per-origin", "4",
        "--fleet", redisUrl(), "--fleet-max-per-origin", "2", "--fleet-key-prefix", prefix,
        ...Array.from({ length: 50 }, (_, i) => `${server.base}/${name}/${i}`)
      ]
      const [json, readable] = await Promise.all([
        keepalive(["fetch", "--json", ...args("json")]),
        keepalive(["fetch", ...args("readable")])
      ])
      expect([json.code, readable.code]).toEqual([0, 0])
      expect([json.stderr, readable.stderr]).toEqual(["", ""])
      expect(server.counts.peak).toBe(2)
      expect(server.seen).toHaveLength(100)

      const lines = jsonLines(json.stdout)
      expect(lines.slice(0, 50).every((line) => line.status === 200)).toBe(true)
      const fleet = lines[50].summary.fleet
      expect(fleet).toEqual({
        redis: redisUrl(),
        maxPerOrigin: 2,
        permits: expect.any(Number),
        waited: expect.any(Number),
        calledOff: expect.any(Number),
        waitTotalMs: expect.any(Number),
        waitP50Ms: expect.any(Number),
        waitP99Ms: expect.any(Number),
        waitMaxMs: expect.any(Number)
      })
      expect(fleet.permits).toBeGreaterThanOrEqual(1)
      expect(fleet.waitP50Ms).toBeLessThanOrEqual(fleet.waitP99Ms)
      expect(fleet.waitP99Ms).toBeLessThanOrEqual(fleet.waitMaxMs)
      expect(fleet.waitMaxMs).toBeLessThanOrEqual(fleet.waitTotalMs)

      expect(readable.stdout).toMatch(/^requests +50 in [\d.]+ s \(\d+ req\/s\), 0 failed$/m)
      const counted = /^fleet +redis:\/\/127\.0\.0\.1:\d+, at most 2 per origin in all: (\d+) permits? \((\d+) waited over 10 ms\), \d+ called off$/m
        .exec(readable.stdout)
      expect(counted).not.toBeNull()
      expect(readable.stdout).toMatch(/^permit waits +[\d.]+ ms in total; p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms$/m)
      // Alone, each process would get the fleet's 2 permits on the spot; running at once, they had 2 between them,
      // and every other permit came after a wait for one to come free.
      const onTheSpot = fleet.permits - fleet.waited + Number(counted![1]) - Number(counted![2])
      expect(onTheSpot).toBeLessThanOrEqual(2)
    } finally {
      await stopServer(server)
    }
  })

  it.skipIf(redis.skip)("Redis unreachable: the layer's one warning line on stderr, each process capped on its own", async () => {
    const server = await startCounting(5)
    try {
      const port = await closedPort()
      const urls = Array.from({ length: 10 }, (_, i) => `${server.base}/alone/${i}`)
      const ran = await keepalive([
        "fetch", "--json", "--max-per-origin", "4", "--fleet", `redis://:hunter2@127.0.0.1:${port}`,
        "--fleet-max-per-origin", "2", "--fleet-key-prefix", keyPrefix(), ...urls
      ])
      expect(ran.code).toBe(0)
      expect(ran.stderr).toMatch(/^@keepalive\/redis: Redis is unavailable \([^\n]*\); each origin is capped at 2 connections in this process[^\n]*\n$/)
      expect(ran.stderr).not.toMatch(/\bat .*:\d+:\d+/)
      expectNoSecret(ran, "hunter2")
      const lines = jsonLines(ran.stdout)
      expect(lines.slice(0, 10).every((line) => line.status === 200)).toBe(true)
      expect(lines[10].summary.fleet).toMatchObject({ redis: `redis://127.0.0.1:${port}`, maxPerOrigin: 2 })
      expect(server.counts.peak).toBeLessThanOrEqual(2)
    } finally {
      await stopServer(server)
    }
  })

  it("bad --fleet input: one line, no credentials, exit code 2, nothing sent", async () => {
    const server = await startServer()
    const url = `${server.base}/never`
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
      [["--fleet", "http://alice:hunter2@127.0.0.1:6379"], /^keepalive: bad --fleet URL: 'http:\/\/<redacted>@127\.0\.0\.1:6379' is not a redis:\/\/ or rediss:\/\/ URL\n$/],
      [["--fleet", "redis://alice:hunter2@bad host:6379"], /^keepalive: bad --fleet URL: 'redis:\/\/<redacted>@bad host:6379' is not a valid URL\n$/],
      [["--fleet", "redis://:hunter2@127.0.0.1:6379/zero"], /^keepalive: bad --fleet URL: the path of 'redis:\/\/127\.0\.0\.1:6379\/zero' is not a database number\n$/],
      [["--fleet-max-per-origin", "2"], /^keepalive: --fleet-max-per-origin needs --fleet URL\n$/],
      [["--fleet-key-prefix", "mine"], /^keepalive: --fleet-key-prefix needs --fleet URL\n$/],
      [["--fleet", "redis://127.0.0.1:6379", "--fleet-max-per-origin", "0"], /^keepalive: --fleet-max-per-origin must be an integer from 1 to 10000, got '0'\n$/],
      // Refused by the layer, which owns the rule, before it connects.
      [["--fleet", "redis://127.0.0.1:6379", "--fleet-key-prefix", "{mine}"], /^keepalive: bad --fleet-key-prefix: [^\n]*braces[^\n]*\n$/]
    ]
    try {
      const ran: Array<Ran> = []
      for (let i = 0; i < cases.length; i += 2) {
        ran.push(...await Promise.all(cases.slice(i, i + 2).map(([args]) => keepalive(["fetch", ...args, url]))))
      }
      cases.forEach(([args, pattern], i) => {
        const { code, stderr, stdout } = ran[i]!
        expect({ args, code, stdout }).toEqual({ args, code: 2, stdout: "" })
        expect(stderr).toMatch(pattern)
        expectNoSecret(ran[i]!, "hunter2")
      })
      expect(server.seen).toEqual([])
    } finally {
      await stopServer(server)
    }
  }, 60_000)
})

describe("keepalive: interrupted", () => {
  it("Ctrl-C (SIGINT) stops a fetch with requests in flight, and the exit code is 130", async () => {
    const open = new Set<net.Socket>()
    const s = await startServer((server) => {
      server.on("connection", (socket: net.Socket) => {
        open.add(socket)
        socket.once("close", () => open.delete(socket))
      })
    }, () => {
      // Never answers.
    })
    try {
      const child = spawn(process.execPath, bin(["fetch", `${s.base}/a`, `${s.base}/b`, "--json"]), {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"]
      })
      while (s.seen.length < 2) await new Promise((resolve) => setTimeout(resolve, 20))
      expect(open.size).toBe(2)
      child.kill("SIGINT")
      const code = await new Promise<number | null>((resolve) => child.once("close", resolve))
      expect(code).toBe(130)
    } finally {
      s.server.close()
    }
  }, 30_000)
})

describe("keepalive probe", () => {
  it("a server that closes every connection: keepAlive false", async () => {
    const s = await startServer(undefined, (_req, res) => {
      res.setHeader("connection", "close")
      res.end("bye")
    })
    try {
      const ran = await keepalive(["probe", "--json", `${s.base}/`])
      expect(ran.code).toBe(0)
      expect(JSON.parse(ran.stdout)).toEqual({
        url: `${s.base}/`,
        proxy: null,
        measured: "origin",
        keepAlive: false,
        hint: null,
        requestsPerConnection: 1,
        idleCloseAfterMs: null,
        http10: "close",
        suggested: { idleTimeout: 4000, maxRequestsPerConnection: 1 }
      })
    } finally {
      await stopServer(s)
    }
  })

  it("node:http with keepAliveTimeout 1 s and 3 requests per socket", async () => {
    const s = await startServer((server) => {
      server.keepAliveTimeout = 1000
      server.maxRequestsPerSocket = 3
    })
    try {
      const ran = await keepalive(["probe", "--json", "--max-idle", "5s", `${s.base}/x`])
      expect(ran.code).toBe(0)
      const report = JSON.parse(ran.stdout)
      expect(report).toMatchObject({
        url: `${s.base}/x`,
        keepAlive: true,
        hint: { timeout: 1, max: 3 },
        requestsPerConnection: 3,
        http10: "close",
        suggested: { maxRequestsPerConnection: 3 }
      })
      // node:http closes an idle connection a second after the keepAliveTimeout it announces.
      expect(report.idleCloseAfterMs).toBeGreaterThanOrEqual(700)
      expect(report.idleCloseAfterMs).toBeLessThanOrEqual(3500)
      expect(report.suggested.idleTimeout).toBeLessThan(1000)
      expect(report.suggested.idleTimeout).toBeGreaterThan(0)
    } finally {
      await stopServer(s)
    }
  })

  it("a server that keeps idle connections past --max-idle: no close seen, idleTimeout below its Keep-Alive hint", async () => {
    const s = await startServer()
    try {
      const ran = await keepalive(["probe", "--max-idle", "500ms", "--max-requests", "20", `${s.base}/`])
      expect(ran.code).toBe(0)
      expect(ran.stdout).toMatch(/^keep-alive +yes$/m)
      expect(ran.stdout).toMatch(/^requests\/connection +more than 20 /m)
      expect(ran.stdout).toMatch(/^idle close after +not within 0\.5 s/m)
      // node:http announces its keepAliveTimeout of 10 s: 9 s fits below it.
      expect(ran.stdout).toMatch(/^Keep-Alive hint +timeout=10$/m)
      expect(ran.stdout).toMatch(/idleTimeout 9000 ms/)
    } finally {
      await stopServer(s)
    }
  })

  it("nothing listening: exit code 1 and why", async () => {
    const port = await closedPort()
    const ran = await keepalive(["probe", `http://127.0.0.1:${port}/`])
    expect(ran.code).toBe(1)
    expect(ran.stderr).toMatch(/^keepalive: probe http:\/\/127\.0\.0\.1:\d+\/ failed: cannot connect.*ECONNREFUSED[^\n]*\n$/)
  })

  describe("against nginx with keepalive_timeout 2s and keepalive_requests 5", () => {
    const nginx = findNginx()
    const skip = nginx === undefined && process.env.CI !== "true"
    let port = 0
    let teardown = async () => {}
    beforeAll(async () => {
      if (skip) return
      if (nginx === undefined) throw new Error("nginx is required under CI")
      const started = await startNginx(nginx, {
        http: ["keepalive_timeout 2s;", "keepalive_requests 5;"],
        files: { "index.html": "hello\n" }
      })
      if ("error" in started) throw new Error(`nginx did not start: ${started.error}`)
      port = started.port
      teardown = started.teardown
    }, 30_000)
    afterAll(() => teardown())

    it.skipIf(skip)("measures 5 requests per connection, an idle close near 2 s, and suggests less", async () => {
      const ran = await keepalive(["probe", "--json", "--max-idle", "8s", `http://127.0.0.1:${port}/`])
      expect(ran.code).toBe(0)
      const report = JSON.parse(ran.stdout)
      expect(report).toMatchObject({
        keepAlive: true,
        hint: null,
        requestsPerConnection: 5,
        http10: "close",
        suggested: { maxRequestsPerConnection: 5 }
      })
      expect(report.idleCloseAfterMs).toBeGreaterThanOrEqual(1500)
      expect(report.idleCloseAfterMs).toBeLessThanOrEqual(3500)
      expect(report.suggested.idleTimeout).toBeLessThan(2000)
      expect(report.suggested.idleTimeout).toBeGreaterThan(0)
    })
  })
})

describe("keepalive demo", () => {
  it("runs persistent and --no-persist side by side and checks the caps; a -- before the options is ignored", async () => {
    const ran = await keepalive(["demo", "--", "--requests", "60", "--origins", "2"])
    expect(ran.code).toBe(0)
    expect(ran.stdout).toContain("keepalive demo: 60 requests to 2 local origins")
    expect(ran.stdout).toMatch(/^ +persistent +--no-persist$/m)
    expect(ran.stdout).toMatch(/^requests completed +60 +60$/m)
    expect(ran.stdout).toMatch(/^connections opened +[1-4] +60$/m)
    expect(ran.stdout).toMatch(/^servers accepted +[1-4] +60$/m)
    expect(ran.stdout).toMatch(/^most open per origin +[12] \(cap 2\) +[12] \(cap 2\)$/m)
    expect(ran.stdout).toMatch(/^persistence saved \d+ connections/m)
    expect(ran.stdout).toContain("OK: every request served within the caps")
  })
})

describe("keepalive through proxies", () => {
  const inCi = process.env.CI === "true"
  const squid = provided("squid", inject("squidPort"), inject("squidUnavailable"), "squid CLI tests")
  const squidAuth = provided("squid", inject("squidAuthPort"), inject("squidUnavailable"), "squid CLI tests")
  const dante = provided("dante", inject("dantePort"), inject("danteUnavailable"), "dante CLI tests")
  const squidLog = inject("squidAccessLog")
  const squidKey = () => `http://127.0.0.1:${squid.port}`

  /**
   * squid's access-log lines that contain `fragment` (`GET <url> 200`,
   * `CONNECT 127.0.0.1:<port>`): squid writes a line when a transaction ends,
   * so this waits up to 2 s for `count` of them.
   */
  const squidSaw = async (fragment: string, count = 1): Promise<Array<string>> => {
    const lines = () => fs.readFileSync(squidLog, "utf8").split("\n").filter((line) => line.includes(fragment))
    for (let i = 0; i < 100 && lines().length < count; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    return lines()
  }

  /** Credentials that must appear in no output, whatever happened. */
  const expectNoCredentials = (ran: Ran, ...secrets: ReadonlyArray<string>) => {
    for (const secret of [squidUser, squidPassword, encodeURIComponent(squidPassword), ...secrets]) {
      expect(ran.stdout).not.toContain(secret)
      expect(ran.stderr).not.toContain(secret)
    }
  }

  let origin: TestServer
  /** An origin that closes the connection after every response. */
  let closing: TestServer
  /** The same over TLS, with a certificate the runs trust through NODE_EXTRA_CA_CERTS. */
  let closingTls: { readonly base: string; readonly server: https.Server; readonly ca: string } | undefined
  let dir = ""
  const openssl = findBinary("openssl")
  beforeAll(async () => {
    origin = await startServer()
    closing = await startServer(undefined, (_req, res) => {
      res.setHeader("connection", "close")
      res.end("bye")
    })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-cli-proxy-"))
    if (openssl === undefined) {
      if (inCi) throw new Error("openssl is required under CI")
      return
    }
    const key = path.join(dir, "key.pem")
    const cert = path.join(dir, "cert.pem")
    execFileSync(openssl, [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert
    ], { stdio: "ignore" })
    const server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (_req, res) => {
      res.setHeader("connection", "close")
      res.end("bye")
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    closingTls = { base: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`, server, ca: cert }
  })
  afterAll(async () => {
    await Promise.all([origin, closing].filter((s) => s !== undefined).map(stopServer))
    closingTls?.server.closeAllConnections()
    closingTls?.server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it.skipIf(squid.skip)("http_proxy from the environment: the request goes through squid, and says so", async () => {
    const url = `${origin.base}/env/json`
    const before = origin.seen.length
    const ran = await keepalive(["fetch", "--json", url], undefined, { http_proxy: squidKey() })
    expect(ran.code).toBe(0)
    const [line, { summary }] = jsonLines(ran.stdout)
    expect(line).toMatchObject({ url, proxy: squidKey(), status: 200, bytes: "body of /env/json".length })
    expect(summary).toMatchObject({ requests: 1, proxy: squidKey(), failed: 0 })
    expect(origin.seen.length - before).toBe(1)
    expect(await squidSaw(`GET ${url} 200`)).toHaveLength(1)

    const readable = await keepalive(["fetch", `${origin.base}/env/readable`], undefined, { HTTP_PROXY: squidKey() })
    expect(readable.code).toBe(0)
    expect(readable.stdout).toContain(`\nproxy         ${squidKey()} for 1 of 1 request\n`)
    expect(await squidSaw(`GET ${origin.base}/env/readable 200`)).toHaveLength(1)
  })

  it.skipIf(squid.skip)("--proxy wins over the environment, and --proxy '' turns every proxy off", async () => {
    const unreachable = `http://127.0.0.1:${await closedPort()}`
    const [flag, off] = await Promise.all([
      keepalive(["fetch", "--json", "--proxy", squidKey(), `${origin.base}/flag/wins`], undefined, { http_proxy: unreachable }),
      keepalive(["fetch", "--json", "--proxy", "", `${origin.base}/flag/off`], undefined, {
        http_proxy: squidKey(),
        all_proxy: squidKey()
      })
    ])
    expect([flag.code, off.code]).toEqual([0, 0])
    expect(jsonLines(flag.stdout)[0]).toMatchObject({ proxy: squidKey(), status: 200 })
    expect(await squidSaw(`GET ${origin.base}/flag/wins 200`)).toHaveLength(1)
    expect(jsonLines(off.stdout)[0]).toMatchObject({ proxy: null, status: 200 })
    expect(origin.seen.map((r) => r.url)).toContain("/flag/off")
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(await squidSaw(`${origin.base}/flag/off`, 0)).toEqual([])
  })

  it.skipIf(squid.skip)("--noproxy replaces NO_PROXY, for the environment's proxies and for --proxy", async () => {
    const url = (name: string) => `${origin.base}/noproxy/${name}`
    const ran = await Promise.all([
      keepalive(["fetch", "--json", "--noproxy", "127.0.0.1", url("env-bypassed")], undefined, { http_proxy: squidKey() }),
      keepalive(["fetch", "--json", "--noproxy", "example.com", url("replaced")], undefined, {
        http_proxy: squidKey(),
        NO_PROXY: "127.0.0.1"
      }),
      keepalive(["fetch", "--json", "--proxy", squidKey(), "--noproxy", "127.0.0.1", url("flag-bypassed")]),
      // As curl: the environment's NO_PROXY applies to --proxy too.
      keepalive(["fetch", "--json", "--proxy", squidKey(), url("env-list")], undefined, { no_proxy: "localhost,127.0.0.1" })
    ])
    expect(ran.map((r) => r.code)).toEqual([0, 0, 0, 0])
    expect(ran.map((r) => jsonLines(r.stdout)[0].proxy)).toEqual([null, squidKey(), null, null])
    expect(await squidSaw(`GET ${url("replaced")} 200`)).toHaveLength(1)
    await new Promise((resolve) => setTimeout(resolve, 200))
    // Only the one whose list no longer names 127.0.0.1 went through squid.
    expect((await squidSaw("/noproxy/", 0)).map((line) => line.split(" ")[3])).toEqual([url("replaced")])
    const reached = origin.seen.map((r) => r.url).filter((u) => u.startsWith("/noproxy/"))
    expect(reached.sort()).toEqual(["/noproxy/env-bypassed", "/noproxy/env-list", "/noproxy/flag-bypassed", "/noproxy/replaced"])
  })

  it("a bad proxy URL: one line naming the variable or flag, no credentials, exit code 2, nothing sent", async () => {
    const before = origin.seen.length
    const url = `${origin.base}/never`
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, Record<string, string>, RegExp]> = [
      [["fetch", url], { http_proxy: "http://alice:hunter2@bad host:3128" }, /the environment variable http_proxy: .*not a valid URL/],
      [["fetch", url], { HTTPS_PROXY: "ftp://alice:hunter2@proxy.internal" }, /the environment variable HTTPS_PROXY: .*scheme ftp:/],
      [["fetch", "--proxy", "http://alice:hunter2@[::1", url], {}, /--proxy: .*not a valid URL/],
      [["probe", url], { all_proxy: "socks4://alice:hunter2@proxy.internal:1080" }, /the environment variable all_proxy: .*scheme socks4:/],
      [["probe", "--proxy", "http://alice:hunter2@127.0.0.1:99999", url], {}, /--proxy: /]
    ]
    const ran: Array<Ran> = []
    for (let i = 0; i < cases.length; i += 2) {
      ran.push(...await Promise.all(cases.slice(i, i + 2).map(([args, env]) => keepalive(args, undefined, env))))
    }
    cases.forEach(([args, , pattern], i) => {
      const { code, stderr, stdout } = ran[i]!
      expect({ args, code, stdout }).toEqual({ args, code: 2, stdout: "" })
      expect(stderr).toMatch(/^keepalive: bad proxy in [^\n]+\n$/)
      expect(stderr).toMatch(pattern)
      expect(stderr).not.toMatch(/\bat .*:\d+:\d+/)
      expectNoCredentials(ran[i]!, "alice", "hunter2")
    })
    expect(origin.seen.length).toBe(before)
  }, 60_000)

  it.skipIf(squidAuth.skip)("credentials in a proxy URL reach squid and no output; refused ones say so, without them", async () => {
    const port = squidAuth.port
    const key = `http://127.0.0.1:${port}`
    const good = `http://${squidUser}:${encodeURIComponent(squidPassword)}@127.0.0.1:${port}`
    const wrong = `http://${squidUser}:hunter2@127.0.0.1:${port}`
    const [fetched, readable, refused, probed] = await Promise.all([
      keepalive(["fetch", "--json", `${origin.base}/auth/json`], undefined, { http_proxy: good }),
      keepalive(["fetch", "--proxy", good, `${origin.base}/auth/readable`]),
      keepalive(["fetch", "--json", `${origin.base}/auth/refused`], undefined, { http_proxy: wrong }),
      keepalive(["probe", "--proxy", wrong, `${origin.base}/auth/probe`])
    ])
    expect(fetched.code).toBe(0)
    expect(jsonLines(fetched.stdout)[0]).toMatchObject({ proxy: key, status: 200 })
    expect(await squidSaw(`GET ${origin.base}/auth/json 200 ${squidUser}`)).toHaveLength(1)
    expect(readable.code).toBe(0)
    expect(readable.stdout).toContain(`proxy         ${key} for 1 of 1 request`)
    expect(refused.code).toBe(1)
    expect(jsonLines(refused.stdout)[0]).toMatchObject({ proxy: key, error: { reason: "Proxy" } })
    expect(probed.code).toBe(1)
    expect(probed.stderr).toMatch(new RegExp(`^keepalive: probe .* failed: proxy ${key} refused the credentials \\(407\\)\n$`))
    for (const ran of [fetched, readable, refused, probed]) expectNoCredentials(ran, "hunter2")
  })

  it.skipIf(squid.skip)("probe, an http origin through squid: measures the proxy's keep-alive (forwarded)", async () => {
    // The origin closes every connection; squid keeps its clients' open.
    const url = `${closing.base}/probe/forwarded`
    const env = { http_proxy: squidKey() }
    const [json, readable] = await Promise.all([
      keepalive(["probe", "--json", "--max-requests", "5", "--max-idle", "500ms", url], undefined, env),
      keepalive(["probe", "--max-requests", "5", "--max-idle", "500ms", url], undefined, env)
    ])
    expect([json.code, readable.code]).toEqual([0, 0])
    expect(JSON.parse(json.stdout)).toMatchObject({
      url,
      proxy: squidKey(),
      measured: "proxy",
      keepAlive: true,
      requestsPerConnection: null
    })
    expect(readable.stdout).toMatch(
      /^proxy +http:\/\/127\.0\.0\.1:\d+ forwards the requests: measured the proxy's keep-alive, not the origin's$/m
    )
    expect(readable.stdout).toMatch(/^keep-alive +yes$/m)
    // Five on one connection, then one for HTTP/1.0 and one for the idle close, from each run.
    expect((await squidSaw(`GET ${url} 200`, 14)).length).toBeGreaterThanOrEqual(14)
  })

  it.skipIf(squid.skip || openssl === undefined)("probe, an https origin through squid: measures the origin's (a CONNECT tunnel)", async () => {
    const url = `${closingTls!.base}/probe/tunnelled`
    const ran = await keepalive(["probe", "--json", "--proxy", squidKey(), url], undefined, { NODE_EXTRA_CA_CERTS: closingTls!.ca })
    expect(ran.stderr).toBe("")
    expect(ran.code).toBe(0)
    expect(JSON.parse(ran.stdout)).toMatchObject({
      url,
      proxy: squidKey(),
      measured: "origin",
      keepAlive: false,
      requestsPerConnection: 1
    })
    expect((await squidSaw(`CONNECT ${new URL(url).host} 200`, 2)).length).toBeGreaterThanOrEqual(2)
    const readable = await keepalive(["probe", "--proxy", squidKey(), url], undefined, { NODE_EXTRA_CA_CERTS: closingTls!.ca })
    expect(readable.stdout).toMatch(
      /^proxy +http:\/\/127\.0\.0\.1:\d+, a CONNECT tunnel: measured the origin's keep-alive through it$/m
    )
  })

  it.skipIf(dante.skip)("probe and fetch through SOCKS5 (dante): the origin's keep-alive, the proxy's key", async () => {
    const key = `socks5://127.0.0.1:${dante.port}`
    const [probed, fetched] = await Promise.all([
      keepalive(["probe", "--max-requests", "5", `${closing.base}/socks/probe`], undefined, { all_proxy: key }),
      keepalive(["fetch", "--json", `${origin.base}/socks/fetch`], undefined, { all_proxy: key })
    ])
    expect([probed.code, fetched.code]).toEqual([0, 0])
    expect(probed.stdout).toMatch(/^proxy +socks5:\/\/127\.0\.0\.1:\d+, a SOCKS5 tunnel: measured the origin's keep-alive through it$/m)
    expect(probed.stdout).toMatch(/^keep-alive +no: /m)
    expect(jsonLines(fetched.stdout)[0]).toMatchObject({ proxy: key, status: 200 })
  })
})
