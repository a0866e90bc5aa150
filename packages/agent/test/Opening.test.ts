/**
 * The Opener alone: a connection opened as a scoped resource in its own
 * scope, holding a permit of the global Semaphore from before its fiber's
 * first step until the pool closes it, and the fiber that opened it keeping
 * it (its keeper), which runs the scope's finalizers when the pool closes it
 * and ends with it, at shutdown too.
 */
import { describe, expect, it } from "@effect/vitest"
import type { AgentError } from "@keepalive/agent/AgentError"
import type { Transport } from "@keepalive/agent/Connector"
import * as Origin from "@keepalive/agent/Origin"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type { Connection } from "../src/internal/connection.js"
import { type Keeper, Opener, type OpeningOutcome } from "../src/internal/opening.js"
import { Watchdog } from "../src/internal/watchdog.js"
import { settle } from "./support/agent.js"

const origin = Origin.make("http", "a.test")

/** A transport that counts its destroys. */
class FakeTransport implements Transport {
  destroyed = 0
  readonly remoteAddress = undefined
  listen(): void {}
  write(): boolean {
    return true
  }
  pause(): void {}
  resume(): void {}
  destroy(): void {
    this.destroyed++
  }
}

/** What the pool would be told. */
class Outcomes implements OpeningOutcome<string> {
  readonly keepers: Array<Keeper> = []
  readonly failures: Array<Exit.Exit<unknown, AgentError>> = []
  connected(_context: string, _connection: Connection, keeper: Keeper): void {
    this.keepers.push(keeper)
  }
  openFailed(_context: string, exit: Exit.Exit<unknown, AgentError>): void {
    this.failures.push(exit)
  }
}

/**
 * An Opener with a Semaphore of `max` permits over a connector that makes a
 * `FakeTransport` and adds `finalizer` (if any) to the connection's scope;
 * from its `hangFrom`th connect on, the connect never ends.
 */
const openerWith = (max: number, finalizer?: Effect.Effect<void>, hangFrom = Infinity) =>
  Effect.gen(function*() {
    const semaphore = yield* Effect.makeSemaphore(max)
    const runtime = yield* Effect.runtime<never>()
    const clock = yield* Clock.clockWith(Effect.succeed)
    const transports: Array<FakeTransport> = []
    let connects = 0
    const opener = new Opener({
      connector: {
        connect: () =>
          Effect.suspend(() => {
            if (++connects >= hangFrom) return Effect.never
            const transport = new FakeTransport()
            transports.push(transport)
            const connected = Effect.succeed<Transport>(transport)
            return finalizer === undefined
              ? connected
              : Effect.zipRight(Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizer(scope, finalizer)), connected)
          }),
        yieldToIo: Effect.void
      },
      permits: semaphore,
      runtime,
      watchdog: new Watchdog(clock, Runtime.runFork(runtime)),
      connectMillis: Infinity,
      routes: undefined,
      fleet: undefined,
      makeConnection: () => ({}) as Connection
    })
    /** Whether all `n` permits of the Semaphore are free. */
    const free = (n: number) => Effect.map(semaphore.withPermitsIfAvailable(n)(Effect.void), Option.isSome)
    return { opener, semaphore, transports, connects: () => connects, free }
  })

describe("Opener: the global Semaphore's permit", () => {
  it.effect("is taken when the opening starts: a connection called off before its fiber's first step connects nothing and gives it back", () =>
    Effect.gen(function*() {
      const { connects, free, opener } = yield* openerWith(1)
      const outcomes = new Outcomes()
      const opening = opener.open(origin, outcomes, "a")
      // Held already, before the fiber ran a step.
      expect(yield* free(1)).toBe(false)
      opener.cancel(opening)
      yield* Fiber.await(opening.fiber)
      expect(connects()).toBe(0)
      expect(outcomes.keepers).toEqual([])
      expect(outcomes.failures.map((exit) => Exit.isInterrupted(exit))).toEqual([true])
      expect(yield* free(1)).toBe(true)
    }))

  it.effect("is waited for when none is free, and the connection opens once one is given back", () =>
    Effect.gen(function*() {
      const { connects, free, opener, semaphore } = yield* openerWith(1)
      yield* semaphore.take(1)
      const outcomes = new Outcomes()
      opener.open(origin, outcomes, "a")
      yield* settle
      expect(connects()).toBe(0)
      yield* semaphore.release(1)
      yield* settle
      expect(outcomes.keepers.length).toBe(1)
      expect(yield* free(1)).toBe(false)
      opener.closeScope(outcomes.keepers[0]!)
      yield* settle
      expect(yield* free(1)).toBe(true)
    }))

  it.effect("comes back as the pool closes the connection, before its keeper runs the scope's finalizers", () =>
    Effect.gen(function*() {
      let finalized = 0
      const { free, opener, transports } = yield* openerWith(1, Effect.sync(() => void finalized++))
      const outcomes = new Outcomes()
      const opening = opener.open(origin, outcomes, "a")
      yield* settle
      const keeper = outcomes.keepers[0]!
      // The fiber that opened it still runs: it keeps the connection.
      expect(opening.fiber.unsafePoll()).toBe(null)
      opener.closeScope(keeper)
      // The next opening may take the permit at once.
      expect(yield* free(1)).toBe(true)
      expect(finalized).toBe(0)
      yield* Fiber.await(opening.fiber)
      expect({ finalized, destroyed: transports[0]!.destroyed }).toEqual({ finalized: 1, destroyed: 1 })
      expect(yield* free(1)).toBe(true)
    }))
})

describe("Opener: keepers at shutdown", () => {
  it.effect("the openings under way are interrupted, and not the keepers of connections open", () =>
    Effect.gen(function*() {
      const { opener } = yield* openerWith(2, undefined, 2)
      const outcomes = new Outcomes()
      const open = opener.open(origin, outcomes, "a")
      yield* settle
      const connecting = opener.open(origin, outcomes, "b")
      yield* settle
      expect([outcomes.keepers.length, connecting.fiber.unsafePoll()]).toEqual([1, null])
      yield* opener.interruptAll
      yield* settle
      // Its connect interrupted, its fiber told the pool and ended.
      expect(outcomes.failures.map(Exit.isInterrupted)).toEqual([true])
      expect(connecting.fiber.unsafePoll()).not.toBe(null)
      // The open connection's keeper still keeps it, until its scope closes.
      expect(open.fiber.unsafePoll()).toBe(null)
      yield* opener.closeScopes
      yield* settle
      expect(open.fiber.unsafePoll()).not.toBe(null)
    }))

  it.effect("closing the scopes left closes those of connections still open and ends their keepers", () =>
    Effect.gen(function*() {
      let finalized = 0
      const { free, opener, transports } = yield* openerWith(2, Effect.sync(() => void finalized++))
      const outcomes = new Outcomes()
      const openings = [opener.open(origin, outcomes, "a"), opener.open(origin, outcomes, "b")]
      yield* settle
      expect(outcomes.keepers.length).toBe(2)
      yield* opener.closeScopes
      expect({ finalized, destroyed: transports.map((t) => t.destroyed) }).toEqual({ finalized: 2, destroyed: [1, 1] })
      expect(yield* free(2)).toBe(true)
      yield* settle
      expect(openings.map((opening) => opening.fiber.unsafePoll() !== null)).toEqual([true, true])
    }))

  it.effect("closing the scopes left waits for a keeper still running the finalizers of a connection the pool closed", () =>
    Effect.gen(function*() {
      const slow = yield* Deferred.make<void>()
      let finalized = 0
      const { opener } = yield* openerWith(1, Effect.zipRight(Deferred.await(slow), Effect.sync(() => void finalized++)))
      const outcomes = new Outcomes()
      opener.open(origin, outcomes, "a")
      yield* settle
      opener.closeScope(outcomes.keepers[0]!)
      yield* settle
      const closing = yield* Effect.fork(opener.closeScopes)
      yield* settle
      expect(closing.unsafePoll()).toBe(null)
      yield* Deferred.succeed(slow, undefined)
      yield* Fiber.join(closing)
      expect(finalized).toBe(1)
    }))
})
