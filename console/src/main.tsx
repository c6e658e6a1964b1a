// The console's entry: asks who is signed in, then shows the sign-in page or the shell.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./theme.css";
import { api, ApiError, get, onUnauthenticated, setCsrf, type Me } from "./api";
import * as live from "./live";
import { Grants } from "./perm";
import { Login } from "./pages/Login";
import { Security } from "./pages/Security";
import { Shell } from "./ui/Shell";

type Session = { me: Me; grants: Grants } | "signed-out" | "expired" | "loading";

function App() {
  const [session, setSession] = useState<Session>("loading");

  const load = async () => {
    try {
      const me = await get<Me>("/me");
      setCsrf(me.csrf_token ?? null);
      setSession({ me, grants: new Grants(me) });
      // A held session may not open the live stream.
      if (!me.restriction) live.start();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) setSession("signed-out");
      else setSession("signed-out");
    }
  };

  useEffect(() => {
    void load();
    return onUnauthenticated(() => {
      live.stop();
      setCsrf(null);
      setSession((s) => (typeof s === "object" ? "expired" : s));
    });
  }, []);

  const signOut = async () => {
    try {
      await api("DELETE", "/sessions/current");
    } finally {
      live.stop();
      setCsrf(null);
      setSession("signed-out");
    }
  };

  if (session === "loading") return <p class="sr-only" aria-live="polite">Loading</p>;
  if (session === "signed-out" || session === "expired") {
    return <Login expired={session === "expired"} onSignedIn={load} />;
  }
  if (session.me.restriction) {
    // Held by the policy: only the way out is shown (the server refuses everything else).
    return (
      <main class="restricted">
        <Security me={session.me} onChanged={load} />
        <button type="button" onClick={signOut}>Sign out</button>
      </main>
    );
  }
  return <Shell me={session.me} grants={session.grants} onSignOut={signOut} onAccountChanged={load} />;
}

const root = document.getElementById("app");
if (root) render(<App />, root);
