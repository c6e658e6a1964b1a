// Notifications: "was I paged?" — the delivery log (every send attempt with its result, and
// every dead letter requeued or discarded, with who did it), and the dead letters (given up
// after a permanent error or `max_age`) with Retry and Discard, and a receiver's Retry all
// once it works again. Rows are about alerts: each caller sees those of their hosts. Read
// again on alert changes and every few seconds while open.

import { useEffect, useRef, useState } from "preact/hooks";
import { api, get, type Page } from "../api";
import { ago, timestamp } from "../format";
import type { Grants } from "../perm";
import { useAction } from "../useAction";
import { useLive } from "../useLive";

interface Delivery {
  id: number;
  at_ms: number;
  receiver: string;
  fingerprint: string;
  rule: string;
  host: string | null;
  status: string;
  result: string;
  attempt: number;
  error: string | null;
  actor: string | null;
}

interface DeadLetter {
  id: number;
  receiver: string;
  fingerprint: string;
  rule: string;
  status: string;
  summary: string;
  labels: Record<string, string>;
  reason: string;
  attempts: number;
  created_ms: number;
  failed_ms: number;
}

const RESULTS = ["", "delivered", "retry", "dead", "requeued", "discarded"];
const REFRESH_MS = 5000;

export function Notifications(props: { grants: Grants }) {
  const [receiver, setReceiver] = useState("");
  const [result, setResult] = useState("");
  const [filter, setFilter] = useState({ receiver: "", result: "" });
  const data = useLive(
    ["alert", "alerts", "receivers"],
    async () => {
      const q = new URLSearchParams({ limit: "200" });
      if (filter.receiver) q.set("receiver", filter.receiver);
      if (filter.result) q.set("result", filter.result);
      const [log, dead] = await Promise.all([
        get<Page<Delivery>>(`/notifications?${q}`),
        get<Page<DeadLetter>>("/notifications/dead?limit=200"),
      ]);
      return { log: log.items, dead: dead.items };
    },
    [filter.receiver, filter.result],
  );
  // Sends are not on the live stream: while the page is open, read again now and then.
  const reload = useRef(data.reload);
  reload.current = data.reload;
  useEffect(() => {
    const timer = window.setInterval(() => reload.current(), REFRESH_MS);
    return () => window.clearInterval(timer);
  }, []);
  const canAct = props.grants.can("alerts:ack");
  const canRetryAll = props.grants.can("receivers:write");
  const [done, setDone] = useState<string | null>(null);
  const { error, act } = useAction(() => data.reload());
  const deadReceivers = [...new Set(data.data?.dead.map((d) => d.receiver) ?? [])];

  const retry = (d: DeadLetter) =>
    act(async () => {
      await api("POST", `/notifications/dead/${d.id}/retry`);
      setDone(`Notification ${d.id} to ${d.receiver} queued again.`);
    });
  const retryAll = (name: string) =>
    act(async () => {
      const r = await api<{ requeued: number }>("POST", "/notifications/dead/retry", { receiver: name });
      setDone(`${r.requeued} notifications to ${name} queued again.`);
    });

  return (
    <section>
      <h1>Notifications</h1>
      {data.error && <p class="error" role="alert">{data.error}</p>}
      {error && <p class="error" role="alert">{error}</p>}
      {done && <p role="status">{done}</p>}

      <h2>Dead letters</h2>
      <p class="muted">Given up after a permanent error or too long undelivered. Retry once the receiver works again.</p>
      {canRetryAll && deadReceivers.length > 0 && (
        <div class="toolbar">
          {deadReceivers.map((r) => (
            <button type="button" key={r} onClick={() => retryAll(r)}>Retry all to {r}</button>
          ))}
        </div>
      )}
      <table class="grid" aria-label="Dead letters">
        <thead>
          <tr><th>Failed</th><th>Receiver</th><th>Alert</th><th>Reason</th><th>Attempts</th>{canAct && <th>Actions</th>}</tr>
        </thead>
        <tbody>
          {data.data?.dead.map((d) => (
            <tr key={d.id} data-dead={d.id} data-receiver={d.receiver}>
              <td title={timestamp(d.failed_ms)}>{ago(d.failed_ms)}</td>
              <td>{d.receiver}</td>
              <td class="wrap">
                <strong>{d.rule}</strong> ({d.status}){d.labels.host && ` on ${d.labels.host}`}
                {d.labels.team && <span class="label team">team {d.labels.team}</span>}
                <div class="muted">{d.summary}</div>
              </td>
              <td class="wrap">{d.reason}</td>
              <td>{d.attempts}</td>
              {canAct && (
                <td>
                  <div class="actions">
                    <button type="button" onClick={() => retry(d)}>Retry</button>
                    <button type="button" onClick={() => act(() => api("DELETE", `/notifications/dead/${d.id}`))}>Discard</button>
                  </div>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.dead.length === 0 && <p class="muted">No dead letters.</p>}

      <h2>Delivery log</h2>
      <form class="toolbar" onSubmit={(e) => { e.preventDefault(); setFilter({ receiver, result }); }}>
        <label>Receiver<input name="receiver" value={receiver} onInput={(e) => setReceiver(e.currentTarget.value)} /></label>
        <label>Result
          <select name="result" value={result} onChange={(e) => setResult(e.currentTarget.value)}>
            {RESULTS.map((r) => <option key={r} value={r}>{r || "any"}</option>)}
          </select>
        </label>
        <button type="submit">Apply</button>
      </form>
      <table class="grid" aria-label="Delivery log">
        <thead><tr><th>Time</th><th>Receiver</th><th>Alert</th><th>Status</th><th>Result</th><th>Attempt</th><th>Detail</th></tr></thead>
        <tbody>
          {data.data?.log.map((l) => (
            <tr key={l.id} data-delivery={l.id} data-result={l.result} data-receiver={l.receiver}>
              <td>{timestamp(l.at_ms)}</td>
              <td>{l.receiver}</td>
              <td>{l.rule}{l.host && ` on ${l.host}`}</td>
              <td>{l.status}</td>
              <td><span class={`result ${l.result}`}>{l.result}</span></td>
              <td>{l.attempt}</td>
              <td class="wrap">{l.actor ? `by ${l.actor}` : (l.error ?? "")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.log.length === 0 && <p class="muted">Nothing sent yet.</p>}
    </section>
  );
}
