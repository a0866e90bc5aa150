/**
 * The `keepalive` command line, run as a process (from its TypeScript
 * sources, as `pnpm demo` runs it) against local node:http servers and a
 * private nginx: its JSON lines, summaries, exit codes, and its view on a
 * terminal.
 */
import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { findBinary, startOnFreePort } from "./setup/servers.js"

const root = path.join(import.meta.dirname, "..")
const bin = ["--import", "tsx", "--conditions=keepalive-source", path.join(root, "packages/node/src/bin.ts")]
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

/** Runs the command line from its sources, in an environment without proxy settings but those of `env`. */
const keepalive = (args: ReadonlyArray<string>, input?: string, env?: Readonly<Record<string, string>>): Promise<Ran> =>
  run(process.execPath, [...bin, ...args], input, env)

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

describe("keepalive: usage", () => {
  it("--version prints the package version", async () => {
    const ran = await keepalive(["--version"])
    expect(ran.code).toBe(0)
    expect(ran.stdout.trim()).toBe(version)
  })

  it("--help of each command names its options, in plain text through a pipe, and exits 0", async () => {
    const cases = [
      [["--help"], ["fetch", "probe", "demo"]],
      [["fetch", "--help"], ["--input", "--concurrency", "--max-per-origin", "--max-connections", "--idle-timeout", "--no-persist", "--method", "--header", "--data", "--output", "--json", "--proxy", "--noproxy"]],
      [["probe", "--help"], ["--max-requests", "--max-idle", "--json", "--proxy", "--noproxy"]],
      [["demo", "--help"], ["--requests", "--origins", "--concurrency", "--max-per-origin", "--max-connections"]]
    ] as const
    const ran = await Promise.all(cases.map(([args]) => keepalive(args)))
    cases.forEach(([, names], i) => {
      expect(ran[i]!.code).toBe(0)
      for (const name of names) expect(ran[i]!.stdout).toContain(name)
      // Through a pipe, plain text.
      expect(ran[i]!.stdout).not.toContain("\x1b[")
    })
  })

  it("bad input gets one line on stderr, no stack, exit code 2, and nothing sent", async () => {
    const server = await startServer()
    const ok = `${server.base}/ok`
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
      [["bogus"], /Invalid subcommand.*'fetch', 'probe', 'demo'/],
      [["demo", "--requests", "10", "extra"], /unknown argument: 'extra'/],
      [["demo", "--requests", "99999999999999999999"], /--requests must be an integer from 1 to 1000000/],
      [["demo", "--requests", "ten"], /--requests must be an integer/],
      [["fetch", "--idle-timeout", "4 parsecs", ok], /--idle-timeout must be a duration such as 500ms/],
      [["fetch", ok, "http://exa mple.com/"], /malformed URL 'http:\/\/exa mple.com\/' \(argument 2\)/],
      [["fetch", ok, "ftp://127.0.0.1/file"], /unsupported scheme 'ftp'.*only http and https/],
      [["fetch", "--input", "/nonexistent/urls.txt"], /cannot read --input \/nonexistent\/urls.txt/],
      [["fetch", "--header", "no colon", ok], /--header must be NAME:VALUE/],
      [["fetch"], /no URL given/],
      [["probe", "gopher://127.0.0.1/"], /unsupported scheme 'gopher'/]
    ]
    try {
      // Two at a time: each is a Node process loading TypeScript sources.
      const ran: Array<Ran> = []
      for (let i = 0; i < cases.length; i += 2) {
        ran.push(...await Promise.all(cases.slice(i, i + 2).map(([args]) => keepalive(args))))
      }
      cases.forEach(([args, pattern], i) => {
        const { code, stderr, stdout } = ran[i]!
        expect({ args, code, stdout }).toEqual({ args, code: 2, stdout: "" })
        expect(stderr).toMatch(/^keepalive: [^\n]+\n$/)
        expect(stderr).toMatch(pattern)
        expect(stderr).not.toMatch(/\bat .*:\d+:\d+/)
      })
      expect(server.seen).toEqual([])
    } finally {
      await stopServer(server)
    }
  }, 60_000)
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
      failed: 0,
      failuresByReason: {},
      connectionsOpened: opened,
      reuseRatio: Math.round((60 - opened) / 60 * 1000) / 1000,
      maxOpen: expect.any(Number),
      maxOpenPerOrigin: expect.any(Number),
      bytes: responses.reduce((n, r) => n + r.bytes, 0),
      p50Ms: expect.any(Number),
      p90Ms: expect.any(Number),
      p99Ms: expect.any(Number)
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
      const command = [process.execPath, ...bin, "fetch", "--concurrency", "2", ...urls].map((a) => `'${a}'`).join(" ")
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
      const child = spawn(process.execPath, [...bin, "fetch", `${s.base}/a`, `${s.base}/b`, "--json"], {
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
    const nginx = findBinary("nginx", ["/usr/local/nginx/sbin"])
    const skip = nginx === undefined && process.env.CI !== "true"
    let port = 0
    let teardown = async () => {}
    beforeAll(async () => {
      if (skip) return
      if (nginx === undefined) throw new Error("nginx is required under CI")
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-nginx-probe-"))
      fs.chmodSync(dir, 0o755)
      fs.mkdirSync(path.join(dir, "html"), { mode: 0o755 })
      fs.writeFileSync(path.join(dir, "html", "index.html"), "hello\n", { mode: 0o644 })
      const started = await startOnFreePort((p) => {
        const conf = path.join(dir, "nginx.conf")
        fs.writeFileSync(conf, `
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout 2s;
  keepalive_requests 5;
  server { listen 127.0.0.1:${p}; root ${dir}/html; }
}
`)
        return spawn(nginx, ["-p", `${dir}/`, "-c", conf], { stdio: ["ignore", "ignore", "pipe"] })
      }, path.join(dir, "error.log"), () => fs.rmSync(dir, { recursive: true, force: true }))
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
