// Session expiry in Chromium: the collector's idle timeout is 3 s; the open console must
// notice (the live stream's credential check ends it) and say so on the sign-in page.
// Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, look, signIn, URL_BASE, watch } from "./harness.mjs";

const ctx = browserForTests();

test("an idle session expires and the console says so", async () => {
  const page = await ctx.browser.newPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  await page.getByText("Your session expired. Sign in again.").waitFor({ timeout: 15_000 });
  const status = await page.evaluate(async () => (await fetch("/api/v1/me")).status);
  assert.equal(status, 401);
  await look(page, "login-expired", assert);
  assert.deepEqual(problems, []);
  await page.close();
});
