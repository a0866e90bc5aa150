/**
 * The `keepalive` command line: `fetch`, `probe` and `demo`.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import { run } from "./internal/cli/cli.js"

run(process.argv.slice(2)).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(exit._tag === "Success" && typeof exit.value === "number" ? exit.value : 1)
  })
)
