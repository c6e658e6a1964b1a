// Fleet: every host the caller may see (one `GET /fleet`), online state, labels, last
// contact, MCP servers by state, CPU / memory / disk sparklines and firing alerts; filter by
// text or label, sort by any column (over every host), shown a page at a time; updated
// live: a host's online state at once, everything else re-read at most every few seconds,
// and never for probe results (a fleet of a thousand hosts probes many times a second).

import { useEffect, useMemo, useState } from "preact/hooks";
import { get, type Host } from "../api";
import { ago } from "../format";
import { href } from "../router";
import type { Grants } from "../perm";
import { Sparkline } from "../ui/Sparkline";
import { subscribe } from "../live";
import { useLive } from "../useLive";

export interface ServerCounts {
  total: number;
  running: number;
  unhealthy: number;
  crash_looping: number;
  gave_up: number;
  other: number;
  drift: number;
}

interface Row extends Host {
  servers: ServerCounts | null;
  firing: number | null;
  cpu: (number | null)[];
  memory: (number | null)[];
  disk: (number | null)[];
}

interface FleetView {
  complete: boolean;
  hosts: Row[];
}

type SortKey = "agent_id" | "online" | "last_seen_ms" | "firing" | "problems";

/** Hosts per page: the rows drawn (a thousand rows of sparklines are slow to lay out). */
const PAGE_SIZES = [100, 250, 500];
/** At least this long between two re-reads the live stream causes. */
const REREAD_MS = 2_000;
/** Event kinds that change nothing the fleet shows. */
const QUIET_EVENTS = new Set(["probe_ok", "probe_failed", "tools_baseline", "gap", "spool_corruption", "series_limit"]);

/** Servers needing attention: everything but running (and drift). */
function problems(r: Row): number {
  const s = r.servers;
  return s ? s.unhealthy + s.crash_looping + s.gave_up + s.drift : 0;
}

function matches(row: Row, filter: string): boolean {
  for (const term of filter.trim().toLowerCase().split(/\s+/).filter(Boolean)) {
    const eq = term.indexOf("=");
    if (eq > 0) {
      const key = term.slice(0, eq);
      const value = term.slice(eq + 1);
      const have = key === "host" ? row.agent_id : row.labels[key];
      if (have?.toLowerCase() !== value) return false;
    } else if (
      !row.agent_id.toLowerCase().includes(term) &&
      !row.hostname.toLowerCase().includes(term) &&
      !Object.values(row.labels).some((v) => v.toLowerCase().includes(term))
    ) {
      return false;
    }
  }
  return true;
}

export function Fleet(props: { grants: Grants }) {
  const canAlerts = props.grants.can("alerts:read");
  const canMetrics = props.grants.can("metrics:read");
  const fleet = useLive(["host", "alert", "alerts", "event"], async () => (await get<FleetView>("/fleet")).hosts, [], {
    accept: (topic, change) => topic !== "event" || !QUIET_EVENTS.has(change?.kind),
    minIntervalMs: REREAD_MS,
  });
  // A host going offline shows at once; the coalesced re-read brings the rest.
  useEffect(
    () =>
      subscribe(["host"], (_t, change) => {
        if (typeof change?.host !== "string" || typeof change.online !== "boolean") return;
        fleet.patch((hosts) =>
          hosts.map((h) =>
            h.agent_id === change.host ? { ...h, online: change.online, revoked: change.revoked === true || h.revoked } : h,
          ),
        );
      }),
    [],
  );
  // Sparklines move every minute; events move server counts in between.
  useEffect(() => {
    const timer = window.setInterval(fleet.reload, 30_000);
    return () => window.clearInterval(timer);
  }, []);
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; up: boolean }>({ key: "agent_id", up: true });
  const [pageSize, setPageSize] = useState(PAGE_SIZES[0]);
  const [pageIndex, setPageIndex] = useState(0);

  const rows = useMemo(() => {
    const list = (fleet.data ?? []).filter((r) => matches(r, filter));
    const dir = sort.up ? 1 : -1;
    return list.sort((a, b) => {
      const x = sort.key === "problems" ? problems(a) : (a[sort.key] ?? -1);
      const y = sort.key === "problems" ? problems(b) : (b[sort.key] ?? -1);
      const c = typeof x === "string" ? x.localeCompare(y as string) : Number(x) - Number(y);
      return c * dir || a.agent_id.localeCompare(b.agent_id);
    });
  }, [fleet.data, filter, sort]);

  const pages = Math.max(1, Math.ceil(rows.length / pageSize));
  const current = Math.min(pageIndex, pages - 1);
  const shown = rows.slice(current * pageSize, (current + 1) * pageSize);

  if (fleet.data && rows.length > 0) performance.mark("mcpwatch:fleet-rendered");

  const header = (key: SortKey, title: string) => (
    <th aria-sort={sort.key === key ? (sort.up ? "ascending" : "descending") : "none"}>
      <button type="button" onClick={() => {
        setSort({ key, up: sort.key === key ? !sort.up : true });
        setPageIndex(0);
      }}>
        {title}
      </button>
    </th>
  );

  const online = (fleet.data ?? []).filter((r) => r.online).length;
  return (
    <section>
      <h1>Fleet</h1>
      <div class="toolbar">
        <label>
          <span class="sr-only">Filter hosts</span>
          <input type="search" placeholder="Filter: text or label=value" value={filter}
            onInput={(e) => {
              setFilter(e.currentTarget.value);
              setPageIndex(0);
            }} />
        </label>
        {fleet.data && (
          <span class="muted" role="status">
            {online} of {fleet.data.length} hosts online
          </span>
        )}
        {fleet.error && <span class="error" role="alert">{fleet.error}</span>}
      </div>
      <table class="grid" aria-label="Hosts">
        <thead>
          <tr>
            {header("online", "State")}
            {header("agent_id", "Host")}
            <th>Labels</th>
            {header("last_seen_ms", "Last seen")}
            {header("problems", "MCP servers")}
            {canMetrics && <th>CPU</th>}
            {canMetrics && <th>Memory</th>}
            {canMetrics && <th>Disk</th>}
            {canAlerts && header("firing", "Firing")}
          </tr>
        </thead>
        <tbody>
          {shown.map((r) => (
            <tr key={r.agent_id} data-host={r.agent_id} data-online={String(r.online)}>
              <td>
                <span class={`state ${r.online ? "online" : "offline"}`}>
                  {r.revoked ? "revoked" : r.online ? "online" : "offline"}
                </span>
              </td>
              <td>
                <a href={href("hosts", r.agent_id)}>{r.agent_id}</a>
                {r.hostname !== r.agent_id && <span class="muted"> ({r.hostname})</span>}
              </td>
              <td>
                {Object.entries(r.labels).map(([k, v]) => (
                  <span class="label" key={k}>{k}={v}</span>
                ))}
              </td>
              <td title={new Date(r.last_seen_ms).toISOString()}>{ago(r.last_seen_ms)}</td>
              <td><Servers counts={r.servers} /></td>
              {canMetrics && <td>{r.cpu.length > 0 && <Sparkline values={r.cpu} label="CPU busy" />}</td>}
              {canMetrics && <td>{r.memory.length > 0 && <Sparkline values={r.memory} label="Memory used" />}</td>}
              {canMetrics && <td>{r.disk.length > 0 && <Sparkline values={r.disk} label="Fullest disk" />}</td>}
              {canAlerts && <td class={r.firing ? "count-bad" : ""}>{r.firing ?? ""}</td>}
            </tr>
          ))}
        </tbody>
      </table>
      {fleet.data && rows.length === 0 && <p class="muted">No hosts match.</p>}
      {rows.length > PAGE_SIZES[0] && (
        <nav class="toolbar pager" aria-label="Host pages">
          <button type="button" disabled={current === 0} onClick={() => setPageIndex(current - 1)}>Previous</button>
          <span data-page={current + 1}>
            Hosts {current * pageSize + 1}–{current * pageSize + shown.length} of {rows.length}
          </span>
          <button type="button" disabled={current >= pages - 1} onClick={() => setPageIndex(current + 1)}>Next</button>
          <label>
            Per page
            <select value={pageSize} onChange={(e) => {
              setPageSize(Number(e.currentTarget.value));
              setPageIndex(0);
            }}>
              {PAGE_SIZES.map((n) => <option key={n} value={n}>{n}</option>)}
            </select>
          </label>
        </nav>
      )}
    </section>
  );
}

/** A host's servers as badges: how many run, and every state needing attention. */
export function Servers(props: { counts: ServerCounts | null }) {
  const c = props.counts;
  if (!c) return <span class="muted">none</span>;
  const bad: [number, string, string][] = [
    [c.unhealthy, "unhealthy", "bad"],
    [c.crash_looping, "crash-looping", "bad"],
    [c.gave_up, "gave up", "bad"],
    [c.drift, "drift", "warn"],
    [c.other, "stopped", ""],
  ];
  return (
    <span data-servers={`${c.running}/${c.total}`}>
      <span class="badge ok" title="Running and healthy">{c.running}/{c.total} running</span>
      {bad.filter(([n]) => n > 0).map(([n, name, cls]) => (
        <span key={name} class={`badge ${cls}`}>{n} {name}</span>
      ))}
    </span>
  );
}
