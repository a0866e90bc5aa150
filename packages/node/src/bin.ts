/**
 * The `keepalive` command line: `fetch`, `probe` and `demo`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import { run } from "./internal/cli/cli.js"
import * as Environment from "./internal/cli/environment.js"

const fiber = Effect.runFork(Effect.provide(run(process.argv.slice(2)), Environment.layer))
// Ctrl-C (or a TERM) interrupts the run: the Agent's scope closes its connections, the servers stop.
const interrupt = () => fiber.unsafeInterruptAsFork(FiberId.none)
process.once("SIGINT", interrupt)
process.once("SIGTERM", interrupt)
fiber.addObserver((exit) => {
  process.exit(Exit.isSuccess(exit) ? exit.value : Exit.isInterrupted(exit) ? 130 : 1)
})
