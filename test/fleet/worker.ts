/**
 * One process of a test fleet: `NodeAgent.layer` with `RedisPermits.layer`,
 * run from the sources by `test/fleet.test.ts`
 * (`node --import tsx --conditions=keepalive-source`). Its settings come as
 * JSON in argv[2]; it writes JSON lines on stdout: `{"event": ...}`.
 *
 * Modes:
 * - `load`: `fibers` fibers send `requests` GETs in all, spread over
 *   `origins`, then it reports its outcomes.
 * - `hold`: opens `hold` connections to the first origin at once (concurrent
 *   requests), says `held`, and keeps them idle until killed.
 * - `wait`: builds its layers, says `ready`, and on a line on stdin sends one
 *   request to the first origin and reports how long it took.
 * - `stall`: sends requests one after another to the first origin; after
 *   `stallAfterMs` it blocks its event loop for `stallMs`, then goes on for
 *   `afterMs` and reports which of its connections carried what, and the
 *   connections the Agent closed because their permit was lost.
 *
 * Every request carries `x-worker: <name>` so that the servers can tell whose
 * connection is whose.
 */
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Agent } from "@keepalive/agent"
import { NodeAgent } from "@keepalive/node"
import { RedisPermits } from "@keepalive/redis"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as readline from "node:readline"

interface Settings {
  readonly mode: "load" | "hold" | "wait" | "stall"
  readonly name: string
  readonly redis: string
  readonly keyPrefix: string
  readonly cap: number
  readonly leaseTtlMs: number
  readonly origins: ReadonlyArray<string>
  readonly idleTimeoutMs?: number
  readonly fibers?: number
  readonly requests?: number
  readonly hold?: number
  readonly stallAfterMs?: number
  readonly stallMs?: number
  readonly afterMs?: number
}

const settings = JSON.parse(process.argv[2]!) as Settings

const say = (event: string, fields: Record<string, unknown> = {}) =>
  Effect.sync(() => process.stdout.write(`${JSON.stringify({ event, name: settings.name, now: Date.now(), ...fields })}\n`))

const get = (url: string) =>
  HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("x-worker", settings.name))

/** One request; its outcome and whether it went on a reused connection. */
const send = (url: string) =>
  get(url).pipe(
    Agent.requestWith((response) =>
      Effect.map(response.text, () => ({
        status: response.status,
        reused: Option.match(Agent.connectionOf(response), { onNone: () => false, onSome: (c) => c.reused })
      }))
    )
  )

const load = Effect.gen(function*() {
  const fibers = settings.fibers ?? 16
  const total = settings.requests ?? 100
  let next = 0
  let ok = 0
  let reused = 0
  const errors: Array<string> = []
  yield* say("started")
  yield* Effect.forEach(Array.from({ length: fibers }), () =>
    Effect.gen(function*() {
      while (next < total) {
        const i = next++
        const origin = settings.origins[i % settings.origins.length]!
        const result = yield* Effect.either(send(`${origin}/r${i}`))
        if (result._tag === "Right" && result.right.status === 200) {
          ok++
          if (result.right.reused) reused++
        } else {
          errors.push(result._tag === "Left" ? result.left.message : `status ${result.right.status}`)
        }
      }
    }), { concurrency: "unbounded", discard: true })
  yield* say("done", { ok, reused, failed: errors.length, errors: errors.slice(0, 5) })
})

const hold = Effect.gen(function*() {
  const count = settings.hold ?? 1
  yield* Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => send(`${settings.origins[0]}/hold${i}`), {
    concurrency: "unbounded",
    discard: true
  })
  yield* say("held", { open: (yield* Agent.stats).open })
  return yield* Effect.never
})

const wait = Effect.gen(function*() {
  yield* say("ready")
  yield* Effect.async<void>((resume) => {
    const lines = readline.createInterface({ input: process.stdin })
    lines.once("line", () => {
      lines.close()
      resume(Effect.void)
    })
  })
  const start = Date.now()
  const result = yield* Effect.either(send(`${settings.origins[0]}/wait`))
  yield* say("waited", { ms: Date.now() - start, ok: result._tag === "Right" })
})

const closedBy = (reason: string) =>
  Metric.snapshot.pipe(Effect.map((pairs) =>
    pairs
      .filter((pair) => pair.metricKey.name === Agent.metricNames.connectionsClosed)
      .filter((pair) => [...pair.metricKey.tags].some((tag) => tag.key === "reason" && tag.value === reason))
      .reduce((sum, pair) => sum + Number((pair.metricState as unknown as { readonly count: number }).count), 0)
  ))

const stall = Effect.gen(function*() {
  const url = `${settings.origins[0]}/stall`
  let end = Infinity
  let ok = 0
  const errors: Array<string> = []
  // The stall comes from elsewhere in the process (a timer), while the requests wait on their sockets.
  yield* Effect.fork(Effect.gen(function*() {
    yield* Effect.sleep(settings.stallAfterMs ?? 1_000)
    yield* say("stalling")
    const until = Date.now() + (settings.stallMs ?? 2_000)
    while (Date.now() < until) {
      // the event loop is blocked: no timer, no socket, no refresh
    }
    end = Date.now() + (settings.afterMs ?? 1_500)
    yield* say("resumed")
  }))
  while (Date.now() < end) {
    const result = yield* Effect.either(send(url))
    if (result._tag === "Right") ok++
    else errors.push(result.left.message)
  }
  yield* say("done", { ok, failed: errors.length, errors: errors.slice(0, 5), closedLost: yield* closedBy("permit_lost") })
})

const program = { load, hold, wait, stall }[settings.mode]

const layer = NodeAgent.layer({
  maxConnectionsPerOrigin: settings.cap,
  idleTimeout: settings.idleTimeoutMs ?? 30_000,
  shutdownTimeout: 1_000
}).pipe(
  Layer.provide(RedisPermits.layer({
    redis: settings.redis,
    maxConnectionsPerOrigin: settings.cap,
    leaseTtl: settings.leaseTtlMs,
    keyPrefix: settings.keyPrefix
  })),
  Layer.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => process.stderr.write(`${String(message)}\n`))))
)

Effect.runPromise(program.pipe(Effect.provide(layer))).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
