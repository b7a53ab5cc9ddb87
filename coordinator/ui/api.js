// The UI's only way to the coordinator: the HTTP API under /api/v1 with the token the user
// typed, kept in this tab's sessionStorage and sent as `Authorization: Bearer` (never a cookie,
// so another site cannot make the browser send it: no CSRF).

const KEY = "dagrid.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

/** An API error: HTTP status, the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

let onUnauthorized = () => {};
/** Called with the error when the API answers 401 (the token is missing or unknown). */
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

async function fail(res) {
  let code = "http_" + res.status;
  let message = res.status + " " + res.statusText;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch (_) {
    /* not JSON */
  }
  const err = new ApiError(res.status, code, message);
  if (res.status === 401) onUnauthorized(err);
  throw err;
}

/**
 * Calls the API: `path` (starting with /), `opts.method` (GET), `opts.body` (sent as JSON).
 * Resolves to the parsed JSON body; rejects with an ApiError.
 */
export async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: headers(), signal: opts.signal };
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  if (!res.ok) await fail(res);
  if (res.status === 204) return null;
  return res.json();
}

/** GET a text resource (a step log): resolves to {text, headers}. */
export async function apiText(path, signal) {
  const res = await fetch(path, { headers: headers(), signal });
  if (!res.ok) await fail(res);
  return { text: await res.text(), headers: res.headers };
}

/**
 * Follows the server-sent events of `path` (EventSource cannot send a header, so this reads
 * the stream with fetch). Calls `on(type, data)` for each message (data parsed as JSON);
 * reconnects after 1 s with `Last-Event-ID` until `signal` aborts.
 */
export async function events(path, on, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (last) h["Last-Event-ID"] = last;
      const res = await fetch(path, { headers: h, signal });
      if (!res.ok) await fail(res);
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) last = line.slice(3).trim();
          }
          if (!data) continue;
          let parsed = null;
          try {
            parsed = JSON.parse(data);
          } catch (_) {
            parsed = data;
          }
          on(type, parsed);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return;
    }
    if (signal.aborted) return;
    on("reset", { reason: "reconnecting" });
    await new Promise((r) => setTimeout(r, 1000));
  }
}
