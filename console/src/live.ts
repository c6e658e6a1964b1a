// One EventSource on /api/v1/stream for the whole console. Pages subscribe to topics and
// re-read their lists when a change concerns them; `reset` (the stream lost its place)
// re-reads everything; `session_ended` sends the user to the sign-in page. The browser
// reconnects by itself after a network error (resuming with Last-Event-ID); after an HTTP
// error it gives up, so a watchdog reopens the stream.

import { sessionEnded } from "./api";

export type Topic = "host" | "event" | "alert" | "alerts" | "silences" | "rules" | "receivers" | "admin";

type Listener = (topic: Topic, data: any) => void;
const listeners = new Set<Listener>();
let source: EventSource | null = null;
let watchdog: number | undefined;
let lastBeat = 0;

function dispatch(topic: Topic, data: any): void {
  for (const f of listeners) f(topic, data);
}

function parse(e: MessageEvent): any {
  try {
    return JSON.parse(e.data);
  } catch {
    return {};
  }
}

function open(): void {
  source?.close();
  const s = new EventSource("/api/v1/stream");
  source = s;
  lastBeat = Date.now();
  for (const name of ["host", "event", "alert"] as const) {
    s.addEventListener(name, (e) => {
      lastBeat = Date.now();
      dispatch(name, parse(e as MessageEvent));
    });
  }
  s.addEventListener("change", (e) => {
    lastBeat = Date.now();
    const data = parse(e as MessageEvent);
    if (typeof data.topic === "string") dispatch(data.topic as Topic, data);
  });
  s.addEventListener("heartbeat", () => {
    lastBeat = Date.now();
  });
  s.addEventListener("reset", () => {
    lastBeat = Date.now();
    for (const t of ["host", "event", "alert", "alerts", "silences", "rules", "receivers", "admin"] as Topic[]) {
      dispatch(t, {});
    }
  });
  s.addEventListener("session_ended", () => {
    stop();
    sessionEnded();
  });
  s.addEventListener("open", () => {
    lastBeat = Date.now();
    document.documentElement.dataset.live = "open";
  });
}

let failures = 0;
let nextTry = 0;

/** Reopens a stream the browser gave up on (an HTTP error: 401, 503...) or that went
 * silent past two heartbeats, first asking whether the session still holds (a 401 there
 * signs the page out instead of retrying forever), with exponential backoff and jitter so
 * many tabs do not retry in lockstep. */
async function revive(): Promise<void> {
  const closed = !source || source.readyState === EventSource.CLOSED;
  if (!closed && Date.now() - lastBeat <= 45_000) {
    failures = 0;
    return;
  }
  if (Date.now() < nextTry) return;
  failures++;
  const delay = Math.min(300_000, 5_000 * 2 ** Math.min(failures - 1, 6));
  nextTry = Date.now() + delay / 2 + Math.random() * (delay / 2);
  const check = await fetch("/api/v1/me", { credentials: "same-origin" }).catch(() => null);
  if (check?.status === 401) {
    stop();
    sessionEnded();
    return;
  }
  if (check?.ok) open();
}

/** Opens the stream (after sign-in). */
export function start(): void {
  failures = 0;
  nextTry = 0;
  open();
  window.clearInterval(watchdog);
  watchdog = window.setInterval(() => void revive(), 5_000);
}

/** Closes the stream (sign-out, session ended). */
export function stop(): void {
  window.clearInterval(watchdog);
  source?.close();
  source = null;
  delete document.documentElement.dataset.live;
}

/** Calls `f` for changes to any of `topics`; returns the unsubscribe function. */
export function subscribe(topics: Topic[], f: (topic: Topic, data: any) => void): () => void {
  const listener: Listener = (t, d) => {
    if (topics.includes(t)) f(t, d);
  };
  listeners.add(listener);
  return () => listeners.delete(listener);
}
