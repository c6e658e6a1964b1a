// Values in the units an operator reads: ratios as %, bytes in binary multiples, rates
// per second.

export type Unit = "percent" | "bytes" | "bytes_per_second" | "count" | "seconds";

const BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function scaled(v: number, suffix: string): string {
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < BINARY.length - 1) {
    x /= 1024;
    i++;
  }
  const digits = x >= 100 || i === 0 ? 0 : x >= 10 ? 1 : 2;
  return `${v < 0 ? "-" : ""}${x.toFixed(digits)} ${BINARY[i]}${suffix}`;
}

export function format(unit: Unit, v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return "–";
  switch (unit) {
    case "percent":
      return `${(v * 100).toFixed(v < 0.1 ? 1 : 0)} %`;
    case "bytes":
      return scaled(v, "");
    case "bytes_per_second":
      return scaled(v, "/s");
    case "seconds":
      return v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)} ms` : `${v.toFixed(2)} s`;
    default:
      return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2);
  }
}

/** The unit a metric's name implies. */
export function unitOf(name: string, rate: boolean): Unit {
  if (name.endsWith("_ratio")) return "percent";
  if (name.endsWith("_bytes_total") && rate) return "bytes_per_second";
  if (name.endsWith("_bytes")) return "bytes";
  if (name.endsWith("_seconds")) return "seconds";
  return "count";
}

/** Axis labels: one scale for the whole axis and as many digits as the tick spacing needs,
 * so neighbouring ticks never read the same. */
export function formatTicks(unit: Unit, ticks: number[]): string[] {
  if (ticks.length === 0) return [];
  const spacing = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : Math.abs(ticks[0]) || 1;
  const digitsFor = (step: number) => Math.min(4, Math.max(0, Math.ceil(-Math.log10(step) + 1e-9)));
  if (unit === "bytes" || unit === "bytes_per_second") {
    const top = Math.max(...ticks.map(Math.abs));
    let i = 0;
    while (top >= 1024 ** (i + 1) && i < BINARY.length - 1) i++;
    const div = 1024 ** i;
    const digits = digitsFor(spacing / div);
    const suffix = unit === "bytes" ? "" : "/s";
    return ticks.map((t) => `${(t / div).toFixed(digits)} ${BINARY[i]}${suffix}`);
  }
  if (unit === "percent") {
    const digits = digitsFor(spacing * 100);
    return ticks.map((t) => `${(t * 100).toFixed(digits)} %`);
  }
  return ticks.map((t) => format(unit, t));
}
