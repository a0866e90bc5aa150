/**
 * The server every client talks to, in a process of its own: nginx when it
 * is on PATH (a private prefix and config in a temp dir), else the node:http
 * server in `nodeServer.ts`. Both listen on 127.0.0.1 only, on `ports`
 * consecutive ports, and answer `/small`, `/big` and `/status`. nginx also
 * serves HTTPS on the port `tlsPortOffset` above the base port when asked
 * (`tls`), with a certificate for localhost from a CA made at start. When
 * the processes are pinned, the server runs on the server's core alone.
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { childrenOf, onCore } from "./pinning.js"
import type { Pinning } from "./pinning.js"
import { bigBodySize, smallBody, tlsPortOffset } from "./scenarios.js"

export interface Server {
  /** What served the run, as the report prints it. */
  readonly description: string
  readonly basePort: number
  /** Connections the server has accepted so far (nginx's stub_status "accepts"). */
  readonly acceptedConnections: () => Promise<number>
  /** The processes that answer requests: nginx's worker, or the node:http server. */
  readonly servingPids: () => ReadonlyArray<number>
  readonly stop: () => Promise<void>
  /** The CA certificate file of the HTTPS port; undefined when the server serves no HTTPS. */
  readonly tlsCaFile?: string | undefined
}

/** A CA, and a certificate for localhost it signed, made with openssl in `dir`; false when openssl failed. */
const makeCertificates = (dir: string): boolean => {
  const run = (...args: Array<string>) => spawnSync("openssl", args, { cwd: dir, stdio: "ignore" }).status === 0
  fs.writeFileSync(path.join(dir, "localhost.ext"), "subjectAltName=DNS:localhost\n")
  return run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=keepalive bench CA") &&
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "localhost.key", "-out", "localhost.csr", "-subj", "/CN=localhost") &&
    run("x509", "-req", "-in", "localhost.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "localhost.crt", "-days", "2", "-extfile", "localhost.ext")
}

export const nginxVersion = (): string | undefined => {
  const result = spawnSync("nginx", ["-v"], { encoding: "utf8" })
  if (result.error !== undefined) return undefined
  return /nginx\/(\S+)/.exec(result.stderr)?.[1] ?? "unknown version"
}

export const startServer = async (options: {
  readonly kind: "nginx" | "node"
  readonly basePort: number
  readonly ports: number
  /** Serve HTTPS too (nginx only). */
  readonly tls: boolean
  /** The server runs on the pinning's server core; nginx's worker inherits it from the master. */
  readonly pinning: Pinning
}): Promise<Server> => {
  const basePort = await findFreePorts(options.basePort, options.ports)
  return options.kind === "nginx"
    ? startNginx(basePort, options.ports, options.tls, options.pinning)
    : startNodeServer(basePort, options.ports, options.pinning)
}

const startNginx = async (basePort: number, ports: number, https: boolean, pinning: Pinning): Promise<Server> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-bench-nginx-"))
  // nginx drops its worker to an unprivileged user when started as root; it must still read /big.
  fs.chmodSync(dir, 0o755)
  fs.mkdirSync(path.join(dir, "www"), { mode: 0o755 })
  fs.mkdirSync(path.join(dir, "tmp"))
  fs.writeFileSync(path.join(dir, "www", "big"), Buffer.alloc(bigBodySize, "0123456789abcdef"), { mode: 0o644 })
  const tls = https && makeCertificates(dir)
  if (tls) fs.chmodSync(path.join(dir, "localhost.key"), 0o644)
  const config = path.join(dir, "nginx.conf")
  fs.writeFileSync(config, nginxConfig(dir, basePort, ports, tls))
  const nginx = onCore(pinning, "server", { command: "nginx", args: ["-p", dir, "-c", config, "-e", path.join(dir, "error.log")] })
  // taskset execs nginx, so the child is nginx's master process.
  const child = spawn(nginx.command, nginx.args, { stdio: ["ignore", "ignore", "pipe"] })
  const version = nginxVersion()
  const server: Server = {
    description: `nginx ${version} (1 worker, keepalive_requests 1000000, keepalive_timeout 75s, access_log off)`,
    basePort,
    acceptedConnections: () => acceptedConnections(basePort),
    servingPids: () => (child.pid === undefined ? [] : childrenOf(child.pid)),
    stop: async () => {
      await stopChild(child)
      fs.rmSync(dir, { recursive: true, force: true })
    },
    tlsCaFile: tls ? path.join(dir, "ca.crt") : undefined
  }
  await waitUntilServing(child, basePort, () => fs.readFileSync(path.join(dir, "error.log"), "utf8"))
  return server
}

const nginxConfig = (dir: string, basePort: number, ports: number, tls: boolean): string => {
  const listens = Array.from({ length: Math.min(ports, tlsPortOffset) }, (_, i) => `    listen 127.0.0.1:${basePort + i} backlog=4096;`)
  if (tls) {
    listens.push(
      `    listen 127.0.0.1:${basePort + tlsPortOffset} ssl backlog=4096;`,
      `    ssl_certificate ${path.join(dir, "localhost.crt")};`,
      `    ssl_certificate_key ${path.join(dir, "localhost.key")};`
    )
  }
  const temp = (name: string) => path.join(dir, "tmp", name)
  return `worker_processes 1;
daemon off;
pid ${path.join(dir, "nginx.pid")};
error_log ${path.join(dir, "error.log")} warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path ${temp("body")};
  proxy_temp_path ${temp("proxy")};
  fastcgi_temp_path ${temp("fastcgi")};
  uwsgi_temp_path ${temp("uwsgi")};
  scgi_temp_path ${temp("scgi")};
  server {
${listens.join("\n")}
    location = /small { default_type text/plain; return 200 "${smallBody.replace("\n", "\\n")}"; }
    location = /big { default_type application/octet-stream; root ${path.join(dir, "www")}; }
    location = /status { stub_status; }
  }
}
`
}

const startNodeServer = async (basePort: number, ports: number, pinning: Pinning): Promise<Server> => {
  const script = path.join(import.meta.dirname, "nodeServer.js")
  const node = onCore(pinning, "server", { command: process.execPath, args: [script, String(basePort), String(ports)] })
  const child = spawn(node.command, node.args, { stdio: ["pipe", "ignore", "pipe"] })
  let stderr = ""
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const server: Server = {
    description: `node:http ${process.version} in its own process`,
    basePort,
    acceptedConnections: () => acceptedConnections(basePort),
    servingPids: () => (child.pid === undefined ? [] : [child.pid]),
    stop: async () => {
      child.stdin!.end()
      await stopChild(child)
    }
  }
  await waitUntilServing(child, basePort, () => stderr)
  return server
}

/** Reads `/status` on a connection of its own, which the caller must discount. */
const acceptedConnections = (port: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/status", agent: false, timeout: 5000 }, (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (text += chunk))
      response.on("end", () => {
        const accepts = /server accepts handled requests\s+(\d+)/.exec(text)?.[1]
        if (accepts === undefined) reject(new Error(`unexpected /status answer: ${text}`))
        else resolve(Number(accepts))
      })
    })
    request.on("timeout", () => request.destroy(new Error("/status timed out")))
    request.on("error", reject)
  })

const waitUntilServing = async (child: ChildProcess, port: number, log: () => string): Promise<void> => {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited before serving: ${log()}`)
    }
    try {
      await acceptedConnections(port)
      return
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  await stopChild(child)
  throw new Error(`server did not answer on 127.0.0.1:${port} within 10 s: ${log()}`)
}

const stopChild = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once("exit", resolve))
  child.kill("SIGTERM")
  const killTimer = setTimeout(() => child.kill("SIGKILL"), 3000)
  await exited
  clearTimeout(killTimer)
}

/** The first block of `count` free ports at `from` or above, in steps of 100. */
const findFreePorts = async (from: number, count: number): Promise<number> => {
  for (let base = from; base + count <= 32_000; base += 100) {
    const free = await Promise.all(Array.from({ length: count }, (_, i) => isFree(base + i)))
    if (free.every(Boolean)) return base
  }
  throw new Error(`no ${count} consecutive free ports between ${from} and 32000`)
}

const isFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const probe = net.createServer()
    probe.once("error", () => resolve(false))
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)))
  })
