// A page's mutations: clears the last refusal, runs the request, and on success calls
// `done` (close a dialog, re-read the list); on failure keeps the API's message to show.

import { useState } from "preact/hooks";
import { message } from "./api";

export function useAction(done: () => void): {
  error: string | null;
  act: (f: () => Promise<unknown>) => Promise<void>;
} {
  const [error, setError] = useState<string | null>(null);
  const act = async (f: () => Promise<unknown>) => {
    setError(null);
    try {
      await f();
      done();
    } catch (e) {
      setError(message(e));
    }
  };
  return { error, act };
}
