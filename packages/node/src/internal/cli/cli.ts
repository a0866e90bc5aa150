import type * as CliApp from "@effect/cli/CliApp"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as Demo from "./demo.js"
import * as Fetch from "./fetch.js"
import * as Help from "./help.js"
import { UsageError, Unsuccessful } from "./options.js"
import * as Probe from "./probe.js"
import { messageOf } from "./summary.js"

/**
 * The exit codes: 0 all good, 1 a request failed or a check did not hold, 2 bad input.
 *
 * @internal
 */
export const ExitCode = { ok: 0, unsuccessful: 1, usage: 2 } as const

const name = "keepalive"

/** The subcommands' names, in the order the help lists them. */
const commandNames: ReadonlyArray<string> = [
  ...Command.getNames(Fetch.command),
  ...Command.getNames(Probe.command),
  ...Command.getNames(Demo.command)
]

const config = CliConfig.defaultConfig

const version = (): string => {
  // packages/node/package.json, the same relative path from src/internal/cli/ and from dist/internal/cli/.
  const manifest = JSON.parse(fs.readFileSync(new URL("../../../package.json", import.meta.url), "utf8"))
  return String(manifest.version)
}

/** `keepalive` alone: its help, printed as `run` prints `--help` (@effect/cli would print its own). */
const rootHelp = (): Effect.Effect<void> =>
  Effect.suspend(() =>
    Console.log(Help.render({ name, version: version() }, Command.getUsage(command), Command.getHelp(command, config), config))
  )

/**
 * The `keepalive` command and its subcommands.
 *
 * @internal
 */
export const command = Command.make(name, {}, rootHelp).pipe(
  Command.withDescription("An HTTP/1.1 client Agent with persistent connections, from the command line."),
  Command.withSubcommands([Fetch.command, Probe.command, Demo.command])
)

const withoutAnsi = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, "")

const oneLine = (text: string): string =>
  withoutAnsi(text).split("\n").map((line) => line.trim()).filter((line) => line !== "").join(" ")

/** @effect/cli's own `--log-level LEVEL` (or `--log-level=LEVEL`), which it takes out before it matches a subcommand. */
const isLogLevel = (args: ReadonlyArray<string>, i: number): boolean =>
  args[i] === "--log-level" || args[i]!.startsWith("--log-level=") || args[i - 1] === "--log-level"

/**
 * What a command line @effect/cli refused says, in one line. @effect/cli
 * names no word when none of the subcommands matches ("Invalid subcommand
 * for keepalive - use one of …"): the word is found here, the first
 * argument that is neither a command's name nor the log level.
 */
const describe = (error: ValidationError.ValidationError, args: ReadonlyArray<string>): string => {
  if (ValidationError.isCommandMismatch(error)) {
    const word = args.find((arg, i) => !commandNames.includes(arg) && !isLogLevel(args, i))
    if (word !== undefined) {
      return `unknown ${word.startsWith("-") ? "option" : "command"} '${word}'; commands: ${commandNames.join(", ")}`
    }
  }
  const text = oneLine(HelpDoc.toAnsiText(error.error))
  return text === "" ? `invalid command line (see ${name} --help)` : text
}

/**
 * Runs the command line (the arguments after the executable) and gives the
 * exit code. Help and the version are printed here rather than by
 * @effect/cli (see `Help.render`); a command line @effect/cli refuses is
 * one line on stderr instead of its block of help text.
 *
 * @internal
 */
export const run = (args: ReadonlyArray<string>): Effect.Effect<number, never, CliApp.CliApp.Environment> =>
  Effect.gen(function*() {
    const console = yield* Effect.console
    // Help text comes colored; a pipe or a file gets it plain.
    const plain = process.stdout.isTTY !== true || process.env.NO_COLOR !== undefined
    const print = (text: string) => console.log(plain ? withoutAnsi(text) : text)
    const quiet: Console.Console = Object.assign(Object.create(console), {
      // @effect/cli prints its refusals as help text; `describe` says them instead.
      error: () => Effect.void,
      log: (...parts: ReadonlyArray<unknown>) =>
        console.log(...parts.map((part) => plain && typeof part === "string" ? withoutAnsi(part) : part))
    })
    const complain = (message: string, code: number) => Effect.as(console.error(`${name}: ${message}`), code)
    const line = withoutSeparator(args)
    const app = { name, version: version() }
    return yield* Descriptor.parse(command.descriptor, [name, ...line], config).pipe(
      Effect.flatMap((directive) => {
        if (directive._tag === "BuiltIn" && directive.option._tag === "ShowHelp") {
          return print(Help.render(app, directive.option.usage, directive.option.helpDoc, config))
        }
        if (directive._tag === "BuiltIn" && directive.option._tag === "ShowVersion") {
          return console.log(app.version)
        }
        return Command.run(command, app)(["node", name, ...line]).pipe(Effect.withConsole(quiet))
      }),
      Effect.as(ExitCode.ok),
      Effect.catchAll((error): Effect.Effect<number> => {
        if (ValidationError.isValidationError(error)) return complain(describe(error, line), ExitCode.usage)
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
