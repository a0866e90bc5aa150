import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Terminal from "@effect/platform/Terminal"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * The terminal @effect/cli prints help through: standard output. No command
 * here prompts (@effect/cli reads the terminal only in prompts, which only
 * `--wizard` shows): reading is refused with a message.
 */
const terminal: Terminal.Terminal = {
  columns: Effect.sync(() => process.stdout.columns ?? 80),
  rows: Effect.sync(() => process.stdout.rows ?? 24),
  isTTY: Effect.sync(() => process.stdout.isTTY === true),
  readInput: Effect.dieMessage("keepalive takes no interactive input: pass every option on the command line"),
  readLine: Effect.dieMessage("keepalive takes no interactive input: pass every option on the command line"),
  display: (text) =>
    Effect.try({
      try: () => void process.stdout.write(text),
      catch: (cause) =>
        new PlatformError.SystemError({ module: "Stream", method: "display", reason: "Unknown", cause })
    })
}

/**
 * What @effect/cli needs to run (`CliApp.Environment`), without
 * @effect/platform-node and the peers it would make every user of this
 * package install: platform's own `Path`, a file system that reads nothing
 * (no option here is a path @effect/cli opens), and the terminal above.
 *
 * @internal
 */
export const layer: Layer.Layer<FileSystem.FileSystem | Path.Path | Terminal.Terminal> = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(Terminal.Terminal, terminal)
)
