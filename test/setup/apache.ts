/**
 * Vitest global setup: a private apache2 (mpm_event) on 127.0.0.1 for
 * `test/apache.test.ts`, chosen for its keep-alive behaviour: a short
 * `KeepAliveTimeout` and a small `MaxKeepAliveRequests`, which it announces in
 * `Keep-Alive: timeout=N, max=M` when the request asks for keep-alive, and an
 * access log whose `%k` says how many requests each connection carried before.
 *
 * apache2 is installed with apt when it is missing and we are root. It runs
 * in the foreground with its own config, files and logs in a temporary
 * directory, stopped in teardown. When it cannot be had, port 0 is provided
 * with the reason, and the apache tests skip (or fail, under CI).
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { obtain, type Obtained, startOnFreePort } from "./servers.js"

declare module "vitest" {
  export interface ProvidedContext {
    /** The port of the test apache2 on 127.0.0.1, or 0 when it could not be started. */
    apachePort: number
    /** Why apache2 is unavailable; `""` when it runs. */
    apacheUnavailable: string
    /** Its access log: one line per request, `<%k> <remote port> <request line> <status> <bytes> <µs since the epoch when it was received>`. */
    apacheAccessLog: string
  }
}

/** What the test apache announces and does. */
export const apacheKeepAliveTimeoutSeconds = 2
export const apacheMaxKeepAliveRequests = 5

/** The files it serves, by name: sizes 0 B, 13 B, 64 KiB and 5 MiB, deterministic bytes. */
export const apacheFiles: Readonly<Record<string, number>> = {
  "empty.txt": 0,
  "small.txt": 13,
  "big.bin": 64 * 1024,
  "huge.bin": 5 * 1024 * 1024
}

/** The content of a served file of `size` bytes. */
export const apacheFileContent = (size: number): Uint8Array => {
  const out = new Uint8Array(size)
  let state = 0x1b873593 ^ size
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    out[i] = state >>> 24
  }
  return out
}

const obtainApache = (): Obtained => obtain("apache2", ["apache2"])

const modules = "/usr/lib/apache2/modules"

const config = (dir: string, port: number, user: string): string => `
ServerRoot ${dir}
LoadModule mpm_event_module ${modules}/mod_mpm_event.so
LoadModule authz_core_module ${modules}/mod_authz_core.so
${user === "" ? "" : `User ${user}\nGroup ${user === "www-data" ? "www-data" : "nogroup"}`}
PidFile ${dir}/apache.pid
Mutex file:${dir} default
Listen 127.0.0.1:${port}
ServerName 127.0.0.1
ErrorLog ${dir}/error.log
LogLevel warn
LogFormat "%k %{remote}p \\"%r\\" %>s %B %{begin:usec}t" keepalive
CustomLog ${dir}/access.log keepalive
DocumentRoot ${dir}/html
KeepAlive On
KeepAliveTimeout ${apacheKeepAliveTimeoutSeconds}
MaxKeepAliveRequests ${apacheMaxKeepAliveRequests}
StartServers 1
ServerLimit 1
ThreadsPerChild 25
MaxRequestWorkers 25
<Directory ${dir}/html>
  Require all granted
</Directory>
`

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const unavailable = (reason: string) => {
    project.provide("apachePort", 0)
    project.provide("apacheUnavailable", reason)
    project.provide("apacheAccessLog", "")
    return async () => {}
  }
  const obtained = obtainApache()
  if ("unavailable" in obtained) return unavailable(obtained.unavailable)

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-apache-"))
  // Running as root, apache's workers drop to www-data: they must be able to read the files.
  fs.chmodSync(dir, 0o755)
  fs.mkdirSync(path.join(dir, "html"), { mode: 0o755 })
  for (const [name, size] of Object.entries(apacheFiles)) {
    fs.writeFileSync(path.join(dir, "html", name), apacheFileContent(size), { mode: 0o644 })
  }
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  const user = process.getuid?.() === 0 ? "www-data" : ""

  const started = await startOnFreePort((port) => {
    const confPath = path.join(dir, "apache2.conf")
    fs.writeFileSync(confPath, config(dir, port, user))
    fs.writeFileSync(path.join(dir, "access.log"), "", { mode: 0o644 })
    return spawn(obtained.binary, ["-f", confPath, "-DFOREGROUND"], {
      stdio: ["ignore", "ignore", "pipe"],
      // apache2's Debian build reads these; the config sets everything it needs itself.
      env: { ...process.env, APACHE_RUN_DIR: dir, APACHE_LOG_DIR: dir, APACHE_LOCK_DIR: dir, APACHE_PID_FILE: `${dir}/apache.pid` }
    })
  }, path.join(dir, "error.log"), removeDir)
  if ("error" in started) return unavailable(`apache2 did not start: ${started.error}`)
  project.provide("apachePort", started.port)
  project.provide("apacheUnavailable", "")
  project.provide("apacheAccessLog", path.join(dir, "access.log"))
  return started.teardown
}
