// API tokens and sessions: the caller's own (everyone) or everybody's (administrators).
// A new token is shown once, then only its name and dates.

import { useState } from "preact/hooks";
import { api, get } from "../api";
import { timestamp } from "../format";
import { Dialog } from "../ui/Dialog";
import { useAction } from "../useAction";
import { useLive } from "../useLive";

interface Token {
  id: number;
  name: string;
  user_id: number | null;
  created_ms: number;
  expires_ms: number | null;
  revoked: boolean;
  last_used_ms: number | null;
}

interface Session {
  id: number;
  user_id: number;
  created_ms: number;
  last_seen_ms: number;
  expires_ms: number;
  source: string;
}

async function load(admin: boolean): Promise<{ tokens: Token[]; sessions: Session[]; names: Map<number, string> }> {
  const [tokens, sessions, users] = await Promise.all([
    get<Token[]>("/tokens"),
    get<Session[]>("/sessions"),
    // Only administrators may list users (anyone else would be refused, and audited).
    admin ? get<{ id: number; username: string }[]>("/users") : Promise.resolve([]),
  ]);
  return { tokens, sessions, names: new Map(users.map((u) => [u.id, u.username])) };
}

const EXPIRY = ["", "1d", "7d", "30d", "90d", "365d"];

export function Access(props: { mySession: number | null; admin: boolean }) {
  const data = useLive(["admin"], () => load(props.admin));
  const who = (id: number | null) => (id === null ? "–" : (data.data?.names.get(id) ?? String(id)));
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<string | null>(null);

  const { error, act } = useAction(() => {
    data.reload();
  });

  return (
    <section>
      <h1>API tokens and sessions</h1>
      {(data.error || error) && <p class="error" role="alert">{error ?? data.error}</p>}
      <h2>API tokens</h2>
      <div class="toolbar">
        <button class="primary" type="button" onClick={() => { setCreated(null); setCreating(true); }}>New token</button>
      </div>
      <table class="grid" aria-label="API tokens">
        <thead><tr><th>Name</th><th>User</th><th>Created</th><th>Expires</th><th>Last used</th><th>State</th><th>Actions</th></tr></thead>
        <tbody>
          {data.data?.tokens.map((t) => (
            <tr key={t.id} data-token={t.name}>
              <td>{t.name}</td>
              <td>{who(t.user_id)}</td>
              <td>{timestamp(t.created_ms)}</td>
              <td>{t.expires_ms ? timestamp(t.expires_ms) : "never"}</td>
              <td>{t.last_used_ms ? timestamp(t.last_used_ms) : "never"}</td>
              <td>{t.revoked ? "revoked" : "active"}</td>
              <td>{!t.revoked && <button type="button" onClick={() => act(() => api("DELETE", `/tokens/${t.id}`))}>Revoke</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Sessions</h2>
      <table class="grid" aria-label="Sessions">
        <thead><tr><th>User</th><th>Signed in</th><th>Last seen</th><th>Ends</th><th>From</th><th>Actions</th></tr></thead>
        <tbody>
          {data.data?.sessions.map((s) => (
            <tr key={s.id} data-session={s.id}>
              <td>{who(s.user_id)}</td>
              <td>{timestamp(s.created_ms)}</td>
              <td>{timestamp(s.last_seen_ms)}</td>
              <td>{timestamp(s.expires_ms)}</td>
              <td>{s.source}</td>
              <td>{s.id === props.mySession ? <span class="muted">this session</span>
                : <button type="button" onClick={() => act(() => api("DELETE", `/sessions/${s.id}`))}>End</button>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Dialog error={error} title="New API token" open={creating} onClose={() => setCreating(false)}>
        {created ? (
          <div class="form">
            <p>Copy the token now: it is not shown again.</p>
            <label>Token<input name="token" readOnly value={created} onFocus={(e) => e.currentTarget.select()} /></label>
            <div class="toolbar"><button class="primary" type="button" onClick={() => { setCreated(null); setCreating(false); }}>Done</button></div>
          </div>
        ) : (
          <TokenForm onCancel={() => setCreating(false)} onSubmit={(body) => act(async () => {
            const t = await api<{ token: string }>("POST", "/tokens", body);
            setCreated(t.token);
          })} />
        )}
      </Dialog>
    </section>
  );
}

function TokenForm(props: { onCancel: () => void; onSubmit: (body: { name: string; expires_in?: string }) => void }) {
  const [name, setName] = useState("");
  const [expiry, setExpiry] = useState("90d");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit(expiry ? { name, expires_in: expiry } : { name }); }}>
      <label>Name<input name="name" required value={name} onInput={(e) => setName(e.currentTarget.value)} /></label>
      <label>Expires after
        <select name="expires_in" value={expiry} onChange={(e) => setExpiry(e.currentTarget.value)}>
          {EXPIRY.map((x) => <option key={x} value={x}>{x || "never"}</option>)}
        </select>
      </label>
      <div class="toolbar">
        <button class="primary" type="submit">Create</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}
