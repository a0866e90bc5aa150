/**
 * A server-side program the bench runs beside its origin server (squid,
 * redis-server): found on PATH or installed with apt-get, started in the
 * foreground on a free port of 127.0.0.1 with a private working dir, waited
 * for until it serves, and stopped by its pid.
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import { onCore } from "./pinning.js"
import type { Command, Pinning } from "./pinning.js"

/** A binary the bench found, and its version as the report prints it. */
export interface Found {
  readonly binary: string
  readonly version: string
}

/** What a program is called and how to ask its version. */
export interface Program {
  /** The program's name and the Debian package that installs it. */
  readonly name: string
  /** Where to look, in order: a bare name is looked up on PATH. */
  readonly paths: ReadonlyArray<string>
  readonly versionArgs: ReadonlyArray<string>
  /** Matches the version in the output of `versionArgs`, in its first group. */
  readonly versionPattern: RegExp
}

const find = (program: Program): Found | undefined => {
  for (const binary of program.paths) {
    const result = spawnSync(binary, program.versionArgs, { encoding: "utf8" })
    if (result.error === undefined && result.status === 0) {
      return { binary, version: program.versionPattern.exec(result.stdout)?.[1] ?? "unknown version" }
    }
  }
  return undefined
}

/**
 * The program, installed with `apt-get update && apt-get install -y <name>`
 * when it is missing and this process is root (apt's output goes to
 * stderr); else why there is none.
 */
export const obtain = (program: Program, log: (line: string) => void): Found | { readonly unavailable: string } => {
  const found = find(program)
  if (found !== undefined) return found
  const name = program.name
  if (process.getuid?.() !== 0) return { unavailable: `${name} is not installed and we are not root to install it` }
  log(`${name} not found: apt-get update && apt-get install -y ${name}`)
  const apt = (...args: Array<string>) =>
    spawnSync("apt-get", args, { stdio: ["ignore", 2, 2], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } }).status === 0
  if (!apt("update") || !apt("install", "-y", name)) return { unavailable: `apt-get install ${name} failed` }
  return find(program) ?? { unavailable: `${name} installed but not found in ${program.paths.join(", ")}` }
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo
      probe.close(() => resolve(port))
    })
  })

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const clockTicks = (() => {
  const result = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" })
  const ticks = Number(result.stdout?.trim())
  return result.status === 0 && ticks > 0 ? ticks : 100
})()

/** utime + stime of a process, in seconds, from `/proc/<pid>/stat`; 0 when it cannot be read. */
export const cpuSecondsOf = (pid: number | undefined): number => {
  if (pid === undefined) return 0
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, as proc(5) numbers them).
    return (Number(fields[11]) + Number(fields[12])) / clockTicks
  } catch {
    return 0
  }
}

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

const exitedWithin = (child: ChildProcess, ms: number): Promise<boolean> =>
  exited(child)
    ? Promise.resolve(true)
    : new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve(true)
      })
    })

/** Sends `signal`, the program's quick shutdown; SIGKILL when it has not exited 5 s later. */
export const stop = async (child: ChildProcess, signal: NodeJS.Signals): Promise<void> => {
  if (exited(child)) return
  child.kill(signal)
  if (!(await exitedWithin(child, 5000))) {
    child.kill("SIGKILL")
    await exitedWithin(child, 2000)
  }
}

/** What one look at a starting program found: it serves, not yet, or a failure to report. */
export type Readiness = "serving" | "not yet" | { readonly failed: string }

/**
 * Starts the program on a free port, on the server's core, and resolves
 * once `probe` finds it serving (within 10 s). A free port is probed, then
 * bound by the program: a second try if something took it in between.
 * On failure the program is stopped and the error carries `logTail`.
 */
export const start = async (options: {
  readonly name: string
  readonly pinning: Pinning
  /** Writes the program's config for `port` and says how to run it in the foreground. */
  readonly command: (port: number) => Command
  readonly probe: (port: number) => Promise<Readiness>
  readonly logTail: () => string
  /** The signal of the program's quick shutdown. */
  readonly stopSignal: NodeJS.Signals
}): Promise<{ readonly child: ChildProcess; readonly port: number }> => {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const command = onCore(options.pinning, "server", options.command(port))
    // taskset execs the program, so the child is the program itself, on the server's core.
    const child = spawn(command.command, command.args, { stdio: ["ignore", "ignore", "ignore"] })
    const deadline = Date.now() + 10_000
    let failure: string | undefined
    for (;;) {
      if (exited(child)) {
        failure = `${options.name} exited before serving: ${options.logTail()}`
        break
      }
      const readiness = await options.probe(port)
      if (readiness === "serving") break
      if (readiness !== "not yet") {
        failure = `${readiness.failed}: ${options.logTail()}`
        break
      }
      if (Date.now() > deadline) {
        failure = `${options.name} did not serve on 127.0.0.1:${port} within 10 s: ${options.logTail()}`
        break
      }
      await sleep(50)
    }
    if (failure === undefined) return { child, port }
    await stop(child, options.stopSignal)
    if (attempt < 2 && /bind|Address already in use/i.test(failure)) continue
    throw new Error(failure)
  }
}
