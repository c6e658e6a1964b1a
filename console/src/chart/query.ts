// Reading charts' data: one `query_range` per query of a panel over a range, at a step
// giving about 720 points, laid on one time axis (gaps stay null).

import { get } from "../api";
import type { ChartData } from "./Chart";
import type { Unit } from "./units";

/** Steps an operator recognises, from the 1 s sampling interval up to a day. */
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400].map((s) => s * 1000);

/** About 720 points per chart whatever the range. */
export function stepFor(rangeMs: number): number {
  return STEPS.find((s) => rangeMs / s <= 720) ?? STEPS[STEPS.length - 1];
}

export interface RangeSeries {
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

export interface Panel {
  title: string;
  unit: Unit;
  queries: { name: string; match?: string; agg?: string; label: (s: RangeSeries) => string }[];
}

export interface Drawn {
  title: string;
  unit: Unit;
  data: ChartData;
  tier: string;
}

/**
 * Drops the leading points where no series has a value, keeping at least `keep` points: a
 * chart of a server started minutes ago then spans those minutes instead of squeezing them
 * against the right edge of an empty hour. A chart with no values at all is left whole.
 */
export function fromFirstValue(d: ChartData, keep: number): ChartData {
  const first = d.times.findIndex((_t, i) => d.series.some((s) => s.values[i] !== null));
  const cut = first < 0 ? 0 : Math.max(0, Math.min(first, d.times.length - keep));
  if (cut === 0) return d;
  return { times: d.times.slice(cut), series: d.series.map((s) => ({ label: s.label, values: s.values.slice(cut) })) };
}

export async function loadPanels(host: string, panels: Panel[], rangeMs: number): Promise<Drawn[]> {
  const step = stepFor(rangeMs);
  const end = Math.floor(Date.now() / step) * step;
  const start = end - rangeMs;
  const times: number[] = [];
  for (let t = start; t <= end; t += step) times.push(t / 1000);
  return Promise.all(
    panels.map(async (panel) => {
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

