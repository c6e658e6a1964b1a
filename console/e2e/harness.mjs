// Shared by the browser tests: Debian's Chromium through playwright-core, a watch on every
// page for console errors, uncaught exceptions and CSP violations, axe-core accessibility
// checks, screenshots in light and dark, and the control line protocol with the Rust side
// (`@control ...` on stdout, `@ok` on stdin).

import { after, before } from "node:test";
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export const URL_BASE = process.env.CONSOLE_URL ?? "http://127.0.0.1:9465/";
const SHOTS = process.env.SCREENSHOT_DIR ?? "screenshots";

/** A fresh browser profile (Playwright refuses --user-data-dir in args). With
 * `CONSOLE_DIST` set (a console/dist directory), the console's files come from there
 * instead of the collector's embedded copy, with the collector's own response headers
 * (its CSP): console changes tested without rebuilding the collector. */
export async function launch() {
  const context = await launchBrowser();
  const dist = process.env.CONSOLE_DIST;
  if (dist) {
    const types = { js: "text/javascript", css: "text/css", svg: "image/svg+xml", html: "text/html; charset=utf-8" };
    await context.route(/^[^#?]*\/(index\.html)?([?#].*)?$|\/assets\/[^/]+$/, async (route) => {
      const url = new URL(route.request().url());
      if (url.origin !== new URL(URL_BASE).origin || url.pathname.startsWith("/api/")) return route.continue();
      const file = url.pathname.startsWith("/assets/") ? url.pathname.slice(1) : "index.html";
      let body;
      try {
        body = readFileSync(join(dist, file));
      } catch {
        return route.continue();
      }
      // The page's headers as the collector sends them (its CSP); assets need only a type.
      const real = await route.fetch({ url: new URL("/", url).href });
      const headers = { ...real.headers() };
      for (const h of ["content-encoding", "content-length", "etag", "vary"]) delete headers[h];
      headers["content-type"] = types[file.split(".").pop()] ?? "application/octet-stream";
      return route.fulfill({ status: 200, headers, body });
    });
  }
  return context;
}

function launchBrowser() {
  return chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "mcpwatch-chromium-")), {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Nothing resolves: every test URL is a loopback address, and nothing else is reached.
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ],
    viewport: { width: 1366, height: 800 },
  });
}

// Answers the page asks for and gets refused on purpose (the sign-in probe, a viewer's
// forced request) are logged by Chromium as "Failed to load resource"; anything else the
// console logs as an error fails the test.
const EXPECTED = /^Failed to load resource: the server responded with a status of (40[134]|422)/;

/** Collects what must never happen on a page. */
export function watch(page) {
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !EXPECTED.test(m.text())) problems.push(`console: ${m.text()}`);
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`csp: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 500) problems.push(`http ${r.status()} ${r.url()}`);
  });
  return problems;
}

/** axe-core on the current page: no serious or critical violations. */
export async function accessibility(page) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  return result;
}

/** Screenshots `name` in light and dark, and checks accessibility in both. */
export async function look(page, name, assert) {
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    const violations = await accessibility(page);
    assert.deepEqual(violations, [], `${name} (${scheme}): accessibility`);
    await page.screenshot({ path: join(SHOTS, `${name}-${scheme}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: "light" });
}

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on("line", (line) => waiting.shift()?.(line.trim()));

/** Asks the Rust side to do something (stop an agent...) and waits until it is done. */
export function control(request) {
  return new Promise((resolve, reject) => {
    waiting.push((answer) => (answer === "@ok" ? resolve() : reject(new Error(`${request}: ${answer}`))));
    process.stdout.write(`@control ${request}\n`);
  });
}

/** Lets the test runner exit once the tests are done. */
export function closeControl() {
  lines.close();
}

/** Signs in through the form. */
export async function signIn(page, username, password) {
  await page.getByLabel("User name").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** One browser for a test file: launched before its tests, closed after them (with the
 * control channel, so the runner can exit). `ctx.browser` is the browser. */
export function browserForTests() {
  const ctx = { browser: null };
  before(async () => {
    ctx.browser = await launch();
  });
  after(async () => {
    await ctx.browser?.close();
    closeControl();
  });
  return ctx;
}
