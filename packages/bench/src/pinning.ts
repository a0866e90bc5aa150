/**
 * Which core each process runs on. With two cores or more the server gets
 * one core and every client process (and wrk) another, through `taskset -c`,
 * so that the client and the server never compete for one core and a
 * client's CPU time is its own. `BENCH_PIN=0` turns it off; without taskset,
 * or on one core, everything runs unpinned and the report says why.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"

export type Pinning =
  | { readonly pinned: true; readonly serverCore: number; readonly clientCore: number }
  | { readonly pinned: false; readonly reason: string }

/** A command and its arguments, as `spawn` takes them. */
export interface Command {
  readonly command: string
  readonly args: ReadonlyArray<string>
}

/** The cores this process may run on (`Cpus_allowed_list`), else 0 … availableParallelism − 1. */
const allowedCores = (): ReadonlyArray<number> => {
  const list = ownAffinity()
  if (list === undefined) return Array.from({ length: os.availableParallelism() }, (_, core) => core)
  return list.split(",").flatMap((range) => {
    const [from, to] = range.split("-").map(Number)
    return Array.from({ length: (to ?? from!) - from! + 1 }, (_, i) => from! + i)
  })
}

const tasksetWorks = (): boolean => spawnSync("taskset", ["--version"], { stdio: "ignore" }).status === 0

/** Decides once, in the harness, where the server and the clients run. */
export const choosePinning = (): Pinning => {
  if (process.env["BENCH_PIN"] === "0") return { pinned: false, reason: "BENCH_PIN=0" }
  const cores = allowedCores()
  if (cores.length < 2) return { pinned: false, reason: `${cores.length} core available` }
  if (!tasksetWorks()) return { pinned: false, reason: "taskset not found" }
  return { pinned: true, serverCore: cores[0]!, clientCore: cores[1]! }
}

/** `command` as run on the role's core: under `taskset -c <core>`, or as it is when unpinned. */
export const onCore = (pinning: Pinning, role: "server" | "client", command: Command): Command =>
  pinning.pinned
    ? { command: "taskset", args: ["-c", String(role === "server" ? pinning.serverCore : pinning.clientCore), command.command, ...command.args] }
    : command

/** The cores a process may run on, as `taskset -cp` reports them ("0", "0,1", "0-3"); undefined when it cannot tell. */
export const affinityOf = (pid: number): string | undefined => {
  const result = spawnSync("taskset", ["-cp", String(pid)], { encoding: "utf8" })
  if (result.status !== 0) return undefined
  return /current affinity list:\s*(\S+)/.exec(result.stdout)?.[1]
}

/** This process's own allowed cores, from `/proc/self/status`; undefined off Linux. */
export const ownAffinity = (): string | undefined => {
  try {
    return /^Cpus_allowed_list:\s*(\S+)$/m.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1]
  } catch {
    return undefined
  }
}

/** The processes whose parent is `pid` (nginx's workers under its master), read from `/proc`. */
export const childrenOf = (pid: number): ReadonlyArray<number> =>
  fs.readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return []
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      // The command name in parentheses may hold spaces; the parent pid is the second field after it.
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      return parent === pid ? [Number(entry)] : []
    } catch {
      return []
    }
  })
