// The one way the console talks to the collector: same-origin fetch with the session
// cookie, the CSRF token on every mutation, and the API's JSON error shape turned into
// an ApiError whose message is safe to show.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;
const unauthenticated = new Set<() => void>();

/** Remembers the session's CSRF token (from login or /me). */
export function setCsrf(token: string | null): void {
  csrfToken = token;
}

/** Called whenever the collector answers 401: the session ended. */
export function onUnauthenticated(f: () => void): () => void {
  unauthenticated.add(f);
  return () => unauthenticated.delete(f);
}

export function sessionEnded(): void {
  for (const f of unauthenticated) f();
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") {
    // From the sign-in answer or /me only: a cookie of that name could have been planted.
    const token = csrfToken;
    if (token) headers["x-csrf-token"] = token;
  }
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      json?.error?.code ?? "error",
      json?.error?.message ?? response.statusText,
    );
    if (response.status === 401 && path !== "/sessions") sessionEnded();
    throw error;
  }
  return json as T;
}

export const get = <T>(path: string) => api<T>("GET", path);

/** What to show for a failed request (the API's message, never internals). */
export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface Me {
  actor: string;
  user_id: number | null;
  session_id: number | null;
  grants: string[];
  csrf_token?: string;
  /** What the session must do first: `password_expired` or `mfa_enrollment_required`. */
  restriction?: string;
}

export interface Host {
  agent_id: string;
  hostname: string;
  agent_version: string;
  online: boolean;
  revoked: boolean;
  last_seen_ms: number;
  labels: Record<string, string>;
  /** Host-scoped permissions the caller holds on this host. */
  permissions: string[];
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}
