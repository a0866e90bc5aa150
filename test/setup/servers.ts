/**
 * What the setups of the real servers (nginx, apache2, redis, the proxies)
 * share: finding and installing a binary, a free port, waiting for a start,
 * stopping.
 */
import type { ChildProcess } from "node:child_process"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"

/** Runs apt-get; true when it succeeded. */
const apt = (args: ReadonlyArray<string>): boolean => {
  const result = spawnSync("apt-get", args, {
    stdio: "ignore",
    timeout: 300_000,
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  })
  return result.status === 0
}

/** True when apt can install the package. */
const aptCandidate = (name: string): boolean => {
  const result = spawnSync("apt-cache", ["policy", name], { encoding: "utf8", timeout: 60_000 })
  return result.status === 0 && /Candidate:\s*(?!\(none\))\S/.test(result.stdout)
}

/** An executable on PATH or in the sbin directories, which are often missing from a non-root PATH. */
export const findBinary = (name: string, moreDirs: ReadonlyArray<string> = []): string | undefined => {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin", ...moreDirs]
  for (const dir of dirs) {
    if (dir === "") continue
    const candidate = path.join(dir, name)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** A port free on 127.0.0.1 now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** True when something accepts connections on the port. */
export const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/** True once the server accepts on the port; false when it exited or 5 s passed. */
export const waitForStart = async (child: ChildProcess, port: number): Promise<boolean> => {
  let exited = child.exitCode !== null
  child.once("exit", () => {
    exited = true
  })
  const deadline = Date.now() + 5_000
  while (Date.now() < deadline && !exited) {
    if (await accepts(port)) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

/** Stops a server: SIGTERM, then SIGKILL after 5 s. */
export const stop = async (child: ChildProcess): Promise<void> => {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  child.kill("SIGTERM")
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000)
  await exited
  clearTimeout(timer)
}


/**
 * Starts a server with `start(port)` on a free port, trying three (a free port
 * can be taken between probing and the server's bind). Returns the running
 * server and a teardown that stops it and runs `cleanup` (also run, with the
 * server killed, should the process exit without teardown); or why it did not
 * start (its stderr and the end of `errorLog`), after running `cleanup`.
 */
export const startOnFreePort = async (
  start: (port: number) => ChildProcess,
  errorLog: string,
  cleanup: () => void
): Promise<{ readonly port: number; readonly teardown: () => Promise<void> } | { readonly error: string }> => {
  let lastError = ""
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const child = start(port)
    let stderr = ""
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.once("error", (cause) => {
      stderr += String(cause)
    })
    if (await waitForStart(child, port)) {
      const killOnExit = () => {
        child.kill("SIGKILL")
        cleanup()
      }
      process.once("exit", killOnExit)
      return {
        port,
        teardown: async () => {
          process.off("exit", killOnExit)
          await stop(child)
          cleanup()
        }
      }
    }
    await stop(child)
    let log = ""
    try {
      log = fs.readFileSync(errorLog, "utf8")
    } catch {
      // the server failed before opening its log
    }
    lastError = `${stderr}${log}`.trim().split("\n").slice(-3).join(" | ")
  }
  cleanup()
  return { error: lastError }
}

export type Obtained = { readonly binary: string } | { readonly unavailable: string }

let aptUpdated = false

/**
 * A binary (on PATH, in the sbin directories or in `moreDirs`), installing the
 * first package apt offers when allowed; or the reason there is none.
 */
export const obtain = (name: string, packages: ReadonlyArray<string>, moreDirs: ReadonlyArray<string> = []): Obtained => {
  const found = findBinary(name, moreDirs)
  if (found !== undefined) return { binary: found }
  if (process.getuid?.() !== 0) return { unavailable: `${name} is not installed and we are not root to install it` }
  let pkg = packages.find(aptCandidate)
  if (pkg === undefined && !aptUpdated) {
    aptUpdated = true
    if (!apt(["update"])) return { unavailable: "apt-get update failed" }
    pkg = packages.find(aptCandidate)
  }
  if (pkg === undefined) return { unavailable: `apt has none of ${packages.join(", ")}` }
  if (!apt(["install", "-y", "--no-install-recommends", pkg])) return { unavailable: `apt-get install ${pkg} failed` }
  const installed = findBinary(name, moreDirs)
  return installed === undefined ? { unavailable: `${pkg} installed but no ${name} binary found` } : { binary: installed }
}
