#!/usr/bin/env node
// The compiled CLI (`pnpm demo` runs the TypeScript sources through tsx instead).
await import("../dist/bin.js")
