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
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Daemon from "./daemon.js"
import type { Pinning } from "./pinning.js"

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

const redis: Daemon.Program = {
  name: "redis-server",
  paths: ["redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server"],
  versionArgs: ["--version"],
  versionPattern: /v=(\S+)/
}

/** redis-server, installed with apt-get when it is missing and we are root; else why there is none. */
export const obtainRedis = (log: (line: string) => void): Daemon.Found | { readonly unavailable: string } =>
  Daemon.obtain(redis, log)

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
  const { child, port } = await Daemon.start({
    name: "redis-server",
    pinning: options.pinning,
    command: (port) => {
      fs.writeFileSync(file("redis.conf"), redisConfig(dir, port))
      return { command: options.binary, args: [file("redis.conf")] }
    },
    probe: async (port) => (await ping(port)) ? "serving" : "not yet",
    logTail,
    // redis-server exits at once on SIGTERM, with nothing to save.
    stopSignal: "SIGTERM"
  }).catch((error) => {
    removeDir()
    throw error
  })
  return {
    description: `redis-server ${options.version} (no persistence, io-threads 1)`,
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    cpuSeconds: () => Daemon.cpuSecondsOf(child.pid),
    stop: async () => {
      await Daemon.stop(child, "SIGTERM")
      removeDir()
    }
  }
}
