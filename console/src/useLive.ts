// Data a page shows, re-read when the live stream says it changed (coalesced: one read
// per burst of changes, and with `minIntervalMs` at most one read per that interval,
// the last change always followed by a read). `accept` drops changes that cannot concern
// the page (a probe result for a list of host states...).

import { useEffect, useRef, useState } from "preact/hooks";
import { message } from "./api";
import { subscribe, type Topic } from "./live";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
  /** Changes the shown data in place until the next read (a live change's own figures). */
  patch: (f: (d: T) => T) => void;
}

export interface LiveOptions {
  /** Whether a change on the stream concerns the page (default: every change of `topics`). */
  accept?: (topic: Topic, data: any) => boolean;
  /** At least this long between two reads the stream causes (default: none). */
  minIntervalMs?: number;
}

export function useLive<T>(
  topics: Topic[],
  load: () => Promise<T>,
  deps: unknown[] = [],
  options: LiveOptions = {},
): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const pending = useRef<number | undefined>(undefined);
  const generation = useRef(0);
  const lastRun = useRef(0);
  // The options of the latest render (a filter may read the page's current state).
  const opts = useRef(options);
  opts.current = options;

  const run = () => {
    const mine = ++generation.current;
    lastRun.current = Date.now();
    load().then(
      (d) => {
        if (mine !== generation.current) return;
        setData(d);
        setError(null);
      },
      (e: unknown) => {
        if (mine !== generation.current) return;
        setError(message(e));
      },
    );
  };

  useEffect(() => {
    run();
    const off = subscribe(topics, (topic, change) => {
      const { accept, minIntervalMs = 0 } = opts.current;
      if (accept && !accept(topic, change)) return;
      // Trailing: a read already scheduled covers this change too.
      if (pending.current !== undefined) return;
      const wait = Math.max(150, lastRun.current + minIntervalMs - Date.now());
      pending.current = window.setTimeout(() => {
        pending.current = undefined;
        run();
      }, wait);
    });
    return () => {
      off();
      window.clearTimeout(pending.current);
      pending.current = undefined;
      generation.current++;
    };
  }, deps);

  return { data, error, reload: run, patch: (f) => setData((d) => (d === null ? d : f(d))) };
}
