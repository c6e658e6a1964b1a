// A small inline chart of per-minute ratios (0–1) for table cells: an SVG polyline, gaps
// where no sample came, and the latest value as text for screen readers and tooltips.

export function Sparkline(props: { values: (number | null)[]; label: string }) {
  const { values } = props;
  const w = 56;
  const h = 18;
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const segments: string[] = [];
  let current: string[] = [];
  values.forEach((v, i) => {
    if (v === null) {
      if (current.length) segments.push(current.join(" "));
      current = [];
      return;
    }
    const y = h - 1 - Math.min(1, Math.max(0, v)) * (h - 2);
    current.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
  });
  if (current.length) segments.push(current.join(" "));
  const last = [...values].reverse().find((v) => v !== null);
  const text = last === undefined || last === null ? "no data" : `${Math.round(last * 100)}%`;
  const high = last !== undefined && last !== null && last >= 0.9;
  return (
    <span class="spark" title={`${props.label}: ${text} (last 30 minutes)`}>
      <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} aria-hidden="true" class={high ? "high" : ""}>
        {segments.map((pts) =>
          pts.includes(" ") ? <polyline key={pts} points={pts} /> : <circle key={pts} cx={pts.split(",")[0]} cy={pts.split(",")[1]} r="1.2" />,
        )}
      </svg>
      <span class="spark-value" data-value={last ?? ""}>{text}</span>
    </span>
  );
}
