// Talking to the Hubkeeper API with the session cookie.
//
// The cookie is HttpOnly, so this code never sees it; what it must add is the CSRF token (from
// GET /auth/me) on every request that changes something. Errors arrive as
// {"error": {"code", "message"}} and are thrown as ApiError with that message, which is written
// for people and shown as is.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }

  get refused() {
    return this.status === 403;
  }
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Calls the API; resolves with the parsed JSON body (or null), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (!SAFE.has(method) && csrfToken) {
    headers['x-csrf-token'] = csrfToken;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'Hubkeeper cannot be reached. Check that it is running and your network connection, then try again.');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = null;
    }
  }
  if (!response.ok) {
    const code = data && data.error && data.error.code ? data.error.code : 'http_' + response.status;
    const message = data && data.error && data.error.message
      ? data.error.message
      : `The server answered ${response.status} ${response.statusText}.`;
    const error = new ApiError(response.status, code, message);
    if (response.status === 401 && path !== '/auth/login') {
      window.dispatchEvent(new CustomEvent('hk:unauthorized', { detail: error }));
    }
    throw error;
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** Builds a query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') {
      q.set(key, String(value));
    }
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

/** Lists come as arrays or as {items|data|...: [...]}; returns the array and the paging info. */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) {
    return { items: data, page: {} };
  }
  if (data && typeof data === 'object') {
    for (const key of [...keys, 'items', 'data', 'results']) {
      if (Array.isArray(data[key])) {
        return { items: data[key], page: data };
      }
    }
  }
  return { items: [], page: data || {} };
}
