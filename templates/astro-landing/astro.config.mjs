// @ts-check
import { defineConfig } from "astro/config";

// A static build: `npm run build` writes plain HTML, CSS and assets to dist/.
// Telemetry is off in CI through ASTRO_TELEMETRY_DISABLED (see .woodpecker.yaml).
export default defineConfig({
  output: "static",
});
