// Talking to limner: the API key, JSON and multipart requests, the event-stream reader, and
// the OpenAI error envelope turned into one error type the page can show.

const KEY_STORAGE = "limner.playground.apiKey";

export function storedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

// The API's base, relative to the page, so a server behind a path prefix works too.
export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

/** An answer that was not a success: the server's own envelope, kept whole. */
export class ApiError extends Error {
  constructor(status, error, retryAfterS) {
    super(error.message || `The server answered ${status}.`);
    this.name = "ApiError";
    this.status = status;
    this.type = error.type || null;
    this.param = error.param || null;
    this.code = error.code || null;
    this.retryAfterS = retryAfterS;
  }
}

function headers(extra) {
  const key = storedKey();
  const result = { ...extra };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

function retryAfter(response) {
  const ms = Number(response.headers.get("retry-after-ms"));
  if (Number.isFinite(ms) && ms > 0) return Math.ceil(ms / 1000);
  const s = Number(response.headers.get("retry-after"));
  return Number.isFinite(s) && s > 0 ? s : null;
}

async function failure(response) {
  let error = { message: `The server answered ${response.status} ${response.statusText}.` };
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) error = body.error;
  } catch {
    // Not the envelope (a proxy's page, say): the status line is all there is to show.
  }
  return new ApiError(response.status, error, retryAfter(response));
}

/** GET or POST; resolves to the Response when it is a success, else throws ApiError. */
export async function call(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: headers(json ? { "Content-Type": "application/json" } : {}) };
  if (json) init.body = JSON.stringify(json);
  if (form) init.body = form;
  const response = await fetch(apiUrl(path), init);
  if (!response.ok) throw await failure(response);
  return response;
}

/**
 * The server-sent events of a streaming answer, parsed as they arrive. EventSource cannot
 * POST, so the body is read here: `event:` and `data:` lines, a blank line ends an event,
 * `:` lines are keep-alive comments.
 */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const payload = JSON.parse(data.join("\n"));
      if (type === "error" || payload.type === "error") {
        throw new ApiError(200, payload.error || { message: "The stream failed." }, null);
      }
      yield { type: payload.type || type, data: payload };
    }
    if (done) return;
  }
}
