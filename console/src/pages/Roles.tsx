// Roles (administrators only): the built-in roles and their permissions, and custom roles
// to create, change and delete. A role is bound to users with a host scope on the Users
// page; fleet-wide permissions (rules, receivers, users, audit) take effect only through an
// unscoped binding.

import { useState } from "preact/hooks";
import { api, get } from "../api";
import { Dialog } from "../ui/Dialog";
import { useAction } from "../useAction";
import { useLive } from "../useLive";

interface Role {
  name: string;
  permissions: string[];
  builtin: boolean;
}

/** Every permission, with what it allows. */
const PERMISSIONS: [string, string][] = [
  ["hosts:read", "see hosts, their MCP servers and events"],
  ["hosts:write", "change host labels, revoke agents and their certificates"],
  ["hosts:enroll", "create bootstrap tokens that enroll agents into the scope"],
  ["metrics:read", "read metrics and charts"],
  ["alerts:read", "see alerts and silences"],
  ["alerts:ack", "acknowledge alerts"],
  ["silences:write", "create and expire silences"],
  ["servers:control", "restart, stop and start MCP servers; approve tool drift"],
  ["rules:write", "change alert rules (a team's own on a scoped binding; all unscoped)"],
  ["receivers:write", "change receivers and routes (a team's own on a scoped binding; all unscoped)"],
  ["users:admin", "manage users, roles and tokens (fleet-wide)"],
  ["audit:read", "read the audit log (fleet-wide)"],
  ["admin:backup", "take and list backups of the whole database (fleet-wide)"],
];

type Editing = { name: string; permissions: Set<string>; isNew: boolean } | null;

export function Roles() {
  const roles = useLive(["admin"], () => get<Role[]>("/roles"));
  const [editing, setEditing] = useState<Editing>(null);
  const { error, act } = useAction(() => {
    setEditing(null);
    roles.reload();
  });

  const save = (e: Event) => {
    e.preventDefault();
    if (!editing) return;
    // PUT creates or replaces: a new role must not silently replace an existing one.
    if (editing.isNew && roles.data?.some((r) => r.name === editing.name)) {
      void act(() => Promise.reject(new Error(`A role named ${editing.name} exists; edit it instead.`)));
      return;
    }
    const body = { permissions: PERMISSIONS.map(([p]) => p).filter((p) => editing.permissions.has(p)) };
    void act(() => api("PUT", `/roles/${encodeURIComponent(editing.name)}`, body));
  };
  const toggle = (p: string, on: boolean) => {
    if (!editing) return;
    const next = new Set(editing.permissions);
    if (on) next.add(p);
    else next.delete(p);
    setEditing({ ...editing, permissions: next });
  };

  return (
    <section>
      <h1>Roles</h1>
      <div class="toolbar">
        <button class="primary" type="button" onClick={() => setEditing({ name: "", permissions: new Set(), isNew: true })}>
          New role
        </button>
      </div>
      {(roles.error || (error && !editing)) && <p class="error" role="alert">{error ?? roles.error}</p>}
      <table class="grid" aria-label="Roles">
        <thead><tr><th>Role</th><th>Permissions</th><th>Actions</th></tr></thead>
        <tbody>
          {roles.data?.map((r) => (
            <tr key={r.name} data-role={r.name}>
              <td>{r.name}{r.builtin && <span class="muted"> (built in)</span>}</td>
              <td class="wrap">{r.permissions.map((p) => <span class="label" key={p}>{p}</span>)}</td>
              <td>
                {!r.builtin && (
                  <div class="actions">
                    <button type="button" onClick={() => setEditing({ name: r.name, permissions: new Set(r.permissions), isNew: false })}>
                      Edit
                    </button>
                    <button type="button" onClick={() => act(() => api("DELETE", `/roles/${encodeURIComponent(r.name)}`))}>
                      Delete
                    </button>
                  </div>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Dialog error={error} title={editing?.isNew ? "New role" : `Role ${editing?.name ?? ""}`} open={editing !== null}
        onClose={() => setEditing(null)}>
        {editing && (
          <form class="form" onSubmit={save}>
            {editing.isNew && (
              <label>Name
                <input name="name" required maxLength={64} pattern="[a-z0-9._\-]+" value={editing.name}
                  onInput={(e) => setEditing({ ...editing, name: e.currentTarget.value })} />
              </label>
            )}
            <fieldset>
              <legend>Permissions</legend>
              {PERMISSIONS.map(([p, what]) => (
                <label key={p} class="check">
                  <input type="checkbox" name={p} checked={editing.permissions.has(p)}
                    onChange={(e) => toggle(p, e.currentTarget.checked)} />
                  <code>{p}</code> <span class="muted">{what}</span>
                </label>
              ))}
            </fieldset>
            <div class="toolbar">
              <button class="primary" type="submit">Save</button>
              <button type="button" onClick={() => setEditing(null)}>Cancel</button>
            </div>
          </form>
        )}
      </Dialog>
    </section>
  );
}
