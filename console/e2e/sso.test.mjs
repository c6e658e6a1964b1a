// Single sign-on in Chromium against a real OpenID Connect provider (oidc-provider on
// loopback): the button on the sign-in page, the provider's own login form, and the console
// with the role and scope the user's groups map to. alice (group sre: operator everywhere)
// sees both hosts; bob (group team-b: viewer of team b) sees only host-b and no actions;
// moved to team-a at the provider, bob signs in again and sees host-a instead. A sign-in
// the collector refuses (the provider down) comes back with a message on the sign-in page.
// Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserForTests, control, look, URL_BASE, watch } from "./harness.mjs";

const ctx = browserForTests();

/** A page whose requests only ever reach loopback: the provider's development login page
 * imports a web font, answered here with an empty stylesheet instead of the network. */
async function loopbackPage() {
  const page = await ctx.browser.newPage();
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === "127.0.0.1" ? route.continue() : route.fulfill({ status: 200, contentType: "text/css", body: "" });
  });
  return page;
}

/** Signs `user` in through the provider from the console's sign-in page, in a browser with
 * no cookies (the provider would otherwise sign the previous user in again at once). */
async function ssoSignIn(page, user) {
  await page.context().clearCookies();
  await page.goto(URL_BASE);
  await page.getByRole("link", { name: "Sign in with Test IdP" }).click();
  await page.locator('input[name="login"]').fill(user);
  await page.locator('input[name="password"]').fill("any password");
  await page.locator('button[type="submit"]').click();
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("link", { name: "Sign in with Test IdP" }).waitFor();
}

const hostRow = (page, name) => page.locator(`tr[data-host="${name}"]`);

test("single sign-on lands with the role and scope the groups map to, and follows group changes", async () => {
  const page = await loopbackPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  const button = page.getByRole("link", { name: "Sign in with Test IdP" });
  await button.waitFor();
  await look(page, "login-sso", assert);

  await ssoSignIn(page, "alice");
  await hostRow(page, "host-a").waitFor();
  await hostRow(page, "host-b").waitFor();
  await look(page, "sso-alice-fleet", assert);
  await signOut(page);

  await ssoSignIn(page, "bob");
  await hostRow(page, "host-b").waitFor();
  assert.equal(await hostRow(page, "host-a").count(), 0, "bob sees team b only");
  await look(page, "sso-bob-fleet", assert);
  await signOut(page);

  await control("move-bob team-a");
  await ssoSignIn(page, "bob");
  await hostRow(page, "host-a").waitFor();
  assert.equal(await hostRow(page, "host-b").count(), 0, "moved to team a at the provider");
  await signOut(page);

  // The provider down: the button comes back with a clear message.
  await control("stop-provider");
  await page.getByRole("link", { name: "Sign in with Test IdP" }).click();
  await page.getByText("The identity provider cannot be reached.").waitFor();
  await look(page, "login-sso-error", assert);
  assert.deepEqual(problems, []);
  await page.close();
});
