// One host: its state and labels, its MCP servers (each linking to its own page), and
// charts of its metrics over a chosen range (15 m to 30 d; the collector picks raw samples,
// 1-minute or 1-hour rollups by range). Charts load lazily with uPlot; cursors are synced.

import { useEffect, useState } from "preact/hooks";
import { get, type Host as HostView } from "../api";
import { loadPanels, type Panel } from "../chart/query";
import { ago } from "../format";
import { href } from "../router";
import { useLive } from "../useLive";
import { stateOf, type ServerView } from "./servers";

const RANGES: [string, number][] = [
  ["15m", 15 * 60_000],
  ["1h", 3_600_000],
  ["6h", 6 * 3_600_000],
  ["1d", 86_400_000],
  ["7d", 7 * 86_400_000],
  ["30d", 30 * 86_400_000],
];

const PANELS: Panel[] = [
  {
    title: "CPU busy",
    unit: "percent",
    queries: [{ name: "mcpwatch_host_cpu_usage_ratio", match: '{cpu="total"}', label: () => "all cores" }],
  },
  {
    title: "Memory",
    unit: "bytes",
    queries: [
      { name: "mcpwatch_host_memory_used_bytes", label: () => "used" },
      { name: "mcpwatch_host_memory_total_bytes", label: () => "total" },
    ],
  },
  {
    title: "Disk used",
    unit: "bytes",
    queries: [{ name: "mcpwatch_host_disk_used_bytes", label: (s) => s.labels.mountpoint ?? "disk" }],
  },
  {
    title: "Load average",
    unit: "count",
    queries: [
      { name: "mcpwatch_host_load1", label: () => "1 m" },
      { name: "mcpwatch_host_load5", label: () => "5 m" },
      { name: "mcpwatch_host_load15", label: () => "15 m" },
    ],
  },
  {
    title: "Network",
    unit: "bytes_per_second",
    queries: [
      { name: "mcpwatch_host_network_receive_bytes_total", agg: "rate", label: (s) => `${s.labels.interface ?? ""} in` },
      { name: "mcpwatch_host_network_transmit_bytes_total", agg: "rate", label: (s) => `${s.labels.interface ?? ""} out` },
    ],
  },
];

type ChartModule = typeof import("../chart/Chart");

export function Host(props: { id: string }) {
  const [range, setRange] = useState("1h");
  const [chart, setChart] = useState<ChartModule | null>(null);
  const rangeMs = RANGES.find(([n]) => n === range)?.[1] ?? 3_600_000;
  const host = useLive(["host"], () => get<HostView>(`/hosts/${encodeURIComponent(props.id)}`), [props.id]);
  const panels = useLive([], () => loadPanels(props.id, PANELS, rangeMs), [props.id, rangeMs]);
  // Only this host's events, and at most one re-read every 2 s: probes of every server in
  // the fleet arrive on the same stream.
  const servers = useLive(["event"], () => get<ServerView[]>(`/hosts/${encodeURIComponent(props.id)}/servers`), [props.id], {
    // A reset (the stream resumed from scratch) names no host: re-read then too.
    accept: (_topic, change) => !change?.host || change.host === props.id,
    minIntervalMs: 2_000,
  });

  useEffect(() => {
    void import("../chart/Chart").then(setChart);
  }, []);
  useEffect(() => {
    // Short ranges follow the present.
    if (rangeMs > 6 * 3_600_000) return;
    const timer = window.setInterval(panels.reload, 15_000);
    return () => window.clearInterval(timer);
  }, [rangeMs, props.id]);

  const h = host.data;
  return (
    <section>
      <p><a href={href("fleet")}>Fleet</a> / {props.id}</p>
      <h1>{props.id}</h1>
      {host.error && <p class="error" role="alert">{host.error}</p>}
      {h && (
        <p class="toolbar" data-online={String(h.online)}>
          <span class={`state ${h.online ? "online" : "offline"}`}>{h.revoked ? "revoked" : h.online ? "online" : "offline"}</span>
          <span class="muted">last seen {ago(h.last_seen_ms)}</span>
          <span class="muted">{h.hostname} · agent {h.agent_version}</span>
          {Object.entries(h.labels).map(([k, v]) => <span class="label" key={k}>{k}={v}</span>)}
        </p>
      )}
      <h2>MCP servers</h2>
      {servers.error && <p class="error" role="alert">{servers.error}</p>}
      {servers.data && servers.data.length === 0 && <p class="muted">This host supervises no MCP server.</p>}
      {servers.data && servers.data.length > 0 && (
        <table class="grid" aria-label="MCP servers">
          <thead>
            <tr><th>Server</th><th>State</th><th>Restarts</th><th>Tools</th><th>Probe</th><th>Last event</th></tr>
          </thead>
          <tbody>
            {servers.data.map((s) => {
              const [state, tone] = stateOf(s);
              const last = s.events[0];
              return (
                <tr key={s.name} data-server={s.name}>
                  <td><a href={href("hosts", props.id, "servers", s.name)}>{s.name}</a></td>
                  <td>
                    <span class={`badge ${tone}`}>{state}</span>
                    {s.drift && <span class="badge warn">drift</span>}
                  </td>
                  <td>{s.restarts ?? "–"}</td>
                  <td>{s.tools ?? "–"}</td>
                  <td>{s.probe_up === null ? "–" : s.probe_up ? "answers" : "fails"}</td>
                  <td>{last ? `${last.kind} ${ago(last.ts_ms)}` : "–"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <h2>Host metrics</h2>
      <div class="toolbar" role="group" aria-label="Time range">
        {RANGES.map(([name]) => (
          <button type="button" key={name} aria-pressed={range === name} class={range === name ? "primary" : ""}
            onClick={() => setRange(name)}>{name}</button>
        ))}
        {panels.data && <span class="muted" data-tier={panels.data[0]?.tier}>from {tierName(panels.data[0]?.tier)}</span>}
        <span class="muted">Drag across a chart to zoom; double-click to reset.</span>
      </div>
      {panels.error && <p class="error" role="alert">{panels.error}</p>}
      <div class="charts">
        {chart && panels.data?.map((p) => <chart.Chart key={p.title} title={p.title} unit={p.unit} data={p.data} />)}
      </div>
    </section>
  );
}

function tierName(tier: string | undefined): string {
  return tier === "raw" ? "raw samples" : tier === "1m" ? "1-minute rollups" : tier === "1h" ? "1-hour rollups" : "–";
}
