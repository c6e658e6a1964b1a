// One MCP server of a host: its state and restart history, the MCP handshake it answered,
// probe latency per stage (chart), per-tool calls / error ratio / latency from the gateway,
// tool drift as a diff with Approve, Restart / Stop / Start, and its events (successful
// probes hidden unless asked). The drift and the restart history are read by event kind,
// apart from the latest events, which probe results soon fill. Updated live.

import { useEffect, useMemo, useState } from "preact/hooks";
import { api, get, type Host, type Page } from "../api";
import { format } from "../chart/units";
import { fromFirstValue, loadPanels, stepFor, type Drawn, type Panel } from "../chart/query";
import { ago, duration, timestamp } from "../format";
import { href } from "../router";
import { Dialog } from "../ui/Dialog";
import { useAction } from "../useAction";
import { useLive } from "../useLive";
import { detailText, type Event } from "./events";
import { DriftView } from "./DriftView";
import { driftOf, stateOf, type ServerView } from "./servers";

interface ToolView {
  tool: string;
  calls: number;
  errors: number;
  error_ratio: number | null;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  last_error_at: number | null;
}

interface ToolsView {
  tools: ToolView[];
  truncated: boolean;
}

interface CommandReply {
  ok: boolean;
  message: string;
}

const TOOL_RANGES = ["15m", "1h", "6h"];

/** The agent's successful probe: one every probe interval (15 s by default). */
const PROBE_OK = "probe_ok";
const DRIFT_KINDS = ["tool_drift", "drift_approved", "tools_baseline"];
/** The supervisor's event kinds that make a server's restart history. */
const HISTORY_KINDS = ["started", "exited", "restart_scheduled", "restarted", "gave_up", "stopped", "unhealthy"];
const HISTORY = 20;

/** Whether a live change (`{host, server, kind...}`, or `{}` after a reset) may concern `host`. */
function ofHost(change: any, host: string): boolean {
  return !change?.host || change.host === host;
}

/** The `n` newest of `list` (by id), each once. */
function newest(list: Event[], n: number): Event[] {
  const seen = new Set<number>();
  return list
    .filter((e) => !seen.has(e.id) && (seen.add(e.id), true))
    .sort((a, b) => b.id - a.id)
    .slice(0, n);
}

function quote(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

function latencyPanel(server: string): Panel {
  return {
    title: "Probe latency per stage",
    unit: "seconds",
    queries: [
      {
        name: "mcpwatch_server_probe_latency_seconds",
        match: `{server=${quote(server)}}`,
        label: (s) => s.labels.stage ?? "probe",
      },
    ],
  };
}

type ChartModule = typeof import("../chart/Chart");

/** The latency charts cover the last hour, or less when it begins without probes (a new
 * server): from the first probe, showing at least 5 minutes. */
const LATENCY_RANGE_MS = 3_600_000;
const LATENCY_MIN_POINTS = Math.ceil(300_000 / stepFor(LATENCY_RANGE_MS)) + 1;

function trimmed(p: Drawn): Drawn {
  const data = fromFirstValue(p.data, LATENCY_MIN_POINTS);
  const times = data.times;
  const minutes = times.length > 1 ? Math.round((times[times.length - 1] - times[0]) / 60) : 0;
  const span = data === p.data || minutes >= 60 ? "last hour" : `last ${minutes} min`;
  return { ...p, title: `${p.title} (${span})`, data };
}

export function Server(props: { host: string; name: string }) {
  const base = `/hosts/${encodeURIComponent(props.host)}`;
  const path = `${base}/servers/${encodeURIComponent(props.name)}`;
  const [toolRange, setToolRange] = useState("1h");
  const [chart, setChart] = useState<ChartModule | null>(null);
  const [reply, setReply] = useState<string | null>(null);
  const [confirmStop, setConfirmStop] = useState(false);
  const [hideProbes, setHideProbes] = useState(true);
  const host = useLive(["host"], () => get<Host>(base), [props.host]);
  // A probe result moves only counters, which the timer below re-reads anyway.
  const servers = useLive(["event"], () => get<ServerView[]>(`${base}/servers`), [props.host], {
    accept: (_t, e) => ofHost(e, props.host) && e?.kind !== PROBE_OK,
  });
  const tools = useLive([], () => get<ToolsView>(`${path}/tools?range=${toolRange}`), [path, toolRange]);
  const mine = (e: any) => ofHost(e, props.host) && (!e?.server || e.server === props.name);
  const eventsOf = (kinds: string[] | null, limit: number) => {
    const q = new URLSearchParams({ host: props.host, server: props.name, limit: String(limit) });
    if (kinds) q.set("kind", kinds.join(","));
    return get<Page<Event>>(`/events?${q}`).then((p) => p.items);
  };
  // The newest drift, read by kind: a probe result every 15 s would soon push it out of
  // any list of the latest events.
  const driftEvents = useLive(["event"], () => eventsOf(["tool_drift"], 1), [path], {
    accept: (t, e) => mine(e) && (t !== "event" || !e?.kind || DRIFT_KINDS.includes(e.kind)),
  });
  // Restarts and exits, read by kind for the same reason.
  const history = useLive(["event"], () => eventsOf(HISTORY_KINDS, HISTORY), [path], {
    accept: (t, e) => mine(e) && (t !== "event" || !e?.kind || HISTORY_KINDS.includes(e.kind)),
  });
  const events = useLive(["event"], () => eventsOf(null, 100), [path], {
    accept: (_t, e) => mine(e) && !(hideProbes && e?.kind === PROBE_OK),
  });
  const latency = useLive([], () => loadPanels(props.host, [latencyPanel(props.name)], LATENCY_RANGE_MS), [path]);
  // Trimmed once per read: a new object each render would make the chart redraw each time.
  const latencyCharts = useMemo(() => latency.data?.map(trimmed), [latency.data]);
  const { error, act } = useAction(() => {
    setConfirmStop(false);
    servers.reload();
  });

  useEffect(() => {
    void import("../chart/Chart").then(setChart);
  }, []);
  useEffect(() => {
    // Figures from samples change without events.
    const timer = window.setInterval(() => {
      servers.reload();
      tools.reload();
      latency.reload();
    }, 15_000);
    return () => window.clearInterval(timer);
  }, [path, toolRange]);

  const control = (action: string) =>
    act(async () => {
      setReply(null);
      const r = await api<CommandReply>("POST", `${path}/${action}`);
      if (!r.ok) throw new Error(r.message);
      setReply(r.message);
    });

  const s = servers.data?.find((x) => x.name === props.name);
  const canControl = host.data?.permissions.includes("servers:control") ?? false;
  const [state, tone] = s ? stateOf(s) : ["unknown", ""];
  const driftEvent = driftEvents.data?.[0];
  // The timeline: the latest events, without successful probes unless asked, merged with
  // the drift and restart history read by kind (older than the latest 100 events perhaps).
  const timeline = hideProbes
    ? newest([...(events.data ?? []), ...(history.data ?? []), ...(driftEvents.data ?? [])].filter((e) => e.kind !== PROBE_OK), 50)
    : (events.data ?? []).slice(0, 50);
  const drift = s?.drift && driftEvent ? driftOf(driftEvent.detail) : null;

  return (
    <section>
      <p>
        <a href={href("fleet")}>Fleet</a> / <a href={href("hosts", props.host)}>{props.host}</a> / {props.name}
      </p>
      <h1>{props.name}</h1>
      {servers.error && <p class="error" role="alert">{servers.error}</p>}
      {servers.data && !s && <p class="muted">This host reports no MCP server of that name.</p>}
      {s && (
        <>
          <div class="toolbar">
            <span class={`badge ${tone}`} data-state={s.state ?? ""}>{state}</span>
            {s.drift && <span class="badge warn">tools drifted</span>}
            {canControl && (
              <span class="actions" role="group" aria-label="Server control">
                <button type="button" onClick={() => control("restart")}>Restart</button>
                <button type="button" onClick={() => setConfirmStop(true)}>Stop</button>
                <button type="button" onClick={() => control("start")}>Start</button>
              </span>
            )}
            {reply && <span class="muted" role="status">{reply}</span>}
            {error && !confirmStop && <span class="error" role="alert">{error}</span>}
          </div>
          <dl class="facts">
            <Fact name="Up" value={yesNo(s.up)} />
            <Fact name="Healthy" value={yesNo(s.healthy)} />
            <Fact name="Restarts" value={s.restarts ?? "–"} />
            <Fact name="Uptime" value={s.uptime_seconds === null ? "–" : duration(s.uptime_seconds)} />
            <Fact name="Last exit code" value={s.last_exit_code ?? "–"} />
            <Fact name="Killed for memory" value={yesNo(s.oom_killed)} />
            <Fact name="Memory" value={s.memory_bytes === null ? "–" : format("bytes", s.memory_bytes)} />
            <Fact name="MCP revision" value={s.protocol_version ?? "–"} />
            <Fact name="Server says it is" value={s.server_name ? `${s.server_name} ${s.server_version ?? ""}` : "–"} />
            <Fact name="Tools listed" value={s.tools ?? "–"} />
            <Fact name="Probes" value={s.probes_total ?? "–"} />
            <Fact name="Probe failures" value={Object.entries(s.probe_failures).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ") || "none"} />
          </dl>
        </>
      )}

      {s?.drift && (
        <>
          <h2>Tool drift</h2>
          <p class="muted">
            The tools this server lists changed since they were last approved
            {driftEvent ? ` (noticed ${ago(driftEvent.ts_ms)})` : ""}. A model sees the new descriptions; approve them only
            once you know why they changed.
          </p>
          {drift && <DriftView drift={drift} />}
          {canControl && (
            <button type="button" class="primary" onClick={() => control("approve-drift")}>Approve the new tools</button>
          )}
        </>
      )}

      <h2>Probe latency</h2>
      {latency.error && <p class="error" role="alert">{latency.error}</p>}
      <div class="charts">
        {chart && latencyCharts?.map((p, i) => <chart.Chart key={i} title={p.title} unit={p.unit} data={p.data} />)}
      </div>

      <h2>Tools</h2>
      <div class="toolbar" role="group" aria-label="Tool figures range">
        {TOOL_RANGES.map((r) => (
          <button type="button" key={r} aria-pressed={toolRange === r} class={toolRange === r ? "primary" : ""} onClick={() => setToolRange(r)}>
            {r}
          </button>
        ))}
        <span class="muted">Calls through this host's gateway.</span>
      </div>
      {tools.error && <p class="error" role="alert">{tools.error}</p>}
      {tools.data && tools.data.tools.length === 0 && <p class="muted">No tool calls in this range.</p>}
      {tools.data && tools.data.tools.length > 0 && (
        <table class="grid" aria-label="Tools">
          <thead>
            <tr><th>Tool</th><th>Calls</th><th>Errors</th><th>Error ratio</th><th>p50</th><th>p95</th><th>p99</th><th>Last error</th></tr>
          </thead>
          <tbody>
            {tools.data.tools.map((t) => (
              <tr key={t.tool} data-tool={t.tool}>
                <td>{t.tool}</td>
                <td>{Math.round(t.calls)}</td>
                <td class={t.errors > 0 ? "count-bad" : ""}>{Math.round(t.errors)}</td>
                <td>{t.error_ratio === null ? "–" : format("percent", t.error_ratio)}</td>
                <td>{seconds(t.p50)}</td>
                <td>{seconds(t.p95)}</td>
                <td>{seconds(t.p99)}</td>
                <td>{t.last_error_at ? ago(t.last_error_at) : "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>Restart history</h2>
      {history.error && <p class="error" role="alert">{history.error}</p>}
      {history.data && history.data.length === 0 && <p class="muted">No starts, exits or restarts recorded.</p>}
      {history.data && history.data.length > 0 && (
        <table class="grid" aria-label="Restart history">
          <thead><tr><th>Time</th><th>Event</th><th>Detail</th></tr></thead>
          <tbody>
            {history.data.map((e) => (
              <tr key={e.id} data-history-kind={e.kind}>
                <td title={timestamp(e.ts_ms)}>{ago(e.ts_ms)}</td>
                <td>{e.kind}</td>
                <td class="wrap"><code>{detailText(e.detail)}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>Events</h2>
      <div class="toolbar">
        <label>
          <input type="checkbox" checked={hideProbes} onChange={(e) => {
            const hide = e.currentTarget.checked;
            setHideProbes(hide);
            // Successful probes were not followed while hidden.
            if (!hide) events.reload();
          }} />
          Hide successful probes
        </label>
      </div>
      {events.error && <p class="error" role="alert">{events.error}</p>}
      <ol class="timeline" aria-label="Server events">
        {timeline.map((e) => (
          <li key={e.id} data-kind={e.kind}>
            <span class="muted" title={timestamp(e.ts_ms)}>{ago(e.ts_ms)}</span> <strong>{e.kind}</strong>{" "}
            <code>{detailText(e.detail)}</code>
          </li>
        ))}
      </ol>
      {events.data && timeline.length === 0 && <p class="muted">No events.</p>}

      <Dialog title={`Stop ${props.name}?`} open={confirmStop} onClose={() => setConfirmStop(false)} error={error}>
        <p>The server stays stopped, without restarts, until someone starts it again.</p>
        <div class="actions">
          <button type="button" class="primary" onClick={() => control("stop")}>Stop</button>
          <button type="button" onClick={() => setConfirmStop(false)}>Cancel</button>
        </div>
      </Dialog>
    </section>
  );
}

function Fact(props: { name: string; value: string | number }) {
  return (
    <div>
      <dt>{props.name}</dt>
      <dd>{props.value}</dd>
    </div>
  );
}

function yesNo(v: boolean | null): string {
  return v === null ? "–" : v ? "yes" : "no";
}

function seconds(v: number | null): string {
  return v === null ? "–" : format("seconds", v);
}
