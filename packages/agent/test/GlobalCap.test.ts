/**
 * The global cap's books and its fairness between origins, alone: which
 * origin a freed permit goes to. (`Checkin.test.ts` has when a connection
 * given back is closed to give its permit away; `Pool.test.ts` shows the same
 * rules through the Agent.)
 */
import { describe, expect, it } from "@effect/vitest"
import * as Origin from "@keepalive/agent/Origin"
import { GlobalCap } from "../src/internal/globalCap.js"
import { ListNode } from "../src/internal/list.js"
import { AgentMetrics } from "../src/internal/metrics.js"
import type { Opening } from "../src/internal/opening.js"
import { OriginLine, Waiter } from "../src/internal/originLine.js"

const noMetrics = new AgentMetrics(false)
const neverTimesOut = { queueTimedOut: () => {} }
const untimed = { ended: () => {}, trace: undefined }

/** A request waiting in `line`. */
const waiterOf = (line: OriginLine) => new Waiter(line, -1, Infinity, neverTimesOut, untimed)

/** An origin's line with `open` connections and `waiting` requests in it. */
const lineOf = (host: string, open: number, waiting: number): OriginLine => {
  const origin = Origin.make("http", host)
  const line = new OriginLine(origin, noMetrics.of(origin))
  line.open = open
  for (let i = 0; i < waiting; i++) line.waiters.append(waiterOf(line).node)
  return line
}

describe("GlobalCap", () => {
  it("hands out permits up to its max, and takes back what is given", () => {
    const cap = new GlobalCap(2)
    expect([cap.tryTake(), cap.tryTake(), cap.tryTake()]).toEqual([true, true, false])
    expect(cap.full).toBe(true)
    cap.give()
    expect(cap.full).toBe(false)
    expect(cap.tryTake()).toBe(true)
  })

  it("serves origins with no connection first, then the others in the order they queued, each once", () => {
    const cap = new GlobalCap(1)
    const busy1 = lineOf("busy1", 1, 1)
    const none = lineOf("none", 0, 1)
    const busy2 = lineOf("busy2", 1, 1)
    cap.enqueue(busy1)
    cap.enqueue(none)
    cap.enqueue(busy2)
    cap.enqueue(busy1)
    expect([cap.next(), cap.next(), cap.next(), cap.next()]).toEqual([none, busy1, busy2, undefined])
    expect([busy1.queued, none.queued, busy2.queued]).toEqual([false, false, false])
  })

  it("an origin that loses its last connection while it queues moves ahead, as one with none", () => {
    const cap = new GlobalCap(1)
    const first = lineOf("first", 1, 1)
    const second = lineOf("second", 1, 1)
    cap.enqueue(first)
    cap.enqueue(second)
    second.open = 0
    cap.lostConnection(second)
    expect(cap.next()).toBe(second)
  })

  it("an origin leaves the queue once openings under way serve all its waiters", () => {
    const cap = new GlobalCap(1)
    const line = lineOf("a", 1, 2)
    cap.enqueue(line)
    const openingUnderWay = () => line.openings.append(new ListNode({} as Opening))
    openingUnderWay()
    cap.dequeueIfServed(line)
    expect(line.queued).toBe(true)
    openingUnderWay()
    cap.dequeueIfServed(line)
    expect(line.queued).toBe(false)
    expect(cap.next()).toBeUndefined()
  })
})
