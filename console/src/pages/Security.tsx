// The signed-in user's own account security: change the password, and enrol a second
// factor (TOTP: a QR code for the app, a first code to confirm, then ten recovery codes
// shown once). A session the policy holds (`restriction`) sees only the part it must do.

import { useEffect, useState } from "preact/hooks";
import { api, get, message, type Me } from "../api";

interface MfaStatus {
  enabled: boolean;
  pending: boolean;
  recovery_codes_left: number;
  required: boolean;
}

interface Enrollment {
  secret: string;
  otpauth_uri: string;
  qr_svg: string;
}

function PasswordForm(props: { userId: number; onChanged: () => void }) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setDone(false);
    if (next !== again) {
      setError("The new passwords differ.");
      return;
    }
    setBusy(true);
    try {
      await api("PUT", `/users/${props.userId}/password`, { password: next, current_password: current });
      setCurrent("");
      setNext("");
      setAgain("");
      setDone(true);
      props.onChanged();
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card" onSubmit={submit} aria-labelledby="pw-title">
      <h2 id="pw-title">Password</h2>
      <label>
        Current password
        <input type="password" name="current" autocomplete="current-password" required value={current}
          onInput={(e) => setCurrent(e.currentTarget.value)} />
      </label>
      <label>
        New password
        <input type="password" name="new" autocomplete="new-password" required value={next}
          onInput={(e) => setNext(e.currentTarget.value)} />
      </label>
      <label>
        New password again
        <input type="password" name="again" autocomplete="new-password" required value={again}
          onInput={(e) => setAgain(e.currentTarget.value)} />
      </label>
      {error && <p class="error" role="alert">{error}</p>}
      {done && <p role="status">Password changed. Your other sessions were signed out.</p>}
      <button class="primary" type="submit" disabled={busy}>Change password</button>
    </form>
  );
}

function TwoFactor(props: { onEnabled: () => void }) {
  const [status, setStatus] = useState<MfaStatus | null>(null);
  const [enrollment, setEnrollment] = useState<Enrollment | null>(null);
  const [code, setCode] = useState("");
  const [password, setPassword] = useState("");
  const [codes, setCodes] = useState<string[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = async () => {
    try {
      setStatus(await get<MfaStatus>("/me/mfa"));
    } catch (err) {
      setError(message(err));
    }
  };
  useEffect(() => {
    void load();
  }, []);

  const start = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      setEnrollment(await api<Enrollment>("POST", "/me/mfa/totp", { current_password: password }));
      setPassword("");
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };

  const confirm = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const r = await api<{ recovery_codes: string[] }>("POST", "/me/mfa/totp/confirm", { code });
      setCodes(r.recovery_codes);
      setEnrollment(null);
      setCode("");
      await load();
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card" aria-labelledby="mfa-title">
      <h2 id="mfa-title">Two-factor sign-in</h2>
      {status && !codes && (
        <p>
          {status.enabled
            ? `On. ${status.recovery_codes_left} recovery codes left.`
            : status.required
              ? "Required for your account: set it up to continue."
              : "Off. Sign-in asks for a code from an authenticator app once it is on."}
        </p>
      )}
      {codes && (
        <div role="status">
          <p>
            <strong>Two-factor sign-in is on.</strong> Keep these recovery codes somewhere safe: each signs
            you in once if the app is lost. They are shown only now.
          </p>
          <ul class="codes">
            {codes.map((c) => (
              <li key={c}><code>{c}</code></li>
            ))}
          </ul>
          <button class="primary" type="button" onClick={props.onEnabled}>I have saved them</button>
        </div>
      )}
      {status && !status.enabled && !enrollment && !codes && (
        <form onSubmit={start}>
          <label>
            Your password
            <input name="current-password-mfa" type="password" autocomplete="current-password" required
              value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </label>
          <button class="primary" type="submit" disabled={busy}>Set up an authenticator app</button>
        </form>
      )}
      {enrollment && (
        <form onSubmit={confirm}>
          <p>Scan this code with an authenticator app, then type the six digits it shows.</p>
          <img class="qr" alt="QR code of the authenticator secret"
            src={`data:image/svg+xml;base64,${btoa(enrollment.qr_svg)}`} width={200} height={200} />
          <p>
            Or type the key by hand: <code class="secret">{enrollment.secret}</code>
          </p>
          <label>
            Code from the app
            <input name="code" inputMode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxLength={6}
              required value={code} onInput={(e) => setCode(e.currentTarget.value)} />
          </label>
          <button class="primary" type="submit" disabled={busy}>Turn on</button>
        </form>
      )}
      {error && <p class="error" role="alert">{error}</p>}
    </section>
  );
}

/** The account security page; `me.restriction` limits it to what the session must do. */
export function Security(props: { me: Me; onChanged: () => void }) {
  const restriction = props.me.restriction;
  const userId = props.me.user_id;
  if (userId === null) return <p>API tokens have no password or second factor.</p>;
  return (
    <div class="security">
      <h1>Account security</h1>
      {restriction === "password_expired" && (
        <p class="notice" role="status">Your password has expired. Choose a new one to continue.</p>
      )}
      {restriction === "mfa_enrollment_required" && (
        <p class="notice" role="status">Your account must sign in with a second factor. Set it up to continue.</p>
      )}
      {restriction !== "mfa_enrollment_required" && <PasswordForm userId={userId} onChanged={props.onChanged} />}
      {restriction !== "password_expired" && <TwoFactor onEnabled={props.onChanged} />}
    </div>
  );
}
