import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import { pipeArguments } from "effect/Pipeable"
import * as Scope from "effect/Scope"

/**
 * The scope of one connection: a `Scope.CloseableScope` the pool makes
 * synchronously, one per connection, with sequential finalizers run last
 * added first, as `Scope.make()`'s are.
 *
 * Why not `Scope.make()`: made without an effect, the scope is in the opening
 * fiber's context from its start, so the connector runs in it without
 * `Scope.extend` (which sets and restores the context FiberRef, copying the
 * fiber's FiberRefs twice); the pool adds its finalizer without a step of its
 * own (`addNow`); and closing runs two finalizers in a handful of steps, not
 * through `Effect.forEach` and `Exit.all`. Effect steps are what opening a
 * connection costs (see ARCHITECTURE.md, "Performance rules").
 *
 * `fork`, `addFinalizer` and `close` are the methods Effect's `Scope` module
 * calls on any scope (`Scope.addFinalizer`, `Scope.close`, `Scope.fork`,
 * `Effect.acquireRelease`); Effect 3 leaves them out of its typings (marked
 * internal), hence `asCloseable`. `state` has the shape of Effect's own
 * scopes' state, which `Effect.forkIn` and `Effect.forkScoped` use directly
 * (a connector may fork into the connection's scope). Both are private to
 * Effect: `Couplings.test.ts` fails if an upgrade changes them.
 *
 * @internal
 */
export class ConnectionScope {
  readonly [Scope.ScopeTypeId]: Scope.ScopeTypeId = Scope.ScopeTypeId
  readonly [Scope.CloseableScopeTypeId]: Scope.CloseableScopeTypeId = Scope.CloseableScopeTypeId
  readonly strategy: ExecutionStrategy.ExecutionStrategy = ExecutionStrategy.sequential
  /**
   * The same shape as the state of Effect's own scopes: `Effect.forkIn` and
   * `Effect.forkScoped` read and write it directly on whatever scope they get.
   */
  state: Open | Closed = new Open()

  pipe() {
    // eslint-disable-next-line prefer-rest-params
    return pipeArguments(this, arguments)
  }

  addFinalizer(finalizer: Scope.Scope.Finalizer): Effect.Effect<void> {
    return Effect.suspend(() => this.addNow(finalizer) ?? Effect.void)
  }

  /**
   * Adds a finalizer now, from code already running in a fiber; when the
   * scope is closed already, returns the finalizer's run, for the caller to do.
   */
  addNow(finalizer: Scope.Scope.Finalizer): Effect.Effect<void> | undefined {
    const state = this.state
    if (state._tag === "Closed") return finalizer(state.exit)
    state.finalizers.set(new Key(), finalizer)
    return undefined
  }

  /** A child scope, closed with this one (or at once if this one is closed); one closed first leaves. */
  fork(strategy: ExecutionStrategy.ExecutionStrategy): Effect.Effect<Scope.CloseableScope> {
    return Effect.flatMap(Scope.make(strategy), (child) => {
      const state = this.state
      if (state._tag === "Closed") return Effect.as(Scope.close(child, state.exit), child)
      const key = new Key()
      state.finalizers.set(key, (exit) => Scope.close(child, exit))
      return Effect.as(
        Scope.addFinalizer(child, Effect.sync(() => this.state._tag === "Open" && this.state.finalizers.delete(key))),
        child
      )
    })
  }

  /** Runs the finalizers, last added first, every one even if some fail; the failures together. */
  close(exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> {
    return Effect.suspend(() => this.unsafeClose(exit))
  }

  /** Closes the scope now; what it returns runs the finalizers. */
  unsafeClose(exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> {
    const state = this.state
    if (state._tag === "Closed") return Effect.void
    this.state = new Closed(exit)
    const size = state.finalizers.size
    if (size === 0) return Effect.void
    return runFinalizers(Array.from(state.finalizers.values()), size - 1, exit, undefined)
  }
}

/** A finalizer's key in an open scope's Map (what Effect's scopes use: `{}`). */
class Key {}

class Open {
  readonly _tag = "Open"
  readonly finalizers = new Map<Key, Scope.Scope.Finalizer>()
}

class Closed {
  readonly _tag = "Closed"
  constructor(readonly exit: Exit.Exit<unknown, unknown>) {}
}

/**
 * Runs `finalizers[i]`, then those before it, each whatever the others did;
 * fails with their failures together (what `Scope.close` does, with fewer
 * steps than `Effect.forEach` + `Exit.all`).
 */
const runFinalizers = (
  finalizers: ReadonlyArray<Scope.Scope.Finalizer>,
  i: number,
  exit: Exit.Exit<unknown, unknown>,
  failed: Cause.Cause<never> | undefined
): Effect.Effect<void> => {
  // The last to run, with none failed before it: its outcome is the close's
  // (its value, like any finalizer's, is never read).
  if (i === 0 && failed === undefined) return runFinalizer(finalizers[0]!, exit)
  return Effect.flatMap(Effect.exit(runFinalizer(finalizers[i]!, exit)), (result) => {
    const cause = Exit.isFailure(result)
      ? (failed === undefined ? result.cause : Cause.sequential(failed, result.cause))
      : failed
    if (i > 0) return runFinalizers(finalizers, i - 1, exit, cause)
    return cause === undefined ? Effect.void : Effect.failCause(cause)
  })
}

/** The same object, as the type Effect's `Scope` functions take. @internal */
export const asCloseable = (scope: ConnectionScope): Scope.CloseableScope => scope as unknown as Scope.CloseableScope

/** A finalizer's effect, called now; one that throws dies with what it threw. */
const runFinalizer = (finalizer: Scope.Scope.Finalizer, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> => {
  try {
    return finalizer(exit)
  } catch (defect) {
    return Effect.die(defect)
  }
}
