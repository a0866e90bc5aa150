/**
 * A fleet of processes (test/fleet/worker.ts: `NodeAgent.layer` with
 * `RedisPermits.layer`, run from the sources) sharing one per-origin cap on
 * the test Redis, against local node:http servers that count the connections
 * open at once: the cap holds across the fleet, with a worker's clock minutes
 * off among them; a SIGKILLed holder's permits come free within its lease;
 * a process whose event loop stalls past its lease loses its permits, closes
 * those connections and does not use them again.
 */
import { describe, expect, it } from "@effect/vitest"
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import * as http from "node:http"
import type * as net from "node:net"
import * as path from "node:path"
import { afterAll, inject } from "vitest"
import { provided } from "./setup/provided.js"
import { findBinary } from "./setup/servers.js"

const redis = provided("redis-server", inject("redisPort"), inject("redisUnavailable"), "fleet tests")
const redisUrl = () => `redis://127.0.0.1:${redis.port}`
const faketime = findBinary("faketime")

const root = path.join(import.meta.dirname, "..")
const workerScript = path.join(root, "test/fleet/worker.ts")

/** A node:http server that counts the connections open at once and what each carried. */
interface CountingServer {
  url: string
  open: number
  peak: number
  accepted: number
  requests: number
  /** Per connection: the worker that used it and when each request arrived (ms). */
  readonly connections: Array<{ worker: string; readonly arrivals: Array<number>; closedAt: number }>
  readonly server: http.Server
}

const startServer = (delayMs: (url: string) => number): Promise<CountingServer> =>
  new Promise((resolve) => {
    const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      state.requests++
      const conn = (req.socket as net.Socket & { conn?: CountingServer["connections"][number] }).conn
      if (conn !== undefined) {
        conn.worker = String(req.headers["x-worker"] ?? "")
        conn.arrivals.push(Date.now())
      }
      const delay = delayMs(req.url ?? "")
      if (delay === 0) res.end("ok")
      else setTimeout(() => res.end("ok"), delay)
    })
    const state: CountingServer = { url: "", open: 0, peak: 0, accepted: 0, requests: 0, connections: [], server }
    server.on("connection", (socket: net.Socket & { conn?: CountingServer["connections"][number] }) => {
      state.accepted++
      state.open++
      state.peak = Math.max(state.peak, state.open)
      const conn = { worker: "", arrivals: [] as Array<number>, closedAt: 0 }
      socket.conn = conn
      state.connections.push(conn)
      // The client's FIN ends it: counted gone then, not when this side gets round to closing.
      let gone = false
      const done = () => {
        if (gone) return
        gone = true
        conn.closedAt = Date.now()
        state.open--
      }
      socket.once("end", done)
      socket.once("close", done)
    })
    server.listen(0, "127.0.0.1", () => {
      state.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
      resolve(state)
    })
  })

interface Worker {
  readonly child: ChildProcess
  readonly events: Array<Record<string, any>>
  /** Resolves with the first event of that name. */
  readonly next: (event: string, timeoutMs?: number) => Promise<Record<string, any>>
  readonly exited: Promise<number | null>
  stderr: string
}

const workers: Array<Worker> = []

/** Starts a worker from the sources; under faketime when `clockOffset` (e.g. "+7m") is given. */
const startWorker = (settings: Record<string, unknown>, clockOffset?: string): Worker => {
  const args = ["--import", "tsx", "--conditions=keepalive-source", workerScript, JSON.stringify(settings)]
  const child = clockOffset === undefined
    ? spawn(process.execPath, args, { cwd: root, stdio: ["pipe", "pipe", "pipe"] })
    : spawn(faketime!, ["-f", clockOffset, process.execPath, ...args], { cwd: root, stdio: ["pipe", "pipe", "pipe"] })
  const events: Array<Record<string, any>> = []
  const waiting: Array<{ event: string; resolve: (e: Record<string, any>) => void }> = []
  let buffered = ""
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString()
    let nl: number
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim() === "") continue
      const event = { ...JSON.parse(line), receivedAt: Date.now() }
      events.push(event)
      for (const w of waiting.splice(0)) {
        if (w.event === event.event) w.resolve(event)
        else waiting.push(w)
      }
    }
  })
  const worker: Worker = {
    child,
    events,
    stderr: "",
    exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
    next: (event, timeoutMs = 30_000) => {
      const seen = events.find((e) => e.event === event)
      if (seen !== undefined) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${event} from ${settings.name} within ${timeoutMs} ms: ${worker.stderr}`)), timeoutMs)
        waiting.push({ event, resolve: (e) => {
          clearTimeout(timer)
          resolve(e)
        } })
      })
    }
  }
  child.stderr!.on("data", (chunk: Buffer) => (worker.stderr += chunk.toString()))
  workers.push(worker)
  return worker
}

let prefixes = 0
const freshPrefix = () => `fleet:${process.pid}:${Date.now()}:${prefixes++}`

const servers: Array<CountingServer> = []
afterAll(async () => {
  for (const worker of workers) if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill("SIGKILL")
  await Promise.all(servers.map((s) => new Promise((resolve) => {
    s.server.closeAllConnections()
    s.server.close(resolve)
  })))
})

const server = async (delayMs: (url: string) => number = () => 2) => {
  const s = await startServer(delayMs)
  servers.push(s)
  return s
}

describe.skipIf(redis.skip)("a fleet sharing a per-origin cap on Redis", () => {
  it("5 processes × 16 fibers, 3,000 requests over 3 origins, cap 3: the peak never passes the cap, all succeed, connections are reused, a worker's clock 7 minutes off counts for nothing", async () => {
      const origins = await Promise.all([server(), server(), server()])
      const keyPrefix = freshPrefix()
      const cap = 3
      const fleet = [0, 1, 2, 3, 4].map((i) =>
        startWorker({
          mode: "load",
          name: `w${i}`,
          redis: redisUrl(),
          keyPrefix,
          cap,
          leaseTtlMs: 3_000,
          origins: origins.map((o) => o.url),
          fibers: 16,
          requests: 600
        }, i === 0 && faketime !== undefined ? "+7m" : i === 1 && faketime !== undefined ? "-7m" : undefined)
      )
      const results = await Promise.all(fleet.map((w) => w.next("done", 50_000)))
      for (const result of results) {
        expect(result.failed, JSON.stringify(result.errors)).toBe(0)
        expect(result.ok).toBe(600)
      }
      if (faketime !== undefined) {
        // the skewed workers' clocks were minutes off indeed
        expect(Math.abs(results[0]!.now - results[0]!.receivedAt)).toBeGreaterThan(6 * 60_000)
        expect(Math.abs(results[1]!.now - results[1]!.receivedAt)).toBeGreaterThan(6 * 60_000)
      }
      const total = results.reduce((sum, r) => sum + r.ok, 0)
      const reused = results.reduce((sum, r) => sum + r.reused, 0)
      for (const origin of origins) {
        expect(origin.peak).toBeLessThanOrEqual(cap)
        expect(origin.requests).toBe(1_000)
      }
      const accepted = origins.reduce((sum, o) => sum + o.accepted, 0)
      expect(total).toBe(3_000)
      // Connections were kept and reused, not opened per request.
      expect(reused).toBeGreaterThan(total / 2)
      expect(accepted).toBeLessThan(total / 4)
      console.log(`fleet: ${total} requests, ${accepted} connections, ${reused} reused, peaks ${origins.map((o) => o.peak).join("/")}`)
  }, 60_000)

  it("a SIGKILLed holder's permits come free within its lease TTL and a refresh interval", async () => {
    const origin = await server((url) => (url.startsWith("/hold") ? 200 : 2))
    const keyPrefix = freshPrefix()
    const leaseTtlMs = 1_500
    const common = { redis: redisUrl(), keyPrefix, cap: 3, leaseTtlMs, origins: [origin.url], idleTimeoutMs: 60_000 }
    const holder = startWorker({ ...common, mode: "hold", name: "holder", hold: 3 })
    const held = await holder.next("held")
    expect(held.open).toBe(3)
    const waiter = startWorker({ ...common, mode: "wait", name: "waiter" })
    await waiter.next("ready")
    holder.child.kill("SIGKILL")
    await holder.exited
    waiter.child.stdin!.write("go\n")
    const waited = await waiter.next("waited", 10_000)
    expect(waited.ok).toBe(true)
    // It waited for the dead holder's leases to run out (renewed every third of the TTL), then at most a poll.
    expect(waited.ms).toBeGreaterThan(leaseTtlMs / 3 * 2 - 200)
    expect(waited.ms).toBeLessThan(leaseTtlMs + leaseTtlMs / 3 + 300)
    console.log(`fleet: a killed holder's permit taken after ${waited.ms} ms (lease TTL ${leaseTtlMs} ms)`)
  }, 30_000)

  it("a process stalled past its lease loses its permits, closes those connections and does not use them again", async () => {
    const origin = await server(() => 5)
    const keyPrefix = freshPrefix()
    const leaseTtlMs = 900
    const common = { redis: redisUrl(), keyPrefix, cap: 1, leaseTtlMs, origins: [origin.url], idleTimeoutMs: 60_000 }
    const stalled = startWorker({ ...common, mode: "stall", name: "stalled", stallAfterMs: 1_500, stallMs: 2_500, afterMs: 1_500 })
    const other = startWorker({ ...common, mode: "wait", name: "other" })
    await other.next("ready")
    const stalling = await stalled.next("stalling")
    other.child.stdin!.write("go\n")
    // The other process gets the permit while the stalled one cannot even renew it.
    const waited = await other.next("waited", 10_000)
    expect(waited.ok).toBe(true)
    const resumed = await stalled.next("resumed")
    expect(waited.receivedAt).toBeLessThan(resumed.receivedAt)
    const done = await stalled.next("done", 15_000)
    expect(done.failed, JSON.stringify(done.errors)).toBe(0)
    expect(done.ok).toBeGreaterThan(0)
    // The Agent closed the connection whose permit was lost...
    expect(done.closedLost).toBeGreaterThanOrEqual(1)
    const before = origin.connections.filter((c) => c.worker === "stalled" && c.arrivals[0]! < stalling.receivedAt)
    expect(before).toHaveLength(1)
    const old = before[0]!
    // ...and sent nothing on it after the stall: the response that came during the stall is handled
    // before the refresh timer that expired during it (libuv runs a timer after the I/O of the iteration
    // that saw its time pass), but the Agent asks the permit's `valid` before each request on it.
    const late = old.arrivals.filter((t) => t > stalling.receivedAt + 50)
    expect(late).toEqual([])
    expect(old.closedAt).toBeGreaterThan(0)
    expect(old.arrivals.every((t) => t <= old.closedAt)).toBe(true)
    // Once resumed it asked again and was served on a new connection.
    const after = origin.connections.filter((c) => c.worker === "stalled" && c !== old)
    expect(after.length).toBeGreaterThanOrEqual(1)
    console.log(`fleet: stalled process, ${done.closedLost} connection(s) closed for a lost permit, ${done.ok} requests`)
  }, 30_000)
})
