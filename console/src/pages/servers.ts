// The MCP servers of a host as the API reports them (`GET /hosts/{id}/servers`), and how
// a server's state reads in the console.

import { detailOf, type Event } from "./events";

export interface ServerView {
  name: string;
  state: string | null;
  up: boolean | null;
  healthy: boolean | null;
  restarts: number | null;
  uptime_seconds: number | null;
  last_exit_code: number | null;
  oom_killed: boolean | null;
  memory_bytes: number | null;
  crashloop_attempt: number | null;
  gave_up: boolean | null;
  probe_up: boolean | null;
  probe_latency_seconds: Record<string, number>;
  protocol_version: string | null;
  server_name: string | null;
  server_version: string | null;
  probes_total: number | null;
  probe_failures: Record<string, number>;
  tools: number | null;
  drift: boolean | null;
  last_sample_ms: number | null;
  events: Event[];
}

/** The state in words and its tone: `ok`, `bad`, `warn` or neutral. */
export function stateOf(s: ServerView): [string, string] {
  if (s.gave_up || s.state === "gave_up") return ["gave up", "bad"];
  if (s.state === "backing_off") return ["crash-looping", "bad"];
  if (s.state === "running" && s.healthy === false) return ["unhealthy", "bad"];
  if (s.state === "running") return ["running", "ok"];
  return [s.state ?? "unknown", ""];
}

export interface ToolText {
  description: string | null;
  input_schema: string;
}

export interface ToolChange {
  tool: string;
  before: ToolText | null;
  after: ToolText | null;
}

export interface Drift {
  added: string[];
  removed: string[];
  changed: string[];
  changes: ToolChange[];
}

/** A tool drift event's detail: the agent's JSON object, or the one-line form older agents
 * sent (`added=[a,b] removed=[] changed=[c]`, names only). */
export function driftOf(raw: unknown): Drift | null {
  const detail = detailOf(raw);
  if (detail && typeof detail === "object" && "changes" in detail) {
    const d = detail as Partial<Drift>;
    return { added: d.added ?? [], removed: d.removed ?? [], changed: d.changed ?? [], changes: d.changes ?? [] };
  }
  if (typeof detail !== "string" || !/added=\[/.test(detail)) return null;
  const list = (key: string) => {
    const m = new RegExp(`${key}=\\[([^\\]]*)\\]`).exec(detail);
    return m && m[1] ? m[1].split(",").filter(Boolean) : [];
  };
  return { added: list("added"), removed: list("removed"), changed: list("changed"), changes: [] };
}
