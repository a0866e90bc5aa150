import * as Agent from "@keepalive/agent/Agent"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type { Recorder } from "./summary.js"

const width = 24

/**
 * The live progress line on stderr: done/total, rate, open connections and
 * waiting requests (and connections awaiting a fleet's permit), redrawn in place with `\r` ten times a second and
 * cleared at the end. Disabled, it draws nothing and only lets lines through.
 *
 * @internal
 */
export class Progress {
  done = 0
  readonly #started = performance.now()

  constructor(
    readonly enabled: boolean,
    readonly total: number,
    /** Samples the stats for the summary's peaks; none when nobody reads them. */
    readonly recorder: Recorder | undefined,
    readonly label = "",
    /** Whether connections wait for a fleet's permits: the line says how many do. */
    readonly fleet = false
  ) {}

  /** Runs `effect` with the line drawn while it runs (sampling stats into the recorder), and cleared after. */
  run<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | Agent.Agent> {
    const tick = Effect.map(Agent.stats, (stats) => {
      this.recorder?.sample(stats)
      if (this.enabled) this.#draw(stats)
    })
    return Effect.scoped(Effect.zipRight(
      Effect.forkScoped(Effect.repeat(tick, Schedule.spaced("100 millis"))),
      Effect.ensuring(effect, Effect.sync(() => this.#clear()))
    ))
  }

  /** Writes a line to stderr above the progress line. */
  line(text: string): void {
    process.stderr.write(this.enabled ? `\r\x1b[K${text}\n` : `${text}\n`)
  }

  #draw(stats: Agent.Stats): void {
    const seconds = (performance.now() - this.#started) / 1000
    const rate = seconds > 0 ? Math.round(this.done / seconds) : 0
    const filled = this.total === 0 ? width : Math.floor(this.done / this.total * width)
    const bar = "#".repeat(filled) + "-".repeat(width - filled)
    process.stderr.write(
      `\r${this.label}[${bar}] ${this.done}/${this.total}  ${rate} req/s  open ${stats.open}  waiting ${stats.waiting}${
        this.fleet ? `  awaiting permit ${stats.awaitingPermit}` : ""
      }\x1b[K`
    )
  }

  #clear(): void {
    if (this.enabled) process.stderr.write("\r\x1b[K")
  }
}
