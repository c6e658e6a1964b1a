// Sign-in: username and password open a cookie session (the credential stays in an
// HttpOnly cookie; the page only keeps the CSRF token). An account with a second factor is
// asked for its code (or a recovery code) on a second step.

import { useState } from "preact/hooks";
import { api, ApiError, message, setCsrf } from "../api";

interface LoginResponse {
  csrf_token?: string;
}

export function Login(props: { expired: boolean; onSignedIn: () => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  // Shown once the collector answers that this account needs its second factor.
  const [needCode, setNeedCode] = useState(false);
  const [code, setCode] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

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
    </main>
  );
}
