// The audit log: every change and every refusal, newest first, filtered by actor, action,
// object, result and time range, paged.

import { useEffect, useState } from "preact/hooks";
import { get, type Page, message } from "../api";
import { timestamp } from "../format";

interface AuditRow {
  id: number;
  at_ms: number;
  actor: string;
  source: string;
  action: string;
  object: string;
  result: number;
  detail: string;
  request_id?: string | null;
}

interface Filters {
  actor: string;
  action: string;
  object: string;
  result: string;
  since: string;
  until: string;
}

const EMPTY: Filters = { actor: "", action: "", object: "", result: "", since: "", until: "" };
const PAGE = 50;

function query(f: Filters, cursor: number | null): string {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (f.actor) q.set("actor", f.actor);
  if (f.action) q.set("action", f.action);
  if (f.object) q.set("object", f.object);
  if (f.result) q.set("result", f.result);
  if (f.since) q.set("since_ms", String(new Date(f.since).getTime()));
  if (f.until) q.set("until_ms", String(new Date(f.until).getTime()));
  if (cursor) q.set("cursor", String(cursor));
  return `/audit?${q}`;
}

export function Audit() {
  const [form, setForm] = useState<Filters>(EMPTY);
  const [rows, setRows] = useState<AuditRow[]>([]);
  const [next, setNext] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);

  const load = async (f: Filters, cursor: number | null) => {
    try {
      const page = await get<Page<AuditRow>>(query(f, cursor));
      setRows((old) => (cursor ? [...old, ...page.items] : page.items));
      setNext(typeof page.next_cursor === "number" ? page.next_cursor : null);
      setError(null);
    } catch (e) {
      setError(message(e));
    }
    setLoaded(true);
  };

  useEffect(() => {
    void load(EMPTY, null);
  }, []);

  const field = (key: keyof Filters, title: string, type: "text" | "number" | "datetime-local" = "text") => (
    <label>
      <span class="sr-only">{title}</span>
      {/* The element types narrow `type` per value; this helper takes any of three. */}
      <input type={type as "text"} placeholder={title} aria-label={title} value={form[key]}
        onInput={(e) => setForm({ ...form, [key]: e.currentTarget.value })} />
    </label>
  );

  return (
    <section>
      <h1>Audit log</h1>
      <form class="toolbar" onSubmit={(e) => { e.preventDefault(); void load(form, null); }}>
        {field("actor", "Actor, e.g. user:alice")}
        {field("action", "Action, e.g. POST /api/v1/users")}
        {field("object", "Object, e.g. /api/v1/users/3")}
        {field("result", "Result, e.g. 403", "number")}
        {field("since", "From", "datetime-local")}
        {field("until", "Until", "datetime-local")}
        <button class="primary" type="submit">Apply</button>
        <button type="button" onClick={() => { setForm(EMPTY); void load(EMPTY, null); }}>Clear</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <table class="grid" aria-label="Audit records">
        <thead>
          <tr><th>Time</th><th>Actor</th><th>Action</th><th>Object</th><th>Result</th><th>Source</th><th>Detail</th></tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.id} data-audit-id={r.id}>
              <td>{timestamp(r.at_ms)}</td>
              <td>{r.actor}</td>
              <td>{r.action}</td>
              <td class="wrap">{r.object}</td>
              <td class={r.result >= 400 ? "error" : ""}>{r.result}</td>
              <td>{r.source}</td>
              <td class="wrap">{r.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && rows.length === 0 && !error && <p class="muted">No records match.</p>}
      {next && <p><button type="button" onClick={() => void load(form, next)}>Older records</button></p>}
    </section>
  );
}
