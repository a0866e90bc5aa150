/**
 * Vitest global setup: a private redis-server on 127.0.0.1 for the tests of
 * `@keepalive/redis` and the fleet tests; and `startRedis`, with which a test
 * that stops or restarts Redis starts its own instance, leaving the shared one
 * alone.
 *
 * redis-server (Debian's) is installed with apt when it is missing and we are
 * root. Each instance runs in the foreground on a free port of 127.0.0.1, with
 * no persistence (`--save "" --appendonly no`) and its own directory, and is
 * stopped by its pid. When it cannot be had, port 0 is provided with the
 * reason, and its tests skip (or fail, under CI).
 */
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { obtain, type Obtained, startOnFreePort, stop, waitForStart } from "./servers.js"

declare module "vitest" {
  export interface ProvidedContext {
    /** The port of the shared test redis-server on 127.0.0.1, or 0 when it could not be started. */
    redisPort: number
    /** Why redis-server is unavailable; `""` when it runs. */
    redisUnavailable: string
  }
}

/** redis-server's binary, installing it when allowed; or why there is none. */
export const obtainRedis = (): Obtained => obtain("redis-server", ["redis-server"])

/** A redis-server of a test's own. */
export interface RedisInstance {
  readonly port: number
  /** Stops it (SIGTERM by pid; SIGKILL after 5 s). Its data is gone: it never persists. */
  readonly stop: () => Promise<void>
  /** Starts it again on the same port, empty; true once it accepts. */
  readonly start: () => Promise<boolean>
  /** Stops it for good and removes its directory. */
  readonly teardown: () => Promise<void>
}

const spawnRedis = (binary: string, dir: string, port: number): ChildProcess =>
  spawn(binary, [
    "--bind", "127.0.0.1",
    "--port", String(port),
    "--save", "",
    "--appendonly", "no",
    "--dir", dir,
    "--daemonize", "no",
    "--protected-mode", "yes",
    "--logfile", path.join(dir, "redis.log"),
    "--loglevel", "warning"
  ], { stdio: ["ignore", "ignore", "pipe"] })

/** Starts a private redis-server on a free port; or says why it could not. */
export const startRedis = async (): Promise<RedisInstance | { readonly error: string }> => {
  const obtained = obtainRedis()
  if ("unavailable" in obtained) return { error: obtained.unavailable }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-redis-"))
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true })
  let child: ChildProcess | undefined
  const started = await startOnFreePort((port) => (child = spawnRedis(obtained.binary, dir, port)), path.join(dir, "redis.log"), removeDir)
  if ("error" in started) return started
  const port = started.port
  // startOnFreePort's exit hook knows only the first process; this one kills whichever runs now.
  let current = child!
  const killOnExit = () => current.kill("SIGKILL")
  process.once("exit", killOnExit)
  return {
    port,
    stop: () => stop(current),
    start: async () => {
      if (current.exitCode === null && current.signalCode === null) return true
      current = spawnRedis(obtained.binary, dir, port)
      return waitForStart(current, port)
    },
    teardown: async () => {
      process.off("exit", killOnExit)
      await stop(current)
      await started.teardown()
    }
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = await startRedis()
  if ("error" in started) {
    project.provide("redisPort", 0)
    project.provide("redisUnavailable", `redis-server did not start: ${started.error}`)
    return async () => {}
  }
  project.provide("redisPort", started.port)
  project.provide("redisUnavailable", "")
  return started.teardown
}
