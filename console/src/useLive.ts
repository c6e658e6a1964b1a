// Data a page shows, re-read when the live stream says it changed (coalesced: one read
// per burst of changes).

import { useEffect, useRef, useState } from "preact/hooks";
import { message } from "./api";
import { subscribe, type Topic } from "./live";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

export function useLive<T>(topics: Topic[], load: () => Promise<T>, deps: unknown[] = []): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const pending = useRef<number | undefined>(undefined);
  const generation = useRef(0);

  const run = () => {
    const mine = ++generation.current;
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
    const off = subscribe(topics, () => {
      window.clearTimeout(pending.current);
      pending.current = window.setTimeout(run, 150);
    });
    return () => {
      off();
      window.clearTimeout(pending.current);
      generation.current++;
    };
  }, deps);

  return { data, error, reload: run };
}
