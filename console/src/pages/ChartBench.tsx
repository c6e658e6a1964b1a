// A synthetic chart for the budget benchmark (`#/_bench/chart?points=43200&series=4`):
// the real chart code drawing `points` × `series` values, as a 30-day range at 1-minute
// resolution would. Not in the navigation; loaded only when asked for.

import { useEffect, useState } from "preact/hooks";
import type { ChartData } from "../chart/Chart";

type ChartModule = typeof import("../chart/Chart");

function synthetic(points: number, series: number): ChartData {
  const end = Math.floor(Date.now() / 60_000) * 60;
  const times = Array.from({ length: points }, (_, i) => end - (points - 1 - i) * 60);
  return {
    times,
    series: Array.from({ length: series }, (_, s) => ({
      label: `series ${s + 1}`,
      values: times.map((_, i) => 0.5 + 0.4 * Math.sin(i / (50 + 10 * s)) * Math.cos(i / 700)),
    })),
  };
}

export function ChartBench(props: { query: URLSearchParams }) {
  const points = Math.min(200_000, Math.max(2, Number(props.query.get("points")) || 43_200));
  const series = Math.min(16, Math.max(1, Number(props.query.get("series")) || 4));
  const [chart, setChart] = useState<ChartModule | null>(null);
  const [data] = useState(() => synthetic(points, series));
  useEffect(() => {
    void import("../chart/Chart").then((m) => {
      performance.mark("mcpwatch:chart-start");
      setChart(m);
    });
  }, []);
  return (
    <section>
      <h1>Chart benchmark</h1>
      <p class="muted">{points} points × {series} series</p>
      {chart && <chart.Chart title="benchmark" unit="percent" data={data} height={300} />}
    </section>
  );
}
