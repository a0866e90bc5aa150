/**
 * The error of a config that cannot be used.
 *
 * @internal
 */
import * as Data from "effect/Data"

/** A `RedisPermits.Config` that cannot be used, named by `option`. */
export class RedisPermitsError extends Data.TaggedError("RedisPermitsError")<{
  readonly reason: "InvalidConfig"
  /** The option at fault. */
  readonly option: string
  readonly detail: string
}> {
  override get message(): string {
    return `${this.reason} ${this.option}: ${this.detail}`
  }
}
