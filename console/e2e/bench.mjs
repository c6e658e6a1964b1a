// The console's budgets in Chromium, run by `bench-console` (tests/src/bin): Fleet's first
// render with the collector's hosts (navigation start → the `mcpwatch:fleet-rendered`
// mark, on a reload with a signed-in session), the JS + CSS the first page transfers, the
// bytes `/api/v1/fleet` transfers (gzipped), and
// a synthetic chart (`#/_bench/chart`) drawn by the real chart code. Prints one line
// `@result {json}`.

import { launch, signIn, URL_BASE } from "./harness.mjs";

const runs = Number(process.env.RUNS ?? 5);
const browser = await launch();
const page = await browser.newPage();
await page.goto(URL_BASE);
await signIn(page, "admin", process.env.ADMIN_PASSWORD);
await page.locator("tr[data-host]").first().waitFor();

const fleet = [];
let transferred = 0;
let fleetApiBytes = 0;
for (let i = 0; i < runs; i++) {
  const sizes = [];
  const onResponse = (r) => {
    const path = new URL(r.url()).pathname;
    if (/\.(js|css)$/.test(path)) sizes.push(r.request().sizes().then((s) => s.responseBodySize + s.responseHeadersSize));
    if (path === "/api/v1/fleet") void r.request().sizes().then((s) => (fleetApiBytes = s.responseBodySize));
  };
  page.on("response", onResponse);
  // A fresh cache each time: what a first visit costs.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.clearBrowserCache");
  await page.reload();
  await page.waitForFunction(() => performance.getEntriesByName("mcpwatch:fleet-rendered").length > 0, null, { timeout: 30_000 });
  fleet.push(await page.evaluate(() => performance.getEntriesByName("mcpwatch:fleet-rendered")[0].startTime));
  page.off("response", onResponse);
  transferred = (await Promise.all(sizes)).reduce((a, b) => a + b, 0);
  await cdp.detach();
}
// Rows drawn (one page of the fleet) and hosts listed (every one, from the page's count).
const rows = await page.locator("tr[data-host]").count();
const hosts = Number((await page.getByRole("status").filter({ hasText: /hosts online/ }).textContent()).match(/of (\d+) hosts/)[1]);

const chart = [];
for (let i = 0; i < runs; i++) {
  await page.goto(`${URL_BASE}#/_bench/chart?points=43200&series=4&run=${i}`);
  await page.reload();
  await page.waitForFunction(() => performance.getEntriesByName("mcpwatch:chart-drawn").length > 0, null, { timeout: 30_000 });
  chart.push(
    await page.evaluate(
      () => performance.getEntriesByName("mcpwatch:chart-drawn")[0].startTime - performance.getEntriesByName("mcpwatch:chart-start")[0].startTime,
    ),
  );
}
await browser.close();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `@result ${JSON.stringify({
    fleet_rows: rows,
    fleet_hosts_listed: hosts,
    fleet_render_ms_median: Math.round(median(fleet)),
    fleet_render_ms_max: Math.round(Math.max(...fleet)),
    first_page_js_css_bytes: transferred,
    fleet_api_transferred_bytes: fleetApiBytes,
    chart_points: 43_200 * 4,
    chart_draw_ms_median: Math.round(median(chart)),
    chart_draw_ms_max: Math.round(Math.max(...chart)),
  })}`,
);
process.exit(0);
