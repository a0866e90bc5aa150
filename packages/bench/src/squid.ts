/**
 * The forward proxy of the proxied scenarios: squid, in its own process on
 * the server's core (it is part of the server side), started only when a
 * proxied scenario runs. Like nginx it gets a private config, logs and pid
 * file in a temp dir, listens on 127.0.0.1 only, runs in the foreground
 * (`squid -N`, one process: `workers 1`, no cache dir, no helpers) and is
 * stopped by its pid. It caches nothing, keeps connections persistent on
 * both sides, and relays only from 127.0.0.1 to 127.0.0.1 (or `localhost`)
 * on the bench's ports: forwarded http, and CONNECT to the HTTPS port and
 * to the plain ports too, since undici's `ProxyAgent` tunnels http origins
 * by default.
 *
 * What a client did to squid is read from two access logs, each written
 * only when it has something to count: one line per client connection (the
 * first transaction on a connection marks the connection with
 * `annotate_client` and is logged; later ones on the same connection are not,
 * so the log costs squid a write per connection, not per request), and one
 * line per CONNECT. A forwarded request is logged when its response has been
 * written, a CONNECT when its tunnel closes: `settle` waits for squid to
 * have closed every client connection before the counts are read.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import * as Daemon from "./daemon.js"
import type { Pinning } from "./pinning.js"

export interface SquidCounts {
  /** Client connections squid has accepted and served a transaction on. */
  readonly connections: number
  /** CONNECT requests squid has answered (each logged when its tunnel closed). */
  readonly connects: number
  /** squid's user + system CPU so far, in seconds. */
  readonly cpuSeconds: number
}

export interface Squid {
  /** What proxied the run, as the report prints it. */
  readonly description: string
  /** `http://127.0.0.1:<port>`: what every proxied client is given. */
  readonly url: string
  readonly port: number
  readonly pid: number | undefined
  readonly counts: () => SquidCounts
  /** Waits (up to 5 s) until squid holds no client connection and has logged every one it closed. */
  readonly settle: () => Promise<void>
  readonly stop: () => Promise<void>
}

const squid: Daemon.Program = {
  name: "squid",
  paths: ["squid", "/usr/sbin/squid"],
  versionArgs: ["-v"],
  versionPattern: /Version (\S+)/
}

/** squid, installed with apt-get when it is missing and we are root; else why there is none. */
export const obtainSquid = (log: (line: string) => void): Daemon.Found | { readonly unavailable: string } =>
  Daemon.obtain(squid, log)

/** uid, gid and name of the user squid drops to when started as root (it refuses to run as root). */
const squidUser = (): { readonly name: string; readonly uid: number; readonly gid: number } | undefined => {
  for (const name of ["proxy", "nobody"]) {
    const uid = spawnSync("id", ["-u", name], { encoding: "utf8" })
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" })
    if (uid.status === 0 && gid.status === 0) return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
  }
  return undefined
}

const squidConfig = (
  dir: string,
  port: number,
  user: string | undefined,
  connectPorts: { readonly from: number; readonly to: number }
): string => `
http_port 127.0.0.1:${port}
workers 1
visible_hostname keepalive-bench-squid
${user === undefined ? "" : `cache_effective_user ${user}`}
pid_filename ${dir}/squid.pid
cache_log ${dir}/cache.log
coredump_dir ${dir}
hosts_file ${dir}/hosts
netdb_filename none
max_filedescriptors 16384
cache deny all
cache_mem 8 MB
cache_store_log none
pinger_enable off
icp_port 0
htcp_port 0
logfile_rotate 0
shutdown_lifetime 0 seconds
via off
forwarded_for delete
client_db off
client_persistent_connections on
server_persistent_connections on
client_idle_pconn_timeout 2 minutes
pconn_timeout 2 minutes
logformat keepalive_bench %>p %rm %ru %>Hs
acl bench_seen note keepalive_bench_connection seen
acl bench_mark annotate_client keepalive_bench_connection=seen
acl bench_connect method CONNECT
access_log stdio:${dir}/connections.log keepalive_bench !bench_seen bench_mark
access_log stdio:${dir}/connects.log keepalive_bench bench_connect
acl bench_client src 127.0.0.1
acl bench_address dst 127.0.0.1
acl bench_name dstdomain localhost
acl bench_ports port ${connectPorts.from}-${connectPorts.to}
http_access deny !bench_ports
http_access allow bench_client bench_address
http_access allow bench_client bench_name
http_access deny all
`

const lines = (file: string): number => {
  try {
    const text = fs.readFileSync(file, "utf8")
    let count = 0
    for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) count++
    return count
  } catch {
    return 0
  }
}

/**
 * Sockets on squid's port that squid has not finished with: established,
 * half-open, or closed by the client and not yet by squid (`/proc/net/tcp`,
 * IPv4: squid listens on 127.0.0.1 only).
 */
const openClientSockets = (port: number): number => {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0")
  let text: string
  try {
    text = fs.readFileSync("/proc/net/tcp", "utf8")
  } catch {
    return 0
  }
  let open = 0
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/)
    // local_address is "0100007F:PORT"; st 01 ESTABLISHED, 03 SYN_RECV, 08 CLOSE_WAIT.
    if (fields[1]?.endsWith(`:${hexPort}`) === true && (fields[3] === "01" || fields[3] === "03" || fields[3] === "08")) open++
  }
  return open
}

/** A GET of `url` through the proxy, in absolute-form, on a connection of its own; resolves to the status. */
const getThrough = (proxyPort: number, url: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port: proxyPort, path: url, agent: false, timeout: 5000 }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode ?? 0))
    })
    request.on("timeout", () => request.destroy(new Error("timed out")))
    request.on("error", reject)
  })

// SIGINT is squid's immediate shutdown (about 1 s); SIGTERM waits out shutdown_lifetime and more.
const stopSignal = "SIGINT"

export const startSquid = async (options: {
  readonly binary: string
  readonly version: string
  readonly pinning: Pinning
  /** The ports squid may relay to (forwarded or tunnelled), inclusive. */
  readonly connectPorts: { readonly from: number; readonly to: number }
  /** A URL of the origin server that answers 200, fetched through squid to check that it relays. */
  readonly probeUrl: string
}): Promise<Squid> => {
  const user = process.getuid?.() === 0 ? squidUser() : undefined
  if (process.getuid?.() === 0 && user === undefined) throw new Error("squid: neither user proxy nor nobody exists for squid to run as")
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-bench-squid-"))
  // squid drops to `proxy` when started as root: that user must write its logs and pid file here.
  fs.chmodSync(dir, 0o755)
  const file = (name: string) => path.join(dir, name)
  // Only 127.0.0.1 for localhost: the system's hosts file may list ::1 first, where nothing listens.
  fs.writeFileSync(file("hosts"), "127.0.0.1 localhost\n", { mode: 0o644 })
  for (const name of ["connections.log", "connects.log", "cache.log"]) fs.writeFileSync(file(name), "", { mode: 0o644 })
  if (user !== undefined) {
    for (const name of ["", "connections.log", "connects.log", "cache.log"]) fs.chownSync(file(name), user.uid, user.gid)
  }
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const cacheLogTail = () => fs.readFileSync(file("cache.log"), "utf8").trim().split("\n").slice(-3).join(" | ")

  const { child, port } = await Daemon.start({
      name: "squid",
      pinning: options.pinning,
      command: (port) => {
        fs.writeFileSync(file("squid.conf"), squidConfig(dir, port, user?.name, options.connectPorts), { mode: 0o644 })
        return { command: options.binary, args: ["-N", "-f", file("squid.conf")] }
      },
      probe: async (port) => {
        const status = await getThrough(port, options.probeUrl).catch(() => undefined)
        if (status === undefined) return "not yet"
        return status === 200 ? "serving" : { failed: `squid answered ${status} to ${options.probeUrl}` }
      },
      logTail: cacheLogTail,
      stopSignal
    }).catch((error) => {
      removeDir()
      throw error
    })
  const counts = (): SquidCounts => ({
    connections: lines(file("connections.log")),
    connects: lines(file("connects.log")),
    cpuSeconds: Daemon.cpuSecondsOf(child.pid)
  })
  return {
    description: `squid ${options.version} (workers 1, no cache, persistent connections both sides, a log line per client connection and per CONNECT)`,
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    counts,
    settle: async () => {
      const until = Date.now() + 5000
      while (openClientSockets(port) > 0 && Date.now() < until) await Daemon.sleep(20)
      // squid logs a closed connection's transaction as it finishes with it: wait until the logs stop growing.
      for (let last = counts(); Date.now() < until;) {
        await Daemon.sleep(50)
        const now = counts()
        if (now.connections === last.connections && now.connects === last.connects) break
        last = now
      }
    },
    stop: async () => {
      await Daemon.stop(child, stopSignal)
      removeDir()
    }
  }
}
