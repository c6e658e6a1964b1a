// The quickstart's console in Chromium: signed in with the generated admin password (read
// from the 0600 file the quickstart wrote), the fleet shows the quickstart's own host and a
// second agent enrolled into its PKI, and the second going offline turns red live.
// Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, control, look, signIn, URL_BASE, watch } from "./harness.mjs";

const ctx = browserForTests();

test("the quickstart's fleet: its own host and a second agent, live", async () => {
  const page = await ctx.browser.newPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  const local = page.locator('tr[data-host="local"]');
  const second = page.locator('tr[data-host="second"]');
  await local.and(page.locator('[data-online="true"]')).waitFor();
  await second.and(page.locator('[data-online="true"]')).waitFor();
  await page.waitForFunction(() => document.documentElement.dataset.live === "open");
  await look(page, "quickstart-fleet", assert);
  // The second agent stops: its row turns offline without a reload, the quickstart's stays.
  await control("stop-second");
  await second.and(page.locator('[data-online="false"]')).waitFor({ timeout: 3_000 });
  assert.equal(await local.and(page.locator('[data-online="true"]')).count(), 1);
  assert.deepEqual(problems, []);
  await page.close();
});
