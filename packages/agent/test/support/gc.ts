import * as v8 from "node:v8"
import * as vm from "node:vm"

v8.setFlagsFromString("--expose-gc")

/** V8's `gc()`, exposed for the tests that watch what garbage collection frees. */
export const gc = vm.runInNewContext("gc") as (options?: { type: "minor" | "major" }) => void
