// The console's entry: asks who is signed in, then shows the sign-in page or the shell.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./theme.css";
import { api, ApiError, get, onUnauthenticated, setCsrf, type Me } from "./api";
import * as live from "./live";
import { Grants } from "./perm";
import { Login } from "./pages/Login";
import { Shell } from "./ui/Shell";

type Session = { me: Me; grants: Grants } | "signed-out" | "expired" | "loading";

function App() {
  const [session, setSession] = useState<Session>("loading");

  const load = async () => {
    try {
      const me = await get<Me>("/me");
      setCsrf(me.csrf_token ?? null);
      setSession({ me, grants: new Grants(me) });
      live.start();
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
  return <Shell me={session.me} grants={session.grants} onSignOut={signOut} />;
}

const root = document.getElementById("app");
if (root) render(<App />, root);
