/**
 * A server a global setup started, as a test file sees it. A missing one
 * skips its tests on a developer's machine and fails them under CI, where
 * every server is installed.
 */

/** A provided server's port, or why its tests skip. */
export interface Provided {
  /** True when its tests skip: the server is missing and this is not CI. */
  readonly skip: boolean
  /** The port on 127.0.0.1; reading it throws, failing the test, when the server is missing. */
  readonly port: number
}

/**
 * The server `name` at `port` (0 when its setup could not start it, for
 * the reason `unavailable`); a skip is announced once as `${tests} skipped`.
 */
export const provided = (name: string, port: number, unavailable: string, tests: string): Provided => {
  const skip = port === 0 && process.env.CI !== "true"
  if (skip) console.warn(`${tests} skipped: ${unavailable}`)
  return {
    skip,
    get port(): number {
      if (port === 0) throw new Error(`${name} is required under CI but unavailable: ${unavailable}`)
      return port
    }
  }
}
