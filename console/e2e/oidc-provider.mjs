// A real OpenID Connect provider for the single sign-on tests: panva's `oidc-provider`
// (certified), on loopback, with one confidential client (the collector), PKCE required,
// the `groups` scope and claim, and its development login form (any password; the user
// must exist in USERS_FILE, which is read again at every sign-in so a test can move a user
// between groups). A test can also make it misbehave: `POST /test/tamper?mode=...`
// rewrites the next ID tokens (wrong_aud, expired, wrong_nonce, unknown_key; none).
//
//   OP_PORT=9400 RP_REDIRECT=http://127.0.0.1:9465/api/v1/oidc/callback \
//   CLIENT_SECRET=... USERS_FILE=users.json KEYS_FILE=jwks.json [ROTATE=1] node oidc-provider.mjs
//
// Run by tests/src/oidc_provider.rs.

import { generateKeyPairSync, randomUUID } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { importJWK, SignJWT } from "jose";
import Provider from "oidc-provider";

const PORT = Number(process.env.OP_PORT ?? 9400);
// No trailing slash: the collector compares `iss` with its configured issuer exactly.
const ISSUER = `http://127.0.0.1:${PORT}`;
const USERS_FILE = process.env.USERS_FILE ?? "users.json";
const KEYS_FILE = process.env.KEYS_FILE ?? "jwks.json";

const loadUsers = () => JSON.parse(readFileSync(USERS_FILE, "utf8"));

function newKey() {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { ...privateKey.export({ format: "jwk" }), use: "sig", alg: "RS256", kid: randomUUID() };
}

// The first key signs; older ones stay published. ROTATE=1 puts a new one first: the
// collector then meets a key it has not fetched yet.
const jwks = existsSync(KEYS_FILE) ? JSON.parse(readFileSync(KEYS_FILE, "utf8")) : { keys: [] };
if (jwks.keys.length === 0 || process.env.ROTATE === "1") jwks.keys.unshift(newKey());
writeFileSync(KEYS_FILE, JSON.stringify(jwks));
const signingKey = await importJWK(jwks.keys[0], "RS256");
const strangerKey = await importJWK(newKey(), "RS256");

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: "mcpwatch",
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.RP_REDIRECT],
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    id_token_signed_response_alg: "RS256",
  }],
  pkce: { required: () => true },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username"],
    groups: ["groups"],
  },
  // Scope-requested claims (groups) go into the ID token, not only to userinfo.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    if (!loadUsers()[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        const u = loadUsers()[id] ?? {};
        return {
          sub: `sub-${id}`,
          email: `${id}@example.test`,
          email_verified: true,
          name: id,
          preferred_username: u.username ?? id,
          groups: u.groups ?? [],
        };
      },
    };
  },
  // A first-party client: no consent page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid email profile groups");
    await grant.save();
    return grant;
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["test-only-cookie-key"] },
  jwks,
  ttl: { IdToken: 300, AccessToken: 300, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
});

let tamper = "none";
provider.use(async (ctx, next) => {
  if (ctx.path === "/test/tamper") {
    tamper = String(ctx.query.mode ?? "none");
    ctx.body = { tamper };
    return;
  }
  await next();
  if (ctx.path !== "/token" || tamper === "none" || !ctx.body?.id_token) return;
  const [header, payload] = ctx.body.id_token.split(".").slice(0, 2).map((s) => JSON.parse(Buffer.from(s, "base64url")));
  const now = Math.floor(Date.now() / 1000);
  let key = signingKey;
  let kid = header.kid;
  if (tamper === "wrong_aud") payload.aud = "someone-else";
  if (tamper === "expired") Object.assign(payload, { iat: now - 3600, exp: now - 1800 });
  if (tamper === "wrong_nonce") payload.nonce = "not-the-nonce";
  if (tamper === "unknown_key") [key, kid] = [strangerKey, `stranger-${randomUUID()}`];
  ctx.body.id_token = await new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid, typ: header.typ }).sign(key);
});

provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(PORT, "127.0.0.1", () => console.log(`oidc-provider listening on ${ISSUER}`));
