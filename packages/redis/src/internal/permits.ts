/**
 * The `ConnectionPermits` service on Redis: this process's side of the
 * fleet's leases and tickets (what it holds, who waits), the refresh loop,
 * the fleet's messages, and the fallback while Redis is unavailable.
 *
 * @internal
 */
import { AgentError } from "@keepalive/agent/AgentError"
import type { Permit, PermitHolder } from "@keepalive/agent/ConnectionPermits"
import { ConnectionPermits } from "@keepalive/agent/ConnectionPermits"
import type { Origin } from "@keepalive/agent/Origin"
import type * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import { Redis } from "ioredis"
import { randomBytes } from "node:crypto"
import type * as RedisPermits from "../RedisPermits.js"
import * as Config from "./config.js"
import type { RedisPermitsError } from "./error.js"
import * as Keys from "./keys.js"
import { PermitsMetrics, type OriginMetrics } from "./metrics.js"
import * as Scripts from "./scripts.js"

type Client = Redis & Scripts.ScriptCommands<Promise<unknown>>
type Pipeline = ReturnType<Redis["pipeline"]> & Scripts.ScriptCommands<Pipeline>

/** A call to Redis that failed or took longer than the store timeout. */
class StoreError {
  readonly _tag = "StoreError"
  constructor(readonly operation: string, readonly cause: unknown) {}
  get detail(): string {
    const cause = this.cause
    return cause instanceof Error ? cause.message : String(cause)
  }
}

/** A permit this process holds, and the lease behind it. */
class Held implements Permit {
  state: "held" | "lost" | "released" = "held"
  readonly release: Effect.Effect<void>
  /** Whether its lease still holds by the local clock (see `Store.#valid`). */
  readonly valid: () => boolean
  constructor(
    readonly id: string,
    readonly entry: Entry,
    readonly holder: PermitHolder,
    /** Whether Redis has its lease (false: granted under the local fallback, not yet registered). */
    public registered: boolean,
    /** When the last call that renewed its lease was sent (local monotonic ms). */
    public confirmedAt: number,
    release: (held: Held) => void,
    valid: (held: Held) => boolean
  ) {
    this.release = Effect.sync(() => release(this))
    this.valid = () => valid(this)
  }
}

/** One acquire under way. Its id names its ticket, and the lease it gets. */
class Waiter {
  /** Redis may have its ticket (or a lease granted to it): to withdraw if it gives up. */
  queued = false
  /** Woken since it last looked: look again before waiting. */
  woken = false
  /** Its last acquire sent to Redis: a withdrawal waits for it to settle. */
  asking: Promise<unknown> | undefined = undefined
  wake: Deferred.Deferred<void> | undefined
  held: Held | undefined
  constructor(readonly id: string) {}
}

/** What this process knows of one origin: the permits it holds, its acquires under way. */
class Entry {
  readonly held = new Map<string, Held>()
  readonly waiters: Array<Waiter> = []
  constructor(readonly origin: Origin, readonly keys: Keys.OriginKeys, readonly metrics: OriginMetrics) {}
}

const settled = (): void => {}

const wakeWaiter = (waiter: Waiter): void => {
  waiter.woken = true
  if (waiter.wake !== undefined) Deferred.unsafeDone(waiter.wake, Exit.void)
}

/** The service of one layer: one process's view of the fleet. */
class RedisPermitsService {
  readonly #config: Config.Resolved
  readonly #client: Client
  readonly #clock: Clock.Clock
  readonly #runtime: Runtime.Runtime<never>
  readonly #metrics = new PermitsMetrics()
  readonly #entries = new Map<string, Entry>()
  readonly #processId = randomBytes(8).toString("hex")
  readonly #processes: string
  readonly #channel: string
  readonly #pending = new Set<Promise<unknown>>()
  #counter = 0
  #available = true
  #lastProblem = ""
  #liveProcesses = 1
  /** While Redis is back but not every process seen before the outage is: since when (local ms). */
  #settlingSince: number | undefined = undefined

  constructor(config: Config.Resolved, client: Client, subscriber: Redis, clock: Clock.Clock, runtime: Runtime.Runtime<never>) {
    this.#config = config
    this.#client = client
    this.#clock = clock
    this.#runtime = runtime
    this.#processes = Keys.processesKey(config.keyPrefix)
    this.#channel = Keys.channel(config.keyPrefix)
    subscriber.on("message", (_channel: string, message: string) => this.#message(message))
  }

  get channel(): string {
    return this.#channel
  }

  /**
   * Whether a permit still holds without asking Redis: not lost or released,
   * and its lease renewed within `leaseTtl` by the local clock, the rule of
   * `refresh` (while Redis is unavailable, leases are not timed). The Agent
   * asks before each request, so a process that stalled past its lease uses
   * the connection for nothing more even before its refresh timer ran.
   */
  #valid(held: Held): boolean {
    if (held.state !== "held") return false
    if (!this.#available || !held.registered) return true
    return this.#now() - held.confirmedAt < this.#config.leaseTtlMillis
  }

  /** Local monotonic time, ms: only ever compared with itself. */
  #now(): number {
    return Number(this.#clock.unsafeCurrentTimeNanos()) / 1e6
  }

  #entry(origin: Origin): Entry {
    let entry = this.#entries.get(origin.key)
    if (entry === undefined) {
      entry = new Entry(origin, Keys.originKeys(this.#config.keyPrefix, origin.key), this.#metrics.of(origin))
      this.#entries.set(origin.key, entry)
    }
    return entry
  }

  #forget(entry: Entry): void {
    if (entry.held.size === 0 && entry.waiters.length === 0) this.#entries.delete(entry.origin.key)
  }

  #call<A>(operation: string, f: () => Promise<A>): Effect.Effect<A, StoreError> {
    return Effect.tryPromise({ try: f, catch: (cause) => new StoreError(operation, cause) }).pipe(
      Effect.timeoutFail({
        duration: this.#config.storeTimeoutMillis,
        onTimeout: () => new StoreError(operation, `no answer within ${this.#config.storeTimeoutMillis} ms`)
      }),
      Effect.tapError(() => Effect.sync(() => this.#metrics.storeError(operation)))
    )
  }

  /** Sends a call nobody waits for (a release must not wait on the network); shutdown waits for them. */
  #background(operation: string, f: () => Promise<unknown>): void {
    const sent = f().catch(() => this.#metrics.storeError(operation))
    this.#pending.add(sent)
    sent.finally(() => this.#pending.delete(sent))
  }

  acquire(origin: Origin, holder: PermitHolder): Effect.Effect<Permit, AgentError> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const entry = this.#entry(origin)
        const waiter = new Waiter(`${this.#processId}:${(this.#counter++).toString(36)}`)
        entry.waiters.push(waiter)
        const start = this.#now()
        return restore(this.#wait(entry, waiter, holder)).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              entry.metrics.waited((this.#now() - start) / 1000)
              entry.waiters.splice(entry.waiters.indexOf(waiter), 1)
              if (Exit.isFailure(exit)) this.#abandon(entry, waiter)
              this.#forget(entry)
            })
          )
        )
      })
    )
  }

  /** Asks, then waits to be woken (a message, a release, a change of mode) or for the poll, until granted. */
  #wait(entry: Entry, waiter: Waiter, holder: PermitHolder): Effect.Effect<Held, AgentError> {
    const self = this
    const config = this.#config
    const keys = entry.keys
    return Effect.gen(function*() {
      let announce = false
      while (true) {
        waiter.woken = false
        if (self.#available) {
          const sentAt = self.#now()
          waiter.queued = true
          const result = yield* Effect.either(self.#call("acquire", () =>
            (waiter.asking = self.#client.keepalivePermitsAcquire(
              keys.leases, keys.queue, keys.tickets, keys.seq,
              waiter.id, config.maxConnectionsPerOrigin, config.leaseTtlMillis,
              self.#channel, entry.origin.key, announce ? "1" : "0"
            ))
          ))
          if (Either.isLeft(result)) {
            self.#unavailable(result.left)
            continue
          }
          const [granted, count] = result.right as [number, number]
          if (granted === 1) {
            const held = self.#grant(entry, waiter, holder, true, sentAt)
            // More permits free: the next in this process's line may ask at once.
            if (count < config.maxConnectionsPerOrigin && entry.waiters.length > 1) wakeWaiter(entry.waiters[1]!)
            return held
          }
        } else if (config.onUnavailable === "fail") {
          return yield* Effect.fail(
            new AgentError({
              reason: "Unavailable",
              origin: entry.origin.key,
              detail: `Redis is unavailable (${self.#lastProblem}) and onUnavailable is "fail"`
            })
          )
        } else {
          const free = Config.localCap(config.maxConnectionsPerOrigin, self.#liveProcesses) - entry.held.size
          if (entry.waiters.indexOf(waiter) < free) return self.#grant(entry, waiter, holder, false, self.#now())
        }
        if (!waiter.woken) {
          const wake = yield* Deferred.make<void>()
          waiter.wake = wake
          const polled = yield* Deferred.await(wake).pipe(
            Effect.timeoutTo({ duration: config.pollMillis, onSuccess: () => false, onTimeout: () => true })
          )
          waiter.wake = undefined
          // A waiter that asks again on its own says again that it waits: a holder whose connection was busy
          // when it first heard may have an idle one now.
          announce = polled
        } else {
          announce = false
        }
      }
    })
  }

  #grant(entry: Entry, waiter: Waiter, holder: PermitHolder, registered: boolean, sentAt: number): Held {
    const held = new Held(waiter.id, entry, holder, registered, sentAt, (h) => this.#release(h), (h) => this.#valid(h))
    entry.held.set(held.id, held)
    waiter.held = held
    entry.metrics.held(1)
    return held
  }

  /** An acquire gave up (interrupted, failed): it holds nothing, in Redis either. */
  #abandon(entry: Entry, waiter: Waiter): void {
    if (waiter.held !== undefined) {
      this.#release(waiter.held)
    } else if (waiter.queued) {
      // Sent once its acquire settled, so Redis runs it after: a lease granted meanwhile goes too. Sent at
      // once, it could run first: ioredis sends again, as EVAL, an acquire Redis answered NOSCRIPT.
      const keys = entry.keys
      const asking = waiter.asking ?? Promise.resolve()
      this.#background("release", () =>
        asking.then(settled, settled).then(() =>
          this.#client.keepalivePermitsRelease(keys.leases, keys.queue, keys.tickets, keys.seq, waiter.id, this.#channel, entry.origin.key)
        )
      )
    }
    if (entry.waiters.length > 0) wakeWaiter(entry.waiters[0]!)
  }

  #release(held: Held): void {
    if (held.state === "released") return
    const entry = held.entry
    if (held.state === "held") {
      entry.held.delete(held.id)
      entry.metrics.held(-1)
    }
    held.state = "released"
    const keys = entry.keys
    this.#background("release", () =>
      this.#client.keepalivePermitsRelease(keys.leases, keys.queue, keys.tickets, keys.seq, held.id, this.#channel, entry.origin.key)
    )
    // Under the local fallback nobody publishes: the permit is this process's to hand on.
    if (!this.#available) for (const waiter of entry.waiters) wakeWaiter(waiter)
    this.#forget(entry)
  }

  #lose(held: Held): void {
    if (held.state !== "held") return
    held.state = "lost"
    held.entry.held.delete(held.id)
    held.entry.metrics.held(-1)
    held.entry.metrics.lost()
    held.holder.lost()
  }

  #message(message: string): void {
    const parsed = Keys.parseMessage(message)
    if (parsed === undefined) return
    const entry = this.#entries.get(parsed.origin)
    if (entry === undefined) return
    if (parsed.kind === "freed") {
      // The first of this process's line asks; if it gets a permit and more are free, it wakes the next.
      if (entry.waiters.length > 0) wakeWaiter(entry.waiters[0]!)
    } else {
      for (const held of entry.held.values()) held.holder.wanted()
    }
  }

  #unavailable(error: StoreError): void {
    this.#lastProblem = `${error.operation}: ${error.detail}`
    if (!this.#available) return
    this.#available = false
    this.#metrics.fallback(true)
    const what = this.#config.onUnavailable === "local"
      ? `each origin is capped at ${Config.localCap(this.#config.maxConnectionsPerOrigin, this.#liveProcesses)} connections in this process (its share among ${this.#liveProcesses} live processes) until Redis answers`
      : "acquires fail with Unavailable until Redis answers"
    Runtime.runFork(this.#runtime)(Effect.logWarning(`@keepalive/redis: Redis is unavailable (${this.#lastProblem}); ${what}`))
    this.#wakeAll()
  }

  /**
   * Whether a Redis that answers again may rule: once as many processes as
   * were alive before the outage have registered their permits again (or a
   * whole `leaseTtl` passed, time enough for any live one to). Until then the
   * local cap goes on: the first process back would otherwise find Redis
   * empty and grant what the others still hold.
   */
  #settled(live: number, now: number): boolean {
    this.#settlingSince ??= now
    if (live < this.#liveProcesses && now - this.#settlingSince < this.#config.leaseTtlMillis) return false
    this.#settlingSince = undefined
    return true
  }

  #recovered(): void {
    this.#available = true
    this.#metrics.fallback(false)
    Runtime.runFork(this.#runtime)(Effect.logInfo("@keepalive/redis: Redis answers again; back to the fleet's cap"))
    this.#wakeAll()
  }

  #wakeAll(): void {
    for (const entry of this.#entries.values()) for (const waiter of entry.waiters) wakeWaiter(waiter)
  }

  /**
   * Renews every lease and ticket of this process and its heartbeat, in one
   * pipelined call. A lease Redis no longer has is lost; so is one not renewed
   * for a whole `leaseTtl` by this process's own clock (it stalled: others may
   * hold it now, whatever Redis would answer next). After an outage, the
   * permits held are registered again, whatever the count.
   */
  refresh(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const config = this.#config
      const sentAt = this.#now()
      const adopt = !this.#available
      if (!adopt) {
        for (const entry of this.#entries.values()) {
          for (const held of entry.held.values()) {
            if (held.registered && sentAt - held.confirmedAt >= config.leaseTtlMillis) this.#lose(held)
          }
        }
      }
      const pipeline = this.#client.pipeline() as Pipeline
      pipeline.keepalivePermitsHeartbeat(this.#processes, this.#processId, config.leaseTtlMillis)
      const sent: Array<ReadonlyArray<Held>> = []
      for (const entry of this.#entries.values()) {
        const leases = [...entry.held.values()].filter((held) => adopt || held.registered)
        const tickets = entry.waiters.filter((waiter) => waiter.queued && waiter.held === undefined).map((waiter) => waiter.id)
        if (leases.length === 0 && tickets.length === 0) continue
        const keys = entry.keys
        pipeline.keepalivePermitsRefresh(
          keys.leases, keys.queue, keys.tickets, keys.seq,
          config.leaseTtlMillis, adopt ? "1" : "0", config.maxConnectionsPerOrigin, leases.length, ...leases.map((held) => held.id), ...tickets
        )
        sent.push(leases)
      }
      return this.#call("refresh", () => pipeline.exec()).pipe(
        Effect.flatMap((results) => {
          const failed = results?.find(([error]) => error !== null)
          return results === null || failed !== undefined
            ? Effect.fail(new StoreError("refresh", failed?.[0] ?? "pipeline discarded"))
            : Effect.succeed(results)
        }),
        Effect.match({
          onFailure: (error) => this.#unavailable(error),
          onSuccess: (results) => {
            const live = Number(results[0]![1])
            sent.forEach((leases, i) => {
              const lost = new Set(results[i + 1]![1] as ReadonlyArray<string>)
              for (const held of leases) {
                if (lost.has(held.id)) {
                  this.#lose(held)
                } else if (held.state === "held") {
                  held.registered = true
                  held.confirmedAt = sentAt
                }
              }
            })
            if (!adopt) {
              this.#liveProcesses = live
            } else if (this.#settled(live, sentAt)) {
              this.#liveProcesses = live
              this.#recovered()
            }
          }
        })
      )
    })
  }

  /** Runs `refresh` every third of `leaseTtl`, for the layer's life. */
  refreshLoop(): Effect.Effect<never> {
    return Effect.sleep(this.#config.refreshMillis).pipe(Effect.zipRight(this.refresh()), Effect.forever)
  }

  /** At shutdown: gives back what is still held, waits for the calls under way, says this process left. */
  shutdown(): Effect.Effect<void> {
    return Effect.suspend(() => {
      for (const entry of this.#entries.values()) for (const held of [...entry.held.values()]) this.#release(held)
      const pending = Promise.allSettled([...this.#pending])
      return this.#call("release", () => pending).pipe(
        Effect.zipRight(this.#call("leave", () => this.#client.keepalivePermitsLeave(this.#processes, this.#processId))),
        Effect.ignore
      )
    })
  }
}

/** ioredis' options for a client the layer makes: a call fails at once while disconnected, and it reconnects forever. */
const ownClientOptions = (config: Config.Resolved) => ({
  lazyConnect: true,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  connectTimeout: Math.max(config.storeTimeoutMillis, 500),
  retryStrategy: (times: number) => Math.min(50 * times, config.refreshMillis, 1_000)
})

const quit = (client: Redis): Effect.Effect<void> =>
  Effect.promise(() => client.quit().catch(() => undefined)).pipe(
    Effect.timeout(1_000),
    Effect.ignore,
    Effect.ensuring(Effect.sync(() => client.disconnect()))
  )

/** The client the service calls: the caller's, or one made from the URL and closed with the scope. */
const client = (config: Config.Resolved) =>
  typeof config.redis === "string"
    ? Effect.acquireRelease(
      Effect.sync(() => {
        const made = new Redis(config.redis as string, ownClientOptions(config))
        // Failures are seen by the calls that fail; without a listener ioredis would print each.
        made.on("error", () => {})
        return made
      }),
      quit
    ).pipe(
      Effect.tap((made) =>
        Effect.promise(() => made.connect().catch(() => undefined)).pipe(Effect.timeout(config.storeTimeoutMillis), Effect.ignore)
      )
    )
    : Effect.succeed(config.redis)

/** The connection in subscriber mode, always the layer's own: a duplicate of the client. */
const subscriber = (main: Redis) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const sub = main.duplicate({ lazyConnect: false, enableOfflineQueue: true, maxRetriesPerRequest: null })
      sub.on("error", () => {})
      return sub
    }),
    (sub) => Effect.sync(() => sub.disconnect())
  )

/** @internal */
export const make = (config: Config.Resolved): Effect.Effect<ConnectionPermits["Type"], never, import("effect/Scope").Scope> =>
  Effect.gen(function*() {
    const main = yield* client(config)
    Scripts.register(main)
    const sub = yield* subscriber(main)
    const clock = yield* Effect.clock
    const runtime = yield* Effect.runtime<never>()
    const service = new RedisPermitsService(config, main as Client, sub, clock, runtime)
    // Lost or late, a message costs a waiter at most its poll.
    sub.subscribe(service.channel).catch(() => {})
    yield* Effect.addFinalizer(() => service.shutdown())
    yield* service.refresh()
    yield* Effect.forkScoped(service.refreshLoop())
    return ConnectionPermits.of({ acquire: (origin, holder) => service.acquire(origin, holder) })
  })

/** @internal */
export const layer = (config: RedisPermits.Config): Layer.Layer<ConnectionPermits, RedisPermitsError> =>
  Layer.scoped(ConnectionPermits, Effect.flatMap(Config.resolve(config), make))
