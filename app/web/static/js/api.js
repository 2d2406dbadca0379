// The REST API from the browser: the user token (localStorage) as a Bearer credential,
// the shared error shape as ApiError, and 401 → back to /login.
const KEY = "clickpulse.token";

export const getToken = () => localStorage.getItem(KEY);
export const setToken = (token) => localStorage.setItem(KEY, token);
export const clearToken = () => localStorage.removeItem(KEY);

export function toLogin() {
  const here = location.pathname + location.search;
  const next = here.startsWith("/login") ? "" : `?next=${encodeURIComponent(here)}`;
  location.assign(`/login${next}`);
}

export function logout() {
  clearToken();
  window.ClickPulseTheme?.setUser(null);
  location.assign("/login");
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "http_error";
    this.where = error?.where || null;
  }
}

// A read that meets a per-org limit (429) or a degraded dependency (503) is retried after the
// server's Retry-After: a dashboard opening several charts at once can briefly exceed the org's
// concurrent-query slots, and a chart should then load a moment later, not show an error.
const RETRY_STATUSES = new Set([429, 503]);
const MAX_RETRIES = 4;
const MAX_RETRY_WAIT_S = 5;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function retryDelayMs(res, attempt) {
  const header = Number(res.headers.get("Retry-After"));
  const base = Number.isFinite(header) && header > 0 ? header : 0.5 * 2 ** attempt;
  const seconds = Math.min(MAX_RETRY_WAIT_S, Math.max(0.25, base));
  return seconds * 1000 * (1 + Math.random() * 0.2); // jitter: charts do not retry in lockstep
}

/** Call the API; answers the decoded JSON (null for 204). Throws ApiError.
 *  `retry` (default: GET only) retries 429/503 answers after their Retry-After; pass it for
 *  POSTs that only read (queries). */
export async function api(method, path, body, { token = getToken(), redirect = true, retry = method === "GET" } = {}) {
  if (!token) {
    if (redirect) toLogin();
    throw new ApiError(401, { code: "unauthorized", message: "not signed in" });
  }
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { code: "network", message: `network error: ${err.message}` });
    }
    if (!retry || attempt >= MAX_RETRIES || !RETRY_STATUSES.has(res.status)) break;
    await sleep(retryDelayMs(res, attempt));
  }
  if (res.status === 401 && redirect) {
    clearToken();
    toLogin();
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw new ApiError(res.status, data?.error || { message: text || res.statusText });
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
/** A POST that only reads (a query): retried like a GET on 429/503. */
export const query = (path, body, opts) => api("POST", path, body, { retry: true, ...opts });
export const put = (path, body, opts) => api("PUT", path, body, opts);

/** `{"a": 1, "b": [2, 3]}` → `?a=1&b=2&b=3` (undefined/null/"" left out). */
export function qs(params) {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) out.append(key, String(v));
  }
  const text = out.toString();
  return text ? `?${text}` : "";
}
