import { describe, expect, it } from "@effect/vitest"
import * as v8 from "node:v8"
import { List, ListNode } from "../src/internal/list.js"
import { gc } from "./support/gc.js"

const oldSpaceUsed = () => v8.getHeapSpaceStatistics().find((space) => space.space_name === "old_space")!.space_used_size

describe("List", () => {
  it("keeps values oldest first and removes any node in place", () => {
    const list = new List<string>()
    const a = list.push("a")
    const b = list.push("b")
    const c = list.push("c")
    expect([list.size, list.first, list.last]).toEqual([3, "a", "c"])
    expect(list.remove(b)).toBe(true)
    expect(list.nodes().map((node) => node.value)).toEqual(["a", "c"])
    // A node is removed once; a node of another list is not this list's.
    expect(list.remove(b)).toBe(false)
    expect(new List<string>().remove(a)).toBe(false)
    expect(list.remove(a)).toBe(true)
    expect([list.size, list.first, list.last]).toEqual([1, "c", "c"])
    expect(list.remove(c)).toBe(true)
    expect([list.size, list.first, list.last]).toEqual([0, undefined, undefined])
    list.push("d")
    expect(list.nodes().map((node) => node.value)).toEqual(["d"])
  })

  it("a node kept for good is appended again: it moves to the end, or leaves the list it was in", () => {
    const list = new List<string>()
    const other = new List<string>()
    const a = new ListNode("a")
    list.append(a)
    list.push("b")
    list.append(a)
    expect([list.size, list.first, list.last]).toEqual([2, "b", "a"])
    other.append(a)
    expect([list.size, list.first, list.last, other.size, other.first]).toEqual([1, "b", "b", 1, "a"])
    expect(list.remove(a)).toBe(false)
    expect(other.remove(a)).toBe(true)
    expect(a.list).toBeUndefined()
  })

  it("lists its nodes as they were: removing some meanwhile is safe", () => {
    const list = new List<number>()
    for (let i = 0; i < 5; i++) list.push(i)
    const seen: Array<number> = []
    for (const node of list.nodes()) {
      if (node.list === undefined) continue
      seen.push(node.value)
      // Removing this node and the next one while going through them.
      list.remove(node)
      if (node.value === 1) list.remove(list.nodes()[0])
    }
    expect(seen).toEqual([0, 1, 3, 4])
    expect(list.size).toBe(0)
    list.push(7)
    list.push(8)
    list.clear()
    expect([list.size, list.first]).toEqual([0, undefined])
  })

  // Why the pool and the watchdog keep their waiters, openings, fibers and
  // deadlines in lists (ARCHITECTURE.md, "Lists, not long-lived Sets or
  // Maps"): a value that passes through a long-lived list, removed at once,
  // must not be kept by minor GCs and promoted with all it references.
  it("a value removed from a long-lived list is not kept by minor GCs", () => {
    const list = new List<object>()
    // Long-lived: in old space, like the pool's.
    gc({ type: "major" })
    gc({ type: "major" })
    const promotedThroughList = () => {
      gc({ type: "major" })
      gc({ type: "major" })
      const before = oldSpaceUsed()
      for (let i = 0; i < 20_000; i++) {
        list.remove(list.push({ payload: new Array(120).fill(i) }))
        if (i % 1000 === 999) gc({ type: "minor" })
      }
      return oldSpaceUsed() - before
    }
    // The better of two: whatever else lands in old space meanwhile (code the
    // JIT made, in a suite running files in parallel) is not the list's.
    const promoted = Math.min(promotedThroughList(), promotedThroughList())
    // The values kept, even only until the next rehash as a Set keeps them,
    // would promote several times this; a margin for other work meanwhile.
    expect(promoted).toBeLessThan(512 * 1024)
  })
})
