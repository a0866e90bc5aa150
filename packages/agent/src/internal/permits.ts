import type { Permit, PermitHolder } from "../ConnectionPermits.js"

/** Who carries out what a permit's holder is told, about its connection `C`: the pool. @internal */
export interface PermitOwner<C> {
  /** The connection's permit is lost: no new request on it; closed once idle. */
  permitLost(connection: C): void
  /** Others wait for its origin: closed if idle and no request of ours waits. */
  permitWanted(connection: C): void
}

/**
 * The holder of one connection's fleet permit, made before the connection
 * exists: what it is told before then is kept (`lostEarly`) for the pool to
 * act on when the connection is made.
 *
 * @internal
 */
export class Holder<C> implements PermitHolder {
  pooled: C | undefined = undefined
  lostEarly = false
  /** The permit, once the service gave it. */
  permit: Permit | undefined = undefined
  constructor(readonly owner: PermitOwner<C>) {}
  lost(): void {
    if (this.pooled === undefined) this.lostEarly = true
    else this.owner.permitLost(this.pooled)
  }
  wanted(): void {
    if (this.pooled !== undefined) this.owner.permitWanted(this.pooled)
  }
}
