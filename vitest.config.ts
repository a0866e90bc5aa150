import { defineConfig } from "vitest/config"

// Inside the workspace the packages run from their TypeScript sources: the
// `keepalive-source` export condition, which published packages ignore.
const conditions = ["keepalive-source", "import", "module", "node", "default"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["keepalive-source"] } },
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    globalSetup: ["test/setup/global.ts", "test/setup/apache.ts", "test/setup/proxies.ts", "test/setup/redis.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks"
  }
})
