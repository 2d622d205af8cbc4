import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// `npm run dev` serves the app on :5173 and passes /v1 to the local API,
// like the nginx front `dev.sh up` runs (uploads go to its S3 front).
const api = process.env.CXR_API_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  plugins: [react()],
  server: { host: "127.0.0.1", port: 5173, proxy: { "/v1": api } },
  build: { sourcemap: true, chunkSizeWarningLimit: 600 },
  test: { environment: "node", include: ["tests/unit/**/*.test.{ts,tsx}"] },
});
