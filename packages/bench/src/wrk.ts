/**
 * The reference ceiling: wrk against the same URL, one thread, one request in
 * flight per connection. Its CPU time comes from bash's `times` builtin, which
 * reports the user and system time of the shell's finished children. It runs
 * on the clients' core when the processes are pinned.
 */
import { spawn, spawnSync } from "node:child_process"
import { onCore } from "./pinning.js"
import type { Pinning } from "./pinning.js"

export interface WrkResult {
  readonly requestsPerSecond: number
  readonly requests: number
  readonly cpuSeconds: number
}

export const wrkVersion = (): string | undefined => {
  const result = spawnSync("wrk", ["-v"], { encoding: "utf8" })
  if (result.error !== undefined) return undefined
  return /wrk (\S+)/.exec(result.stdout + result.stderr)?.[1] ?? "unknown version"
}

export const runWrk = (url: string, connections: number, seconds: number, pinning: Pinning): Promise<WrkResult> =>
  new Promise((resolve, reject) => {
    // bash and wrk both inherit taskset's affinity.
    const wrk = onCore(pinning, "client", {
      command: "bash",
      args: ["-c", 'wrk "$@"; code=$?; times; exit $code', "wrk", "-t1", `-c${connections}`, `-d${seconds}s`, "--timeout", "5s", url]
    })
    const child = spawn(wrk.command, wrk.args, { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    const killTimer = setTimeout(() => child.kill("SIGKILL"), (seconds + 15) * 1000)
    child.on("error", reject)
    child.on("close", (code) => {
      clearTimeout(killTimer)
      const requests = /(\d+) requests in /.exec(output)?.[1]
      const requestsPerSecond = /Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]
      // `times` prints the shell's own times, then its children's: the second line is wrk's.
      const children = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/gm
      const lines = [...output.matchAll(children)]
      const wrkTimes = lines[1]
      if (code !== 0 || requests === undefined || requestsPerSecond === undefined || wrkTimes === undefined) {
        reject(new Error(`wrk failed (exit ${code}): ${output.trim()}`))
        return
      }
      const minutesAndSeconds = (m: string | undefined, s: string | undefined) => Number(m) * 60 + Number(s)
      resolve({
        requestsPerSecond: Number(requestsPerSecond),
        requests: Number(requests),
        cpuSeconds: minutesAndSeconds(wrkTimes[1], wrkTimes[2]) + minutesAndSeconds(wrkTimes[3], wrkTimes[4])
      })
    })
  })
