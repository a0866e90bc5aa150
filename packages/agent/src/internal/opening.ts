import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
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
import type { Trace } from "./tracing.js"
import type { Deadline, Watchdog } from "./watchdog.js"

/**
 * A connection being opened: its fiber, and its connect deadline, which the
 * Agent's Watchdog watches. A deadline past interrupts the fiber; for it an
 * interruption is then a connect timeout.
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
  constructor(readonly fiber: Fiber.RuntimeFiber<void>, deadline: number) {
    this.deadline = deadline
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
 * transport, destroyed, then its fleet permit (its holder's), if any, and its permit of the
 * global Semaphore (each even if what comes before fails).
 */
class Resources {
  transport: Transport | undefined = undefined
  /** `holder`: the holder of its fleet permit (once given), when permits are held outside the Agent. */
  constructor(readonly releasePermit: Effect.Effect<unknown>, readonly holder: Holder<unknown> | undefined) {}
  readonly finalize = (): Effect.Effect<unknown> => {
    const transport = this.transport
    this.transport = undefined
    const fleetPermit = this.holder?.permit
    if (fleetPermit !== undefined) this.holder!.permit = undefined
    const release = fleetPermit === undefined ? this.releasePermit : Effect.ensuring(fleetPermit.release, this.releasePermit)
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
 * How an opening ended, for the pool, with the `context` it was opened for:
 * connected (with the connection and the scope it lives in), or failed
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
    scope: ListNode<ConnectionScope>,
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
 * connect; release = the transport destroyed, then the permit back. It keeps
 * the scopes of the connections open or being opened, and closes those left
 * when the Agent's scope closes (`closeScopes`).
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
  readonly #runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  /** A finalizer's value is never read: the permit count it returns is not turned into void first. */
  readonly #releasePermit: Effect.Effect<number>
  /** The scopes of the connections open or being opened. */
  readonly #scopes = new List<ConnectionScope>()
  #scopesClosed = false
  /** Openings under way: interrupted when the pool shuts down. */
  readonly #fibers = new List<Fiber.RuntimeFiber<unknown, unknown>>()
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
    this.#runFork = Runtime.runFork(env.runtime)
    this.#releasePermit = env.permits.release(1)
  }

  /**
   * Opens a connection to `origin`, traced under `trace` when the request it
   * is for is; the caller holds a permit of the cap's books for it. Returns the opening, or undefined when it ended before this
   * returned (`outcome` was told already).
   */
  open<C>(origin: Origin, outcome: OpeningOutcome<C>, context: C, trace?: Trace): Opening | undefined {
    const env = this.#env
    const scope = this.#newScope()
    // The connector runs in the connection's scope: the opening fiber starts
    // with it in its context (Scope.extend would copy the fiber's FiberRefs
    // twice per connection, setting and restoring the context).
    const route = env.routes === undefined ? direct : env.routes.of(origin)
    const connect = env.connector.connect(origin, route.connectOptions)
    const transport = trace === undefined ? connect : trace.connect(origin, connect, route.proxy?.key)
    // The connector registers what it creates in the connection's scope
    // before it waits, so an interrupted connect (a request that gives up,
    // shutdown) leaves nothing open, whenever the interruption lands. The
    // Opener's own finalizer, added first so run last, destroys the transport
    // (again: a connector may have forgotten) and gives the permit back.
    //
    // The permit is taken uninterruptibly: the cap's books guarantee one is
    // free or about to be (a connection closing for it), and a take that
    // resumes just as the fiber is interrupted would lose the permit.
    // Undefined inside when the opening completes before the fork returns.
    let opening: Opening | undefined = undefined
    // With a fleet, the connect is timed from when the permit came.
    const fleet = env.fleet
    const holder = fleet === undefined ? undefined : new Holder<unknown>(this.permitOwner!)
    let permitted = fleet === undefined
    let resources: Resources | undefined = undefined
    const fiber = this.#forkIn(
      scope.value,
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          Effect.exit(Effect.flatMap(env.permits.take(1), () => {
            resources = new Resources(this.#releasePermit, holder)
            // Its scope closed already (the Agent shut down): the permit goes back, nothing opens.
            const closed = scope.value.addNow(resources.finalize)
            if (closed !== undefined) return Effect.zipRight(closed, Effect.interrupt)
            if (fleet === undefined) return restore(transport)
            // Interrupted while it waits (its request gave up, shutdown), the service holds nothing.
            return Effect.flatMap(
              restore(fleet.acquire(origin, holder!)),
              (permit) => {
                holder!.permit = permit
                permitted = true
                if (opening !== undefined) {
                  opening.awaitingPermit = false
                  this.#arm(opening)
                }
                return restore(transport)
              }
            )
          })),
          (connected) => {
            const timedOut = this.#ended(opening)
            // The Connection is made here, in the step that sees the connect's outcome.
            const exit = Exit.isSuccess(connected)
              ? this.#connection(origin, connected.value, resources!)
              : Exit.failCause(connected.cause)
            if (Exit.isSuccess(exit)) {
              outcome.connected(context, exit.value, scope, opening, holder)
              return Effect.void
            }
            this.#scopes.remove(scope)
            return Effect.zipRight(
              scope.value.close(exit),
              Effect.sync(() => outcome.openFailed(context, exit, timedOut, opening))
            )
          }
        )
      )
    )
    if (fiber.unsafePoll() !== null) return undefined
    opening = new Opening(fiber, Infinity)
    if (permitted) this.#arm(opening)
    else opening.awaitingPermit = true
    return opening
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
   * Closes a connection's scope: its permit comes back. Not tracked:
   * shutdown must not interrupt a scope halfway through closing.
   */
  closeScope(scope: ListNode<ConnectionScope>): void {
    this.#scopes.remove(scope)
    // Closed now; only its finalizers need a fiber.
    this.#runFork(scope.value.unsafeClose(Exit.void))
  }

  /** Interrupts the openings under way (the pool shuts down). */
  readonly interruptAll: Effect.Effect<void> = Effect.suspend(() =>
    Fiber.interruptAll(this.#fibers.nodes().map((node) => node.value))
  )

  /**
   * Closes the scopes of the connections still open (the Agent's scope is
   * closing, after the pool shut down): the connections close, their permits
   * come back. Every one of them, even when closing one fails (a transport
   * whose destroy throws): the failures are reported together afterwards, as
   * a parent scope does for its children. A scope made after this is closed
   * at once.
   */
  readonly closeScopes: Effect.Effect<void> = Effect.suspend(() => {
    this.#scopesClosed = true
    const nodes = this.#scopes.nodes()
    this.#scopes.clear()
    return Effect.flatMap(
      Effect.forEach(nodes, (node) => Effect.exit(node.value.close(Exit.void))),
      (exits) => Option.getOrElse(Exit.all(exits), () => Exit.void)
    ).pipe(Effect.asVoid)
  })

  /** An opening ended, connected or not: no deadline to watch. True when the deadline stopped it. */
  #ended(opening: Opening | undefined): boolean {
    if (opening === undefined) return false
    this.#env.watchdog.unwatch(opening)
    return opening.timedOut
  }

  /**
   * A scope for a connection, in `#scopes` until it closes. Closed at once
   * after `closeScopes`, as a child of a closed scope would be.
   */
  #newScope(): ListNode<ConnectionScope> {
    const scope = new ConnectionScope()
    if (!this.#scopesClosed) return this.#scopes.push(scope)
    // No finalizer yet: closing it runs nothing; what is added later runs at once.
    scope.unsafeClose(Exit.void)
    return new ListNode(scope)
  }

  /** Runs `effect` with `scope` in the fiber's context from the start, tracked until it ends. */
  #forkIn(scope: ConnectionScope, effect: Effect.Effect<void, never, Scope.Scope>): Fiber.RuntimeFiber<void> {
    const runtime = this.#env.runtime
    const fiber = Runtime.runFork(Runtime.make({
      context: Context.add(runtime.context, Scope.Scope, asCloseable(scope)),
      runtimeFlags: runtime.runtimeFlags,
      fiberRefs: runtime.fiberRefs
    }))(effect)
    if (fiber.unsafePoll() !== null) return fiber
    const node = this.#fibers.push(fiber)
    fiber.addObserver(() => this.#fibers.remove(node))
    return fiber
  }
}
