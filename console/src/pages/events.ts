// Events as the API reports them (`GET /events`, and the newest ones in the servers view).

export interface Event {
  id: number;
  host: string;
  ts_ms: number;
  kind: string;
  server: string | null;
  detail: unknown;
}

/** An event's detail as one line of text. */
export function detailText(detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (detail === null || detail === undefined) return "";
  return JSON.stringify(detail);
}
