/**
 * The `keepalive` command line's help and refusals, run in this process: the
 * CLI's Effect program (`run`, which `bin.ts` runs and exits with), its
 * console captured. What the process does around it (exit codes, streams,
 * plain text through a pipe) is tested on the real process in the
 * top-level `test/cli.test.ts`.
 */
import { describe, expect, it } from "@effect/vitest"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import * as path from "node:path"
import { vi } from "vitest"
import { run } from "../src/internal/cli/cli.js"
import * as Environment from "../src/internal/cli/environment.js"

const version = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, "../package.json"), "utf8")).version as string

interface Ran {
  readonly code: number
  /** What went to the console's log, a string per call, without ANSI colors. */
  readonly log: ReadonlyArray<string>
  /** What went to the console's error, a string per call. */
  readonly error: ReadonlyArray<string>
  /** What was written straight to the process's standard output. */
  readonly stdout: string
}

const withoutAnsi = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, "")

/** Runs the command line in this process. */
const keepalive = (args: ReadonlyArray<string>): Promise<Ran> => {
  const log: Array<string> = []
  const error: Array<string> = []
  let stdout = ""
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    stdout += chunk.toString()
    return true
  })
  const program = Effect.gen(function*() {
    const base = yield* Effect.console
    const capture: Console.Console = Object.assign(Object.create(base), {
      log: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => log.push(withoutAnsi(parts.map(String).join(" ")))),
      error: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => error.push(parts.map(String).join(" ")))
    })
    return yield* Effect.withConsole(run(args), capture)
  })
  return Effect.runPromise(Effect.provide(program, Environment.layer))
    .then((code) => ({ code, log, error, stdout }))
    .finally(() => write.mockRestore())
}

/** The lines of a help text, trimmed. */
const linesOf = (ran: Ran): Array<string> => ran.log.join("\n").split("\n").map((line) => line.trim())

/** The line after USAGE. */
const usageLine = (ran: Ran): string => {
  const lines = linesOf(ran).filter((line) => line !== "")
  return lines[lines.indexOf("USAGE") + 1]!
}

const helps = [
  [["--help"], "keepalive <command>"],
  [[], "keepalive <command>"],
  [["-h"], "keepalive <command>"],
  [["fetch", "--help"], "keepalive fetch "],
  [["probe", "--help"], "keepalive probe "],
  [["demo", "-h"], "keepalive demo "]
] as const

describe("keepalive: help", () => {
  it("the usage lines start with 'keepalive' and the command, without a prompt", async () => {
    for (const [args, start] of helps) {
      const ran = await keepalive(args)
      expect({ args, code: ran.code, error: ran.error }).toEqual({ args, code: 0, error: [] })
      expect(usageLine(ran).startsWith(start)).toBe(true)
      expect(linesOf(ran).filter((line) => line.startsWith("$"))).toEqual([])
    }
    // The whole usage of a subcommand, as the README shows it.
    const demo = await keepalive(["demo", "--help"])
    expect(usageLine(demo)).toBe(
      "keepalive demo [--requests N] [--origins N] [--concurrency N] [--max-per-origin N] [--max-connections N]"
    )
    // Asked of the program and of the subcommand at once, @effect/cli gives the usage with the program's name already.
    expect(usageLine(await keepalive(["--help", "demo", "--help"]))).toBe(usageLine(demo))
  })

  it("the help of each command names its options", async () => {
    const cases = [
      [["--help"], ["fetch", "probe", "demo"]],
      [["fetch", "--help"], ["--input", "--concurrency", "--max-per-origin", "--max-connections", "--idle-timeout", "--no-persist", "--method", "--header", "--data", "--output", "--json", "--proxy", "--noproxy", "--fleet", "--fleet-max-per-origin", "--fleet-key-prefix"]],
      [["probe", "--help"], ["--max-requests", "--max-idle", "--json", "--proxy", "--noproxy"]],
      [["demo", "--help"], ["--requests", "--origins", "--concurrency", "--max-per-origin", "--max-connections"]]
    ] as const
    for (const [args, names] of cases) {
      const help = (await keepalive(args)).log.join("\n")
      for (const name of names) expect(help).toContain(name)
    }
  })

  it("no option's or argument's help says 'A user-defined piece of text.'; each says what it is for", async () => {
    for (const [args] of helps) {
      const ran = await keepalive(args)
      expect(ran.log.join("\n")).not.toContain("user-defined")
    }
    const fetch = linesOf(await keepalive(["fetch", "--help"])).filter((line) => line !== "")
    // An option's or argument's first line of help is its own description.
    const after = (name: string) => fetch[fetch.indexOf(name) + 1]
    expect(after("<URL>...")).toBe("URLs to fetch (http or https)")
    expect(after("--concurrency N")).toBe("requests in flight at once (default 16, 1 to 10000)")
    expect(after("(-H, --header K:V)...")).toBe("a request header; repeatable")
    expect(after("--proxy URL")).toMatch(/^one proxy for every scheme/)
    const probe = linesOf(await keepalive(["probe", "--help"])).filter((line) => line !== "")
    expect(probe[probe.indexOf("<URL>") + 1]).toBe("the server to probe (http or https)")
    expect(probe[probe.indexOf("--max-idle DURATION") + 1]).toMatch(/^how long/)
  })
})

describe("keepalive: --version", () => {
  it("prints the version, one line, before or after a command", async () => {
    for (const args of [["--version"], ["fetch", "--version"], ["demo", "--version"]]) {
      const ran = await keepalive(args)
      expect({ args, ...ran }).toEqual({ args, code: 0, log: [version], error: [], stdout: "" })
    }
  })
})

describe("keepalive: bad input", () => {
  it("an unknown command is named, with the commands there are", async () => {
    const cases = [
      [["frobnicate"], "unknown command 'frobnicate'; commands: fetch, probe, demo"],
      [["fetc", "http://127.0.0.1/"], "unknown command 'fetc'; commands: fetch, probe, demo"],
      [["frobnicate", "fetch"], "unknown command 'frobnicate'; commands: fetch, probe, demo"],
      [["--bogus"], "unknown option '--bogus'; commands: fetch, probe, demo"],
      [["--bogus", "fetch"], "unknown option '--bogus'; commands: fetch, probe, demo"],
      // @effect/cli's own option, listed in the help, is not the unknown word.
      [["--log-level", "debug", "frobnicate"], "unknown command 'frobnicate'; commands: fetch, probe, demo"],
      [["--log-level=debug", "--bogus"], "unknown option '--bogus'; commands: fetch, probe, demo"]
    ] as const
    for (const [args, message] of cases) {
      const ran = await keepalive(args)
      expect({ args, ...ran }).toEqual({ args, code: 2, log: [], error: [`keepalive: ${message}`], stdout: "" })
    }
  })

  it("one line naming what is wrong, exit code 2, and nothing sent", async () => {
    const seen: Array<string> = []
    const server = http.createServer((req, res) => {
      seen.push(req.url!)
      res.end()
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const ok = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/ok`
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
      [["demo", "--requests", "10", "extra"], /unknown argument: 'extra'/],
      [["demo", "--requests", "99999999999999999999"], /--requests must be an integer from 1 to 1000000/],
      [["demo", "--requests", "ten"], /--requests must be an integer/],
      [["fetch", "--idle-timeout", "4 parsecs", ok], /--idle-timeout must be a duration such as 500ms/],
      [["fetch", "--bogus", ok], /unknown option '--bogus' \(argument 1\)/],
      [["fetch", ok, "http://exa mple.com/"], /malformed URL 'http:\/\/exa mple.com\/' \(argument 2\)/],
      [["fetch", ok, "ftp://127.0.0.1/file"], /unsupported scheme 'ftp'.*only http and https/],
      [["fetch", "--input", "/nonexistent/urls.txt"], /cannot read --input \/nonexistent\/urls.txt/],
      [["fetch", "--header", "no colon", ok], /--header must be NAME:VALUE/],
      [["fetch"], /no URL given/],
      [["probe", "gopher://127.0.0.1/"], /unsupported scheme 'gopher'/]
    ]
    try {
      for (const [args, pattern] of cases) {
        const ran = await keepalive(args)
        expect({ args, code: ran.code, log: ran.log, stdout: ran.stdout }).toEqual({ args, code: 2, log: [], stdout: "" })
        expect(ran.error).toHaveLength(1)
        expect(ran.error[0]).toMatch(/^keepalive: [^\n]+$/)
        expect(ran.error[0]).toMatch(pattern)
        expect(ran.error[0]).not.toMatch(/\bat .*:\d+:\d+/)
      }
      expect(seen).toEqual([])
    } finally {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  })
})
