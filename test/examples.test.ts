/**
 * The README's runnable examples run, and print what they are for.
 */
import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { promisify } from "node:util"
import { inject } from "vitest"
import { provided } from "./setup/provided.js"

const root = path.resolve(import.meta.dirname, "..")
const tsx = path.join(root, "node_modules", ".bin", "tsx")

describe("examples", () => {
  it("observability: prints every metric of the Agent by origin, then Agent.stats per origin", async () => {
    const { stdout } = await promisify(execFile)(tsx, ["--conditions=keepalive-source", "examples/observability.ts"], {
      cwd: root,
      timeout: 20_000
    })
    for (const name of [
      "http.client.request.duration",
      "http.client.open_connections",
      "http.client.connection.duration",
      "http.client.active_requests",
      "keepalive.connections.opened",
      "keepalive.connections.closed",
      "keepalive.requests.reused",
      "keepalive.queue.duration",
      "keepalive.requests.waiting"
    ]) expect(stdout).toContain(name)
    expect(stdout).toMatch(/http\.client\.request\.duration +server\.port=\d+ http\.request\.method=GET http\.response\.status_code=200 +count 100,/)
    expect(stdout).toMatch(/keepalive\.connections\.closed +server\.port=\d+ reason=server_close +20\n/)
    expect(stdout).toContain("Agent.stats: 300 responses, 24 connections opened, 276 requests on a reused one")
    expect(stdout.match(/^ {2}http:\/\/127\.0\.0\.1:\d+ {2}open 2 \(idle 2, busy 0\), waiting 0, opened 2, reused 98$/gm)).toHaveLength(2)
  })

  const redis = provided("redis-server", inject("redisPort"), inject("redisUnavailable"), "fleet example test")
  it.skipIf(redis.skip)(
    "fleet: two processes under one cap of 3 on Redis, each of whose Agents alone would open 8; the server never sees more than 3",
    async () => {
      const { stdout } = await promisify(execFile)(
        tsx,
        ["--conditions=keepalive-source", "examples/fleet.ts", `redis://127.0.0.1:${redis.port}`],
        { cwd: root, timeout: 60_000 }
      )
      expect(stdout.match(/^worker \d+: 200 responses over \d+ connections$/gm)).toHaveLength(2)
      const peak = Number(/^server: at most (\d+) connections open at once/m.exec(stdout)?.[1])
      expect(peak).toBeGreaterThanOrEqual(1)
      expect(peak).toBeLessThanOrEqual(3)
    },
    90_000
  )
})
