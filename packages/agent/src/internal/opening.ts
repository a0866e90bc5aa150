import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as Scope from "effect/Scope"
import type { AgentError } from "../AgentError.js"
import type { ConnectionPermits } from "../ConnectionPermits.js"
import type { Connector, Transport } from "../Connector.js"
import type { Origin } from "../Origin.js"
import type { Connection } from "./connection.js"
import { List, ListNode } from "./list.js"
import { Holder, type PermitOwner } from "./permits.js"
import { direct, type Routes } from "./routes.js"
import { asCloseable, ConnectionScope } from "./scope.js"
import { SemaphorePermits } from "./semaphore.js"
import type { Trace } from "./tracing.js"
import type { Deadline, Watchdog } from "./watchdog.js"

/** An opening fiber starts on the scheduler's next turn, not inside the pool's call. */
const startLater: Runtime.RunForkOptions = { immediate: false }

/**
 * A connection being opened: its keeper (whose fiber opens it), and its
 * connect deadline, which the Agent's Watchdog watches. A deadline past
 * interrupts the fiber; for it an interruption is then a connect timeout.
 *
 * @internal
 */
export class Opening implements Deadline {
  timedOut = false
  /** Its place in its origin's openings. */
  readonly node = new ListNode<Opening>(this)
  readonly watchNode: ListNode<Deadline> = new ListNode<Deadline>(this)
  /** Clock millis; Infinity while it waits for a fleet permit (the connect is not timed until it has one). */
  deadline: number
  /** Waiting for a fleet permit (`ConnectionPermits`): nothing is being connected yet. */
  awaitingPermit = false
  constructor(readonly keeper: Keeper, deadline: number) {
    this.deadline = deadline
  }
  /** The fiber that opens it (its keeper's). */
  get fiber(): Fiber.RuntimeFiber<void> {
    return this.keeper.fiber
  }
  expire(): void {
    this.timedOut = true
    // Lands once the connect is under way (the permit is taken uninterruptibly).
    this.cancel()
  }
  /** Calls it off: nobody waits for it any more (a connection it still makes is the caller's to close). */
  cancel(): void {
    this.fiber.unsafeInterruptAsFork(FiberId.none)
  }
}

/**
 * What a connection's scope gives back when it closes, in one finalizer: its
 * transport, destroyed, then its fleet permit (its holder's), if any, and its
 * permit of the global Semaphore (each even if what comes before fails). Made
 * once the Semaphore's permit is taken.
 */
class Resources {
  transport: Transport | undefined = undefined
  /** Whether it still holds its permit of the global Semaphore. */
  #permit = true
  /** `holder`: the holder of its fleet permit (once given), when permits are held outside the Agent. */
  constructor(readonly permits: SemaphorePermits, readonly holder: Holder<unknown> | undefined) {}

  /**
   * The Semaphore's permit back now, ahead of the finalizer, when that needs
   * no step: called once the pool destroyed the connection's transport, so
   * the permit counts no live socket (what the connector's own finalizers
   * still do destroys it again). With a fleet permit still held it waits, to
   * go back after it as the finalizer gives them.
   */
  releaseNow(): void {
    if (this.#permit && this.holder?.permit === undefined && this.permits.tryReleaseNow()) this.#permit = false
  }

  readonly finalize = (): Effect.Effect<unknown> => {
    const transport = this.transport
    this.transport = undefined
    const fleetPermit = this.holder?.permit
    if (fleetPermit !== undefined) this.holder!.permit = undefined
    const permit = this.#permit
    this.#permit = false
    const releasePermit = permit ? this.permits.release : Effect.void
    const release = fleetPermit === undefined ? releasePermit : Effect.ensuring(fleetPermit.release, releasePermit)
    if (transport !== undefined) {
      try {
        transport.destroy()
      } catch (defect) {
        return Effect.zipRight(release, Effect.die(defect))
      }
    }
    return release
  }
}

/**
 * A connection's scope and its keeper: the fiber that opened the connection
 * waits, once it is open, until the pool closes it, and then runs the
 * scope's finalizers (rather than a fiber forked for each close). Its place
 * in the Opener's list of scopes open or being opened.
 *
 * @internal
 */
export class Keeper {
  readonly scope = new ConnectionScope()
  readonly node = new ListNode<Keeper>(this)
  /** What the scope gives back, once its Semaphore permit is taken. */
  resources: Resources | undefined = undefined
  /** Its fiber (set as it is forked, before its first step). */
  fiber!: Fiber.RuntimeFiber<void>
  /** True until its opening settled, connected or not: an opening under way, which shutdown interrupts. */
  connecting = true
  #resume: ((effect: Effect.Effect<void>) => void) | undefined = undefined
  /** The run of the closed scope's finalizers, handed over before the keeper waited for it. */
  #closing: Effect.Effect<void> | undefined = undefined

  /** The keeper's wait, ended by `closed` with the finalizers' run. No canceler: the keeper is uninterruptible then. */
  readonly keep: Effect.Effect<void> = Effect.async<void>((resume) => {
    const closing = this.#closing
    if (closing === undefined) return void (this.#resume = resume)
    this.#closing = undefined
    resume(closing)
  })

  /** Hands the run of its closed scope's finalizers to the keeper. */
  closed(run: Effect.Effect<void>): void {
    const resume = this.#resume
    if (resume === undefined) return void (this.#closing = run)
    this.#resume = undefined
    resume(run)
  }
}

/**
 * How an opening ended, for the pool, with the `context` it was opened for:
 * connected (with the connection and the keeper of the scope it lives in), or failed
 * (interrupted only when called off or shut down; `timedOut` when its connect
 * deadline stopped it).
 *
 * @internal
 */
export interface OpeningOutcome<C> {
  /** `holder`: the holder of its fleet permit, when permits are held outside the Agent. */
  connected(
    context: C,
    connection: Connection,
    keeper: Keeper,
    opening: Opening | undefined,
    holder: Holder<unknown> | undefined
  ): void
  openFailed(context: C, exit: Exit.Exit<unknown, AgentError>, timedOut: boolean, opening: Opening | undefined): void
}

/** What the Opener needs from the Agent that owns it. @internal */
export interface OpenerEnv {
  readonly connector: Context.Tag.Service<typeof Connector>
  /** One permit per open connection, held from connect to close. */
  readonly permits: Effect.Semaphore
  /** The Agent's runtime: openings run in it, with their connection's scope added. */
  readonly runtime: Runtime.Runtime<never>
  /** Times out connects. */
  readonly watchdog: Watchdog
  /** Time to open a connection, in millis (Infinity: none). */
  readonly connectMillis: number
  /** The route of each origin, when some go through a proxy. */
  readonly routes: Routes | undefined
  /** Permits held outside the Agent (a fleet's), asked for before each connect, when there is such a service. */
  readonly fleet: Context.Tag.Service<typeof ConnectionPermits> | undefined
  /** Makes the Connection for a transport. */
  readonly makeConnection: (origin: Origin, transport: Transport) => Connection
}

/**
 * Opens connections, each a scoped resource in a scope of its own:
 * acquire = a permit of the global Effect `Semaphore`, then the connector's
 * connect; release = the transport destroyed, then the permit back. The
 * fiber that opens a connection keeps it (`Keeper`): it closes the scope once
 * the pool closed the connection. The Opener keeps the scopes of the
 * connections open or being opened, and closes those left when the Agent's
 * scope closes (`closeScopes`).
 *
 * A connection's scope is not a child of the Agent's (`Scope.fork` would put
 * and take a finalizer per connection in the Agent's scope's Map, which keeps
 * each connection's whole graph from minor GCs: see list.ts), and it is a
 * `ConnectionScope`, not `Scope.make()` (see scope.ts).
 *
 * @internal
 */
export class Opener {
  readonly #env: OpenerEnv
  readonly #permits: SemaphorePermits
  /** The Agent's runtime flags, uninterruptible: what an opening fiber starts with. */
  readonly #uninterruptible: RuntimeFlags.RuntimeFlags
  /** The keepers of the connections open or being opened. */
  readonly #keepers = new List<Keeper>()
  #scopesClosed = false
  /** Keepers of connections the pool closed, still running their scope's finalizers: awaited by `closeScopes`. */
  readonly #closing = new List<Keeper>()
  /** The key of the proxy connections to `origin` go through, if any. */
  proxyOf(origin: Origin): string | undefined {
    return this.#env.routes?.of(origin).proxy?.key
  }

  /** Whether connections need a fleet permit (`ConnectionPermits`) first. */
  get withPermits(): boolean {
    return this.#env.fleet !== undefined
  }

  /** Who acts on what fleet permits' holders are told (the pool sets itself). */
  permitOwner: PermitOwner<unknown> | undefined = undefined

  constructor(env: OpenerEnv) {
    this.#env = env
    this.#permits = new SemaphorePermits(env.permits)
    this.#uninterruptible = RuntimeFlags.disable(env.runtime.runtimeFlags, RuntimeFlags.Interruption)
  }

  /**
   * Opens a connection to `origin`, traced under `trace` when the request it
   * is for is; the caller holds a permit of the cap's books for it. Its
   * fiber starts after this returns: `outcome` is told later, never inside
   * the call.
   */
  open<C>(origin: Origin, outcome: OpeningOutcome<C>, context: C, trace?: Trace): Opening {
    const env = this.#env
    const keeper = this.#newKeeper()
    const scope = keeper.scope
    // The connector runs in the connection's scope: the opening fiber starts
    // with it in its context (Scope.extend would copy the fiber's FiberRefs
    // twice per connection, setting and restoring the context).
    const route = env.routes === undefined ? direct : env.routes.of(origin)
    const connector = env.connector.connect(origin, route.connectOptions)
    const transport = trace === undefined ? connector : trace.connect(origin, connector, route.proxy?.key)
    // With a fleet, the connect is timed from when the permit came.
    const fleet = env.fleet
    const holder = fleet === undefined ? undefined : new Holder<unknown>(this.permitOwner!)
    let permitted = fleet === undefined
    // The connector registers what it creates in the connection's scope
    // before it waits, so an interrupted connect (a request that gives up,
    // shutdown) leaves nothing open, whenever the interruption lands. The
    // Opener's own finalizer, added first so run last, destroys the transport
    // (again: a connector may have forgotten) and gives the permits back.
    //
    // The Semaphore's permit is taken here when one is free, with its
    // finalizer in the scope before the fiber exists. Otherwise the fiber
    // takes it, uninterruptibly: the cap's books guarantee one is free or
    // about to be (a connection closing for it), and a take that resumes
    // just as the fiber is interrupted would lose the permit.
    //
    // The fiber starts uninterruptible (so an interruption that comes before
    // it ran a step still leaves the pool told) and on the scheduler's next
    // turn, as the caller is the pool in the middle of its own bookkeeping.
    // Only the waits for a fleet permit and for the connect are interruptible.
    const connect = fleet === undefined
      ? Effect.interruptible(transport)
      : Effect.suspend(() =>
        Effect.flatMap(Effect.interruptible(fleet.acquire(origin, holder!)), (permit) => {
          holder!.permit = permit
          permitted = true
          if (opening !== undefined) {
            opening.awaitingPermit = false
            this.#arm(opening)
          }
          return Effect.interruptible(transport)
        })
      )
    const connected = !this.#scopesClosed && this.#permits.tryTakeNow()
      ? (this.#holdPermit(keeper, holder), connect)
      : Effect.flatMap(this.#permits.take, () => {
        // Its scope closed already (the Agent shut down): the permit goes back, nothing opens.
        const closed = this.#holdPermit(keeper, holder)
        return closed === undefined ? connect : Effect.zipRight(closed, Effect.interrupt)
      })
    // Set once the fork returned, before the fiber's first step.
    let opening: Opening | undefined = undefined
    this.#forkIn(
      keeper,
      Effect.flatMap(Effect.exit(connected), (connected) => {
        const timedOut = this.#settled(keeper, opening)
        // The Connection is made here, in the step that sees the connect's outcome.
        const exit = Exit.isSuccess(connected)
          ? this.#connection(origin, connected.value, keeper.resources!)
          : Exit.failCause(connected.cause)
        if (Exit.isSuccess(exit)) {
          outcome.connected(context, exit.value, keeper, opening, holder)
          // Kept until the pool closes it.
          return keeper.keep
        }
        this.#keepers.remove(keeper.node)
        return Effect.zipRight(
          scope.close(exit),
          Effect.sync(() => outcome.openFailed(context, exit, timedOut, opening))
        )
      })
    )
    opening = new Opening(keeper, Infinity)
    if (permitted) this.#arm(opening)
    else opening.awaitingPermit = true
    return opening
  }

  /**
   * The keeper holds its Semaphore permit: the finalizer that gives it back
   * (with the fleet permit and the transport) goes in its scope. When the
   * scope is closed already, returns that finalizer's run, for the caller.
   */
  #holdPermit(keeper: Keeper, holder: Holder<unknown> | undefined): Effect.Effect<unknown> | undefined {
    const resources = keeper.resources = new Resources(this.#permits, holder)
    return keeper.scope.addNow(resources.finalize)
  }

  /** The connect is under way: its deadline starts now. */
  #arm(opening: Opening): void {
    const env = this.#env
    if (env.connectMillis === Infinity) return
    opening.deadline = env.watchdog.clock.unsafeCurrentTimeMillis() + env.connectMillis
    env.watchdog.watch(opening, opening.deadline)
  }

  /**
   * The Connection over a transport just connected, which its scope's
   * finalizer now destroys; a `makeConnection` that throws is a defect of
   * the opening, as it would be inside an effect.
   */
  #connection(origin: Origin, transport: Transport, resources: Resources): Exit.Exit<Connection> {
    resources.transport = transport
    try {
      return Exit.succeed(this.#env.makeConnection(origin, transport))
    } catch (defect) {
      return Exit.die(defect)
    }
  }

  /** An opening called off: its deadline is no longer watched. */
  cancel(opening: Opening): void {
    this.#env.watchdog.unwatch(opening)
    opening.cancel()
  }

  /**
   * Closes a connection's scope, once the pool destroyed its transport: its
   * permit comes back now when no step is needed for it, and its keeper runs
   * the finalizers. Shutdown does not interrupt a keeper (it is
   * uninterruptible), and `closeScopes` waits for those still running them.
   */
  closeScope(keeper: Keeper): void {
    this.#keepers.remove(keeper.node)
    keeper.resources?.releaseNow()
    keeper.closed(keeper.scope.unsafeClose(Exit.void))
    this.#closing.append(keeper.node)
    keeper.fiber.addObserver(() => this.#closing.remove(keeper.node))
  }

  /** Interrupts the openings under way (the pool shuts down): the keepers still connecting. */
  readonly interruptAll: Effect.Effect<void> = Effect.suspend(() =>
    Fiber.interruptAll(this.#keepers.nodes().flatMap((node) => (node.value.connecting ? [node.value.fiber] : [])))
  )

  /**
   * Closes the scopes of the connections still open (the Agent's scope is
   * closing, after the pool shut down): the connections close, their permits
   * come back, and their keepers end. Every one of them, even when closing
   * one fails (a transport whose destroy throws): the failures are reported
   * together afterwards, as a parent scope does for its children. Then waits
   * for the keepers still running the finalizers of connections the pool
   * closed. A scope made after this is closed at once.
   */
  readonly closeScopes: Effect.Effect<void> = Effect.suspend(() => {
    this.#scopesClosed = true
    const nodes = this.#keepers.nodes()
    this.#keepers.clear()
    const closing = this.#closing.nodes().map((node) => node.value.fiber)
    return Effect.flatMap(
      Effect.forEach(nodes, (node) => {
        const keeper = node.value
        return Effect.exit(Effect.ensuring(keeper.scope.close(Exit.void), Effect.sync(() => keeper.closed(Effect.void))))
      }),
      (exits) => Effect.zipRight(Fiber.awaitAll(closing), Option.getOrElse(Exit.all(exits), () => Exit.void))
    ).pipe(Effect.asVoid)
  })

  /**
   * An opening ended, connected or not: no longer among those under way, no
   * deadline to watch. True when the deadline stopped it.
   */
  #settled(keeper: Keeper, opening: Opening | undefined): boolean {
    keeper.connecting = false
    if (opening === undefined) return false
    this.#env.watchdog.unwatch(opening)
    return opening.timedOut
  }

  /**
   * A keeper with its scope, in `#keepers` until the scope closes. Its scope
   * is closed at once after `closeScopes`, as a child of a closed scope would be.
   */
  #newKeeper(): Keeper {
    const keeper = new Keeper()
    if (!this.#scopesClosed) {
      this.#keepers.append(keeper.node)
      return keeper
    }
    // No finalizer yet: closing it runs nothing; what is added later runs at once.
    keeper.scope.unsafeClose(Exit.void)
    return keeper
  }

  /**
   * Forks `effect` with the keeper's scope in the fiber's context from the
   * start, uninterruptible, to start on the scheduler's next turn.
   */
  #forkIn(keeper: Keeper, effect: Effect.Effect<void, never, Scope.Scope>): void {
    const runtime = this.#env.runtime
    keeper.fiber = Runtime.runFork(
      Runtime.make({
        context: Context.add(runtime.context, Scope.Scope, asCloseable(keeper.scope)),
        runtimeFlags: this.#uninterruptible,
        fiberRefs: runtime.fiberRefs
      }),
      effect,
      startLater
    )
  }
}
