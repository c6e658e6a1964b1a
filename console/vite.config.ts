// Build settings that keep the collector's strict Content-Security-Policy satisfiable:
// no inline script (no module-preload polyfill), no inlined assets, CSS in files.
import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

export default defineConfig({
  plugins: [preact()],
  base: "/",
  build: {
    outDir: process.env.CONSOLE_OUT || "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
    cssCodeSplit: true,
  },
});
