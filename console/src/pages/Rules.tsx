// Alert rules: every rule in effect (built-in, from rules files, or set through the API);
// view one, edit its definition (a rules file's [[rule]] table, as JSON) with a dry run
// showing what would fire before saving. A rule with an owner scope belongs to a team: it
// reads only that team's hosts. Editing a fleet-wide rule needs `rules:write` on every host;
// a team's, `rules:write` on the team's hosts (a team sees only its own rules).

import { useState } from "preact/hooks";
import { api, get, message } from "../api";
import { timestamp } from "../format";
import type { Grants } from "../perm";
import { useLive } from "../useLive";

interface Rule {
  name: string;
  origin: string;
  enabled: boolean;
  definition: Record<string, unknown>;
  updated_ms: number;
}

interface DryRun {
  source: string;
  evaluated: number;
  firing: number;
  pending: number;
  truncated: boolean;
  series: { fingerprint: string; labels: Record<string, string>; state: string; level: string | null; value: number | null }[];
}

const NEW_RULE = { selector: "mcpwatch_host_load1", critical: 8, warning: 4, for: "5m", summary: "load on {{ $labels.host }}" };

function describe(d: Record<string, unknown>): string {
  const parts = [String(d.selector ?? d.function ?? "")];
  for (const k of ["warning", "critical", "for"]) if (d[k] !== undefined) parts.push(`${k} ${String(d[k])}`);
  return parts.join(" · ");
}

export function Rules(props: { grants: Grants }) {
  const rules = useLive(["rules"], () => get<Rule[]>("/rules"));
  const canWrite = props.grants.can("rules:write");
  // A team's new rule is owned by the team (the collector refuses a fleet-wide one).
  const scope = props.grants.scopes("rules:write")[0];
  const newRule = scope ? { ...NEW_RULE, owner: scope } : NEW_RULE;
  const [editing, setEditing] = useState<{ name: string; text: string; fresh: boolean } | null>(null);
  const [preview, setPreview] = useState<DryRun | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);

  const open = (name: string, definition: object, fresh: boolean) => {
    const { name: _drop, ...rest } = definition as Record<string, unknown>;
    setEditing({ name, text: JSON.stringify(rest, null, 2), fresh });
    setPreview(null);
    setError(null);
    setSaved(null);
  };

  const parsed = (): object | null => {
    try {
      const v = JSON.parse(editing?.text ?? "");
      if (v && typeof v === "object" && !Array.isArray(v)) return v;
      setError("The definition must be a JSON object.");
    } catch (e) {
      setError(`Not JSON: ${message(e)}`);
    }
    return null;
  };

  const dryRun = async () => {
    setError(null);
    const body = parsed();
    if (!body || !editing) return;
    try {
      setPreview(await api<DryRun>("POST", "/rules/dry-run", { ...body, name: editing.name }));
    } catch (e) {
      setError(message(e));
    }
  };

  const save = async () => {
    setError(null);
    const body = parsed();
    if (!body || !editing) return;
    try {
      await api("PUT", `/rules/${encodeURIComponent(editing.name)}`, body);
      setSaved(editing.name);
      setEditing(null);
      rules.reload();
    } catch (e) {
      setError(message(e));
    }
  };

  return (
    <section>
      <h1>Rules</h1>
      {canWrite && !editing && (
        <div class="toolbar">
          <button class="primary" type="button" onClick={() => open("", newRule, true)}>New rule</button>
        </div>
      )}
      {saved && <p role="status">Rule {saved} saved and in effect.</p>}
      {rules.error && <p class="error" role="alert">{rules.error}</p>}
      {editing && (
        <form class="form editor" onSubmit={(e) => { e.preventDefault(); void save(); }}>
          <h2>{editing.fresh ? "New rule" : `Edit ${editing.name}`}</h2>
          {editing.fresh && (
            <label>Name<input name="rule-name" required pattern="[a-z0-9_]+" value={editing.name}
              onInput={(e) => setEditing({ ...editing, name: e.currentTarget.value })} /></label>
          )}
          <label>Definition (a rules file's [[rule]] table, as JSON)
            <textarea name="definition" rows={12} spellcheck={false} value={editing.text}
              onInput={(e) => setEditing({ ...editing, text: e.currentTarget.value })} />
          </label>
          {error && <p class="error" role="alert">{error}</p>}
          <div class="toolbar">
            <button type="button" onClick={() => void dryRun()}>Preview</button>
            <button class="primary" type="submit">Save</button>
            <button type="button" onClick={() => setEditing(null)}>Cancel</button>
          </div>
          {preview && (
            <div data-preview>
              <p role="status">
                Would fire on {preview.firing} of {preview.evaluated} series now ({preview.pending} pending), from the {preview.source}.
                {preview.truncated && " Only the first series are listed."}
              </p>
              <table class="grid" aria-label="Dry run">
                <thead><tr><th>State</th><th>Level</th><th>Value</th><th>Labels</th></tr></thead>
                <tbody>
                  {preview.series.map((s) => (
                    <tr key={s.fingerprint}>
                      <td>{s.state}</td><td>{s.level ?? "–"}</td><td>{s.value ?? "–"}</td>
                      <td class="wrap">{Object.entries(s.labels).map(([k, v]) => <span class="label" key={k}>{k}={v}</span>)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </form>
      )}
      <table class="grid" aria-label="Rules">
        <thead><tr><th>Rule</th><th>Owner</th><th>Origin</th><th>State</th><th>Definition</th><th>Changed</th>{canWrite && <th>Actions</th>}</tr></thead>
        <tbody>
          {rules.data?.map((r) => (
            <tr key={r.name} data-rule={r.name}>
              <td>{r.name}</td>
              <td data-owner>{typeof r.definition.owner === "string" ? <code>{r.definition.owner}</code> : "fleet-wide"}</td>
              <td>{r.origin}</td>
              <td>{r.enabled ? "on" : "off"}</td>
              <td class="wrap"><code>{describe(r.definition)}</code></td>
              <td>{r.updated_ms ? timestamp(r.updated_ms) : "–"}</td>
              {canWrite && <td><button type="button" onClick={() => open(r.name, r.definition, false)}>Edit</button></td>}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
