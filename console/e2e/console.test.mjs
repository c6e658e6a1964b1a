// The console in Chromium against a collector with two agents (host-a in team a, host-b in
// team b), users `admin` and `viewer` (viewer of team a). Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, control, look, signIn, URL_BASE, watch } from "./harness.mjs";

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
  assert.equal(await tierOf("1d"), "1m");
  await page.locator('[data-tier="1m"]').waitFor();
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
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  assert.equal((await ctx.browser.cookies()).filter((c) => c.name.includes("mcpwatch_session")).length, 0);
  assert.deepEqual(problems, []);
  await page.close();
});
