/**
 * Vitest global setup: a private nginx on 127.0.0.1 for `test/nginx.test.ts`.
 *
 * nginx is installed with apt when it is missing and we are root. It runs with
 * its own prefix, config and logs in a temporary directory, as a child process
 * stopped in teardown. When nginx cannot be had, port 0 is provided together
 * with the reason, and the nginx tests skip (or fail, under CI).
 */
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { apt, aptCandidate, findBinary, startOnFreePort } from "./servers.js"

declare module "vitest" {
  export interface ProvidedContext {
    /** The port of the test nginx on 127.0.0.1, or 0 when nginx could not be started. */
    nginxPort: number
    /** Why nginx is unavailable; `""` when it runs. */
    nginxUnavailable: string
  }
}

/** Size of the static file nginx serves at `/big` (and, gzipped and chunked, at `/chunked`). */
export const bigBodySize = 64 * 1024

/**
 * The content of `/big`: deterministic printable bytes that differ at every
 * offset pattern, so a dropped, repeated or reordered piece shows up.
 */
export const bigBody = (): Uint8Array => {
  const out = new Uint8Array(bigBodySize)
  let state = 0x2545f491
  for (let i = 0; i < out.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    out[i] = 33 + ((state >>> 16) % 94)
  }
  return out
}

/** The nginx binary, installing it when allowed; or the reason there is none. */
const obtainNginx = (): { readonly binary: string } | { readonly unavailable: string } => {
  const found = findBinary("nginx", ["/usr/local/nginx/sbin"])
  if (found !== undefined) return { binary: found }
  if (process.getuid?.() !== 0) return { unavailable: "nginx is not installed and we are not root to install it" }
  const pick = () => ["nginx-light", "nginx"].find(aptCandidate)
  let pkg = pick()
  if (pkg === undefined) {
    if (!apt(["update"])) return { unavailable: "apt-get update failed" }
    pkg = pick()
  }
  if (pkg === undefined) return { unavailable: "apt has neither nginx-light nor nginx" }
  if (!apt(["install", "-y", "--no-install-recommends", pkg])) return { unavailable: `apt-get install ${pkg} failed` }
  const installed = findBinary("nginx", ["/usr/local/nginx/sbin"])
  return installed === undefined ? { unavailable: `${pkg} installed but no nginx binary found` } : { binary: installed }
}

const dirPrefix = "keepalive-nginx-"

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (cause) {
    return (cause as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Directories of earlier runs that were killed before their teardown, and whose nginx is gone. */
const removeStaleDirs = (): void => {
  const tmp = os.tmpdir()
  for (const name of fs.readdirSync(tmp)) {
    if (!name.startsWith(dirPrefix)) continue
    const dir = path.join(tmp, name)
    try {
      // Young directories may belong to a run that is starting right now.
      if (Date.now() - fs.statSync(dir).mtimeMs < 10 * 60_000) continue
      const pid = Number(fs.readFileSync(path.join(dir, "nginx.pid"), "utf8").trim())
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) continue
    } catch {
      // no pid file: nginx never ran or has removed it on exit
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const config = (dir: string, port: number): string => `
daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  keepalive_requests 10000;
  keepalive_timeout 60s;
  default_type text/plain;
  server {
    listen 127.0.0.1:${port};
    root ${dir}/html;
    location = /conn { return 200 "$connection $connection_requests\\n"; }
    location = /big { try_files /big.txt =404; }
    # gzip drops Content-Length, so this body goes out chunked.
    location = /chunked {
      gzip on;
      gzip_types *;
      gzip_min_length 0;
      try_files /big.txt =404;
    }
  }
}
`

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const unavailable = (reason: string) => {
    project.provide("nginxPort", 0)
    project.provide("nginxUnavailable", reason)
    return async () => {}
  }
  const obtained = obtainNginx()
  if ("unavailable" in obtained) return unavailable(obtained.unavailable)

  removeStaleDirs()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix))
  // Running as root, nginx's worker is `nobody`: it must be able to read the files.
  fs.chmodSync(dir, 0o755)
  fs.mkdirSync(path.join(dir, "html"), { mode: 0o755 })
  fs.mkdirSync(path.join(dir, "tmp"), { mode: 0o755 })
  fs.writeFileSync(path.join(dir, "html", "big.txt"), bigBody(), { mode: 0o644 })
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })

  // `-e` (nginx >= 1.19.5) keeps even start-up errors out of the system log path.
  const help = spawnSync(obtained.binary, ["-h"], { encoding: "utf8" })
  const errorLogFlag = `${help.stdout}${help.stderr}`.includes("-e filename") ? ["-e", path.join(dir, "error.log")] : []

  const started = await startOnFreePort((port) => {
    const confPath = path.join(dir, "nginx.conf")
    fs.writeFileSync(confPath, config(dir, port))
    return spawn(obtained.binary, ["-p", `${dir}/`, "-c", confPath, ...errorLogFlag], { stdio: ["ignore", "ignore", "pipe"] })
  }, path.join(dir, "error.log"), removeDir)
  if ("error" in started) return unavailable(`nginx did not start: ${started.error}`)
  project.provide("nginxPort", started.port)
  project.provide("nginxUnavailable", "")
  return started.teardown
}
