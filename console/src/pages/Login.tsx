// Sign-in: username and password open a cookie session (the credential stays in an
// HttpOnly cookie; the page only keeps the CSRF token). An account with a second factor is
// asked for its code (or a recovery code) on a second step. When the collector has single
// sign-on, a "Sign in with ..." link leads to the identity provider (a page navigation: the
// collector answers it with a redirect), and a refused sign-in comes back as `?sso_error=`.

import { useEffect, useState } from "preact/hooks";
import { api, ApiError, message, setCsrf } from "../api";

interface LoginResponse {
  csrf_token?: string;
}

interface SsoInfo {
  display_name: string;
  login_url: string;
}

/** What a refused single sign-on means, by the code the collector sends back. */
const SSO_ERRORS: Record<string, string> = {
  provider_unavailable: "The identity provider cannot be reached. Try again later, or sign in with a local account.",
  expired_or_tampered: "That sign-in expired or was altered on the way. Start it again.",
  other_browser: "That sign-in was started in another browser or tab. Start it again here.",
  provider_refused: "The identity provider refused the sign-in.",
  token_refused: "The identity provider's answer could not be verified. An administrator can find why in the audit log.",
  claims: "The identity provider did not say who you are in a form mcpwatch accepts. Ask an administrator.",
  name_taken: "A local account already has your user name. Ask an administrator.",
  disabled: "Your account is disabled.",
  no_access: "None of your groups grants access to mcpwatch. Ask an administrator.",
  rate_limited: "Too many sign-ins from this address. Wait a minute and try again.",
  cross_site: "A sign-in starts from this page only. Use the button below.",
};

/** The `sso_error` the collector sent the browser back with, taken out of the address. */
function takeSsoError(): string | null {
  const params = new URLSearchParams(window.location.search);
  const code = params.get("sso_error");
  if (code === null) return null;
  params.delete("sso_error");
  const rest = params.toString();
  window.history.replaceState(null, "", window.location.pathname + (rest ? `?${rest}` : "") + window.location.hash);
  return SSO_ERRORS[code] ?? "Single sign-on failed.";
}

export function Login(props: { expired: boolean; onSignedIn: () => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  // Shown once the collector answers that this account needs its second factor.
  const [needCode, setNeedCode] = useState(false);
  const [code, setCode] = useState("");
  const [error, setError] = useState<string | null>(takeSsoError);
  const [busy, setBusy] = useState(false);
  const [sso, setSso] = useState<SsoInfo | null>(null);

  useEffect(() => {
    // 404 when single sign-on is not configured: no button.
    api<SsoInfo>("GET", "/oidc").then(setSso, () => setSso(null));
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = needCode ? { username, password, totp: code, cookie: true } : { username, password, cookie: true };
      const r = await api<LoginResponse>("POST", "/sessions", body);
      setCsrf(r.csrf_token ?? null);
      setPassword("");
      setCode("");
      props.onSignedIn();
    } catch (err) {
      if (err instanceof ApiError && err.code === "mfa_required") {
        setNeedCode(true);
      } else if (err instanceof ApiError && err.status === 401) {
        setError(needCode ? "Wrong or already used code, or wrong password." : "Wrong user name or password.");
        setCode("");
      }
      else if (err instanceof ApiError && err.status === 429) setError("Too many attempts. Wait a minute and try again.");
      else setError(err instanceof Error ? message(err) : "Sign-in failed.");
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login">
      <h1>mcpwatch</h1>
      {props.expired && <p class="notice" role="status">Your session expired. Sign in again.</p>}
      <form onSubmit={submit}>
        <label>
          User name
          <input name="username" autocomplete="username" required value={username}
            onInput={(e) => setUsername(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" required value={password}
            onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {needCode && (
          <label>
            Code from your authenticator app (or a recovery code)
            <input name="totp" autocomplete="one-time-code" required value={code} autoFocus
              onInput={(e) => setCode(e.currentTarget.value)} />
          </label>
        )}
        {error && <p class="error" role="alert">{error}</p>}
        <button class="primary" type="submit" disabled={busy}>{needCode ? "Verify" : "Sign in"}</button>
      </form>
      {sso && !needCode && (
        <div class="sso">
          <p class="or">or</p>
          <a class="button" href={`${sso.login_url}?return_to=${encodeURIComponent(window.location.pathname)}`}>
            Sign in with {sso.display_name}
          </a>
        </div>
      )}
    </main>
  );
}
