/**
 * The check-in decision alone: what becomes of a connection given back (handed
 * to a waiter, kept idle, or closed and why), from the state of the
 * connection, its origin's line, the pool and the global cap's queue.
 * (`Pool.test.ts` shows the same rules carried out through the Agent.)
 */
import { describe, expect, it } from "@effect/vitest"
import * as Origin from "@keepalive/agent/Origin"
import {
  type Checkin,
  type ConnectionState,
  decideCheckin,
  lastConnectionTurn,
  type MillisClock,
  type PoolState
} from "../src/internal/checkin.js"
import type { CloseReason } from "../src/internal/connection.js"
import { GlobalCap } from "../src/internal/globalCap.js"
import { AgentMetrics } from "../src/internal/metrics.js"
import { OriginLine, Waiter } from "../src/internal/originLine.js"

const noMetrics = new AgentMetrics(false)
const neverTimesOut = { queueTimedOut: () => {} }
const untimed = { ended: () => {}, trace: undefined }

/** An origin's line with `open` connections and `waiting` requests in it. */
const lineOf = (host: string, open: number, waiting: number): OriginLine => {
  const origin = Origin.make("http", host)
  const line = new OriginLine(origin, noMetrics.of(origin))
  line.open = open
  for (let i = 0; i < waiting; i++) line.waiters.append(new Waiter(line, -1, Infinity, neverTimesOut, untimed).node)
  return line
}

interface Given {
  readonly served?: number
  readonly broken?: boolean
  readonly closeReason?: CloseReason
  readonly retireAt?: number
  readonly retiredBy?: CloseReason
}

/** A connection of `line`, as the decision reads it. */
const connectionOf = (line: OriginLine, given: Given = {}): ConnectionState => ({
  connection: { served: given.served ?? 1, broken: given.broken ?? false, closeReason: given.closeReason },
  retireAt: given.retireAt ?? Infinity,
  retiredBy: given.retiredBy ?? "max_age",
  line
})

const persistent: PoolState = { persist: true, closed: false }
const now = 1_000

/** A clock at `now` that counts its reads. */
const clockAtNow = () => {
  const clock = {
    reads: 0,
    unsafeCurrentTimeMillis: () => {
      clock.reads++
      return now
    }
  }
  return clock
}

const decide = (
  pooled: ConnectionState,
  options: { reusable?: boolean; pool?: PoolState; cap?: GlobalCap; clock?: MillisClock } = {}
): Checkin =>
  decideCheckin(pooled, options.reusable ?? true, options.clock ?? clockAtNow(), options.pool ?? persistent, options.cap ?? new GlobalCap(10))

const closedFor = (reason: CloseReason): Checkin => ({ _tag: "Close", reason })

describe("decideCheckin", () => {
  describe("a connection that may carry another request goes to its origin", () => {
    it("to the first request waiting, else idle", () => {
      expect(decide(connectionOf(lineOf("a", 1, 1)))).toEqual({ _tag: "Grant" })
      expect(decide(connectionOf(lineOf("a", 1, 0)))).toEqual({ _tag: "Idle" })
    })
  })

  describe("closed when it may not carry another request, in this order", () => {
    it("not reusable, or broken: for what broke it, else as an error", () => {
      const line = lineOf("a", 1, 1)
      expect(decide(connectionOf(line), { reusable: false })).toEqual(closedFor("error"))
      expect(decide(connectionOf(line, { broken: true, closeReason: "server_close" }))).toEqual(closedFor("server_close"))
      // Broken outranks every later rule.
      expect(
        decide(connectionOf(line, { broken: true, closeReason: "server_close", retireAt: 0 }), { pool: { persist: true, closed: true } })
      ).toEqual(closedFor("server_close"))
    })

    it("the pool shut down", () => {
      expect(decide(connectionOf(lineOf("a", 1, 1), { retireAt: 0 }), { pool: { persist: true, closed: true } })).toEqual(
        closedFor("shutdown")
      )
    })

    it("past its age, or retired: for why it was retired", () => {
      const line = lineOf("a", 1, 1)
      expect(decide(connectionOf(line, { retireAt: now }))).toEqual(closedFor("max_age"))
      expect(decide(connectionOf(line, { retireAt: now + 1 }))).toEqual({ _tag: "Grant" })
      expect(decide(connectionOf(line, { retireAt: 0, retiredBy: "permit_lost" }))).toEqual(closedFor("permit_lost"))
    })

    it("the clock is read only for a connection with an age limit (the common check-in reads none)", () => {
      const line = lineOf("a", 1, 1)
      const clock = clockAtNow()
      decide(connectionOf(line), { clock })
      expect(clock.reads).toBe(0)
      decide(connectionOf(line, { retireAt: now + 1 }), { clock })
      expect(clock.reads).toBe(1)
    })

    it("without persist, once it served a request; one that served none may still serve one", () => {
      const oneShot: PoolState = { persist: false, closed: false }
      const line = lineOf("a", 1, 1)
      expect(decide(connectionOf(line, { served: 1 }), { pool: oneShot })).toEqual(closedFor("max_requests"))
      expect(decide(connectionOf(line, { served: 0 }), { pool: oneShot })).toEqual({ _tag: "Grant" })
      // The global cap's turns are for kept connections only.
      const cap = new GlobalCap(1)
      cap.enqueue(lineOf("waiting", 0, 1))
      expect(decide(connectionOf(lineOf("b", 2, 0), { served: 0 }), { pool: oneShot, cap })).toEqual({ _tag: "Idle" })
    })
  })

  describe("at the global cap, closed to give its permit to another origin (evicted)", () => {
    const evicted = closedFor("evicted")

    it("never while no origin waits for a permit", () => {
      expect(decide(connectionOf(lineOf("a", 1, 0), { served: 100 }))).toEqual({ _tag: "Idle" })
    })

    it("when another origin waits and no request of its own origin wants it", () => {
      const cap = new GlobalCap(1)
      cap.enqueue(lineOf("waiting", 1, 1))
      expect(decide(connectionOf(lineOf("a", 1, 0), { served: 0 }), { cap })).toEqual(evicted)
    })

    it("not when its own origin has waiters and only origins with connections wait", () => {
      const cap = new GlobalCap(1)
      cap.enqueue(lineOf("waiting", 1, 1))
      expect(decide(connectionOf(lineOf("a", 1, 1), { served: 100 }), { cap })).toEqual({ _tag: "Grant" })
    })

    it("for an origin with none, when its own origin has another connection", () => {
      const cap = new GlobalCap(1)
      cap.enqueue(lineOf("starving", 0, 1))
      expect(decide(connectionOf(lineOf("a", 2, 1), { served: 0 }), { cap })).toEqual(evicted)
    })

    it("even its origin's last one, once it served its turn, however long its own line", () => {
      const cap = new GlobalCap(1)
      cap.enqueue(lineOf("starving", 0, 1))
      const own = lineOf("a", 1, 1000)
      expect(decide(connectionOf(own, { served: lastConnectionTurn - 1 }), { cap })).toEqual({ _tag: "Grant" })
      expect(decide(connectionOf(own, { served: lastConnectionTurn }), { cap })).toEqual(evicted)
    })

    it("not for the starving origin itself", () => {
      const cap = new GlobalCap(1)
      const starving = lineOf("starving", 0, 2)
      cap.enqueue(starving)
      starving.open = 1
      expect(decide(connectionOf(starving, { served: 100 }), { cap })).toEqual({ _tag: "Grant" })
    })
  })
})
