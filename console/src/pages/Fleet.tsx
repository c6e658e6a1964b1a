// Fleet: every host the caller may see, online state, labels, last contact and firing
// alerts; filter by text or label, sort by any column; updated live.

import { useMemo, useState } from "preact/hooks";
import { get, type Host, type Page } from "../api";
import { ago } from "../format";
import { href } from "../router";
import type { Grants } from "../perm";
import { useLive } from "../useLive";

interface Alert {
  labels: Record<string, string>;
  status: string;
}

interface Row extends Host {
  firing: number;
}

type SortKey = "agent_id" | "online" | "last_seen_ms" | "firing";

async function all<T>(path: string): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | number | null | undefined = undefined;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page: Page<T> = await get<Page<T>>(`${path}${sep}limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
    out.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

async function loadFleet(canAlerts: boolean): Promise<Row[]> {
  const [hosts, alerts] = await Promise.all([
    all<Host>("/hosts"),
    canAlerts ? all<Alert>("/alerts") : Promise.resolve([] as Alert[]),
  ]);
  const firing = new Map<string, number>();
  for (const a of alerts) {
    const h = a.labels.host;
    if (h && a.status !== "resolved") firing.set(h, (firing.get(h) ?? 0) + 1);
  }
  return hosts.map((h) => ({ ...h, firing: firing.get(h.agent_id) ?? 0 }));
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
  const fleet = useLive(["host", "alert", "alerts"], () => loadFleet(canAlerts));
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; up: boolean }>({ key: "agent_id", up: true });

  const rows = useMemo(() => {
    const list = (fleet.data ?? []).filter((r) => matches(r, filter));
    const dir = sort.up ? 1 : -1;
    return list.sort((a, b) => {
      const x = a[sort.key];
      const y = b[sort.key];
      const c = typeof x === "string" ? x.localeCompare(y as string) : Number(x) - Number(y);
      return c * dir || a.agent_id.localeCompare(b.agent_id);
    });
  }, [fleet.data, filter, sort]);

  if (fleet.data && rows.length > 0) performance.mark("mcpwatch:fleet-rendered");

  const header = (key: SortKey, title: string) => (
    <th aria-sort={sort.key === key ? (sort.up ? "ascending" : "descending") : "none"}>
      <button type="button" onClick={() => setSort({ key, up: sort.key === key ? !sort.up : true })}>
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
            onInput={(e) => setFilter(e.currentTarget.value)} />
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
            {canAlerts && header("firing", "Firing alerts")}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
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
              {canAlerts && <td class={r.firing ? "count-bad" : ""}>{r.firing}</td>}
            </tr>
          ))}
        </tbody>
      </table>
      {fleet.data && rows.length === 0 && <p class="muted">No hosts match.</p>}
    </section>
  );
}
