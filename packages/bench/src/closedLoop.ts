/**
 * The closed loop every client runs: a fixed set of workers, each sending its
 * next request as soon as the previous body has been read. A warm-up comes
 * first; only requests that complete inside the measured window count, and CPU
 * time is taken at the window's two edges. (The Effect clients' loop is in
 * `clients/effectRunner.ts`, so that the other clients never load effect.)
 */

export interface Measurement {
  /** Responses completed inside the measured window. */
  readonly completed: number
  /** Every response the process completed: warm-up, window, and those in flight when the window closed. */
  readonly completedTotal: number
  readonly seconds: number
  readonly cpuSeconds: number
  /** The part of `cpuSeconds` spent in the kernel (system calls, page faults). */
  readonly cpuSystemSeconds: number
  readonly errors: number
  readonly firstError?: string
}

type Phase = "idle" | "warmup" | "measuring" | "over"

export class MeasurementWindow {
  readonly warmupMs: number
  readonly measureMs: number
  readonly expectedBodySize: number
  #phase: Phase = "idle"
  #completed = 0
  #completedTotal = 0
  #errors = 0
  #firstError: string | undefined
  #startedAt = 0
  #endedAt = 0
  #cpuAtStart: NodeJS.CpuUsage = { user: 0, system: 0 }
  #cpuAtEnd: NodeJS.CpuUsage = { user: 0, system: 0 }

  constructor(options: { readonly warmupMs: number; readonly measureMs: number; readonly expectedBodySize: number }) {
    this.warmupMs = options.warmupMs
    this.measureMs = options.measureMs
    this.expectedBodySize = options.expectedBodySize
  }

  /** Starts the warm-up; the measured window follows it on its own timer. */
  start(): void {
    this.#phase = "warmup"
    setTimeout(() => {
      this.#cpuAtStart = process.cpuUsage()
      this.#startedAt = performance.now()
      this.#phase = "measuring"
      setTimeout(() => {
        this.#endedAt = performance.now()
        this.#cpuAtEnd = process.cpuUsage()
        this.#phase = "over"
      }, this.measureMs)
    }, this.warmupMs)
  }

  /** When the measured window opened (`performance.now()`); 0 before it did. */
  get startedAt(): number {
    return this.#startedAt
  }

  get isOver(): boolean {
    return this.#phase === "over"
  }

  /** A response whose body was read to the end, `bodySize` bytes long. */
  succeed(bodySize: number): void {
    if (bodySize !== this.expectedBodySize) {
      this.fail(new Error(`body was ${bodySize} bytes, expected ${this.expectedBodySize}`))
    } else {
      this.#completedTotal++
      if (this.#phase === "measuring") this.#completed++
    }
  }

  fail(cause: unknown): void {
    this.#errors++
    this.#firstError ??= describe(cause)
  }

  measurement(): Measurement {
    const cpu = this.#cpuAtEnd.user - this.#cpuAtStart.user + this.#cpuAtEnd.system - this.#cpuAtStart.system
    return {
      completed: this.#completed,
      completedTotal: this.#completedTotal,
      seconds: (this.#endedAt - this.#startedAt) / 1000,
      cpuSeconds: cpu / 1e6,
      cpuSystemSeconds: (this.#cpuAtEnd.system - this.#cpuAtStart.system) / 1e6,
      errors: this.#errors,
      ...(this.#firstError === undefined ? {} : { firstError: this.#firstError })
    }
  }
}

const describe = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code
    return typeof code === "string" ? `${code}: ${cause.message}` : cause.message
  }
  return String(cause)
}

/** Runs one worker per URL until the window is over; `once` resolves to the body size. */
export const closedLoop = async (
  window: MeasurementWindow,
  urls: ReadonlyArray<string>,
  once: (url: string) => Promise<number>
): Promise<void> => {
  const worker = async (url: string) => {
    while (!window.isOver) {
      try {
        window.succeed(await once(url))
      } catch (cause) {
        window.fail(cause)
        // A request that fails at once would otherwise spin on microtasks and starve the timers.
        await new Promise((resolve) => setImmediate(resolve))
      }
    }
  }
  await Promise.all(urls.map(worker))
}

/** A client ready to run: connection pools built, nothing sent yet. */
export interface Runner {
  /** Runs the closed loop until `window` is over; the caller has started the window. */
  readonly run: (window: MeasurementWindow) => Promise<void>
  /** Closes the client's connections. */
  readonly close: () => Promise<void>
  /** Counts the client keeps of its own (keepalive: `Agent.stats`, its permits), read after the run, before `close`. */
  readonly counts?: (window: MeasurementWindow) => Promise<ClientCounts>
}

/** What a keepalive client counted over its whole process, warm-up included. */
export interface ClientCounts {
  /** `Agent.stats.opened`: connections the Agent opened. */
  readonly agentOpened?: number
  /** Fleet clients: `ConnectionPermits.acquire` calls, and how many were granted (the others were called off). */
  readonly permitAcquires?: number
  readonly permitsGranted?: number
  /**
   * Fleet clients: how long the granted acquires called inside the measured
   * window took, in ms (from the call to the grant), and how many there were;
   * the warm-up's first burst of acquires (every connection opened at once,
   * the scripts loaded into Redis) is in `permitWaitAllMs` only.
   */
  readonly permitWaitMs?: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number }
  /** The same over the whole process, warm-up included. */
  readonly permitWaitAllMs?: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number }
}
