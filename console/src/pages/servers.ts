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

/** Tools shown with their text (the agent sends at most 32). */
const MAX_CHANGES = 32;

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
    // The detail is what an agent sent: keep only what has the documented shape.
    const d = detail as Record<string, unknown>;
    const names = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
    const text = (v: unknown): ToolText | null => {
      if (!v || typeof v !== "object") return null;
      const t = v as Record<string, unknown>;
      if (typeof t.input_schema !== "string") return null;
      return { description: typeof t.description === "string" ? t.description : null, input_schema: t.input_schema };
    };
    const changes = (Array.isArray(d.changes) ? d.changes : [])
      .filter((c): c is Record<string, unknown> => !!c && typeof c === "object" && typeof (c as Record<string, unknown>).tool === "string")
      .slice(0, MAX_CHANGES)
      .map((c) => ({ tool: c.tool as string, before: text(c.before), after: text(c.after) }));
    return { added: names(d.added), removed: names(d.removed), changed: names(d.changed), changes };
  }
  if (typeof detail !== "string" || !/added=\[/.test(detail)) return null;
  const list = (key: string) => {
    const m = new RegExp(`${key}=\\[([^\\]]*)\\]`).exec(detail);
    return m && m[1] ? m[1].split(",").filter(Boolean) : [];
  };
  return { added: list("added"), removed: list("removed"), changed: list("changed"), changes: [] };
}
