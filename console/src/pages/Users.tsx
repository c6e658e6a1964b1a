// Users (administrators only): create with roles and a host scope, disable and enable,
// reset a password, add and remove role bindings. Updated live.

import { useState } from "preact/hooks";
import { api, get } from "../api";
import { timestamp } from "../format";
import { Dialog } from "../ui/Dialog";
import { useAction } from "../useAction";
import { useLive } from "../useLive";

interface Binding {
  id: number;
  role: string;
  host_selector: string;
}

interface User {
  id: number;
  username: string;
  disabled: boolean;
  locked_until_ms: number;
  created_ms: number;
  bindings: Binding[];
}

interface Role {
  name: string;
  permissions: string[];
  builtin: boolean;
}

async function load(): Promise<{ users: User[]; roles: Role[] }> {
  const [users, roles] = await Promise.all([get<User[]>("/users"), get<Role[]>("/roles")]);
  return { users, roles };
}

type Editing = { kind: "create" } | { kind: "password"; user: User } | { kind: "bind"; user: User } | null;

export function Users() {
  const data = useLive(["admin"], load);
  const [editing, setEditing] = useState<Editing>(null);
  const roles = data.data?.roles ?? [];

  const { error, act } = useAction(() => {
    setEditing(null);
    data.reload();
  });

  return (
    <section>
      <h1>Users</h1>
      <div class="toolbar">
        <button class="primary" type="button" onClick={() => setEditing({ kind: "create" })}>New user</button>
      </div>
      {(data.error || error) && <p class="error" role="alert">{error ?? data.error}</p>}
      <table class="grid" aria-label="Users">
        <thead>
          <tr><th>User</th><th>State</th><th>Roles</th><th>Created</th><th>Actions</th></tr>
        </thead>
        <tbody>
          {data.data?.users.map((u) => (
            <tr key={u.id} data-user={u.username} data-disabled={String(u.disabled)}>
              <td>{u.username}</td>
              <td>{u.disabled ? "disabled" : u.locked_until_ms > Date.now() ? "locked" : "active"}</td>
              <td class="wrap">
                {u.bindings.map((b) => (
                  <span class="label" key={b.id}>
                    {b.role}{b.host_selector ? ` on ${b.host_selector}` : " everywhere"}
                    <button type="button" class="inline" aria-label={`Remove ${b.role} from ${u.username}`}
                      onClick={() => act(() => api("DELETE", `/users/${u.id}/bindings/${b.id}`))}>×</button>
                  </span>
                ))}
              </td>
              <td>{timestamp(u.created_ms)}</td>
              <td>
                <div class="actions">
                  <button type="button" onClick={() => setEditing({ kind: "bind", user: u })}>Add role</button>
                  <button type="button" onClick={() => setEditing({ kind: "password", user: u })}>Reset password</button>
                  <button type="button" onClick={() => act(() => api("POST", `/users/${u.id}/${u.disabled ? "enable" : "disable"}`))}>
                    {u.disabled ? "Enable" : "Disable"}
                  </button>
                </div>
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <Dialog error={error} title="New user" open={editing?.kind === "create"} onClose={() => setEditing(null)}>
        <UserForm roles={roles} onCancel={() => setEditing(null)}
          onSubmit={(body) => act(() => api("POST", "/users", body))} />
      </Dialog>
      <Dialog error={error} title="Reset password" open={editing?.kind === "password"} onClose={() => setEditing(null)}>
        {editing?.kind === "password" && (
          <PasswordForm user={editing.user} onCancel={() => setEditing(null)}
            onSubmit={(password) => act(() => api("PUT", `/users/${editing.user.id}/password`, { password }))} />
        )}
      </Dialog>
      <Dialog error={error} title="Add role" open={editing?.kind === "bind"} onClose={() => setEditing(null)}>
        {editing?.kind === "bind" && (
          <BindForm roles={roles} onCancel={() => setEditing(null)}
            onSubmit={(body) => act(() => api("POST", `/users/${editing.user.id}/bindings`, body))} />
        )}
      </Dialog>
    </section>
  );
}

function RoleSelect(props: { roles: Role[]; value: string; onChange: (v: string) => void }) {
  return (
    <label>Role
      <select name="role" value={props.value} onChange={(e) => props.onChange(e.currentTarget.value)}>
        {props.roles.map((r) => <option key={r.name} value={r.name}>{r.name}</option>)}
      </select>
    </label>
  );
}

function ScopeInput(props: { value: string; onChange: (v: string) => void }) {
  return (
    <label>Hosts (selector; empty for every host)
      <input name="host_selector" placeholder='{team="a"}' value={props.value} onInput={(e) => props.onChange(e.currentTarget.value)} />
    </label>
  );
}

function UserForm(props: {
  roles: Role[];
  onCancel: () => void;
  onSubmit: (body: { username: string; password: string; roles: string[]; host_selector: string }) => void;
}) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState("viewer");
  const [scope, setScope] = useState("");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit({ username, password, roles: [role], host_selector: scope }); }}>
      <label>User name<input name="username" required autocomplete="off" value={username} onInput={(e) => setUsername(e.currentTarget.value)} /></label>
      <label>Password (at least 12 characters)
        <input name="new-password" type="password" required minLength={12} autocomplete="new-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
      </label>
      <RoleSelect roles={props.roles} value={role} onChange={setRole} />
      <ScopeInput value={scope} onChange={setScope} />
      <div class="toolbar">
        <button class="primary" type="submit">Create</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}

function PasswordForm(props: { user: User; onCancel: () => void; onSubmit: (password: string) => void }) {
  const [password, setPassword] = useState("");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit(password); }}>
      <p>A new password for {props.user.username} ends their sessions.</p>
      <label>New password
        <input name="new-password" type="password" required minLength={12} autocomplete="new-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
      </label>
      <div class="toolbar">
        <button class="primary" type="submit">Set password</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}

function BindForm(props: { roles: Role[]; onCancel: () => void; onSubmit: (body: { role: string; host_selector: string }) => void }) {
  const [role, setRole] = useState("viewer");
  const [scope, setScope] = useState("");
  return (
    <form class="form" onSubmit={(e) => { e.preventDefault(); props.onSubmit({ role, host_selector: scope }); }}>
      <RoleSelect roles={props.roles} value={role} onChange={setRole} />
      <ScopeInput value={scope} onChange={setScope} />
      <div class="toolbar">
        <button class="primary" type="submit">Add</button>
        <button type="button" onClick={props.onCancel}>Cancel</button>
      </div>
    </form>
  );
}
