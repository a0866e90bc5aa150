import * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as Demo from "./demo.js"
import * as Fetch from "./fetch.js"
import { UsageError, Unsuccessful } from "./options.js"
import * as Probe from "./probe.js"
import { messageOf } from "./summary.js"

/**
 * The exit codes: 0 all good, 1 a request failed or a check did not hold, 2 bad input.
 *
 * @internal
 */
export const ExitCode = { ok: 0, unsuccessful: 1, usage: 2 } as const

/**
 * The `keepalive` command and its subcommands.
 *
 * @internal
 */
export const command = Command.make("keepalive").pipe(
  Command.withDescription("An HTTP/1.1 client Agent with persistent connections, from the command line."),
  Command.withSubcommands([Fetch.command, Probe.command, Demo.command])
)

const version = (): string => {
  // The same relative path from src/bin.ts and from dist/bin.js.
  const manifest = JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8"))
  return String(manifest.version)
}

const withoutAnsi = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, "")

const oneLine = (text: string): string =>
  withoutAnsi(text).split("\n").map((line) => line.trim()).filter((line) => line !== "").join(" ")

/**
 * Runs the command line (the arguments after the executable) and gives the
 * exit code. @effect/cli prints a parse error as a block of help text on
 * stderr; that is caught here and printed as one line instead.
 *
 * @internal
 */
export const run = (args: ReadonlyArray<string>): Effect.Effect<number, never, CliApp.CliApp.Environment> =>
  Effect.gen(function*() {
    const console = yield* Effect.console
    const printed: Array<string> = []
    // Help text comes colored; a pipe or a file gets it plain.
    const plain = process.stdout.isTTY !== true || process.env.NO_COLOR !== undefined
    const quiet: Console.Console = Object.assign(Object.create(console), {
      error: (...parts: ReadonlyArray<unknown>) => Effect.sync(() => printed.push(parts.map(String).join(" "))),
      log: (...parts: ReadonlyArray<unknown>) =>
        console.log(...parts.map((part) => plain && typeof part === "string" ? withoutAnsi(part) : part))
    })
    const cli = Command.run(command, { name: "keepalive", version: version() })
    const complain = (message: string, code: number) =>
      Effect.as(Effect.sync(() => process.stderr.write(`keepalive: ${message}\n`)), code)
    return yield* cli(["node", "keepalive", ...withoutSeparator(args)]).pipe(
      Effect.withConsole(quiet),
      Effect.as(ExitCode.ok),
      Effect.catchAll((error): Effect.Effect<number> => {
        if (ValidationError.isValidationError(error)) {
          const text = oneLine(printed.join("\n"))
          return complain(text === "" ? "invalid command line (see keepalive --help)" : text, ExitCode.usage)
        }
        if (error instanceof UsageError) return complain(error.message, ExitCode.usage)
        if (error instanceof Unsuccessful) return Effect.succeed(ExitCode.unsuccessful)
        return complain(messageOf(error), ExitCode.unsuccessful)
      }),
      Effect.catchAllDefect((defect) => complain(messageOf(defect), ExitCode.unsuccessful))
    )
  })

/**
 * `pnpm demo -- --requests 50` passes the `--` on; @effect/cli would then
 * read `--requests` as an argument. A `--` before or right after the
 * subcommand is dropped: no command here takes arguments that look like options.
 */
const withoutSeparator = (args: ReadonlyArray<string>): ReadonlyArray<string> => {
  const at = args.slice(0, 2).indexOf("--")
  return at < 0 ? args : [...args.slice(0, at), ...args.slice(at + 1)]
}
