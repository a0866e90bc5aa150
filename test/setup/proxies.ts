/**
 * Vitest global setup: real proxies on 127.0.0.1 for the proxy tests: squid
 * (an HTTP forward proxy and CONNECT tunnels, one port without and one with
 * Basic auth), tinyproxy (the same, simpler) and dante (SOCKS5).
 *
 * Each is installed with apt when it is missing and we are root. Each runs in
 * the foreground with its own config, logs and pid file in a temporary
 * directory, on a free port of 127.0.0.1, and is stopped by its pid in
 * teardown. When one cannot be had, its port is 0 and its reason is provided,
 * and its tests skip (or fail, under CI). The three start in parallel.
 *
 * All three relay only to 127.0.0.1 (squid and tinyproxy also to the name
 * `localhost`), on any port, and refuse `proxyRefusedHost` (127.0.0.2)
 * explicitly, so a test can provoke a refused CONNECT:
 * squid answers 403 (`X-Squid-Error: ERR_ACCESS_DENIED`), tinyproxy
 * `403 Filtered`, dante the SOCKS5 reply 0x02 (not allowed by ruleset).
 */
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { accepts, freePort, obtain, type Obtained, startOnFreePort } from "./servers.js"

declare module "vitest" {
  export interface ProvidedContext {
    /**
     * squid 5 without auth on 127.0.0.1, or 0 when squid could not be started:
     * forwards `GET http://127.0.0.1:<any port>/...` and tunnels CONNECT to
     * 127.0.0.1 on any port; refuses `proxyRefusedHost` (127.0.0.2) with 403
     * and any other host with 403. No caching; persistent connections on both
     * sides; an unreachable target gets 503 (`ERR_CONNECT_FAIL`).
     */
    squidPort: number
    /**
     * The same squid on a second port that demands Basic auth
     * (`squidUser` / `squidPassword`): without valid credentials 407 with
     * `Proxy-Authenticate: Basic realm="keepalive-test"`, keeping the
     * connection open. 0 when squid could not be started.
     */
    squidAuthPort: number
    /** Why squid is unavailable; `""` when it runs. */
    squidUnavailable: string
    /**
     * squid's access log, both ports: one line per transaction, written when
     * it ends (for a CONNECT: when the tunnel closes), as
     * `<squid's port> <client's port> <method> <url> <status> <user or ->`,
     * e.g. `40123 51234 CONNECT 127.0.0.1:8443 200 -` or
     * `40124 51236 GET http://127.0.0.1:8080/conn 200 alice`. The set-up's
     * readiness probes leave lines with the method `-`.
     */
    squidAccessLog: string
    /**
     * tinyproxy 1.11 on 127.0.0.1, or 0: forwards http and tunnels CONNECT
     * (any port) to 127.0.0.1 only; other hosts get `403 Filtered`, an
     * unreachable target `500 Unable to connect`. It closes the client
     * connection after every forwarded response.
     */
    tinyproxyPort: number
    /** Why tinyproxy is unavailable; `""` when it runs. */
    tinyproxyUnavailable: string
    /** tinyproxy's log (LogLevel Connect): one `Request (file descriptor N): <request line>` per request. */
    tinyproxyLog: string
    /**
     * dante 1.4 (danted), SOCKS5 without auth (method 0x00) on 127.0.0.1, or 0:
     * CONNECT to 127.0.0.1 on any port; 127.0.0.2 gets reply 0x02, an
     * unreachable target 0x05.
     */
    dantePort: number
    /** Why dante is unavailable; `""` when it runs. */
    danteUnavailable: string
    /** dante's log: a `pass(2): tcp/connect [` line per relayed connection, `block(1)` per refused one. */
    danteLog: string
  }
}

/** The squid user on `squidAuthPort` and its password, with `:` and `@` to exercise percent-encoding in URLs. */
export const squidUser = "alice"
export const squidPassword = "s3cret:p@ss"

/** The host every test proxy refuses explicitly (squid 403, tinyproxy 403, dante SOCKS5 reply 0x02). */
export const proxyRefusedHost = "127.0.0.2"

/** uid and gid of the first of `names` that exists. */
const systemUser = (names: ReadonlyArray<string>): { readonly name: string; readonly uid: number; readonly gid: number } | undefined => {
  for (const name of names) {
    const uid = spawnSync("id", ["-u", name], { encoding: "utf8" })
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" })
    if (uid.status === 0 && gid.status === 0) return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
  }
  return undefined
}

const isRoot = process.getuid?.() === 0

/** True once something accepts on the port; false after 5 s. */
const waitAccepts = async (port: number): Promise<boolean> => {
  const deadline = Date.now() + 5_000
  while (Date.now() < deadline) {
    if (await accepts(port)) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

// squid ----------------------------------------------------------------------

/** squid's Basic auth helper (Debian's path): reads htpasswd files, apr1 (MD5) hashes included. */
const basicNcsaAuth = "/usr/lib/squid/basic_ncsa_auth"

const squidConfig = (dir: string, port: number, authPort: number, user: string): string => `
http_port 127.0.0.1:${port} name=open
http_port 127.0.0.1:${authPort} name=auth
visible_hostname keepalive-test-squid
${user === "" ? "" : `cache_effective_user ${user}`}
pid_filename ${dir}/squid.pid
cache_log ${dir}/cache.log
coredump_dir ${dir}
netdb_filename none
logformat keepalive %>lp %>p %rm %ru %>Hs %un
access_log stdio:${dir}/access.log keepalive
cache deny all
cache_mem 8 MB
memory_pools off
digest_generation off
pinger_enable off
icp_port 0
htcp_port 0
shutdown_lifetime 0 seconds
dns_timeout 5 seconds
via off
forwarded_for delete
client_persistent_connections on
server_persistent_connections on
auth_param basic program ${basicNcsaAuth} ${dir}/passwd
auth_param basic children 5 startup=1 idle=1
auth_param basic realm keepalive-test
acl authport myportname auth
acl authed proxy_auth REQUIRED
acl refused dst ${proxyRefusedHost}
acl local dst 127.0.0.1
acl localname dstdomain localhost
http_access deny refused
http_access deny authport !authed
http_access allow local
http_access allow localname
http_access deny all
`

/** An apr1 (MD5) htpasswd line, which squid's basic_ncsa_auth accepts. */
const passwdLine = (user: string, password: string): string | undefined => {
  const hashed = spawnSync("openssl", ["passwd", "-apr1", "-stdin"], { input: `${password}\n`, encoding: "utf8" })
  return hashed.status === 0 && hashed.stdout.startsWith("$apr1$") ? `${user}:${hashed.stdout.trim()}\n` : undefined
}

interface Squid {
  readonly port: number
  readonly authPort: number
  readonly accessLog: string
  readonly teardown: () => Promise<void>
}

const startSquidOnce = async (binary: string): Promise<Squid | { readonly error: string }> => {
  const line = passwdLine(squidUser, squidPassword)
  if (line === undefined) return { error: "openssl passwd -apr1 failed" }
  // As root, squid drops to its effective user (`proxy` on Debian; it refuses
  // root): that user must write the logs and read the password file.
  const owner = isRoot ? systemUser(["proxy", "nobody"]) : undefined
  if (isRoot && owner === undefined) return { error: "neither user proxy nor nobody exists for squid to run as" }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-squid-"))
  fs.chmodSync(dir, 0o755)
  const accessLog = path.join(dir, "access.log")
  fs.writeFileSync(path.join(dir, "passwd"), line, { mode: 0o644 })
  fs.writeFileSync(accessLog, "", { mode: 0o644 })
  fs.writeFileSync(path.join(dir, "cache.log"), "", { mode: 0o644 })
  if (owner !== undefined) {
    for (const name of ["", "access.log", "cache.log"]) fs.chownSync(path.join(dir, name), owner.uid, owner.gid)
  }
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const authPort = await freePort()
  const started = await startOnFreePort((port) => {
    const confPath = path.join(dir, "squid.conf")
    fs.writeFileSync(confPath, squidConfig(dir, port, authPort, owner?.name ?? ""), { mode: 0o644 })
    return spawn(binary, ["-N", "-f", confPath], { stdio: ["ignore", "ignore", "pipe"] })
  }, path.join(dir, "cache.log"), removeDir)
  if ("error" in started) return started
  // squid stops about 1.5 s after SIGTERM, however short `shutdown_lifetime`:
  // its final shutdown step is scheduled a second after the listening ports close.
  const teardown = started.teardown
  if (!(await waitAccepts(authPort))) {
    const log = fs.readFileSync(path.join(dir, "cache.log"), "utf8").trim().split("\n").slice(-2).join(" | ")
    await teardown()
    return { error: `its auth port ${authPort} did not open: ${log}` }
  }
  return { port: started.port, authPort, accessLog, teardown }
}

const startSquid = async (binary: string): Promise<Squid | { readonly error: string }> => {
  // A second try when the auth port, probed free, was taken before squid bound it.
  const first = await startSquidOnce(binary)
  return "error" in first && first.error.startsWith("its auth port") ? startSquidOnce(binary) : first
}

// tinyproxy ------------------------------------------------------------------

// No `ConnectPort` line: tinyproxy 1.11 then allows CONNECT to every port.
// The filter (on host names, default deny) lets only 127.0.0.1 and localhost through.
const tinyproxyConfig = (dir: string, port: number): string => `
Port ${port}
Listen 127.0.0.1
Allow 127.0.0.1
LogFile "${dir}/tinyproxy.log"
LogLevel Connect
PidFile "${dir}/tinyproxy.pid"
MaxClients 100
Timeout 60
DisableViaHeader Yes
XTinyproxy No
Filter "${dir}/filter"
FilterURLs Off
FilterType ERE
FilterDefaultDeny Yes
`

const startTinyproxy = async (binary: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-tinyproxy-"))
  fs.chmodSync(dir, 0o755)
  const log = path.join(dir, "tinyproxy.log")
  fs.writeFileSync(path.join(dir, "filter"), "^127\\.0\\.0\\.1$\n^localhost$\n", { mode: 0o644 })
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const started = await startOnFreePort((port) => {
    const confPath = path.join(dir, "tinyproxy.conf")
    fs.writeFileSync(confPath, tinyproxyConfig(dir, port))
    // tinyproxy appends; made here so that it is readable by all.
    fs.writeFileSync(log, "", { mode: 0o644 })
    return spawn(binary, ["-d", "-c", confPath], { stdio: ["ignore", "ignore", "pipe"] })
  }, log, removeDir)
  return "error" in started ? started : { ...started, log }
}

// dante ----------------------------------------------------------------------

// Rules are matched in order, the first match wins. `command:` and `log:`
// take the rest of their line, so each sits on its own.
const danteConfig = (dir: string, port: number): string => `
logoutput: ${dir}/danted.log
internal: 127.0.0.1 port = ${port}
external: 127.0.0.1
clientmethod: none
socksmethod: none
${isRoot ? "user.privileged: root\nuser.unprivileged: nobody" : ""}
client pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
  log: error
}
socks block {
  from: 0.0.0.0/0 to: ${proxyRefusedHost}/32
  log: connect error
}
socks pass {
  from: 127.0.0.0/8 to: 127.0.0.1/32
  command: connect
  log: connect disconnect error
}
`

const startDante = async (binary: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-dante-"))
  fs.chmodSync(dir, 0o755)
  const log = path.join(dir, "danted.log")
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const started = await startOnFreePort((port) => {
    const confPath = path.join(dir, "danted.conf")
    fs.writeFileSync(confPath, danteConfig(dir, port))
    fs.writeFileSync(log, "", { mode: 0o644 })
    // Without -D danted stays in the foreground; -p keeps it off /var/run/danted.pid.
    return spawn(binary, ["-f", confPath, "-p", path.join(dir, "danted.pid")], { stdio: ["ignore", "ignore", "pipe"] })
  }, log, removeDir)
  return "error" in started ? started : { ...started, log }
}

// ----------------------------------------------------------------------------

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // apt runs one at a time; the proxies then start in parallel.
  const squidBinary = obtain("squid", ["squid"])
  const tinyproxyBinary = obtain("tinyproxy", ["tinyproxy-bin", "tinyproxy"])
  const danteBinary = obtain("danted", ["dante-server"])
  const squidObtained: Obtained = "binary" in squidBinary && !fs.existsSync(basicNcsaAuth)
    ? { unavailable: `squid has no ${basicNcsaAuth}` }
    : squidBinary

  const [squid, tinyproxy, dante] = await Promise.all([
    "unavailable" in squidObtained ? squidObtained : startSquid(squidObtained.binary),
    "unavailable" in tinyproxyBinary ? tinyproxyBinary : startTinyproxy(tinyproxyBinary.binary),
    "unavailable" in danteBinary ? danteBinary : startDante(danteBinary.binary)
  ])
  const teardowns: Array<() => Promise<void>> = []

  if ("unavailable" in squid || "error" in squid) {
    project.provide("squidPort", 0)
    project.provide("squidAuthPort", 0)
    project.provide("squidUnavailable", "unavailable" in squid ? squid.unavailable : `squid did not start: ${squid.error}`)
    project.provide("squidAccessLog", "")
  } else {
    project.provide("squidPort", squid.port)
    project.provide("squidAuthPort", squid.authPort)
    project.provide("squidUnavailable", "")
    project.provide("squidAccessLog", squid.accessLog)
    teardowns.push(squid.teardown)
  }

  if ("unavailable" in tinyproxy || "error" in tinyproxy) {
    project.provide("tinyproxyPort", 0)
    project.provide(
      "tinyproxyUnavailable",
      "unavailable" in tinyproxy ? tinyproxy.unavailable : `tinyproxy did not start: ${tinyproxy.error}`
    )
    project.provide("tinyproxyLog", "")
  } else {
    project.provide("tinyproxyPort", tinyproxy.port)
    project.provide("tinyproxyUnavailable", "")
    project.provide("tinyproxyLog", tinyproxy.log)
    teardowns.push(tinyproxy.teardown)
  }

  if ("unavailable" in dante || "error" in dante) {
    project.provide("dantePort", 0)
    project.provide("danteUnavailable", "unavailable" in dante ? dante.unavailable : `danted did not start: ${dante.error}`)
    project.provide("danteLog", "")
  } else {
    project.provide("dantePort", dante.port)
    project.provide("danteUnavailable", "")
    project.provide("danteLog", dante.log)
    teardowns.push(dante.teardown)
  }

  return async () => {
    await Promise.all(teardowns.map((teardown) => teardown()))
  }
}
