// One host: its state and labels, and charts of its metrics over a chosen range (15 m to
// 30 d; the collector picks raw samples, 1-minute or 1-hour rollups by range). Charts load
// lazily with uPlot; cursors are synced across them.

import { useEffect, useState } from "preact/hooks";
import { get, type Host as HostView } from "../api";
import { ago } from "../format";
import { href } from "../router";
import { useLive } from "../useLive";
import type { ChartData } from "../chart/Chart";
import type { Unit } from "../chart/units";

const RANGES: [string, number][] = [
  ["15m", 15 * 60_000],
  ["1h", 3_600_000],
  ["6h", 6 * 3_600_000],
  ["1d", 86_400_000],
  ["7d", 7 * 86_400_000],
  ["30d", 30 * 86_400_000],
];

/** Steps an operator recognises, from the 1 s sampling interval up to a day. */
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400].map((s) => s * 1000);

/** About 720 points per chart whatever the range. */
export function stepFor(rangeMs: number): number {
  return STEPS.find((s) => rangeMs / s <= 720) ?? STEPS[STEPS.length - 1];
}

interface RangeSeries {
  name: string;
  labels: Record<string, string>;
  points: [number, number | null][];
}

interface RangeResponse {
  tier: string;
  start_ms: number;
  step_ms: number;
  series: RangeSeries[];
}

interface Panel {
  title: string;
  unit: Unit;
  queries: { name: string; match?: string; agg?: string; label: (s: RangeSeries) => string }[];
}

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

interface Drawn {
  title: string;
  unit: Unit;
  data: ChartData;
  tier: string;
}

async function loadPanels(host: string, rangeMs: number): Promise<Drawn[]> {
  const step = stepFor(rangeMs);
  const end = Math.floor(Date.now() / step) * step;
  const start = end - rangeMs;
  const times: number[] = [];
  for (let t = start; t <= end; t += step) times.push(t / 1000);
  return Promise.all(
    PANELS.map(async (panel) => {
      const answers = await Promise.all(
        panel.queries.map(async (q) => {
          const p = new URLSearchParams({
            host,
            name: q.name,
            start_ms: String(start),
            end_ms: String(end),
            step_ms: String(step),
          });
          if (q.match) p.set("match", q.match);
          if (q.agg) p.set("agg", q.agg);
          return { q, r: await get<RangeResponse>(`/query_range?${p}`) };
        }),
      );
      const series = answers.flatMap(({ q, r }) =>
        r.series.map((s) => {
          const values: (number | null)[] = new Array(times.length).fill(null);
          for (const [t, v] of s.points) {
            const i = Math.round((t - start) / step);
            if (i >= 0 && i < values.length) values[i] = v;
          }
          return { label: q.label(s), values };
        }),
      );
      return { title: panel.title, unit: panel.unit, data: { times, series }, tier: answers[0]?.r.tier ?? "" };
    }),
  );
}

type ChartModule = typeof import("../chart/Chart");

export function Host(props: { id: string }) {
  const [range, setRange] = useState("1h");
  const [chart, setChart] = useState<ChartModule | null>(null);
  const rangeMs = RANGES.find(([n]) => n === range)?.[1] ?? 3_600_000;
  const host = useLive(["host"], () => get<HostView>(`/hosts/${encodeURIComponent(props.id)}`), [props.id]);
  const panels = useLive([], () => loadPanels(props.id, rangeMs), [props.id, rangeMs]);

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
