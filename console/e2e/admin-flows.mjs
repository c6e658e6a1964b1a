// Administration in the browser: the audit log's filters and paging, a role binding
// added and removed, another session ended. Registered by console.test.mjs, which owns the
// collector and the browser.

import { test } from "node:test";
import assert from "node:assert/strict";
import { look, signIn, URL_BASE } from "./harness.mjs";

/** `freshPage()` opens a signed-out page on the console: `{ page, problems }`. */
export function adminFlowTests(freshPage) {
  test("the audit log filters by action, object and time, and pages to older records", async () => {
    const { page, problems } = await freshPage();
    await signIn(page, "admin", process.env.ADMIN_PASSWORD);
    await page.locator('tr[data-host="host-a"]').waitFor();
    // The browser's local time, as a datetime-local field takes it (minutes).
    const local = (ms) =>
      page.evaluate((t) => {
        const d = new Date(t);
        const p = (n) => String(n).padStart(2, "0");
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
      }, ms);
    const start = Math.floor(Date.now() / 60_000) * 60_000;
    if (Date.now() - start > 50_000) await page.waitForTimeout(61_000 - (Date.now() - start));
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    // The newest audit id before this test's refusals: earlier tests refused requests on the
    // same object (the CSRF test), and those may fall in an earlier minute.
    const baseline = await page.evaluate(async () => {
      const r = await fetch("/api/v1/audit?limit=1");
      const body = await r.json();
      return body.items[0]?.id ?? 0;
    });
    // 60 refused requests (no CSRF token): audited, one of them on another object.
    const statuses = await page.evaluate(async () => {
      const out = [];
      for (let i = 0; i < 60; i++) {
        const path = i === 30 ? "/api/v1/users/424242/enable" : "/api/v1/tokens";
        const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
        out.push(r.status);
      }
      return out;
    });
    assert.ok(statuses.every((s) => s === 403), statuses.join(","));

    await page.getByRole("link", { name: "Audit log" }).click();
    const rows = page.locator("tr[data-audit-id]");
    await rows.first().waitFor();
    const cells = (n) => page.locator(`tr[data-audit-id] td:nth-child(${n})`).allTextContents();
    const ids = () => rows.evaluateAll((r) => r.map((x) => Number(x.dataset.auditId)));
    // Action: one page of 50, then the older records appended.
    await page.getByLabel("Action, e.g. POST /api/v1/users").fill("POST /api/v1/tokens");
    await page.getByLabel("Result, e.g. 403").fill("403");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.waitForFunction(() =>
      [...document.querySelectorAll("tr[data-audit-id]")].every((r) => r.children[2].textContent === "POST /api/v1/tokens"),
    );
    await page.waitForFunction(() => document.querySelectorAll("tr[data-audit-id]").length === 50);
    const firstPage = await ids();
    await page.getByRole("button", { name: "Older records" }).click();
    await page.waitForFunction(() => document.querySelectorAll("tr[data-audit-id]").length > 50);
    const both = await ids();
    assert.deepEqual(both.slice(0, 50), firstPage, "older records come after the first page");
    assert.ok(both.every((id, i) => i === 0 || id < both[i - 1]), "newest first, each once");
    assert.ok((await cells(3)).every((a) => a === "POST /api/v1/tokens"));
    assert.ok(both.length >= 59, `${both.length} records`);
    assert.equal(both.filter((id) => id > baseline).length, 59, "each of this test's refusals on /api/v1/tokens once");
    // Object: only the refusal on the user.
    await page.getByLabel("Action, e.g. POST /api/v1/users").fill("");
    await page.getByLabel("Object, e.g. /api/v1/users/3").fill("/api/v1/users/424242/enable");
    await page.getByRole("button", { name: "Apply" }).click();
    await page.waitForFunction(() => document.querySelectorAll("tr[data-audit-id]").length === 1);
    assert.deepEqual(await cells(4), ["/api/v1/users/424242/enable"]);
    assert.match((await cells(3))[0], /^POST \/api\/v1\/users\/\S+\/enable$/);
    assert.equal(await page.getByRole("button", { name: "Older records" }).count(), 0);
    await look(page, "audit-object", assert);
    // Time: from the refusals' minute, they show; until it, none of them; from tomorrow, nothing.
    await page.getByLabel("Object, e.g. /api/v1/users/3").fill("/api/v1/tokens");
    await page.getByLabel("From").fill(await local(minute));
    await page.getByRole("button", { name: "Apply" }).click();
    await page.waitForFunction(() => document.querySelectorAll("tr[data-audit-id]").length === 50);
    await page.getByLabel("From").fill("");
    await page.getByLabel("Until").fill(await local(minute));
    await page.getByRole("button", { name: "Apply" }).click();
    await page.waitForFunction(
      (before) => {
        const shown = [...document.querySelectorAll("tr[data-audit-id]")];
        return (shown.length > 0 || document.body.textContent.includes("No records match.")) &&
          shown.every((r) => Number(r.dataset.auditId) <= before);
      },
      baseline,
    );
    await page.getByLabel("Until").fill("");
    await page.getByLabel("From").fill(await local(Date.now() + 86_400_000));
    await page.getByRole("button", { name: "Apply" }).click();
    await page.getByText("No records match.").waitFor();
    assert.equal(await rows.count(), 0);
    assert.deepEqual(problems, []);
    await page.close();
  });

  test("an administrator adds and removes a role binding and ends another session", async () => {
    // A session of the viewer's, opened outside the browser (a bearer session).
    const login = await fetch(new URL("api/v1/sessions", URL_BASE), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "viewer", password: process.env.VIEWER_PASSWORD }),
    });
    assert.equal(login.status, 201);
    const { token } = await login.json();
    const me = () => fetch(new URL("api/v1/me", URL_BASE), { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    assert.equal(await me(), 200);

    const { page, problems } = await freshPage();
    await signIn(page, "admin", process.env.ADMIN_PASSWORD);
    await page.getByRole("link", { name: "Users" }).click();
    const viewer = page.locator('tr[data-user="viewer"]');
    await viewer.waitFor();
    await viewer.getByRole("button", { name: "Add role" }).click();
    const dialog = page.getByRole("dialog", { name: "Add role" });
    await dialog.locator('select[name="role"]').selectOption("operator");
    await dialog.getByLabel("Hosts (selector; empty for every host)").fill('{team="b"}');
    await dialog.getByRole("button", { name: "Add", exact: true }).click();
    await dialog.waitFor({ state: "hidden" });
    await viewer.getByText('operator on {team="b"}').waitFor();
    assert.match(await viewer.textContent(), /viewer on \{team="a"\}/);
    await look(page, "users-binding", assert);
    await viewer.getByRole("button", { name: "Remove operator from viewer" }).click();
    await viewer.getByText('operator on {team="b"}').waitFor({ state: "detached" });
    assert.match(await viewer.textContent(), /viewer on \{team="a"\}/, "the other binding stays");

    await page.getByRole("link", { name: "Tokens and sessions" }).click();
    const sessions = page.getByRole("table", { name: "Sessions" }).locator("tr[data-session]");
    await sessions.first().waitFor();
    const newest = await sessions.filter({ hasText: "viewer" }).evaluateAll((r) => Math.max(...r.map((x) => Number(x.dataset.session))));
    const row = page.locator(`tr[data-session="${newest}"]`);
    await row.getByRole("button", { name: "End" }).click();
    await row.waitFor({ state: "detached" });
    assert.equal(await me(), 401, "the ended session no longer opens anything");
    assert.ok((await page.getByText("this session").count()) === 1, "the admin's own session stays");
    assert.deepEqual(problems, []);
    await page.close();
  });
}
