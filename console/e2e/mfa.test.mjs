// Two-factor sign-in in Chromium: the collector requires a second factor of admins, so the
// admin's first sign-in lands on the account-security page only; it scans (reads) the
// secret, confirms a code computed here as an authenticator app would, sees its recovery
// codes, reaches the fleet; signing in again asks for a code on a second step.
// Run by tests/tests/console.rs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { accessibility, browserForTests, look, signIn, URL_BASE, watch } from "./harness.mjs";

const ctx = browserForTests();

/** RFC 4648 base32 without padding, decoded. */
function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "").toUpperCase()) {
    const v = alphabet.indexOf(c);
    assert.ok(v >= 0, `base32 digit ${c}`);
    bits += v.toString(2).padStart(5, "0");
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) at `seconds`. */
function totp(secret, seconds) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(seconds / 30)));
  const mac = createHmac("sha1", secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const n = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, "0");
}

test("an admin without a second factor enrols one before anything else, then signs in with it", async () => {
  const page = await ctx.browser.newPage();
  const problems = watch(page);
  await page.goto(URL_BASE);
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  await page.getByText("Your account must sign in with a second factor.").waitFor();
  // Held: no navigation, no fleet, no password form; only the way out.
  assert.equal(await page.getByRole("navigation", { name: "Main" }).count(), 0);
  assert.equal(await page.getByLabel("Current password").count(), 0);
  // Enrolling asks for the password again: a session alone cannot bind a factor.
  await page.getByLabel("Your password").fill("not-the-password");
  await page.getByRole("button", { name: "Set up an authenticator app" }).click();
  await page.getByText("current_password is wrong").waitFor();
  await page.getByLabel("Your password").fill(process.env.ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Set up an authenticator app" }).click();
  const qr = page.getByRole("img", { name: "QR code of the authenticator secret" });
  await qr.waitFor();
  assert.ok((await qr.boundingBox()).width >= 150, "the QR code is drawn at a scannable size");
  await look(page, "mfa-enroll", assert);
  const secret = base32((await page.locator("code.secret").textContent()).trim());

  await page.getByLabel("Code from the app").fill(totp(secret, Date.now() / 1000));
  await page.getByRole("button", { name: "Turn on" }).click();
  await page.getByText("Two-factor sign-in is on.").waitFor();
  const codes = await page.locator("ul.codes code").allTextContents();
  assert.equal(codes.length, 10);
  for (const c of codes) assert.match(c, /^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$/);
  await accessibility(page);
  await look(page, "mfa-recovery-codes", assert);
  await page.getByRole("button", { name: "I have saved them" }).click();
  await page.getByRole("heading", { name: "Fleet" }).waitFor();

  // Sign out and in again: the password alone opens a second step asking for a code.
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn(page, "admin", process.env.ADMIN_PASSWORD);
  const codeField = page.getByLabel("Code from your authenticator app (or a recovery code)");
  await codeField.waitFor();
  await look(page, "login-second-step", assert);
  // A wrong code is refused with a message; the next step's code gets in.
  await codeField.fill("000000" === totp(secret, Date.now() / 1000 + 30) ? "111111" : "000000");
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByText("Wrong or already used code, or wrong password.").waitFor();
  await codeField.fill(totp(secret, Date.now() / 1000 + 30));
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  // The account page says two-factor sign-in is on.
  await page.getByRole("link", { name: "Account security" }).click();
  await page.getByText(/^On\. 10 recovery codes left\.$/).waitFor();
  await look(page, "account-security", assert);
  assert.deepEqual(problems, []);
  await page.close();
});
