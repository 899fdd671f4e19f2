// The JSON API, as the console calls it: the session rides in the HttpOnly cookie the browser sends by
// itself; every state-changing call carries the session's CSRF token, learnt from /console/session.

let csrfToken = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? 'http_error';
    this.details = body?.error?.details ?? [];
    this.requestId = body?.error?.request_id;
  }

  /** The message with each field's problem, for a form. */
  describe() {
    const details = this.details.map((d) => `${d.field}: ${d.reason}`);
    return [this.message, ...details].join(' — ');
  }
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function setSession(session) {
  csrfToken = session?.csrf_token ?? null;
}

/** Calls the API; resolves to the parsed body (null for 204), rejects with an ApiError. */
export async function api(method, path, { query, body } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, { error: { code: 'network', message: 'The daemon cannot be reached.' } });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && !path.startsWith('/console/')) onSignedOut();
    throw error;
  }
  return data;
}
