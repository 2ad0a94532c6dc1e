import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 90_000,
    // The e2e suites each start a gatehouse server and uvicorn: one file at a time.
    fileParallelism: false,
  },
});
