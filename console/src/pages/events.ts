// Events as the API reports them (`GET /events`, and the newest ones in the servers view).
// A server event's detail comes as `{"detail": "<text>"}`; the text is a line
// (`protocol=... tools=3`) or, for a tool drift, a JSON object with a `summary`.

export interface Event {
  id: number;
  host: string;
  ts_ms: number;
  kind: string;
  server: string | null;
  detail: unknown;
}

/** The event's own detail: the text inside the wrapper, parsed when it is a JSON object. */
export function detailOf(detail: unknown): unknown {
  let inner = detail;
  if (inner && typeof inner === "object" && typeof (inner as { detail?: unknown }).detail === "string") {
    inner = (inner as { detail: string }).detail;
  }
  if (typeof inner === "string" && inner.startsWith("{")) {
    try {
      return JSON.parse(inner) as unknown;
    } catch {
      return inner;
    }
  }
  return inner;
}

/** An event's detail as one line of text. */
export function detailText(detail: unknown): string {
  const d = detailOf(detail);
  if (typeof d === "string") return d;
  if (d === null || d === undefined) return "";
  if (typeof d === "object" && typeof (d as { summary?: unknown }).summary === "string") {
    return (d as { summary: string }).summary;
  }
  return JSON.stringify(d);
}
