// Writes a gzip twin (`<file>.gz`, level 9, no timestamp: deterministic) of every text
// asset the build produced, so the collector can serve precompressed files.
import { readdirSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const root = process.env.CONSOLE_OUT || "dist";
const walk = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
for (const file of walk(root)) {
  if (!/\.(js|css|svg|html)$/.test(file)) continue;
  writeFileSync(`${file}.gz`, gzipSync(readFileSync(file), { level: 9 }));
}
