// The fleet at a thousand hosts (a mocked /fleet and live stream): one page of rows, sort
// and filter over all, no re-read for probe results. Registered by console.test.mjs, which
// owns the collector and the browser.

import { test } from "node:test";
import assert from "node:assert/strict";
import { look, signIn } from "./harness.mjs";

/** `freshPage()` opens a signed-out page on the console: `{ page, problems }`. */
export function fleetScaleTests(freshPage) {
  test("a fleet of a thousand hosts: one page of rows, filtered and sorted over all; probe results cause no re-read", async () => {
    const { page, problems } = await freshPage();
    await signIn(page, "admin", process.env.ADMIN_PASSWORD);
    await page.locator('tr[data-host="host-a"]').waitFor();
    // /fleet answers a thousand hosts (host-007 offline once `phase` is "hosts"); the live
    // stream is served by the test: bursts of probe results, then host changes.
    let phase = "probes";
    const reads = [];
    const now = Date.now();
    const hosts = () =>
      Array.from({ length: 1000 }, (_, i) => {
        const id = `host-${String(i).padStart(3, "0")}`;
        return {
          agent_id: id,
          hostname: id,
          agent_version: "0.1.0",
          online: !(phase === "hosts" && id === "host-007"),
          revoked: false,
          last_seen_ms: now - i * 1000,
          labels: { team: i % 2 ? "odd" : "even" },
          permissions: ["hosts:read"],
          servers: null,
          firing: i % 10 === 0 ? 1 : 0,
          cpu: [0.1, 0.2, 0.15],
          memory: [],
          disk: [],
        };
      });
    await page.route(/\/api\/v1\/fleet$/, (route) => {
      reads.push({ at: Date.now(), phase });
      return route.fulfill({ json: { complete: true, hosts: hosts() } });
    });
    const sse = (event, data) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    await page.route(/\/api\/v1\/stream/, (route) => {
      let body = "retry: 300\n\n" + sse("heartbeat", {});
      if (phase === "probes") {
        for (let i = 0; i < 40; i++) body += sse("event", { id: i, host: `host-${String(i).padStart(3, "0")}`, server: "web", kind: "probe_ok", ts_ms: Date.now() });
      } else if (phase === "hosts") {
        body += sse("host", { host: "host-007", online: false, revoked: false });
      }
      return route.fulfill({ status: 200, headers: { "content-type": "text/event-stream", "cache-control": "no-store" }, body });
    });
    await page.reload();
    const rows = page.locator("tbody tr[data-host]");
    await page.locator('tr[data-host="host-000"]').waitFor();
    assert.equal(await rows.count(), 100, "one page of rows in the DOM");
    await page.getByText("Hosts 1–100 of 1000").waitFor();
    // Bursts of probe results (the stream reconnects every 300 ms) for 2.5 s: no re-read.
    await page.waitForTimeout(2500);
    assert.equal(reads.length, 1, `reads of /fleet during probe results: ${JSON.stringify(reads)}`);
    // A host change every 300 ms for 3 s: re-read, at most one every 2 s.
    phase = "hosts";
    await page.locator('tr[data-host="host-007"][data-online="false"]').waitFor({ timeout: 3000 });
    await page.waitForTimeout(3000);
    phase = "quiet";
    await page.waitForTimeout(2500);
    const hostReads = reads.filter((r) => r.phase === "hosts");
    assert.ok(hostReads.length >= 1 && hostReads.length <= 3, `reads during host changes: ${hostReads.length}`);
    for (let i = 1; i < hostReads.length; i++) {
      assert.ok(hostReads[i].at - hostReads[i - 1].at >= 1900, `reads ${hostReads[i].at - hostReads[i - 1].at} ms apart`);
    }
    // Filtering and sorting cover every host, not just the page shown.
    const filter = page.getByPlaceholder("Filter: text or label=value");
    await filter.fill("host-999");
    await page.waitForFunction(() => document.querySelectorAll("tbody tr[data-host]").length === 1);
    assert.equal(await rows.first().getAttribute("data-host"), "host-999");
    await filter.fill("team=odd");
    await page.getByText("Hosts 1–100 of 500").waitFor();
    await filter.fill("");
    await page.getByRole("button", { name: "Host", exact: true }).click();
    await page.locator("tbody tr").first().and(page.locator('[data-host="host-999"]')).waitFor();
    await page.getByRole("button", { name: "Next" }).click();
    await page.locator("tbody tr").first().and(page.locator('[data-host="host-899"]')).waitFor();
    await page.getByText("Hosts 101–200 of 1000").waitFor();
    await page.getByLabel("Per page").selectOption("250");
    await page.getByText("Hosts 1–250 of 1000").waitFor();
    assert.equal(await rows.count(), 250);
    await page.getByLabel("Per page").selectOption("100");
    await look(page, "fleet-thousand", assert);
    assert.deepEqual(problems, []);
    await page.close();
  });
}
