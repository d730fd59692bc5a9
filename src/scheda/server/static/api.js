// Talking to the server: JSON requests, the chat's event stream, errors, the API key.
//
// With `scheda serve --api-key`, every /api route needs `Authorization: Bearer
// KEY`; the key is kept in this browser (localStorage) once the form is filled.

import { $ } from "./dom.js";

const KEY_STORAGE = "scheda.apiKey";

/** An error from the API, with the HTTP status and the server's one-line message. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const enc = encodeURIComponent;

/** The Authorization header when a key is stored (the server was started with --api-key). */
function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The server's error message: OpenAI's {"error": {"message"}} shape, or FastAPI's {"detail"}. */
async function errorMessage(res) {
  try {
    const data = await res.json();
    if (data?.error?.message) return data.error.message;
    if (typeof data?.detail === "string") return data.detail;
    if (Array.isArray(data?.detail)) return data.detail.map((d) => d.msg).join("; ");
  } catch {
    // not JSON: fall through to the status line
  }
  return `${res.status} ${res.statusText}`.trim();
}

/** Turn a non-OK response into an ApiError; a 401 also asks for the key. */
async function failIfBad(res) {
  if (res.ok) return;
  const message = await errorMessage(res);
  if (res.status === 401) askForKey(hasKey() ? "That key was refused." : "");
  throw new ApiError(res.status, message);
}

/** A JSON request to the studio API. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  await failIfBad(res);
  return res.json();
}

/** A file from the API (an export), as a Blob: a plain link could not send the key. */
export async function apiBlob(path) {
  const res = await fetch(path, { headers: authHeaders() });
  await failIfBad(res);
  return res.blob();
}

/** POST a JSON body and yield the server-sent events of the answer, parsed, as they arrive. */
export async function* postEvents(path, body, signal) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
  await failIfBad(res);
  yield* readEvents(res.body);
}

/**
 * The events of a server-sent-event stream, parsed as JSON, as they arrive.
 *
 * Why not EventSource: it only does GET, and the chat is a POST with a body.
 * Events are separated by a blank line; CRLF is accepted too, and a "\r" at
 * the end of a chunk waits for the next one, since it may be half of "\r\n".
 */
async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let carry = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    let chunk = carry + decoder.decode(value, { stream: true });
    carry = chunk.endsWith("\r") ? "\r" : "";
    if (carry) chunk = chunk.slice(0, -1);
    buffer += chunk.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data || data === "[DONE]") continue;
      try {
        yield JSON.parse(data);
      } catch {
        // A malformed event is skipped rather than ending the answer.
      }
    }
  }
}

// --- the API key --------------------------------------------------------------------

export const hasKey = () => Boolean(localStorage.getItem(KEY_STORAGE));

/** Show the key form (the API answered 401). */
function askForKey(message) {
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  $("api-key").focus();
}

/** Keep the key typed in the form; true when there was one (the caller loads the page again). */
export function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return false;
  localStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("auth").hidden = true;
  $("forget-key").hidden = false;
  return true;
}

export function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  location.reload();
}
