// The console in Chromium against a collector with two agents (host-a in team a, host-b in
// team b), users `admin` and `viewer` (viewer of team a). Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, control, look, signIn, URL_BASE, watch } from "./harness.mjs";
import { adminFlowTests } from "./admin-flows.mjs";
import { fleetScaleTests } from "./fleet-scale.mjs";

const ctx = browserForTests();

async function freshPage() {
  await ctx.browser.clearCookies();
  const page = await ctx.browser.newPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  return { page, problems };
}

test("sign-in refuses a wrong password, then opens the fleet", async () => {
  const { page, problems } = await freshPage();
  await look(page, "login", assert);
  await signIn(page, "admin", "not the password at all");
  await page.getByRole("alert").filter({ hasText: "Wrong user name or password." }).waitFor();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.locator('tr[data-host="host-a"]').waitFor();
  await page.locator('tr[data-host="host-b"]').waitFor();
  assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 1);
  const cookies = await ctx.browser.cookies();
  const session = cookies.find((c) => c.name === "mcpwatch_session");
  assert.ok(session?.httpOnly, "the session cookie is HttpOnly");
  assert.equal(session.sameSite, "Strict");
  await look(page, "fleet", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("fleet filters and sorts", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.locator('tr[data-host="host-b"]').waitFor();
  await page.getByPlaceholder("Filter: text or label=value").fill("team=a");
  await page.locator('tr[data-host="host-b"]').waitFor({ state: "detached" });
  assert.equal(await page.locator("tbody tr").count(), 1);
  await page.getByPlaceholder("Filter: text or label=value").fill("");
  await page.getByRole("button", { name: "Host" }).click();
  const order = await page.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.host));
  assert.deepEqual(order, ["host-b", "host-a"], "a second click sorts descending");
  assert.deepEqual(problems, []);
  await page.close();
});

test("a host's charts draw and the range picks the storage tier", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "host-a" }).click();
  await page.getByRole("heading", { name: "host-a" }).waitFor();
  const canvas = page.locator('[data-chart="CPU busy"] canvas');
  await canvas.waitFor();
  // Pixels in the first series' colour: the line itself, not the grid.
  // A function, not a string: a string predicate is eval'd in the page, which the CSP refuses.
  const plotted = () => {
    const c = document.querySelector('[data-chart="CPU busy"] canvas');
    if (!c) return false;
    const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
    const probe = document.createElement("span");
    probe.style.color = getComputedStyle(document.documentElement).getPropertyValue("--chart-1");
    document.body.append(probe);
    const [r, g, b] = getComputedStyle(probe).color.match(/\d+/g).map(Number);
    probe.remove();
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 128 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60) n++;
    }
    return n >= 20;
  };
  await page.waitForFunction(() => performance.getEntriesByName("mcpwatch:chart-drawn").length > 0);
  const tierOf = (range) =>
    Promise.all([
      page.waitForResponse((r) => r.url().includes("/api/v1/query_range") && r.url().includes("cpu_usage")),
      page.getByRole("button", { name: range, exact: true }).click(),
    ]).then(async ([r]) => (await r.json()).tier);
  assert.equal(await tierOf("15m"), "raw");
  await canvas.waitFor();
  await page.waitForFunction(plotted, null, { timeout: 5000 });
  await look(page, "host", assert);

  // Synced cursors: over the CPU chart, the Memory chart's cursor and legend show the same
  // moment, and follow the mouse.
  const over = page.locator('[data-chart="CPU busy"] .u-over');
  await over.waitFor();
  // (Switching colour schemes for the screenshots drew the charts again.)
  await page.waitForFunction(() => document.querySelectorAll('[data-chart="CPU busy"] .u-over').length === 1);
  const box = await over.boundingBox();
  assert.ok(box, "the CPU chart's plot area");
  const legend = (title) =>
    page.locator(`[data-chart="${title}"] .u-legend tr.u-series`).evaluateAll((rows) =>
      rows.map((r) => r.querySelector(".u-value")?.textContent ?? ""),
    );
  const at = async (fraction) => {
    await page.mouse.move(box.x + box.width * fraction, box.y + box.height / 2, { steps: 4 });
    await page.waitForFunction(
      (f) => {
        const cpu = document.querySelector('[data-chart="CPU busy"] .u-legend tr.u-series .u-value')?.textContent;
        const mem = document.querySelector('[data-chart="Memory"] .u-legend tr.u-series .u-value')?.textContent;
        return cpu && cpu !== "--" && cpu === mem;
      },
      fraction,
    );
    return { cpu: await legend("CPU busy"), memory: await legend("Memory") };
  };
  const first = await at(0.5);
  assert.equal(first.cpu[0], first.memory[0], "both legends at the same time");
  assert.ok(first.memory[1] && first.memory[1] !== "--", `memory used at the cursor: ${first.memory}`);
  assert.equal(await page.locator('[data-chart="Memory"] .u-cursor-x.u-off').count(), 0, "the memory chart's cursor shows");
  const second = await at(0.85);
  assert.notEqual(second.cpu[0], first.cpu[0], "the cursor moved");
  assert.equal(second.cpu[0], second.memory[0]);

  // Zoom by drag: across 30 % of the plot, the x range shown narrows to about that; it
  // outlasts the page's next re-read of the range (every 15 s); a double-click resets it.
  const range = () =>
    page.locator('[data-chart="CPU busy"]').evaluate((el) => [Number(el.dataset.xMin), Number(el.dataset.xMax)]);
  const [min0, max0] = await range();
  assert.ok(max0 > min0, `x range ${min0}..${max0}`);
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 10 });
  await page.mouse.up();
  await page.waitForFunction(
    (span) => {
      const el = document.querySelector('[data-chart="CPU busy"]');
      return Number(el.dataset.xMax) - Number(el.dataset.xMin) < span * 0.5;
    },
    max0 - min0,
  );
  const [min1, max1] = await range();
  const ratio = (max1 - min1) / (max0 - min0);
  assert.ok(ratio > 0.2 && ratio < 0.4 && min1 > min0 && max1 < max0, `zoomed to ${min1}..${max1} (${ratio})`);
  const draws = await page.evaluate(() => performance.getEntriesByName("mcpwatch:chart-drawn").length);
  await page.waitForResponse((r) => r.url().includes("/api/v1/query_range") && r.url().includes("cpu_usage"), { timeout: 20_000 });
  await page.waitForFunction((n) => performance.getEntriesByName("mcpwatch:chart-drawn").length > n, draws);
  await page.waitForTimeout(200);
  const [min2, max2] = await range();
  assert.ok(max2 - min2 < (max0 - min0) * 0.5, `still zoomed after a re-read: ${min2}..${max2}`);
  await over.dblclick();
  await page.waitForFunction(
    (span) => {
      const el = document.querySelector('[data-chart="CPU busy"]');
      return Number(el.dataset.xMax) - Number(el.dataset.xMin) > span * 0.9;
    },
    max0 - min0,
  );

  assert.equal(await tierOf("1d"), "1m");
  await page.locator('[data-tier="1m"]').waitFor();
  // Up to 7 days from 1-minute rollups, longer ranges from 1-hour ones.
  assert.equal(await tierOf("7d"), "1m");
  assert.equal(await tierOf("30d"), "1h");
  await page.locator('[data-tier="1h"]').waitFor();
  assert.deepEqual(problems, []);
  await page.close();
});

test("alerts show their team and escalation; a dead letter is retried from the notifications page", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Alerts" }).click();
  const row = page.locator('tr[data-rule="console_uptime"]').filter({ hasText: "host=host-a" });
  await row.waitFor();
  assert.equal(await row.locator('.label.team[data-team="a"]').count(), 1, "the team label on the row");
  const escalation = row.locator('[data-escalation="oncall"]');
  await escalation.waitFor();
  assert.match(await escalation.textContent(), /escalation oncall: step 1, next step \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in (59m|1h)/);

  await page.getByRole("link", { name: "Notifications" }).click();
  const dead = page.locator('tr[data-dead][data-receiver="refuser"]');
  await dead.waitFor();
  assert.match(await dead.textContent(), /console_uptime \(firing\) on host-b/);
  assert.match(await dead.textContent(), /400/);
  await page.locator('tr[data-delivery][data-result="dead"]').first().waitFor();
  await look(page, "notifications", assert);
  await dead.getByRole("button", { name: "Retry" }).click();
  await page.getByRole("status").filter({ hasText: "queued again" }).waitFor();
  await dead.waitFor({ state: "detached" });
  await page.getByLabel("Receiver").fill("refuser");
  await page.getByRole("button", { name: "Apply" }).click();
  // The page re-reads the log every few seconds: the retry's send shows up by itself, and
  // the filter applies once the list is read again.
  await page.locator('tr[data-delivery][data-receiver="refuser"][data-result="delivered"]').first().waitFor({ timeout: 15000 });
  await page.waitForFunction(() =>
    [...document.querySelectorAll("tr[data-delivery]")].every((r) => r.dataset.receiver === "refuser"),
  );
  const results = await page.locator("tr[data-delivery]").evaluateAll((rows) => rows.map((r) => r.dataset.result));
  assert.deepEqual(results.slice(0, 3), ["delivered", "requeued", "dead"], "newest first");
  assert.match(await page.locator('tr[data-delivery][data-result="requeued"]').textContent(), /by user:admin/);

  await page.getByRole("link", { name: "Rules" }).click();
  await page.locator('tr[data-rule="team_a_uptime"] [data-owner]').filter({ hasText: '{team="a"}' }).waitFor();
  assert.equal(await page.locator('tr[data-rule="console_uptime"] [data-owner]').textContent(), "fleet-wide");
  await page.getByRole("link", { name: "Receivers" }).click();
  await page.locator('tr[data-receiver="team-a-teams"] [data-owner]').filter({ hasText: '{team="a"}' }).waitFor();
  assert.match(await page.locator('tr[data-receiver="team-a-teams"]').textContent(), /teams/);
  assert.deepEqual(problems, []);
  await page.close();
});

test("an alert is acknowledged and silenced in place, and the silence expired", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Alerts" }).click();
  const row = page.locator('tr[data-rule="console_uptime"]').filter({ hasText: "host=host-a" });
  await row.waitFor();
  await look(page, "alerts", assert);
  await row.getByRole("button", { name: "Ack" }).click();
  await page.getByLabel("Comment").fill("looking into it");
  await page.getByRole("button", { name: "Acknowledge" }).click();
  await row.and(page.locator('[data-acked="true"]')).waitFor();
  assert.match(await row.textContent(), /acknowledged by user:admin: looking into it/);
  await row.locator('[data-escalation="oncall"]').filter({ hasText: "stopped by the acknowledgement" }).waitFor();
  await row.getByRole("button", { name: "Silence" }).click();
  const matchers = await page.getByLabel("Matchers").inputValue();
  assert.match(matchers, /host="host-a"/);
  assert.match(matchers, /alertname="console_uptime"/);
  await page.getByLabel("Comment").fill("maintenance window");
  await look(page, "alerts-silence-dialog", assert);
  await page.getByRole("button", { name: "Silence", exact: true }).last().click();
  await row.and(page.locator('[data-muted="true"]')).waitFor();
  const silence = page.locator("tr[data-silence]").filter({ hasText: "maintenance window" });
  await silence.getByRole("button", { name: "Expire" }).click();
  await silence.waitFor({ state: "detached" });
  await row.and(page.locator('[data-muted="false"]')).waitFor();
  const history = page.getByRole("table", { name: "Alert history" });
  await history.locator("tr[data-transition]").filter({ hasText: "console_uptime" }).filter({ hasText: "firing" }).first().waitFor();
  assert.deepEqual(problems, []);
  await page.close();
});

/** Presses Tab until the focused element satisfies `match` (run in the page with `arg`);
 * fails after `max` presses. Then checks the focus shows (:focus-visible, an outline). */
async function tabTo(page, match, arg, max = 80) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(match, arg)) {
      const shown = await page.evaluate(() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        return el.matches(":focus-visible") && style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
      });
      assert.ok(shown, "the focused element shows its focus");
      return;
    }
  }
  assert.fail(`no focusable element matched after ${max} Tab presses`);
}

test("the console is usable with the keyboard alone", async () => {
  const { page, problems } = await freshPage();
  await tabTo(page, () => document.activeElement?.getAttribute("name") === "username");
  await page.keyboard.type("admin");
  await page.keyboard.press("Tab");
  await page.keyboard.type(process.env.ADMIN_PASSWORD);
  await page.keyboard.press("Enter");
  await page.locator('tr[data-host="host-a"]').waitFor();
  // The filter.
  await tabTo(page, () => document.activeElement?.matches('input[type="search"]'));
  await page.keyboard.type("host-b");
  await page.locator('tr[data-host="host-a"]').waitFor({ state: "detached" });
  assert.deepEqual(await page.locator("tbody tr").evaluateAll((r) => r.map((x) => x.dataset.host)), ["host-b"]);
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Backspace");
  await page.locator('tr[data-host="host-a"]').waitFor();
  // A sort header: Enter sorts (the host column, ascending already: now descending).
  await tabTo(page, () => document.activeElement?.closest("th") && document.activeElement.textContent === "Host");
  await page.keyboard.press("Enter");
  await page.locator('th[aria-sort="descending"]').filter({ hasText: "Host" }).waitFor();
  assert.deepEqual(await page.locator("tbody tr").evaluateAll((r) => r.map((x) => x.dataset.host)), ["host-b", "host-a"]);
  await page.keyboard.press("Enter");
  await page.locator('th[aria-sort="ascending"]').filter({ hasText: "Host" }).waitFor();
  // A host opens with Enter.
  await tabTo(page, () => document.activeElement?.matches('tr[data-host="host-a"] a'));
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "host-a", exact: true }).waitFor();
  // The alerts page, then the Silence dialog: Enter opens it, Escape closes it, and the
  // focus returns to the button that opened it.
  await tabTo(page, () => document.activeElement?.matches('nav a[href="#/alerts"]'));
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Alerts" }).waitFor();
  const row = page.locator('tr[data-rule="console_uptime"]').filter({ hasText: "host=host-a" });
  await row.waitFor();
  await tabTo(page, () => document.activeElement?.textContent === "Silence" && document.activeElement.closest('tr[data-rule="console_uptime"]')?.textContent.includes("host=host-a"));
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Silence alerts" });
  await dialog.waitFor();
  assert.ok(await page.evaluate(() => !!document.activeElement?.closest("dialog[open]")), "the focus moved into the dialog");
  assert.ok(await page.evaluate(() => document.activeElement.matches(":focus-visible")), "and shows");
  await look(page, "alerts-silence-dialog-keyboard", assert);
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.ok(
    await page.evaluate(() => document.activeElement?.textContent === "Silence" && document.activeElement.matches(":focus-visible")),
    "the focus is back on the Silence button",
  );
  assert.equal(await page.locator("tr[data-silence]").filter({ hasText: "host-a" }).filter({ hasText: "active" }).count(), 0, "nothing silenced");
  assert.deepEqual(problems, []);
  await page.close();
});

test("a host going offline turns red live, without a reload", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  const row = page.locator('tr[data-host="host-b"]');
  await row.and(page.locator('[data-online="true"]')).waitFor();
  await page.waitForFunction(() => document.documentElement.dataset.live === "open");
  // A marker a reload would lose.
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
  let navigations = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations++;
  });
  await control("stop-agent host-b");
  const stopped = Date.now();
  await row.and(page.locator('[data-online="false"]')).waitFor({ timeout: 3000 });
  const took = Date.now() - stopped;
  assert.ok(took <= 3000, `offline shown after ${took} ms`);
  assert.equal(await row.locator(".state.offline").count(), 1);
  assert.equal(await page.evaluate(() => window.__notReloaded), true);
  assert.equal(navigations, 0);
  await look(page, "fleet-offline", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("the audit log filters by actor and result", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.locator("tr[data-audit-id]").first().waitFor();
  await page.getByLabel("Actor, e.g. user:alice").fill("login:admin");
  await page.getByLabel("Result, e.g. 403").fill("401");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.waitForFunction(() =>
    [...document.querySelectorAll("tr[data-audit-id]")].every((r) => r.children[1].textContent === "login:admin"),
  );
  const results = await page.locator("tr[data-audit-id] td:nth-child(5)").allTextContents();
  assert.ok(results.length >= 1 && results.every((r) => r === "401"), results.join(","));
  await look(page, "audit", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a rule is edited with a dry run before saving", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Rules" }).click();
  const row = page.locator('tr[data-rule="console_uptime"]');
  await row.getByRole("button", { name: "Edit" }).click();
  const definition = page.getByLabel("Definition (a rules file's [[rule]] table, as JSON)");
  const original = JSON.parse(await definition.inputValue());
  assert.equal(original.selector, "mcpwatch_host_uptime_seconds");
  await definition.fill(JSON.stringify({ ...original, critical: 1e15 }));
  await page.getByRole("button", { name: "Preview" }).click();
  await page.getByText(/Would fire on 0 of [1-9]\d* series now/).waitFor();
  await definition.fill(JSON.stringify({ ...original, summary: "edited in the console" }));
  await page.getByRole("button", { name: "Preview" }).click();
  await page.getByText(/Would fire on [1-9]\d* of [1-9]\d* series now/).waitFor();
  await look(page, "rule-editor", assert);
  await definition.fill("{ not json");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText(/^Not JSON:/).waitFor();
  await definition.fill(JSON.stringify({ ...original, summary: "edited in the console" }));
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByText("Rule console_uptime saved and in effect.").waitFor();
  await row.getByText("api").waitFor();
  await look(page, "rules", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a receiver sends a test notification; secrets show only as references", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Receivers" }).click();
  const row = page.locator('tr[data-receiver="hook"]');
  await row.waitFor();
  const text = await row.textContent();
  assert.match(text, /"file":"hmac"/);
  assert.match(text, /webhook/, "the receiver's type");
  assert.ok(!text.includes("console-test-secret"), "the secret itself is never shown");
  await row.getByRole("button", { name: "Send test" }).click();
  await page.getByText("Test notification sent through hook.").waitFor();
  await look(page, "receivers", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("an administrator manages users, roles and tokens", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("link", { name: "Users" }).click();
  await page.getByRole("button", { name: "New user" }).click();
  await page.getByLabel("User name").fill("carol");
  await page.getByLabel("Password (at least 12 characters)").fill("a long enough secret 1");
  await page.getByRole("dialog").locator('select[name="role"]').selectOption("operator");
  await page.getByLabel("Hosts (selector; empty for every host)").fill('{team="a"}');
  await page.getByRole("button", { name: "Create", exact: true }).click();
  const carol = page.locator('tr[data-user="carol"]');
  await carol.waitFor();
  assert.match(await carol.textContent(), /operator on \{team="a"\}/);
  await look(page, "users", assert);
  await carol.getByRole("button", { name: "Disable" }).click();
  await carol.and(page.locator('[data-disabled="true"]')).waitFor();
  await carol.getByRole("button", { name: "Enable" }).click();
  await carol.and(page.locator('[data-disabled="false"]')).waitFor();
  await carol.getByRole("button", { name: "Reset password" }).click();
  await page.getByLabel("New password").fill("a newer long secret 2");
  await page.getByRole("button", { name: "Set password", exact: true }).click();
  await page.getByRole("dialog").waitFor({ state: "hidden" });

  await page.getByRole("link", { name: "Tokens and sessions" }).click();
  await page.getByRole("button", { name: "New token" }).click();
  await page.getByLabel("Name", { exact: true }).fill("console-made");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  const shown = await page.getByLabel("Token", { exact: true }).inputValue();
  assert.match(shown, /^mcpw_\d+_[0-9a-f]{64}$/);
  await look(page, "token-created", assert);
  await page.getByRole("button", { name: "Done" }).click();
  const row = page.locator('tr[data-token="console-made"]');
  await row.waitFor();
  assert.ok(!(await page.content()).includes(shown), "the token is shown only once");
  await row.getByRole("button", { name: "Revoke" }).click();
  await row.getByText("revoked").waitFor();
  await look(page, "access", assert);
  assert.deepEqual(problems, []);
  await page.close();
});

test("a cookie-authenticated mutation without the CSRF token is refused", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.locator('tr[data-host="host-a"]').waitFor();
  const answer = await page.evaluate(async () => {
    const r = await fetch("/api/v1/tokens", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "forged" }),
    });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(answer.status, 403);
  assert.equal(answer.body.error.code, "csrf");
  assert.deepEqual(problems, []);
  await page.close();
});

test("a team viewer sees only their hosts and no actions; forced requests are refused", async () => {
  const { page, problems } = await freshPage();
  await signIn(page, "viewer", process.env.VIEWER_PASSWORD);
  await page.locator('tr[data-host="host-a"]').waitFor();
  assert.equal(await page.locator('tr[data-host="host-b"]').count(), 0);
  assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 0, "no admin pages");
  assert.equal(await page.getByRole("link", { name: "Users" }).count(), 0, "no admin pages");
  assert.equal(await page.getByRole("button", { name: "Ack" }).count(), 0, "no actions");
  const forced = await page.evaluate(async () => {
    const csrf = document.cookie.match(/mcpwatch_csrf=([0-9a-f]+)/)?.[1] ?? "";
    const restart = await fetch("/api/v1/hosts/host-a/servers/web/restart", {
      method: "POST",
      headers: { "x-csrf-token": csrf },
    });
    const other = await fetch("/api/v1/hosts/host-b");
    return [restart.status, other.status];
  });
  assert.deepEqual(forced, [403, 404]);
  await look(page, "fleet-viewer", assert);
  // Team a's viewer: the notifications page without team b's dead letter or any action.
  await page.getByRole("link", { name: "Notifications" }).click();
  await page.getByText("No dead letters.").waitFor();
  await page.locator("tr[data-delivery]").first().waitFor();
  const lines = await page.locator("tr[data-delivery]").allTextContents();
  assert.ok(lines.every((l) => !l.includes("host-b")), `team b's deliveries are not shown: ${lines}`);
  await look(page, "notifications-viewer", assert);
  assert.equal(await page.getByRole("button", { name: "Retry" }).count(), 0);
  // The navigation: what a viewer may read, nothing an administrator manages.
  const nav = page.getByRole("navigation", { name: "Main" });
  const links = await nav.getByRole("link").allTextContents();
  assert.deepEqual(links, ["Fleet", "Alerts", "Notifications", "Rules", "Tokens and sessions", "Account security"]);
  // Alerts: team a's alert, without Ack, Silence or Expire.
  await nav.getByRole("link", { name: "Alerts" }).click();
  await page.locator('tr[data-rule="console_uptime"]').filter({ hasText: "host=host-a" }).waitFor();
  assert.equal(await page.locator('tr[data-rule="console_uptime"]').filter({ hasText: "host=host-b" }).count(), 0);
  await page.getByRole("table", { name: "Alert history" }).waitFor();
  for (const name of ["Ack", "Silence", "Expire", "Acknowledge"]) {
    assert.equal(await page.getByRole("button", { name, exact: true }).count(), 0, `no ${name} for a viewer`);
  }
  assert.equal(await page.getByRole("columnheader", { name: "Actions" }).count(), 0);
  await look(page, "alerts-viewer", assert);
  // Rules: listed, neither editable nor new.
  await nav.getByRole("link", { name: "Rules" }).click();
  await page.locator('tr[data-rule="team_a_uptime"]').waitFor();
  assert.equal(await page.getByRole("button", { name: "Edit" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "New rule" }).count(), 0);
  await look(page, "rules-viewer", assert);
  // Tokens and sessions: their own, without the user list only administrators may read.
  const asked = [];
  page.on("request", (r) => asked.push(new URL(r.url()).pathname));
  await nav.getByRole("link", { name: "Tokens and sessions" }).click();
  await page.getByRole("table", { name: "Sessions" }).locator("tr[data-session]").first().waitFor();
  assert.ok(asked.includes("/api/v1/sessions") && !asked.includes("/api/v1/users"), asked.join(" "));
  await page.getByText("this session").waitFor();
  // The pages it may not open are not reachable by address either.
  for (const hash of ["#/users", "#/roles", "#/receivers", "#/audit"]) {
    await page.goto(`${URL_BASE}${hash}`);
    await page.getByRole("heading", { name: "Fleet" }).waitFor();
  }
  assert.equal(await page.getByRole("button", { name: "New user" }).count(), 0);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.equal((await ctx.browser.cookies()).filter((c) => c.name.includes("mcpwatch_session")).length, 0);
  assert.deepEqual(problems, []);
  await page.close();
});

fleetScaleTests(freshPage);
adminFlowTests(freshPage);
