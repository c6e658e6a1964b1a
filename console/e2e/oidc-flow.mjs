// Walks a single sign-on through the test provider without a browser, the way a browser
// would (cookies kept, redirects followed by hand, the provider's login form posted), and
// stops where the provider sends the browser back to the collector: prints
// {"callback": URL, "binding": COOKIE} so the test can deliver, replay or tamper with it,
// or {"refused": LOCATION} when the collector refused to start the sign-in.
//
//   node oidc-flow.mjs http://127.0.0.1:9465 alice
//
// Run by tests/src/oidc_provider.rs.

import { request } from "playwright-core";

const [base, user] = process.argv.slice(2);
const callback = `${base}/api/v1/oidc/callback`;
const ctx = await request.newContext();
let url = `${base}/api/v1/oidc/login`;
let response = await ctx.get(url, { maxRedirects: 0 });
const binding = (await ctx.storageState()).cookies.find((c) => c.name.endsWith("mcpwatch_oidc"))?.value;
for (let step = 0; step < 20; step++) {
  const location = response.headers()["location"];
  if (location === undefined) {
    const body = await response.text();
    const form = body.match(/<form[^>]*action="([^"]+)"/);
    if (response.status() !== 200 || !form || !body.includes('name="login"')) {
      throw new Error(`stuck at ${url}: ${response.status()} ${body.slice(0, 300)}`);
    }
    url = new URL(form[1].replaceAll("&amp;", "&"), url).href;
    response = await ctx.post(url, { form: { prompt: "login", login: user, password: "any" }, maxRedirects: 0 });
    continue;
  }
  url = new URL(location, url).href;
  if (url.startsWith(callback)) {
    console.log(JSON.stringify({ callback: url, binding }));
    process.exit(0);
  }
  if (url.startsWith(`${base}/?sso_error=`)) {
    console.log(JSON.stringify({ refused: url }));
    process.exit(0);
  }
  response = await ctx.get(url, { maxRedirects: 0 });
}
throw new Error(`no way back to the collector after 20 steps (last ${url})`);
