/**
 * The Redis of the fleet scenarios (bf, df) and of `pnpm --filter
 * @keepalive/bench permits`: a redis-server in its own process on the
 * server's core (it is part of the server side: every process of a fleet
 * would ask the same Redis), started only when a fleet scenario runs. Like
 * squid it gets a private config and working dir in a temp dir, listens on a
 * free port of 127.0.0.1 only, runs in the foreground and is stopped by its
 * pid. Nothing is persisted (`save ""`, `appendonly no`): the permits' keys
 * live for a run.
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { onCore } from "./pinning.js"
import type { Pinning } from "./pinning.js"
import { cpuSecondsOf, freePort } from "./squid.js"

export interface RedisServer {
  /** What served the permits, as the report prints it. */
  readonly description: string
  /** `redis://127.0.0.1:<port>`: what every fleet client is given. */
  readonly url: string
  readonly port: number
  readonly pid: number | undefined
  /** redis-server's user + system CPU so far, in seconds. */
  readonly cpuSeconds: () => number
  readonly stop: () => Promise<void>
}

const redisPaths = ["redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server"]

/** The redis-server binary and its version, or undefined when there is none. */
const findRedis = (): { readonly binary: string; readonly version: string } | undefined => {
  for (const binary of redisPaths) {
    const result = spawnSync(binary, ["--version"], { encoding: "utf8" })
    if (result.error === undefined && result.status === 0) {
      return { binary, version: /v=(\S+)/.exec(result.stdout)?.[1] ?? "unknown version" }
    }
  }
  return undefined
}

/**
 * redis-server, installed with `apt-get update && apt-get install -y
 * redis-server` when it is missing and this process is root (apt's output
 * goes to stderr); else why there is none.
 */
export const obtainRedis = (
  log: (line: string) => void
): { readonly binary: string; readonly version: string } | { readonly unavailable: string } => {
  const found = findRedis()
  if (found !== undefined) return found
  if (process.getuid?.() !== 0) return { unavailable: "redis-server is not installed and we are not root to install it" }
  log("redis-server not found: apt-get update && apt-get install -y redis-server")
  const apt = (...args: Array<string>) =>
    spawnSync("apt-get", args, { stdio: ["ignore", 2, 2], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } }).status === 0
  if (!apt("update") || !apt("install", "-y", "redis-server")) return { unavailable: "apt-get install redis-server failed" }
  return findRedis() ?? { unavailable: "redis-server installed but not found on PATH or in /usr/bin, /usr/sbin" }
}

const redisConfig = (dir: string, port: number): string => `
bind 127.0.0.1
port ${port}
protected-mode yes
daemonize no
dir ${dir}
pidfile ${dir}/redis.pid
logfile ${dir}/redis.log
save ""
appendonly no
databases 1
io-threads 1
`

/** Sends PING on a connection of its own; resolves to whether +PONG came back. */
const ping = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1000, () => done(false))
    socket.once("error", () => done(false))
    socket.once("connect", () => socket.write("PING\r\n"))
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")))
  })

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const exitedWithin = (child: ChildProcess, ms: number): Promise<boolean> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(true)
    : new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve(true)
      })
    })

const stopRedis = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  // SIGTERM: redis-server exits at once with nothing to save.
  child.kill("SIGTERM")
  if (!(await exitedWithin(child, 5000))) {
    child.kill("SIGKILL")
    await exitedWithin(child, 2000)
  }
}

export const startRedis = async (options: {
  readonly binary: string
  readonly version: string
  readonly pinning: Pinning
}): Promise<RedisServer> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-bench-redis-"))
  const file = (name: string) => path.join(dir, name)
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const logTail = () => {
    try {
      return fs.readFileSync(file("redis.log"), "utf8").trim().split("\n").slice(-3).join(" | ")
    } catch {
      return "no log"
    }
  }
  // A free port probed, then bound by redis-server: a second try if something took it in between.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    fs.writeFileSync(file("redis.conf"), redisConfig(dir, port))
    const command = onCore(options.pinning, "server", { command: options.binary, args: [file("redis.conf")] })
    // taskset execs redis-server, so the child is redis-server itself, on the server's core.
    const child = spawn(command.command, command.args, { stdio: ["ignore", "ignore", "ignore"] })
    const deadline = Date.now() + 10_000
    let failure: string | undefined
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        failure = `redis-server exited before serving: ${logTail()}`
        break
      }
      if (await ping(port)) break
      if (Date.now() > deadline) {
        failure = `redis-server did not answer PING on 127.0.0.1:${port} within 10 s: ${logTail()}`
        break
      }
      await sleep(50)
    }
    if (failure !== undefined) {
      await stopRedis(child)
      if (attempt < 2 && /bind|Address already in use/i.test(failure)) continue
      removeDir()
      throw new Error(failure)
    }
    return {
      description: `redis-server ${options.version} (no persistence, io-threads 1)`,
      url: `redis://127.0.0.1:${port}`,
      port,
      pid: child.pid,
      cpuSeconds: () => cpuSecondsOf(child.pid),
      stop: async () => {
        await stopRedis(child)
        removeDir()
      }
    }
  }
}
