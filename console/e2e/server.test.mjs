// An MCP server's page in Chromium against a collector and one real agent supervising the
// fixture MCP server `web` in Docker; its tools drifted (the fixture changes them after
// 3 s) and the test side called `echo` through the gateway. Also the fleet's server badges
// and sparklines, a pending alert, and the roles page. Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, look, signIn, URL_BASE, watch } from "./harness.mjs";

const ctx = browserForTests();
const HOST = process.env.HOST_ID;

async function signedIn(user = "admin", password = process.env.ADMIN_PASSWORD) {
  await ctx.browser.clearCookies();
  const page = await ctx.browser.newPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  await signIn(page, user, password);
  return { page, problems };
}

test("the fleet shows the host's servers by state and its sparklines", async () => {
  const { page, problems } = await signedIn();
  const row = page.locator(`tr[data-host="${HOST}"]`);
  await row.waitFor();
  // One server, running, with drifted tools.
  await row.locator('[data-servers="1/1"]').waitFor({ timeout: 20_000 });
  await row.getByText("1 drift").waitFor();
  // The CPU sparkline has a value for the current minutes.
  await row.locator(".spark-value").first().waitFor();
  const cpu = await row.locator(".spark-value").first().getAttribute("data-value");
  assert.ok(cpu !== "" && Number(cpu) >= 0 && Number(cpu) <= 1, `cpu ${cpu}`);
  assert.ok((await row.locator(".spark svg polyline, .spark svg circle").count()) >= 1);
  await look(page, "fleet-servers", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a viewer sees the server and its drift but no control buttons", async () => {
  const { page, problems } = await signedIn("viewer", process.env.VIEWER_PASSWORD);
  await page.locator(`tr[data-host="${HOST}"]`).waitFor();
  await page.goto(`${URL_BASE}#/hosts/${HOST}/servers/web`);
  await page.getByRole("heading", { name: "web", exact: true }).waitFor();
  await page.locator('[data-tool-change="echo"]').waitFor({ timeout: 20_000 });
  for (const name of ["Restart", "Stop", "Start", "Approve the new tools"]) {
    assert.equal(await page.getByRole("button", { name, exact: true }).count(), 0, `${name} hidden`);
  }
  assert.deepEqual(problems, []);
  await page.close();
});

test("the drift and the restart history outlast a flood of probe results", async () => {
  const { page, problems } = await signedIn();
  await page.locator(`tr[data-host="${HOST}"]`).waitFor();
  // The latest events as they read after a quarter of an hour of probes: 60 probe_ok, no
  // drift or restart among them. Reads by kind go through to the collector.
  const now = Date.now();
  const probes = Array.from({ length: 60 }, (_, i) => ({
    id: 9_000_000 - i,
    host: HOST,
    ts_ms: now - i * 15_000,
    kind: "probe_ok",
    server: "web",
    detail: { detail: "protocol=2025-06-18 tools=3" },
  }));
  const byKind = [];
  const kindParams = [];
  await page.route(/\/api\/v1\/events\?/, (route) => {
    const url = new URL(route.request().url());
    if (url.searchParams.get("server") !== "web") return route.continue();
    if (url.searchParams.has("kind")) {
      kindParams.push(url.searchParams.get("kind"));
      byKind.push(...url.searchParams.get("kind").split(","));
      return route.continue();
    }
    const limit = Number(url.searchParams.get("limit") ?? 100);
    return route.fulfill({ json: { items: probes.slice(0, limit), next_cursor: probes.length > limit ? probes[limit - 1].id : null } });
  });
  await page.goto(`${URL_BASE}#/hosts/${HOST}/servers/web`);
  await page.getByRole("heading", { name: "web", exact: true }).waitFor();
  // The diff, from the drift event read by its kind.
  await page.locator('[data-tool-change="echo"]').waitFor({ timeout: 20_000 });
  assert.ok(byKind.includes("tool_drift"), `kinds asked for: ${byKind}`);
  // The restart history (the server's start at least), read by kind.
  await page.getByRole("table", { name: "Restart history" }).locator("tr[data-history-kind]").first().waitFor();
  assert.ok(byKind.includes("started") && byKind.includes("exited"), `kinds asked for: ${byKind}`);
  // The whole history in one request (its kinds comma-separated).
  assert.ok(kindParams.some((k) => k.split(",").includes("started") && k.split(",").includes("exited")), `${kindParams}`);
  // The timeline hides successful probes by default, and still shows the drift.
  const timeline = page.getByRole("list", { name: "Server events" });
  await timeline.locator('li[data-kind="tool_drift"]').waitFor();
  assert.equal(await timeline.locator('li[data-kind="probe_ok"]').count(), 0);
  await look(page, "server-probe-flood", assert);
  await page.getByLabel("Hide successful probes").uncheck();
  await page.waitForFunction(() => document.querySelectorAll('li[data-kind="probe_ok"]').length === 50);
  assert.deepEqual(problems, []);
  await page.close();
});

test("the server page shows the drift as a diff, tools, latency and events; approve clears it", async () => {
  const { page, problems } = await signedIn();
  await page.getByRole("link", { name: HOST }).click();
  await page.getByRole("table", { name: "MCP servers" }).getByRole("link", { name: "web" }).click();
  await page.getByRole("heading", { name: "web", exact: true }).waitFor();
  // The drift: echo's description before and after, sleep new, time gone.
  const echo = page.locator('[data-tool-change="echo"]');
  await page.getByRole("heading", { name: "Tool drift" }).waitFor({ timeout: 20_000 });
  await echo.waitFor({ timeout: 20_000 });
  assert.ok((await echo.locator(".removed").count()) >= 1 && (await echo.locator(".added").count()) >= 1);
  await page.locator('[data-tool-change="sleep"]').getByText("new tool").waitFor();
  await page.locator('[data-tool-change="time"]').getByText("gone").waitFor();
  // Per-tool figures from the gateway: the echo calls the test side made.
  const tool = page.locator('tr[data-tool="echo"]');
  await tool.waitFor({ timeout: 20_000 });
  assert.ok(Number(await tool.locator("td").nth(1).textContent()) >= 5);
  // Probe latency per stage, drawn over the server's few minutes, not squeezed into an hour.
  const latency = page.locator('[data-chart^="Probe latency per stage"]');
  await latency.locator("canvas").waitFor();
  const span = await latency.evaluate((el) => Number(el.dataset.xMax) - Number(el.dataset.xMin));
  assert.ok(span >= 240 && span < 3000, `latency chart spans ${span} s, not the hour`);
  await look(page, "server-drift", assert);

  await page.getByRole("button", { name: "Approve the new tools" }).click();
  await page.getByRole("heading", { name: "Tool drift" }).waitFor({ state: "detached", timeout: 20_000 });
  await page.locator('li[data-kind="drift_approved"]').waitFor({ timeout: 20_000 });
  assert.deepEqual(problems, []);
  await page.close();
});

test("restart, stop and start from the server page; events appear live", async () => {
  const { page, problems } = await signedIn();
  await page.goto(`${URL_BASE}#/hosts/${HOST}/servers/web`);
  await page.getByRole("heading", { name: "web", exact: true }).waitFor();
  const restarts = await page.locator('li[data-kind="restarted"]').count();
  await page.getByRole("button", { name: "Restart" }).click();
  await page.getByRole("status").filter({ hasText: "web" }).waitFor({ timeout: 30_000 });
  // The restart's event arrives through the live stream, without a reload.
  await page.waitForFunction((n) => document.querySelectorAll('li[data-kind="restarted"]').length > n, restarts, {
    timeout: 20_000,
  });

  await page.getByRole("button", { name: "Stop", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: "Stop web?" });
  await dialog.getByRole("button", { name: "Stop", exact: true }).click();
  await page.locator('[data-state="stopped"]').waitFor({ timeout: 20_000 });
  await page.getByRole("button", { name: "Start", exact: true }).click();
  await page.locator('[data-state="running"]').waitFor({ timeout: 30_000 });
  await look(page, "server", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("pending alerts are listed apart from firing ones", async () => {
  const { page, problems } = await signedIn();
  await page.getByRole("link", { name: "Alerts" }).click();
  await page.locator('tr[data-pending="console_pending"]').first().waitFor({ timeout: 20_000 });
  assert.equal(await page.getByRole("table", { name: "Firing alerts" }).locator('tr[data-rule="console_pending"]').count(), 0);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a custom role is created, edited and deleted", async () => {
  const { page, problems } = await signedIn();
  await page.getByRole("link", { name: "Roles" }).click();
  await page.locator('tr[data-role="viewer"]').waitFor();
  await page.getByRole("button", { name: "New role" }).click();
  const dialog = page.getByRole("dialog", { name: "New role" });
  await dialog.getByLabel("Name").fill("drift-approver");
  await dialog.getByRole("checkbox", { name: /^hosts:read/ }).check();
  await dialog.getByRole("checkbox", { name: /^servers:control/ }).check();
  await dialog.getByRole("button", { name: "Save" }).click();
  const row = page.locator('tr[data-role="drift-approver"]');
  await row.getByText("servers:control").waitFor();
  await look(page, "roles", assert);
  await row.getByRole("button", { name: "Edit" }).click();
  const edit = page.getByRole("dialog", { name: "Role drift-approver" });
  await edit.getByRole("checkbox", { name: /^metrics:read/ }).check();
  await edit.getByRole("button", { name: "Save" }).click();
  await row.getByText("metrics:read").waitFor();
  await row.getByRole("button", { name: "Delete" }).click();
  await row.waitFor({ state: "detached" });
  assert.deepEqual(problems, []);
  await page.close();
});
