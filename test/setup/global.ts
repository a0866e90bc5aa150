/**
 * Vitest global setup: a private nginx on 127.0.0.1 for `test/nginx.test.ts`.
 *
 * nginx is installed with apt when it is missing and we are root. It runs with
 * its own prefix, config and logs in a temporary directory (`./nginx.ts`), as
 * a child process stopped in teardown. When nginx cannot be had, port 0 is
 * provided together with the reason, and the nginx tests skip (or fail, under
 * CI).
 */
import type { TestProject } from "vitest/node"
import { obtainNginx, type Site, startNginx } from "./nginx.js"

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

const site: Site = {
  http: ["keepalive_requests 10000;", "keepalive_timeout 60s;", "default_type text/plain;"],
  server: [
    "location = /conn { return 200 \"$connection $connection_requests\\n\"; }",
    "location = /big { try_files /big.txt =404; }",
    "# gzip drops Content-Length, so this body goes out chunked.",
    "location = /chunked { gzip on; gzip_types *; gzip_min_length 0; try_files /big.txt =404; }"
  ],
  files: { "big.txt": bigBody() }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const unavailable = (reason: string) => {
    project.provide("nginxPort", 0)
    project.provide("nginxUnavailable", reason)
    return async () => {}
  }
  const obtained = obtainNginx()
  if ("unavailable" in obtained) return unavailable(obtained.unavailable)

  const started = await startNginx(obtained.binary, site)
  if ("error" in started) return unavailable(`nginx did not start: ${started.error}`)
  project.provide("nginxPort", started.port)
  project.provide("nginxUnavailable", "")
  return started.teardown
}
