// The signed-in frame: navigation (only pages the caller may use), who is signed in, and
// the current page.

import { useEffect, useState } from "preact/hooks";
import type { Me } from "../api";
import type { Grants } from "../perm";
import { href, useRoute } from "../router";
import { Fleet } from "../pages/Fleet";
import { Access } from "../pages/Access";
import { Alerts } from "../pages/Alerts";
import { Audit } from "../pages/Audit";
import { Host } from "../pages/Host";
import { Notifications } from "../pages/Notifications";
import { Server } from "../pages/Server";
import { Receivers } from "../pages/Receivers";
import { Roles } from "../pages/Roles";
import { Rules } from "../pages/Rules";
import { Security } from "../pages/Security";
import { Users } from "../pages/Users";

interface Page {
  id: string;
  title: string;
  visible: (g: Grants) => boolean;
}

const PAGES: Page[] = [
  { id: "fleet", title: "Fleet", visible: (g) => g.can("hosts:read") },
  { id: "alerts", title: "Alerts", visible: (g) => g.can("alerts:read") },
  { id: "notifications", title: "Notifications", visible: (g) => g.can("alerts:read") },
  { id: "rules", title: "Rules", visible: (g) => g.can("alerts:read") || g.can("rules:write") },
  { id: "receivers", title: "Receivers", visible: (g) => g.can("receivers:write") },
  { id: "users", title: "Users", visible: (g) => g.canEverywhere("users:admin") },
  { id: "roles", title: "Roles", visible: (g) => g.canEverywhere("users:admin") },
  { id: "access", title: "Tokens and sessions", visible: () => true },
  { id: "security", title: "Account security", visible: () => true },
  { id: "audit", title: "Audit log", visible: (g) => g.canEverywhere("audit:read") },
];

type BenchModule = typeof import("../pages/ChartBench");

export function Shell(props: { me: Me; grants: Grants; onSignOut: () => void; onAccountChanged: () => void }) {
  const route = useRoute();
  // The chart benchmark (`#/_bench/chart`): not in the navigation, loaded only when asked.
  const [bench, setBench] = useState<BenchModule | null>(null);
  const benching = route.path[0] === "_bench" && route.path[1] === "chart";
  useEffect(() => {
    if (benching && !bench) void import("../pages/ChartBench").then(setBench);
  }, [benching]);
  const pages = PAGES.filter((p) => p.visible(props.grants));
  const wanted = route.path[0] ?? "fleet";
  // A host's page lives under the fleet.
  const hostId = wanted === "hosts" && props.grants.can("hosts:read") ? route.path[1] : undefined;
  // And a server's page under its host.
  const serverName = hostId && route.path[2] === "servers" ? route.path[3] : undefined;
  const page = benching ? undefined : hostId ? pages.find((p) => p.id === "fleet") : (pages.find((p) => p.id === wanted) ?? pages[0]);
  return (
    <div class="shell">
      <nav class="nav" aria-label="Main">
        <div class="brand">mcpwatch</div>
        <ul>
          {pages.map((p) => (
            <li key={p.id}>
              <a href={href(p.id)} aria-current={p.id === page?.id ? "page" : undefined}>{p.title}</a>
            </li>
          ))}
        </ul>
        <div class="who">
          <div>Signed in as <strong>{props.me.actor.replace(/^user:/, "")}</strong></div>
          <button type="button" onClick={props.onSignOut}>Sign out</button>
        </div>
      </nav>
      <main>
        {benching && bench && <bench.ChartBench query={route.query} />}
        {hostId && serverName && <Server host={hostId} name={serverName} />}
        {hostId && !serverName && <Host id={hostId} />}
        {!hostId && page?.id === "fleet" && <Fleet grants={props.grants} />}
        {!hostId && page?.id === "alerts" && <Alerts grants={props.grants} />}
        {page?.id === "rules" && <Rules grants={props.grants} />}
        {page?.id === "receivers" && <Receivers />}
        {page?.id === "notifications" && <Notifications grants={props.grants} />}
        {page?.id === "users" && <Users />}
        {page?.id === "roles" && <Roles />}
        {page?.id === "access" && <Access mySession={props.me.session_id} admin={props.grants.canEverywhere("users:admin")} />}
        {page?.id === "audit" && <Audit />}
        {page?.id === "security" && <Security me={props.me} onChanged={props.onAccountChanged} />}
        {!page && !benching && <p>Your account may not view anything here. Ask an administrator for a role.</p>}
      </main>
    </div>
  );
}
