/**
 * A private nginx on 127.0.0.1: its own prefix, config, files and logs in a
 * temporary directory, run as a child process on a free port. The global
 * setup starts the one most tests share; a test that needs other keep-alive
 * settings starts its own.
 */
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { findBinary, obtain, type Obtained, startOnFreePort } from "./servers.js"

/** Where nginx is installed when it is built from source rather than packaged. */
const moreDirs = ["/usr/local/nginx/sbin"]

/** The nginx binary when it is installed. */
export const findNginx = (): string | undefined => findBinary("nginx", moreDirs)

/** The nginx binary, installing it with apt when allowed; or the reason there is none. */
export const obtainNginx = (): Obtained => obtain("nginx", ["nginx-light", "nginx"], moreDirs)

/** What one nginx serves, and how. */
export interface Site {
  /** Directives of the `http` block: keep-alive settings, types. */
  readonly http: ReadonlyArray<string>
  /** Directives of its one `server` block besides `listen` and `root`: locations. */
  readonly server?: ReadonlyArray<string>
  /** The files under the root, by name. */
  readonly files: Readonly<Record<string, string | Uint8Array>>
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

const config = (dir: string, port: number, site: Site): string => `
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
  ${site.http.join("\n  ")}
  server {
    listen 127.0.0.1:${port};
    root ${dir}/html;
    ${(site.server ?? []).join("\n    ")}
  }
}
`

/**
 * Starts `binary` serving `site` on a free port. Returns the port and a
 * teardown that stops nginx and removes its directory; or why it did not
 * start, its directory removed.
 */
export const startNginx = (
  binary: string,
  site: Site
): Promise<{ readonly port: number; readonly teardown: () => Promise<void> } | { readonly error: string }> => {
  removeStaleDirs()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix))
  // Running as root, nginx's worker is `nobody`: it must be able to read the files.
  fs.chmodSync(dir, 0o755)
  fs.mkdirSync(path.join(dir, "html"), { mode: 0o755 })
  fs.mkdirSync(path.join(dir, "tmp"), { mode: 0o755 })
  for (const [name, content] of Object.entries(site.files)) {
    fs.writeFileSync(path.join(dir, "html", name), content, { mode: 0o644 })
  }
  // `-e` (nginx >= 1.19.5) keeps even start-up errors out of the system log path.
  const help = spawnSync(binary, ["-h"], { encoding: "utf8" })
  const errorLogFlag = `${help.stdout}${help.stderr}`.includes("-e filename") ? ["-e", path.join(dir, "error.log")] : []
  return startOnFreePort((port) => {
    const confPath = path.join(dir, "nginx.conf")
    fs.writeFileSync(confPath, config(dir, port, site))
    return spawn(binary, ["-p", `${dir}/`, "-c", confPath, ...errorLogFlag], { stdio: ["ignore", "ignore", "pipe"] })
  }, path.join(dir, "error.log"), () => fs.rmSync(dir, { recursive: true, force: true }))
}
