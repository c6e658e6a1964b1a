// A time-series chart (uPlot): series in the theme's colours, values in their unit, drag to
// zoom (double-click resets; a zoom outlasts the page's periodic re-reads), cursors synced
// across every chart on the page. Loaded only by pages that chart, so the first page stays
// small.

import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { format, formatTicks, type Unit } from "./units";

export interface ChartSeries {
  label: string;
  /** One value per timestamp (null: no data). */
  values: (number | null)[];
}

export interface ChartData {
  /** Seconds since the epoch. */
  times: number[];
  series: ChartSeries[];
}

const PALETTE = ["--chart-1", "--chart-2", "--chart-3", "--chart-4", "--chart-5", "--chart-6"];

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function aligned(d: ChartData): uPlot.AlignedData {
  return [d.times, ...d.series.map((s) => s.values)] as uPlot.AlignedData;
}

function shown(el: HTMLElement, u: uPlot): void {
  const { min, max } = u.scales.x;
  if (min === undefined || max === undefined) return;
  el.dataset.xMin = String(min);
  el.dataset.xMax = String(max);
}

export function Chart(props: { title: string; unit: Unit; data: ChartData; height?: number; syncKey?: string }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const drawn = useRef<ChartData | null>(null);
  // The plot is made again only when its series change, not for each new read of them.
  const series = props.data.series.map((s) => s.label).join("\n");
  // Colours come from the theme: redraw when the system switches between light and dark.
  const [dark, setDark] = useState(() => matchMedia("(prefers-color-scheme: dark)").matches);
  useEffect(() => {
    const query = matchMedia("(prefers-color-scheme: dark)");
    const changed = () => setDark(query.matches);
    query.addEventListener("change", changed);
    return () => query.removeEventListener("change", changed);
  }, []);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const text = cssVar("--text", "#222");
    const grid = cssVar("--border", "#ccc");
    const axis = {
      stroke: text,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 },
    };
    const opts: uPlot.Options = {
      width: Math.max(320, el.clientWidth),
      height: props.height ?? 220,
      cursor: { sync: { key: props.syncKey ?? "mcpwatch" }, drag: { x: true, y: false } },
      scales: { x: { time: true } },
      legend: { live: true },
      axes: [
        { ...axis },
        { ...axis, size: 80, values: (_u, ticks) => formatTicks(props.unit, ticks) },
      ],
      series: [
        {},
        ...props.data.series.map((s, i) => ({
          label: s.label,
          stroke: cssVar(PALETTE[i % PALETTE.length], "#3366cc"),
          width: 1.5,
          spanGaps: false,
          value: (_u: uPlot, v: number | null) => format(props.unit, v),
        })),
      ],
      hooks: {
        draw: [() => performance.mark("mcpwatch:chart-drawn")],
        // The range shown, on the element (a zoom by drag changes it; tests read it).
        setScale: [(u, key) => {
          if (key === "x") shown(el, u);
        }],
      },
    };
    plot.current = new uPlot(opts, aligned(props.data), el);
    drawn.current = props.data;
    shown(el, plot.current);
    const resize = new ResizeObserver(() => {
      plot.current?.setSize({ width: Math.max(320, el.clientWidth), height: props.height ?? 220 });
    });
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [series, props.unit, props.height, dark]);

  // New data for the same series (a page re-reading its range) keeps a zoom.
  useEffect(() => {
    const u = plot.current;
    if (!u || drawn.current === props.data) return;
    drawn.current = props.data;
    const { min, max } = u.scales.x;
    const before = u.data[0];
    const zoomed =
      min !== undefined && max !== undefined && before.length > 1 && (min > before[0] || max < before[before.length - 1]);
    if (zoomed) {
      u.setData(aligned(props.data), false);
      u.setScale("x", { min, max });
    } else {
      u.setData(aligned(props.data));
    }
  }, [props.data]);

  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={host} data-chart={props.title} />
    </figure>
  );
}
