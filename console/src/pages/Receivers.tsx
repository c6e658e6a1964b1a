// Notification receivers (users with `receivers:write`: on every host for all of them, on a
// team's hosts for the team's own): each with its owner scope, kind, where it comes from and
// its settings (secrets appear only as references: a file, an environment variable, or
// "stored"), and a button that sends a test notification now.

import { useState } from "preact/hooks";
import { api, get, message } from "../api";
import { useLive } from "../useLive";

interface Receiver {
  name: string;
  /** `email`, `slack`, `pagerduty`, `discord`, `webhook` or `teams`. */
  type: string;
  origin: string;
  /** A team's receiver gets only alerts about the team's hosts; `null`: fleet-wide. */
  owner: string | null;
  active: boolean;
  settings: Record<string, unknown>;
}

export function Receivers() {
  const receivers = useLive(["receivers"], () => get<Receiver[]>("/receivers"));
  const [result, setResult] = useState<{ name: string; ok: boolean; text: string } | null>(null);
  const [sending, setSending] = useState<string | null>(null);

  const test = async (name: string) => {
    setSending(name);
    setResult(null);
    try {
      await api("POST", `/receivers/${encodeURIComponent(name)}/test`);
      setResult({ name, ok: true, text: `Test notification sent through ${name}.` });
    } catch (e) {
      setResult({ name, ok: false, text: `${name}: ${message(e)}` });
    } finally {
      setSending(null);
    }
  };

  return (
    <section>
      <h1>Receivers</h1>
      {receivers.error && <p class="error" role="alert">{receivers.error}</p>}
      {result && <p class={result.ok ? "" : "error"} role={result.ok ? "status" : "alert"}>{result.text}</p>}
      <table class="grid" aria-label="Receivers">
        <thead><tr><th>Receiver</th><th>Owner</th><th>Kind</th><th>Origin</th><th>State</th><th>Settings</th><th>Actions</th></tr></thead>
        <tbody>
          {receivers.data?.map((r) => (
            <tr key={r.name} data-receiver={r.name}>
              <td>{r.name}</td>
              <td data-owner>{r.owner ? <code>{r.owner}</code> : "fleet-wide"}</td>
              <td>{r.type}</td>
              <td>{r.origin}</td>
              <td>{r.active ? "active" : "inactive"}</td>
              <td class="wrap"><code>{JSON.stringify(r.settings)}</code></td>
              <td>
                <button type="button" disabled={sending !== null} onClick={() => void test(r.name)}>
                  {sending === r.name ? "Sending…" : "Send test"}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {receivers.data && receivers.data.length === 0 && <p class="muted">No receivers: alerts are recorded but nobody is told.</p>}
    </section>
  );
}
