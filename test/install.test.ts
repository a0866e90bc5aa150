/**
 * keepalive as a user gets it: both packages packed (`pnpm pack`, which
 * builds them), installed with plain `npm install` into an empty project
 * outside the workspace, a program importing them run under plain `node`
 * (ESM) against a local server, and type-checked with `moduleResolution`
 * `NodeNext` and `Bundler`; and the `keepalive` command run from it. Needs
 * the npm registry for effect, @effect/platform and the command's dependencies.
 */
import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"

const root = path.join(import.meta.dirname, "..")
const pnpm = ["-y", "pnpm@10.34.8"]

/**
 * Runs a command to its end and gives its stdout. Not `execFileSync`: a test
 * worker blocked for the minutes a pack or an install takes cannot answer the
 * test runner, whose calls to it then time out.
 */
const run = async (command: string, args: ReadonlyArray<string>, cwd: string): Promise<string> =>
  (await promisify(execFile)(command, args, { cwd, encoding: "utf8", timeout: 240_000, maxBuffer: 64 * 1024 * 1024 })).stdout

const program = `
import { HttpClient } from "@effect/platform"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import { Effect } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

let sockets = 0
const server = createServer((request, response) => response.end(\`hello \${request.url}\`))
server.on("connection", () => sockets++)
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
const base = \`http://127.0.0.1:\${(server.address() as AddressInfo).port}\`
const program = Effect.gen(function*() {
  const a = yield* Agent.requestString(\`\${base}/a\`)
  const b = yield* HttpClient.get(\`\${base}/b\`).pipe(Effect.flatMap((response) => response.text))
  return { a, b, stats: yield* Agent.stats }
})
const result = await Effect.runPromise(program.pipe(Effect.provide(NodeAgent.layer())))
server.close()
console.log(JSON.stringify({ ...result, sockets }))
`

/** The program as plain JavaScript: the TypeScript above without its types. */
const javascript = program
  .replace('import type { AddressInfo } from "node:net"\n', "")
  .replace("new Promise<void>", "new Promise")
  .replace("(server.address() as AddressInfo).port", "server.address().port")

const tsconfig = (module: string, moduleResolution: string) =>
  JSON.stringify({
    compilerOptions: { module, moduleResolution, target: "ES2022", strict: true, noEmit: true, skipLibCheck: false, types: ["node"] },
    files: ["app.ts"]
  })

describe("installed from its tarballs into a project outside the workspace", () => {
  it("runs under plain node and type-checks with NodeNext and Bundler resolution", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-install-"))
    try {
      const packs = path.join(dir, "packs")
      for (const pkg of ["agent", "node"]) {
        await run("npx", [...pnpm, "pack", "--pack-destination", packs], path.join(root, "packages", pkg))
      }
      const tarballs = fs.readdirSync(packs).sort()
      expect(tarballs).toEqual(["keepalive-agent-0.1.0.tgz", "keepalive-node-0.1.0.tgz"])
      // What a tarball holds: built JS, declarations with their maps, sources for the maps, README, LICENSE; no tests.
      const listed = (await run("tar", ["-tzf", path.join(packs, "keepalive-agent-0.1.0.tgz")], dir)).split("\n")
      for (const file of ["package/dist/index.js", "package/dist/index.d.ts", "package/dist/index.d.ts.map", "package/dist/index.js.map", "package/README.md", "package/LICENSE"]) {
        expect(listed).toContain(file)
      }
      expect(listed.filter((file) => file.includes("test") || file.includes("tsconfig"))).toEqual([])

      const app = path.join(dir, "app")
      fs.mkdirSync(app)
      fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }))
      await run("npm", [
        "install", "--no-audit", "--no-fund", "--loglevel=error",
        ...tarballs.map((tarball) => path.join(packs, tarball)),
        "effect@3.22.4", "@effect/platform@0.97.2", "typescript@5.9.3", "@types/node@20"
      ], app)
      expect(fs.readFileSync(path.join(app, "node_modules", "@keepalive", "node", "package.json"), "utf8")).not.toContain("workspace:")
      expect(fs.existsSync(path.join(app, "node_modules", "tsx"))).toBe(false)
      // The command line needs no @effect/platform-node, whose peers (cluster, rpc, sql) npm would install too.
      for (const heavy of ["platform-node", "cluster", "rpc", "sql"]) {
        expect(fs.existsSync(path.join(app, "node_modules", "@effect", heavy))).toBe(false)
      }

      fs.writeFileSync(path.join(app, "app.mjs"), javascript)
      const output = JSON.parse((await run(process.execPath, ["app.mjs"], app)).trim())
      expect(output).toMatchObject({
        a: "hello /a",
        b: "hello /b",
        stats: { opened: 1, reused: 1, busy: 0, waiting: 0 },
        sockets: 1
      })

      // The command line runs from the installed package's built files and its dependencies.
      const bin = path.join(app, "node_modules", ".bin", "keepalive")
      expect((await run(bin, ["--version"], app)).trim()).toBe("0.1.0")
      expect(await run(bin, ["fetch", "--help"], app)).toContain("--max-per-origin")

      fs.writeFileSync(path.join(app, "app.ts"), program)
      for (const [module, resolution] of [["NodeNext", "NodeNext"], ["ESNext", "Bundler"]] as const) {
        fs.writeFileSync(path.join(app, "tsconfig.json"), tsconfig(module, resolution))
        await run(path.join(app, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], app)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 300_000)
})
