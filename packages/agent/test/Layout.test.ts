/**
 * The core's layout, as ARCHITECTURE.md describes it: platform-free, and its
 * internal modules a stack without import cycles, so that each can be read
 * (and tested) after the ones below it.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"

const src = path.join(import.meta.dirname, "..", "src")
const internal = path.join(src, "internal")

/** Relative imports of a file (type-only ones too: a cycle of types is still a cycle to read). */
const importsOf = (file: string): Array<string> => {
  const text = fs.readFileSync(file, "utf8")
  const found: Array<string> = []
  for (const match of text.matchAll(/from\s+"(\.[^"]+)"/g)) {
    found.push(path.resolve(path.dirname(file), match[1]!).replace(/\.js$/, ".ts"))
  }
  return found
}

const files = (dir: string): Array<string> =>
  fs.readdirSync(dir).filter((name) => name.endsWith(".ts")).map((name) => path.join(dir, name))

describe("layout of @keepalive/agent", () => {
  it("imports nothing of node: (the platform lives in @keepalive/node)", () => {
    const offenders = [...files(src), ...files(internal)].filter((file) =>
      /from\s+"node:/.test(fs.readFileSync(file, "utf8"))
    )
    expect(offenders).toEqual([])
  })

  it("the codec (response reader, head rules, request writer) and the retry rule are pure: no Effect, no other module", () => {
    // Http1.ts, their public face, is held to the same.
    const pure = [
      ...["responseReader.ts", "headRules.ts", "requestWriter.ts", "retry.ts"].map((name) => path.join(internal, name)),
      path.join(src, "Http1.ts")
    ]
    for (const file of pure) {
      const text = fs.readFileSync(file, "utf8")
      const packages = [...text.matchAll(/^(?:import|export|\})[^\n]*\sfrom\s+"([^".][^"]*)"/gm)].map((match) => match[1])
      expect(packages, path.basename(file)).toEqual([])
      expect(importsOf(file).filter((to) => !pure.includes(to)), path.basename(file)).toEqual([])
    }
  })

  it("the check-in decision is pure: no Effect, and of the other modules only their types", () => {
    const file = path.join(internal, "checkin.ts")
    const text = fs.readFileSync(file, "utf8")
    expect([...text.matchAll(/^import (?!type )[^\n]*from\s+"([^"]+)"/gm)].map((match) => match[1])).toEqual([])
  })

  it("its internal modules import each other without a cycle", () => {
    const graph = new Map(files(internal).map((file) => [file, importsOf(file).filter((to) => to.startsWith(internal + path.sep))]))
    const cycles: Array<string> = []
    const state = new Map<string, "visiting" | "done">()
    const visit = (file: string, trail: Array<string>): void => {
      if (state.get(file) === "done") return
      if (state.get(file) === "visiting") {
        cycles.push([...trail.slice(trail.indexOf(file)), file].map((f) => path.basename(f)).join(" -> "))
        return
      }
      state.set(file, "visiting")
      for (const to of graph.get(file) ?? []) visit(to, [...trail, file])
      state.set(file, "done")
    }
    for (const file of graph.keys()) visit(file, [])
    expect(cycles).toEqual([])
    // The check sees the imports at all: the Agent's module imports the pool.
    expect(graph.get(path.join(internal, "agent.ts"))).toContain(path.join(internal, "pool.ts"))
  })
})
