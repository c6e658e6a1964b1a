// Alerts: what fires now (severity, age, labels, acknowledgement, silences muting it) with
// Ack and Silence in place, what is pending, the silences with Expire, and the latest state
// changes. Updated live.

import { useState } from "preact/hooks";
import { api, get, type Page } from "../api";
import { ago, timestamp, until } from "../format";
import type { Grants } from "../perm";
import { Dialog } from "../ui/Dialog";
import { useAction } from "../useAction";
import { useLive } from "../useLive";

interface Alert {
  fingerprint: string;
  rule: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  status: string;
  severity: string;
  value: number | null;
  started_ms: number;
  ack: { by: string; at_ms: number; comment: string } | null;
  silenced_by: number[];
  escalation: { policy: string; step: number | null; next_ms: number | null } | null;
}

/** Where an alert is in its escalation policy, in words. */
function escalationText(a: Alert, e: NonNullable<Alert["escalation"]>): string {
  const step = e.step === null ? "not started" : `step ${e.step + 1}`;
  const next = a.ack
    ? "stopped by the acknowledgement"
    : e.next_ms === null
      ? "no further step"
      : `next step ${timestamp(e.next_ms)} (${until(e.next_ms)})`;
  return `escalation ${e.policy}: ${step}, ${next}`;
}

interface Silence {
  id: number;
  matchers: string;
  starts_ms: number;
  ends_ms: number;
  author: string;
  comment: string;
  state: string;
}

const SEVERITY_ORDER = ["critical", "high", "medium", "low"];
// Labels that say which alert this is; the rest describe it.
const NOISE = new Set(["alertname", "severity"]);

function quote(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The silence matchers an alert's labels suggest: every label but severity. */
export function matchersFor(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).filter(([k]) => k !== "severity");
  return `{${pairs.map(([k, v]) => `${k}=${quote(v)}`).join(", ")}}`;
}

interface Pending {
  rule: string;
  fingerprint: string;
  labels: Record<string, string>;
  level: string | null;
  since_ms: number;
  value: number | null;
}

interface Transition {
  id: number;
  at_ms: number;
  rule: string;
  labels: Record<string, string>;
  from: string;
  to: string;
  level: string | null;
}

async function loadAlerts(): Promise<{ alerts: Alert[]; pending: Pending[]; silences: Silence[]; history: Transition[] }> {
  const [alerts, pending, silences, history] = await Promise.all([
    get<Page<Alert>>("/alerts?limit=1000"),
    get<Pending[]>("/alerts/pending"),
    get<Page<Silence>>("/silences?limit=1000"),
    get<Page<Transition>>("/alerts/history?limit=50"),
  ]);
  const rank = (a: Alert) => SEVERITY_ORDER.indexOf(a.severity);
  alerts.items.sort((a, b) => rank(a) - rank(b) || a.started_ms - b.started_ms);
  return { alerts: alerts.items, pending, silences: silences.items, history: history.items };
}

export function Alerts(props: { grants: Grants }) {
  const data = useLive(["alert", "alerts", "silences"], loadAlerts);
  const canAck = props.grants.can("alerts:ack");
  const canSilence = props.grants.can("silences:write");
  const [acking, setAcking] = useState<Alert | null>(null);
  const [silencing, setSilencing] = useState<Alert | null>(null);

  const { error, act } = useAction(() => {
    setAcking(null);
    setSilencing(null);
    data.reload();
  });

  return (
    <section>
      <h1>Alerts</h1>
      {data.error && <p class="error" role="alert">{data.error}</p>}
      {error && <p class="error" role="alert">{error}</p>}
      <table class="grid" aria-label="Firing alerts">
        <thead>
          <tr><th>Severity</th><th>Alert</th><th>Labels</th><th>Since</th><th>State</th>{(canAck || canSilence) && <th>Actions</th>}</tr>
        </thead>
        <tbody>
          {data.data?.alerts.map((a) => (
            <tr key={a.fingerprint} data-alert={a.fingerprint} data-rule={a.rule}
              data-muted={String(a.silenced_by.length > 0)} data-acked={String(a.ack !== null)}>
              <td><span class={`severity ${a.severity}`}>{a.severity}</span></td>
              <td class="wrap">
                <strong>{a.labels.alertname ?? a.rule}</strong>
                {a.labels.team && <span class="label team" data-team={a.labels.team}>team {a.labels.team}</span>}
                {a.annotations.summary && <div class="muted">{a.annotations.summary}</div>}
              </td>
              <td class="wrap">
                {Object.entries(a.labels).filter(([k]) => !NOISE.has(k)).map(([k, v]) => (
                  <span class="label" key={k}>{k}={v}</span>
                ))}
              </td>
              <td title={timestamp(a.started_ms)}>{ago(a.started_ms)}</td>
              <td class="wrap">
                {a.status}
                {a.ack && <div class="muted">acknowledged by {a.ack.by}{a.ack.comment && `: ${a.ack.comment}`}</div>}
                {a.silenced_by.length > 0 && <div class="muted">muted by silence {a.silenced_by.join(", ")}</div>}
                {a.escalation && <div class="muted" data-escalation={a.escalation.policy}>{escalationText(a, a.escalation)}</div>}
              </td>
              {(canAck || canSilence) && (
                <td>
                  <div class="actions">
                    {canAck && !a.ack && <button type="button" onClick={() => setAcking(a)}>Ack</button>}
                    {canSilence && <button type="button" onClick={() => setSilencing(a)}>Silence</button>}
                  </div>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.alerts.length === 0 && <p class="muted">Nothing fires.</p>}

      {data.data && data.data.pending.length > 0 && (
        <>
          <h2>Pending</h2>
          <p class="muted">The condition holds; each fires once it has held for its rule's <code>for</code>.</p>
          <table class="grid" aria-label="Pending alerts">
            <thead><tr><th>Level</th><th>Alert</th><th>Labels</th><th>Holding since</th><th>Value</th></tr></thead>
            <tbody>
              {data.data.pending.map((p) => (
                <tr key={p.fingerprint} data-pending={p.rule}>
                  <td>{p.level ?? "–"}</td>
                  <td>{p.rule}</td>
                  <td class="wrap">
                    {Object.entries(p.labels).filter(([k]) => !NOISE.has(k)).map(([k, v]) => (
                      <span class="label" key={k}>{k}={v}</span>
                    ))}
                  </td>
                  <td title={timestamp(p.since_ms)}>{ago(p.since_ms)}</td>
                  <td>{p.value ?? "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}

      <h2>Silences</h2>
      <table class="grid" aria-label="Silences">
        <thead>
          <tr><th>Matchers</th><th>State</th><th>Ends</th><th>By</th><th>Comment</th>{canSilence && <th>Actions</th>}</tr>
        </thead>
        <tbody>
          {data.data?.silences.map((s) => (
            <tr key={s.id} data-silence={s.id}>
              <td class="wrap"><code>{s.matchers}</code></td>
              <td>{s.state}</td>
              <td>{timestamp(s.ends_ms)}</td>
              <td>{s.author}</td>
              <td class="wrap">{s.comment}</td>
              {canSilence && (
                <td><button type="button" onClick={() => act(() => api("DELETE", `/silences/${s.id}`))}>Expire</button></td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.silences.length === 0 && <p class="muted">No silences.</p>}

      <h2>History</h2>
      <table class="grid" aria-label="Alert history">
        <thead><tr><th>Time</th><th>Alert</th><th>Labels</th><th>Change</th></tr></thead>
        <tbody>
          {data.data?.history.map((h) => (
            <tr key={h.id} data-transition={h.id}>
              <td>{timestamp(h.at_ms)}</td>
              <td>{h.labels.alertname ?? h.rule}</td>
              <td class="wrap">
                {Object.entries(h.labels).filter(([k]) => !NOISE.has(k)).map(([k, v]) => (
                  <span class="label" key={k}>{k}={v}</span>
                ))}
              </td>
              <td>{h.from === h.to ? "labels changed (host relabelled)" : `${h.from} → ${h.to}`}{h.level && ` (${h.level})`}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.history.length === 0 && <p class="muted">No changes yet.</p>}

      <Dialog error={error} title="Acknowledge alert" open={acking !== null} onClose={() => setAcking(null)}>
        {acking && <AckForm alert={acking} onCancel={() => setAcking(null)}
          onSubmit={(comment) => act(() => api("POST", `/alerts/${encodeURIComponent(acking.fingerprint)}/ack`, { comment }))} />}
      </Dialog>
      <Dialog error={error} title="Silence alerts" open={silencing !== null} onClose={() => setSilencing(null)}>
        {silencing && <SilenceForm alert={silencing} onCancel={() => setSilencing(null)}
          onSubmit={(body) => act(() => api("POST", "/silences", body))} />}
      </Dialog>
    </section>
  );
}

function AckForm(props: { alert: Alert; onCancel: () => void; onSubmit: (comment: string) => void }) {
  const [comment, setComment] = useState("");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit(comment); }}>
      <p>{props.alert.labels.alertname ?? props.alert.rule} on {props.alert.labels.host ?? "the fleet"}</p>
      <label>Comment<textarea name="comment" maxLength={1024} value={comment} onInput={(e) => setComment(e.currentTarget.value)} /></label>
      <div class="toolbar">
        <button class="primary" type="submit">Acknowledge</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}

const DURATIONS = ["30m", "1h", "2h", "4h", "12h", "1d", "7d"];

function SilenceForm(props: {
  alert: Alert;
  onCancel: () => void;
  onSubmit: (body: { matchers: string; duration: string; comment: string }) => void;
}) {
  const [matchers, setMatchers] = useState(matchersFor(props.alert.labels));
  const [duration, setDuration] = useState("2h");
  const [comment, setComment] = useState("");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit({ matchers, duration, comment }); }}>
      <label>Matchers<input name="matchers" required value={matchers} onInput={(e) => setMatchers(e.currentTarget.value)} /></label>
      <label>Duration
        <select name="duration" value={duration} onChange={(e) => setDuration(e.currentTarget.value)}>
          {DURATIONS.map((d) => <option key={d} value={d}>{d}</option>)}
        </select>
      </label>
      <label>Comment<textarea name="comment" required maxLength={1024} value={comment} onInput={(e) => setComment(e.currentTarget.value)} /></label>
      <div class="toolbar">
        <button class="primary" type="submit">Silence</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}
