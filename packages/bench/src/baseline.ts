/**
 * The `BENCH_BASELINE` rows: another checkout's compiled `@keepalive/agent`
 * and `@keepalive/node`, driven by this harness's own compiled client. Both
 * packages' `dist` are copied into a temp dir beside a copy of this harness's
 * `dist`, and that dir's `node_modules` links every other package to this
 * checkout's copy of it. So `keepalive` and `keepalive@baseline` differ in
 * keepalive's build and nothing else: the same closed loop, the same
 * scenarios, one instance of the same effect and @effect/platform per process.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface BaselineHarness {
  /** The client script to start for a baseline row. */
  readonly clientScript: string
  readonly remove: () => void
}

const keepalivePackages = ["agent", "node"] as const
/** Copied too when the baseline has it built: `keepalive-fleet@baseline` rows need it, and fail without. */
const optionalPackages = ["redis"] as const
type PackageName = (typeof keepalivePackages)[number] | (typeof optionalPackages)[number]

/** The compiled entry of a keepalive package in a checkout. */
const entryOf = (checkout: string, name: PackageName) =>
  path.join(checkout, "packages", name, "dist", "index.js")

/** Undefined when `checkout` holds both compiled packages, else what is missing. */
export const missingBuild = (checkout: string): string | undefined => {
  const missing = keepalivePackages.map((name) => entryOf(checkout, name)).filter((entry) => !fs.existsSync(entry))
  return missing.length === 0 ? undefined : `no ${missing.join(" or ")} (run pnpm install && pnpm build there)`
}

const dependencyNames = (packageJson: string): ReadonlyArray<string> => {
  const manifest = JSON.parse(fs.readFileSync(packageJson, "utf8")) as {
    readonly dependencies?: Record<string, string>
    readonly peerDependencies?: Record<string, string>
  }
  return [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]
}

/**
 * Builds the baseline's harness in a temp dir. `benchDir` is this checkout's
 * `packages/bench`, compiled; `checkout` the baseline, with both packages
 * compiled (see `missingBuild`).
 */
export const prepareBaseline = (benchDir: string, checkout: string): BaselineHarness => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-bench-baseline-"))
  const modules = path.join(dir, "node_modules")
  fs.copyFileSync(path.join(benchDir, "package.json"), path.join(dir, "package.json"))
  fs.cpSync(path.join(benchDir, "dist"), path.join(dir, "dist"), { recursive: true })
  const copied: ReadonlyArray<PackageName> = [
    ...keepalivePackages,
    ...optionalPackages.filter((name) => fs.existsSync(entryOf(checkout, name)))
  ]
  // Real copies, not links: node resolves a module's imports from its real path, which must be under `dir`.
  for (const name of copied) {
    const from = path.join(checkout, "packages", name)
    const to = path.join(modules, "@keepalive", name)
    fs.mkdirSync(to, { recursive: true })
    fs.copyFileSync(path.join(from, "package.json"), path.join(to, "package.json"))
    fs.cpSync(path.join(from, "dist"), path.join(to, "dist"), { recursive: true })
  }
  const names = new Set([
    ...dependencyNames(path.join(benchDir, "package.json")),
    ...copied.flatMap((name) => dependencyNames(path.join(checkout, "packages", name, "package.json")))
  ])
  const checkoutOfBench = path.join(benchDir, "..", "..")
  for (const name of names) {
    if (name.startsWith("@keepalive/")) continue
    // This checkout's copy first, so that effect and @effect/* are the harness's own; the baseline's only for what this checkout lacks.
    const candidates = [
      path.join(benchDir, "node_modules", name),
      ...copied.map((pkg) => path.join(checkoutOfBench, "packages", pkg, "node_modules", name)),
      ...copied.map((pkg) => path.join(checkout, "packages", pkg, "node_modules", name))
    ]
    const found = candidates.find((candidate) => fs.existsSync(candidate))
    if (found === undefined) continue
    const link = path.join(modules, name)
    fs.mkdirSync(path.dirname(link), { recursive: true })
    fs.symlinkSync(fs.realpathSync(found), link, "dir")
  }
  return {
    clientScript: path.join(dir, "dist", "client.js"),
    remove: () => fs.rmSync(dir, { recursive: true, force: true })
  }
}
