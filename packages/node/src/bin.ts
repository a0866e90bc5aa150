/**
 * The `keepalive` command line.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { parseArgs } from "node:util"
import { demo } from "./internal/demo.js"

const usage = `usage: keepalive demo [--requests N] [--origins N] [--concurrency N]
                      [--max-per-origin N] [--max-connections N] [--no-persist]

  demo   start local HTTP servers, send requests through the Agent, and print
         requests, connections opened, the reuse ratio and the caps the servers saw`

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      requests: { type: "string", default: "400" },
      origins: { type: "string", default: "3" },
      concurrency: { type: "string", default: "16" },
      "max-per-origin": { type: "string", default: "2" },
      "max-connections": { type: "string", default: "100" },
      "no-persist": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false }
    }
  })
  if (values.help || positionals[0] !== "demo") {
    console.log(usage)
    return values.help ? 0 : 2
  }
  const int = (name: string, value: string) => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`)
    return n
  }
  const ok = await Effect.runPromise(demo({
    requests: int("requests", values.requests),
    origins: int("origins", values.origins),
    concurrency: int("concurrency", values.concurrency),
    maxConnectionsPerOrigin: int("max-per-origin", values["max-per-origin"]),
    maxConnections: int("max-connections", values["max-connections"]),
    persist: !values["no-persist"]
  }))
  return ok ? 0 : 1
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error instanceof Error ? error.message : error)
    process.exit(1)
  }
)
