// scheda studio: chat with the served models, keep sessions, read spec sheets and fits,
// and read the saved evaluation runs (`scheda eval`).
//
// Plain ES module, no framework and no build step, so the page works offline
// from the files the server ships. Text from a model or a user only ever goes
// into the page through textContent or markdown.js (which builds DOM nodes),
// never through innerHTML.

import { renderInto } from "/static/markdown.js";

const KEY_STORAGE = "scheda.apiKey";
const MODEL_STORAGE = "scheda.model";
const PARAMS_STORAGE = "scheda.params";
// llama.cpp's own defaults, as `scheda chat` uses them.
const DEFAULT_PARAMS = { temperature: 0.8, top_k: 40, top_p: 0.95, max_tokens: 256, seed: "" };
const PARAM_FIELDS = [
  // [input id, params key, parser]
  ["temperature", "temperature", Number.parseFloat],
  ["top-k", "top_k", (v) => Number.parseInt(v, 10)],
  ["top-p", "top_p", Number.parseFloat],
  ["max-tokens", "max_tokens", (v) => Number.parseInt(v, 10)],
  ["seed", "seed", (v) => Number.parseInt(v, 10)],
];
const FIT_DEBOUNCE_MS = 120;
const GiB = 2 ** 30;
const MiB = 2 ** 20;

const state = {
  models: [], // GET /api/models
  gpus: [], // GET /api/gpus
  sessions: [], // GET /api/sessions
  current: null, // the open session (GET /api/sessions/{id}); null for a new, unsaved chat
  streaming: null, // {controller} while an answer streams
  started: false, // the page's event handlers are wired once
  contexts: [], // the fit slider's stops
  fitSeq: 0, // only the newest fit answer is drawn
  fitTimer: 0,
  cardModel: null, // the model the spec sheet shows
  evals: [], // GET /api/evals
  evalRun: null, // the id of the evaluation run shown (or asked for by the URL)
  evalSeq: 0, // only the newest run asked for is drawn
};

const $ = (id) => document.getElementById(id);

/** An error from the API, with the HTTP status and the server's one-line message. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- talking to the server ---------------------------------------------------

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
  if (res.status === 401) askForKey(localStorage.getItem(KEY_STORAGE) ? "That key was refused." : "");
  throw new ApiError(res.status, message);
}

/** A JSON request to the studio API. */
async function api(path, { method = "GET", body, signal } = {}) {
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

const enc = encodeURIComponent;

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

// --- small helpers ------------------------------------------------------------

/** Bytes in binary units, as the terminal shows them (units.size). */
function size(n) {
  if (n == null || Number.isNaN(n)) return "unknown";
  if (Math.abs(n) >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (Math.abs(n) >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

const number = (n) => Number(n).toLocaleString("en-US");

/** "3 min ago", or the date for anything older than a week. */
function when(seconds) {
  if (!seconds) return "";
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  if (ago < 7 * 86400) return `${Math.floor(ago / 86400)} d ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

/** A new element with a class and text; the text is always textContent. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One line across the top of the page for errors that belong to no message. */
function showBanner(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

/** Report an error unless it is a 401, which the key form already shows. */
function report(error) {
  if (error?.status === 401) return;
  showBanner(error?.message || String(error));
}

// --- API key -----------------------------------------------------------------

/** Show the key form (the API answered 401). */
function askForKey(message) {
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  $("api-key").focus();
}

/** Keep the key in this browser and start again with it. */
function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  localStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("auth").hidden = true;
  $("forget-key").hidden = false;
  load();
}

function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  location.reload();
}

// --- models ------------------------------------------------------------------

/** Fill the chat picker (chat models only) and the spec sheet's picker (all models). */
async function loadModels() {
  state.models = await api("/api/models");
  const picker = $("model-picker");
  const saved = localStorage.getItem(MODEL_STORAGE);
  const chat = state.models.filter((m) => m.kind === "chat");
  const other = state.models.filter((m) => m.kind !== "chat");
  picker.replaceChildren(...chat.map((m) => modelOption(m)));
  if (other.length) {
    // Shown so the user knows they are served, but an embedding model cannot chat.
    const group = document.createElement("optgroup");
    group.label = "Embedding models (no chat)";
    group.append(...other.map((m) => modelOption(m, true)));
    picker.append(group);
  }
  if (chat.some((m) => m.id === saved)) picker.value = saved;
  $("card-model").replaceChildren(...state.models.map((m) => modelOption(m)));
  $("card-model").value = picker.value || state.models[0]?.id || "";
  updateComposer();
}

const modelLabel = (model) => `${model.id}${model.loaded ? " (loaded)" : ""}`;

function modelOption(model, disabled = false) {
  const option = el("option", "", modelLabel(model));
  option.value = model.id;
  option.disabled = disabled;
  option.title = `${model.engine ?? ""} ${model.path ?? ""}`.trim();
  return option;
}

/** After an answer a model may have been loaded (or another unloaded): update the labels. */
async function refreshModelLabels() {
  try {
    state.models = await api("/api/models");
  } catch {
    return; // only labels; the next action reports a real problem
  }
  for (const option of document.querySelectorAll("#model-picker option, #card-model option")) {
    const model = state.models.find((m) => m.id === option.value);
    if (model) option.textContent = modelLabel(model);
  }
}

/**
 * The served chat model a stored session names, or null.
 *
 * A session begun in the terminal may name a file path rather than a served
 * id, so a path or a file name that matches a served model counts too.
 */
function matchModel(stored) {
  if (!stored) return null;
  const chat = state.models.filter((m) => m.kind === "chat");
  const base = (p) => String(p).split(/[\\/]/).pop();
  return (
    chat.find((m) => m.id === stored) ||
    chat.find((m) => m.path === stored) ||
    chat.find((m) => base(m.path) === base(stored)) ||
    null
  );
}

/** The chat model changed: remember it, and move the open session to it. */
async function pickModel() {
  const model = $("model-picker").value;
  localStorage.setItem(MODEL_STORAGE, model);
  updateComposer();
  if (state.current && state.current.model !== model) {
    try {
      state.current = { ...state.current, ...(await patchSession(state.current.id, { model })) };
      showSessionNote();
      refreshSessions();
    } catch (error) {
      report(error);
    }
  }
}

// --- sessions ------------------------------------------------------------------

async function refreshSessions() {
  try {
    state.sessions = await api("/api/sessions");
  } catch (error) {
    report(error);
    return;
  }
  renderSessionList();
}

function renderSessionList() {
  const list = $("session-list");
  if (!state.sessions.length) {
    list.replaceChildren(el("li", "empty", "No saved chats yet."));
    return;
  }
  list.replaceChildren(...state.sessions.map(sessionItem));
}

/** One row of the session list: open on click, with rename and delete buttons. */
function sessionItem(session) {
  const item = el("li", "session-item");
  item.dataset.sessionId = session.id;
  if (state.current?.id === session.id) item.setAttribute("aria-current", "true");

  const open = el("button", "session-open");
  open.type = "button";
  open.append(
    el("span", "session-title", session.title || "Untitled chat"),
    el(
      "span",
      "session-meta",
      `${session.model} · ${session.messages} message${session.messages === 1 ? "" : "s"} · ${when(session.updated)}`,
    ),
  );
  open.addEventListener("click", () => openSession(session.id));

  const rename = el("button", "session-rename icon", "✎");
  rename.type = "button";
  rename.title = "Rename";
  rename.setAttribute("aria-label", "Rename");
  rename.addEventListener("click", () => startRename(item, session));

  const remove = el("button", "session-delete icon", "✕");
  remove.type = "button";
  remove.title = "Delete";
  remove.setAttribute("aria-label", "Delete");
  remove.addEventListener("click", () => confirmDelete(remove, session));

  const actions = el("div", "session-actions");
  actions.append(rename, remove);
  item.append(open, actions);
  return item;
}

/** Swap the title for an input; Enter or leaving the field saves, Escape cancels. */
function startRename(item, session) {
  const input = el("input", "session-title-input");
  input.value = session.title || "";
  input.setAttribute("aria-label", "New title");
  input.maxLength = 200;
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (save && title && title !== session.title) {
      try {
        await patchSession(session.id, { title });
        if (state.current?.id === session.id) {
          state.current.title = title;
          $("chat-title").textContent = title;
        }
      } catch (error) {
        report(error);
      }
    }
    await refreshSessions();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

/**
 * Delete after a second click on the same button.
 *
 * Why not window.confirm: a modal dialog blocks the page (and the stream of
 * an answer), and a two-step button is as hard to hit by accident.
 */
async function confirmDelete(button, session) {
  if (!button.classList.contains("confirming")) {
    button.classList.add("confirming");
    button.textContent = "Delete?";
    setTimeout(() => {
      button.classList.remove("confirming");
      button.textContent = "✕";
    }, 4000);
    return;
  }
  try {
    await api(`/api/sessions/${enc(session.id)}`, { method: "DELETE" });
  } catch (error) {
    report(error);
  }
  if (state.current?.id === session.id) newSession();
  await refreshSessions();
}

function patchSession(id, changes) {
  return api(`/api/sessions/${enc(id)}`, { method: "PATCH", body: changes });
}

/** Open a saved session: its messages, system prompt, sampling options and model. */
async function openSession(id) {
  if (state.streaming) stopAnswer();
  let session;
  try {
    session = await api(`/api/sessions/${enc(id)}`);
  } catch (error) {
    if (error.status === 404) {
      setHashSession(null);
      refreshSessions();
    }
    report(error);
    return;
  }
  hideBanner();
  state.current = session;
  setHashSession(session.id);
  $("chat-title").textContent = session.title || "Untitled chat";
  $("system-prompt").value = session.system ?? "";
  applyParams(session.params || {});
  const served = matchModel(session.model);
  if (served) $("model-picker").value = served.id;
  showSessionNote();
  renderMessages(session.messages || []);
  markCurrent();
  showView("chat");
}

/** Start an unsaved chat; it is saved as a session when the first message is sent. */
function newSession() {
  if (state.streaming) stopAnswer();
  state.current = null;
  setHashSession(null);
  $("chat-title").textContent = "New chat";
  $("session-note").textContent = "";
  renderMessages([]);
  resetCounters();
  markCurrent();
  showView("chat");
  $("message-input").focus();
}

/** Say so when a session was made with a model this server does not serve. */
function showSessionNote() {
  const s = state.current;
  const note = $("session-note");
  if (!s) {
    note.textContent = "";
  } else if (!matchModel(s.model)) {
    note.textContent = `made with ${s.model}, not served here: the next answer comes from ${$("model-picker").value}`;
  } else {
    note.textContent = `${s.id} · ${s.model}`;
  }
}

function markCurrent() {
  for (const item of $("session-list").querySelectorAll(".session-item")) {
    if (item.dataset.sessionId === state.current?.id) item.setAttribute("aria-current", "true");
    else item.removeAttribute("aria-current");
  }
}

/** The open session lives in the URL (#session=ID), so a reload comes back to it. */
function setHashSession(id) {
  const url = id ? `#session=${enc(id)}` : location.pathname + location.search;
  history.replaceState(null, "", url);
}

function hashSession() {
  const m = /^#session=([^&]+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

// --- messages ------------------------------------------------------------------

function renderMessages(messages) {
  const list = $("messages");
  list.replaceChildren();
  for (const m of messages) {
    if (m.role === "system") continue; // shown in the system prompt field
    appendMessage(m.role, m.content, "done");
  }
  updateEmpty();
  scrollToEnd(true);
}

// The hint shown in an empty chat; kept here because clearing the list detaches it.
const emptyNote = $("empty-chat");

function updateEmpty() {
  const list = $("messages");
  if (list.querySelector(".message")) emptyNote.remove();
  else list.append(emptyNote);
}

/**
 * Add one message to the list; returns the view that updates it.
 *
 * The user's text is shown verbatim (white-space: pre-wrap), since it is what
 * they typed; an answer is rendered as Markdown into DOM nodes.
 */
function appendMessage(role, content, status = "done") {
  const article = el("article", `message ${role === "user" ? "user" : "assistant"}`);
  article.dataset.state = status;
  const label = el("div", "message-role", role === "user" ? "You" : "Assistant");
  const body = el("div", "message-body");
  const meta = el("div", "message-meta");
  article.append(label, body, meta);
  if (role === "user") body.textContent = content;
  else renderInto(body, content);
  $("messages").append(article);
  updateEmpty();
  scrollToEnd(true);
  return messageView(article, body, meta);
}

/**
 * The live view of an answer being streamed.
 *
 * Pieces can arrive faster than the screen refreshes, so the Markdown is
 * rendered at most once per animation frame, from the whole text so far (an
 * unfinished code fence renders as a code block until it closes).
 */
function messageView(article, body, meta) {
  let frame = 0;
  let latest = "";
  const render = () => {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    const follow = nearEnd();
    renderInto(body, latest);
    scrollToEnd(follow);
  };
  return {
    article,
    update(text) {
      latest = text;
      if (!frame) frame = requestAnimationFrame(render);
    },
    finish(text, done) {
      latest = text;
      render();
      article.dataset.state = "done";
      meta.textContent = statsLine(done);
    },
    stopped(text) {
      latest = text;
      render();
      article.dataset.state = "stopped";
      meta.textContent = text ? "Stopped; the partial answer is saved." : "Stopped before the first token.";
    },
    fail(text, message) {
      latest = text;
      render();
      article.dataset.state = "error";
      const error = el("div", "message-error", message);
      error.setAttribute("role", "alert");
      article.append(error);
    },
  };
}

const nearEnd = () => {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
};

/** Follow the answer only if the reader was already at the bottom (do not yank them back). */
function scrollToEnd(follow) {
  if (!follow) return;
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// --- counters ------------------------------------------------------------------

function statsLine(done) {
  const parts = [];
  if (done.completion_tokens != null) parts.push(`${number(done.completion_tokens)} tokens`);
  if (done.tokens_per_s != null) parts.push(`${done.tokens_per_s.toFixed(1)} tok/s`);
  if (done.first_token_s != null) parts.push(`first token ${done.first_token_s.toFixed(2)} s`);
  if (done.finish_reason) parts.push(done.finish_reason);
  return parts.join(" · ");
}

function showCounters(done) {
  $("count-tokens").textContent =
    done.completion_tokens != null ? `${number(done.completion_tokens)} tokens` : "";
  $("count-speed").textContent = done.tokens_per_s != null ? `${done.tokens_per_s.toFixed(1)} tok/s` : "";
  $("count-first").textContent =
    done.first_token_s != null ? `first token ${done.first_token_s.toFixed(2)} s` : "";
}

function resetCounters() {
  $("count-tokens").textContent = "–";
  $("count-speed").textContent = "";
  $("count-first").textContent = "";
}

// --- sampling options ------------------------------------------------------------

/** The sampling options from the form; an empty or invalid field is left to the server. */
function readParams() {
  const params = {};
  for (const [id, key, parse] of PARAM_FIELDS) {
    const raw = $(id).value.trim();
    if (raw === "") continue;
    const value = parse(raw);
    if (Number.isFinite(value)) params[key] = value;
  }
  return params;
}

/** Put a session's (or the saved) options into the form; missing ones keep their value. */
function applyParams(params) {
  for (const [id, key] of PARAM_FIELDS) {
    if (key in params) $(id).value = params[key] ?? "";
  }
}

function saveParams() {
  localStorage.setItem(PARAMS_STORAGE, JSON.stringify(readParams()));
}

function restoreParams() {
  try {
    applyParams(JSON.parse(localStorage.getItem(PARAMS_STORAGE) || "{}"));
  } catch {
    // a damaged entry: keep the defaults
  }
}

// --- chatting ------------------------------------------------------------------

function updateComposer() {
  const busy = Boolean(state.streaming);
  const model = $("model-picker").value;
  $("send").disabled = busy || !model;
  $("stop").disabled = !busy;
  $("message-input").placeholder = model
    ? "Message (Enter sends, Shift+Enter is a new line)"
    : "No chat model is served";
}

/** Save the system prompt on the open session when the field is left. */
async function saveSystem() {
  if (!state.current) return;
  const system = $("system-prompt").value;
  if ((state.current.system ?? "") === system) return;
  try {
    const updated = await patchSession(state.current.id, { system });
    state.current = { ...state.current, ...updated };
  } catch (error) {
    report(error);
  }
}

/**
 * Send the message: create the session on the first message, then stream the answer.
 *
 * The server saves the user's message before answering and the answer when it
 * ends (or what there is of it when the stop button aborts the request).
 */
async function send(event) {
  event?.preventDefault();
  const input = $("message-input");
  const content = input.value;
  const model = $("model-picker").value;
  if (!content.trim() || state.streaming || !model) return;
  hideBanner();
  try {
    if (!state.current) {
      const system = $("system-prompt").value.trim();
      const body = { model };
      if (system) body.system = system;
      state.current = { messages: [], ...(await api("/api/sessions", { method: "POST", body })) };
      setHashSession(state.current.id);
      showSessionNote();
    } else {
      await saveSystem();
    }
  } catch (error) {
    report(error);
    return;
  }
  input.value = "";
  appendMessage("user", content);
  const view = appendMessage("assistant", "", "streaming");
  const session = state.current;
  // The model goes with the turn: the answer comes from the one the picker shows.
  await streamAnswer(session.id, { content, model, params: readParams() }, view);
  session.model = model;
  await Promise.all([refreshSessions(), refreshModelLabels()]);
  // Another session may have been opened meanwhile (which stops this answer): leave it be.
  if (state.current !== session) return;
  showSessionNote();
  const listed = state.sessions.find((s) => s.id === session.id);
  if (listed?.title) $("chat-title").textContent = listed.title;
}

/** POST the message and render the SSE answer as it grows; the stop button aborts it. */
async function streamAnswer(sessionId, turn, view) {
  const controller = new AbortController();
  state.streaming = { controller };
  updateComposer();
  resetCounters();
  $("count-tokens").textContent = "writing…";
  let text = "";
  let ended = false;
  try {
    const res = await fetch(`/api/sessions/${enc(sessionId)}/chat`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
      body: JSON.stringify(turn),
      signal: controller.signal,
    });
    await failIfBad(res);
    for await (const event of readEvents(res.body)) {
      if (typeof event.text === "string") {
        text += event.text;
        view.update(text);
      } else if (event.done) {
        ended = true;
        view.finish(text, event);
        showCounters(event);
      } else if (event.error) {
        ended = true;
        view.fail(text, event.error.message || "The answer failed.");
        resetCounters();
      }
    }
    if (!ended) view.fail(text, "The connection closed before the answer ended.");
  } catch (error) {
    if (error.name === "AbortError") {
      view.stopped(text);
      $("count-tokens").textContent = "stopped";
    } else {
      view.fail(text, error.message || String(error));
      resetCounters();
    }
  } finally {
    state.streaming = null;
    updateComposer();
  }
}

function stopAnswer() {
  state.streaming?.controller.abort();
}

/** Enter sends, Shift+Enter is a new line, Escape stops the answer. */
function composerKeys(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape") {
    stopAnswer();
  }
}

// --- views ---------------------------------------------------------------------

function showView(view) {
  $("layout").dataset.view = view;
  $("view-chat").hidden = view !== "chat";
  $("settings").hidden = view !== "chat";
  $("view-model").hidden = view !== "model";
  $("view-evals").hidden = view !== "evals";
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  }
  if (view === "model") showModel($("card-model").value);
  // The URL names what a reload comes back to: the open session, or the evaluation run shown.
  if (view === "chat") setHashSession(state.current?.id ?? null);
  if (view === "evals") {
    if (state.evalRun) setHashEval(state.evalRun);
    return loadEvals();
  }
  return Promise.resolve();
}

// --- spec sheet --------------------------------------------------------------------

/** Show the spec sheet and the fit calculator for a model (once per model). */
async function showModel(id) {
  if (!id || state.cardModel === id) return;
  state.cardModel = id;
  $("card-title").textContent = id;
  $("card").tBodies[0].replaceChildren(cardRow("Loading", "…"));
  let card;
  try {
    card = await api(`/api/models/${enc(id)}/card`);
  } catch (error) {
    state.cardModel = null;
    $("card").tBodies[0].replaceChildren(cardRow("Error", error.message));
    report(error);
    return;
  }
  $("card-title").textContent = card.name || id;
  $("card").tBodies[0].replaceChildren(...(card.rows || []).map(([label, value]) => cardRow(label, value)));
  setContexts(card.spec, state.models.find((m) => m.id === id));
  loadFit();
}

function cardRow(label, value) {
  const row = el("tr");
  row.append(el("th", "", String(label)), el("td", "", value == null ? "" : String(value)));
  return row;
}

// --- fit calculator ------------------------------------------------------------------

/**
 * The slider's stops: powers of two from 256 up to the model's trained context.
 *
 * Why powers of two: contexts range from hundreds to over a hundred thousand
 * tokens, and a linear slider would give the short ones no room.
 */
function setContexts(spec, model) {
  const trained = Number(spec?.context) || 0;
  const served = Number(model?.context) || 0;
  const top = Math.max(trained, served, 4096);
  const stops = [];
  for (let c = 256; c < top; c *= 2) stops.push(c);
  stops.push(top);
  state.contexts = stops;
  const slider = $("fit-context");
  slider.max = String(stops.length - 1);
  const start = served || Math.min(4096, top);
  let index = stops.findIndex((c) => c >= start);
  if (index < 0) index = stops.length - 1;
  slider.value = String(index);
  showContext();
}

function currentContext() {
  return state.contexts[Number($("fit-context").value)] ?? 4096;
}

function showContext() {
  const context = currentContext();
  $("fit-context-value").textContent = `${number(context)} tokens`;
  $("fit-context").setAttribute("aria-valuetext", `${context} tokens`);
}

async function loadGpus() {
  try {
    state.gpus = await api("/api/gpus");
  } catch (error) {
    report(error);
    return;
  }
  const picker = $("fit-gpu");
  picker.replaceChildren(
    ...state.gpus.map((gpu) => {
      const option = el("option", "", `${gpu.name} (${size(gpu.usable)} usable)`);
      option.value = gpu.key;
      return option;
    }),
  );
  // The last device is this host, the one the user most likely asks about.
  if (state.gpus.length) picker.value = state.gpus[state.gpus.length - 1].key;
}

/** Ask for the fit after the slider rests a moment; only the newest answer is drawn. */
function scheduleFit() {
  showContext();
  clearTimeout(state.fitTimer);
  state.fitTimer = setTimeout(loadFit, FIT_DEBOUNCE_MS);
}

async function loadFit() {
  const id = state.cardModel;
  if (!id) return;
  const seq = ++state.fitSeq;
  const query = new URLSearchParams({ context: String(currentContext()) });
  const gpu = $("fit-gpu").value;
  if (gpu) query.set("gpu", gpu);
  $("fit-bars").setAttribute("aria-busy", "true");
  try {
    const fit = await api(`/api/models/${enc(id)}/fit?${query}`);
    if (seq === state.fitSeq) drawFit(fit, gpu);
  } catch (error) {
    if (seq === state.fitSeq) {
      $("fit-bars").replaceChildren(el("p", "message-error", error.message));
      report(error);
    }
  } finally {
    if (seq === state.fitSeq) $("fit-bars").removeAttribute("aria-busy");
  }
}

/**
 * Draw one horizontal stacked bar per precision: weights, KV cache, engine.
 *
 * All bars share one scale so they compare at a glance. The device's usable
 * memory is a vertical line on that scale; when it is far beyond the largest
 * bar (a small model on a big GPU) the scale follows the bars instead, and the
 * note says the line is off to the right.
 */
function drawFit(fit, gpuKey) {
  const bars = $("fit-bars");
  const precisions = fit.precisions || [];
  const device = (fit.devices || []).find((d) => d.device === gpuKey) || (fit.devices || [])[0];
  const usable = device?.usable ?? null;
  const largest = Math.max(1, ...precisions.map((p) => p.total));
  const lineOnScale = usable != null && usable <= largest * 3;
  const scale = (lineOnScale ? Math.max(largest, usable) : largest) * 1.04;
  const pct = (bytes) => `${Math.max(0, (bytes / scale) * 100).toFixed(3)}%`;

  const rows = precisions.map((p) => {
    const row = el("div", "fit-row");
    row.dataset.precision = p.precision;
    const fits = device?.fits?.[p.precision];
    if (fits === false) row.classList.add("no-fit");

    const track = el("div", "fit-track");
    track.setAttribute("role", "img");
    track.setAttribute(
      "aria-label",
      `${p.precision}: weights ${size(p.weights)}, KV cache ${size(p.kv_cache)}, engine ${size(p.engine)}, total ${size(p.total)}`,
    );
    track.append(
      segment("seg-weights", "weights", p.weights, pct, `Weights ${size(p.weights)}`),
      segment("seg-kv", "kv", p.kv_cache, pct, `KV cache ${size(p.kv_cache)}`),
      segment(
        "seg-engine",
        "engine",
        p.engine,
        pct,
        `Engine ${size(p.engine)}: compute ${size(p.compute_buffer)}, output ${size(p.output_buffer)}, runtime ${size(p.runtime)}`,
      ),
    );
    if (usable != null) {
      // Off the scale, the line stands dashed at the right edge: "further than this".
      const line = el("div", lineOnScale ? "fit-limit" : "fit-limit off-scale");
      line.style.left = lineOnScale ? pct(usable) : "100%";
      line.title = `${device.name}: ${size(usable)} usable${lineOnScale ? "" : " (off the scale)"}`;
      track.append(line);
    }

    const verdict = fits == null ? "" : fits ? "fits" : "too big";
    row.append(
      el("div", "fit-label", p.precision),
      track,
      el("div", "fit-total", size(p.total)),
      el("div", `fit-verdict ${fits ? "ok" : "bad"}`, verdict),
    );
    return row;
  });
  bars.replaceChildren(axis(device, usable, lineOnScale, pct), ...rows);

  const where = device ? `${device.name}: ${size(usable)} usable` : "no device";
  const off =
    usable != null && !lineOnScale ? " (far beyond the bars: the dashed line at the right edge)" : "";
  $("fit-note").textContent =
    `Context ${number(fit.context ?? currentContext())} tokens, batch ${fit.batch ?? 1} · ${where}${off}`;
}

/** The row above the bars that names the usable-memory line, placed over it. */
function axis(device, usable, lineOnScale, pct) {
  const row = el("div", "fit-row fit-axis");
  const track = el("div", "fit-axis-track");
  if (usable != null) {
    const label = el(
      "span",
      lineOnScale ? "fit-axis-label" : "fit-axis-label off-scale",
      `${lineOnScale ? "" : "→ "}${device.name}: ${size(usable)} usable`,
    );
    if (lineOnScale) {
      const at = Number.parseFloat(pct(usable));
      label.style.left = `${at}%`;
      // Centred on the line, but kept inside the track near either end.
      if (at > 75) label.style.transform = "translateX(-100%)";
      else if (at < 25) label.style.transform = "none";
    }
    track.append(label);
  }
  row.append(el("div"), track, el("div"), el("div"));
  return row;
}

/** One piece of a stacked bar; its width is its share of the common scale. */
function segment(className, testId, bytes, pct, title) {
  const piece = el("div", `seg ${className}`);
  piece.dataset.testid = testId;
  piece.dataset.bytes = String(bytes);
  piece.style.width = pct(bytes);
  piece.title = title;
  return piece;
}

// --- evaluation runs -------------------------------------------------------------------

// MMLU's questions have four choices: a model that guesses scores 25%.
const CHANCE = { mmlu: 0.25 };
const TICKS = [0, 0.25, 0.5, 0.75, 1];

/** A fraction as a percentage with one decimal, as `scheda eval` prints it; "—" for none. */
function percent(value) {
  return value == null || Number.isNaN(Number(value)) ? "—" : (100 * value).toFixed(1);
}

/** "62.5 ± 4.1" (the ± part only when there is a standard error). */
function scoreText(figure) {
  if (!figure) return "—";
  const err = figure.stderr == null ? "" : ` ± ${percent(figure.stderr)}`;
  return `${percent(figure.value)}${err}`;
}

/** The headline figure of a summary: its first metric, [name, {value, stderr, n}]. */
function headline(summary) {
  const metrics = Object.entries(summary?.metrics || {});
  return metrics.length ? metrics[0] : [null, null];
}

const fullDate = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");

/** "42 s", "3 min", "1 h 5 min". */
function duration(seconds) {
  if (!(seconds >= 0)) return "";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

/** The URL names the run shown (#eval=ID), so a reload comes back to it. */
function setHashEval(id) {
  history.replaceState(null, "", id ? `#eval=${enc(id)}` : location.pathname + location.search);
}

function hashEval() {
  const m = /^#eval=([^&]+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

/** The saved runs, newest first; then the run shown (or the newest), fetched again. */
async function loadEvals() {
  try {
    state.evals = await api("/api/evals");
  } catch (error) {
    report(error);
    return;
  }
  renderEvalList();
  const id = state.evalRun ?? state.evals[0]?.id;
  if (id) await openEval(id);
}

function renderEvalList() {
  const empty = !state.evals.length;
  $("evals-empty").hidden = !empty;
  $("eval-runs").hidden = empty;
  if (empty) $("eval-detail").hidden = true;
  $("eval-runs").tBodies[0].replaceChildren(...state.evals.map(evalRow));
}

/** One run of the list: model, task, shots, items, headline score ± stderr, date; opens on click. */
function evalRow(run) {
  const row = el("tr", "eval-run");
  row.dataset.runId = run.id;
  row.tabIndex = 0;
  if (run.id === state.evalRun) row.setAttribute("aria-current", "true");
  const model = el("td", "eval-model", run.model);
  model.title = run.path || "";

  const items = el("td", "num");
  const score = el("td", "num eval-score");
  if (run.summary) {
    items.textContent = number(run.items);
    const [metric, figure] = headline(run.summary);
    score.append(el("span", "score-value", scoreText(figure)));
    if (metric) score.append(el("span", "score-metric", metric));
  } else {
    row.classList.add("unfinished");
    items.textContent = `${number(run.scored ?? 0)} / ${number(run.items)}`;
    items.title = `${number(run.scored ?? 0)} of ${number(run.items)} items scored`;
    score.append(el("span", "badge", "unfinished"));
  }
  const date = el("td", "eval-date", when(run.created));
  date.title = fullDate(run.created);
  row.append(
    model,
    el("td", "", run.task),
    el("td", "num", run.config?.shots == null ? "—" : String(run.config.shots)),
    items,
    score,
    date,
    el("td", "eval-id", run.id),
  );
  row.addEventListener("click", () => openEval(run.id));
  row.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openEval(run.id);
    }
  });
  return row;
}

function markEvalCurrent() {
  for (const row of $("eval-runs").tBodies[0].rows) {
    if (row.dataset.runId === state.evalRun) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
}

/** Show one run's figures (GET /api/evals/{id}); only the newest run asked for is drawn. */
async function openEval(id) {
  const seq = ++state.evalSeq;
  let run;
  try {
    run = await api(`/api/evals/${enc(id)}`);
  } catch (error) {
    if (seq !== state.evalSeq) return;
    if (error.status === 404) {
      state.evalRun = null;
      setHashEval(null);
      $("eval-detail").hidden = true;
      markEvalCurrent();
    }
    report(error);
    return;
  }
  if (seq !== state.evalSeq) return;
  state.evalRun = run.id;
  if ($("layout").dataset.view === "evals") setHashEval(run.id);
  markEvalCurrent();
  drawEval(run);
}

/** The run's heading, configuration, figures and (for a task with groups) the bar chart. */
function drawEval(run) {
  $("eval-detail").hidden = false;
  $("eval-detail").dataset.runId = run.id;
  $("eval-title").textContent = `${run.task} · ${run.model}`;
  const meta = [`run ${run.id}`, `started ${fullDate(run.created)}`];
  if (run.finished) {
    meta.push(`finished ${fullDate(run.finished)} (${duration(run.finished - run.created)})`);
  }
  $("eval-meta").textContent = meta.join(" · ");

  const note = $("eval-note");
  note.hidden = Boolean(run.summary);
  if (!run.summary) {
    const so = run.scored
      ? `Unfinished: ${number(run.scored)} of ${number(run.items)} items scored, ` +
        "and the figures are over those so far. "
      : `Unfinished: none of its ${number(run.items)} items is scored yet. `;
    note.replaceChildren(
      so,
      "Running the same ",
      el("code", "", "scheda eval"),
      " command again goes on from there.",
    );
  }

  const config = $("eval-config");
  config.replaceChildren();
  const facts = [["model file", run.path], ...Object.entries(run.config || {})];
  for (const [key, value] of facts) {
    if (value == null || value === "") continue;
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    config.append(el("dt", "", key), el("dd", "", text));
  }

  const summary = run.summary || run.partial;
  drawFigures(run.task, summary);
  drawGroups(run.task, summary);
}

// What a task's groups are called.
const groupNoun = (task) => (task === "mmlu" ? "subject" : "group");

function drawFigures(task, summary) {
  const body = $("eval-figures").tBodies[0];
  const metrics = Object.entries(summary?.metrics || {});
  const rows = metrics.map(([metric, figure]) => figureRow(metric, metric, figure));
  const [first] = headline(summary);
  const groups = Object.keys(summary?.groups || {}).length;
  if (summary?.macro) rows.push(figureRow("macro", `${first} (macro)`, summary.macro));
  body.replaceChildren(...rows);
  $("eval-figures").hidden = !rows.length;
  $("eval-figures-note").textContent = !rows.length
    ? "No figures yet."
    : `Scores in percent, ± one standard error of the mean.` +
      (summary?.macro
        ? ` ${first}: over all ${number(summary.items)} items; ${first} (macro): the mean of ` +
          `the ${number(groups)} ${groupNoun(task)}${groups === 1 ? "'s score" : "s' scores"}, ` +
          "each counting once."
        : "");
}

function figureRow(key, label, figure) {
  const row = el("tr");
  row.dataset.metric = key;
  row.append(
    el("th", "", label),
    el("td", "num score-value", percent(figure?.value)),
    el("td", "num", percent(figure?.stderr)),
    el("td", "num", figure?.n == null ? "—" : number(figure.n)),
  );
  return row;
}

/**
 * A horizontal bar per group (MMLU's subjects), best first, on a 0–100% scale.
 *
 * Each bar carries its ± one standard error as a whisker; the macro average
 * and, where the task has one, the chance score are vertical lines across all
 * bars, so a subject below chance stands out.
 */
function drawGroups(task, summary) {
  const groups = Object.entries(summary?.groups || {});
  $("eval-groups-panel").hidden = !groups.length;
  if (!groups.length) {
    $("eval-groups").replaceChildren();
    return;
  }
  groups.sort(([a, x], [b, y]) => (y.value ?? -1) - (x.value ?? -1) || a.localeCompare(b));
  const [metric] = headline(summary);
  const noun = groupNoun(task);
  const count = `${number(groups.length)} ${noun}${groups.length === 1 ? "" : "s"}`;
  $("eval-groups-title").textContent = `${metric} per ${noun} (${count}, best first)`;
  const chance = CHANCE[task];
  $("eval-chance-legend").hidden = chance == null;
  const macro = summary.macro?.value;
  const at = (value) => `${(Math.min(1, Math.max(0, value)) * 100).toFixed(3)}%`;

  const axis = el("div", "eval-bar eval-axis");
  const ticks = el("div", "eval-ticks");
  for (const tick of TICKS) {
    const label = el("span", "eval-tick", `${tick * 100}`);
    label.style.left = at(tick);
    ticks.append(label);
  }
  axis.append(el("div"), ticks, el("div", "eval-value", "%"), el("div", "eval-n", "items"));

  const rows = groups.map(([name, figure]) => {
    const row = el("div", "eval-bar");
    row.dataset.group = name;
    row.dataset.value = String(figure.value);
    if (chance != null && figure.value < chance) row.classList.add("below-chance");
    const label = el("div", "eval-label", name.replaceAll("_", " "));
    label.title = name;

    const track = el("div", "eval-track");
    track.setAttribute("role", "img");
    const spoken = `${name.replaceAll("_", " ")}: ${scoreText(figure)}% over ${figure.n} items`;
    track.setAttribute("aria-label", spoken);
    const fill = el("div", "eval-fill");
    fill.style.width = at(figure.value ?? 0);
    track.append(fill);
    if (figure.stderr != null && figure.value != null) {
      const whisker = el("div", "eval-whisker");
      const low = Math.max(0, figure.value - figure.stderr);
      const high = Math.min(1, figure.value + figure.stderr);
      whisker.style.left = at(low);
      whisker.style.width = `${((high - low) * 100).toFixed(3)}%`;
      track.append(whisker);
    }
    if (chance != null) track.append(line("eval-chance", at(chance), `chance: ${percent(chance)}%`));
    if (macro != null) track.append(line("eval-macro", at(macro), `macro average: ${percent(macro)}%`));
    track.title = `${name}: ${scoreText(figure)}% (${figure.n} items)`;

    row.append(
      label,
      track,
      el("div", "eval-value", scoreText(figure)),
      el("div", "eval-n", number(figure.n)),
    );
    return row;
  });
  $("eval-groups").replaceChildren(axis, ...rows);
}

function line(className, left, title) {
  const mark = el("div", className);
  mark.style.left = left;
  mark.title = title;
  return mark;
}

// --- start -----------------------------------------------------------------------

/** Wire the page's controls once. */
function wire() {
  $("composer").addEventListener("submit", send);
  $("message-input").addEventListener("keydown", composerKeys);
  $("stop").addEventListener("click", stopAnswer);
  $("new-session").addEventListener("click", newSession);
  $("model-picker").addEventListener("change", pickModel);
  $("system-prompt").addEventListener("change", saveSystem);
  for (const [id] of PARAM_FIELDS) $(id).addEventListener("change", saveParams);
  $("reset-params").addEventListener("click", () => {
    applyParams(DEFAULT_PARAMS);
    saveParams();
  });
  $("auth-form").addEventListener("submit", saveKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("banner-close").addEventListener("click", hideBanner);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("card-model").addEventListener("change", () => showModel($("card-model").value));
  $("fit-context").addEventListener("input", scheduleFit);
  $("fit-gpu").addEventListener("change", loadFit);
  $("evals-refresh").addEventListener("click", loadEvals);
}

/** Load what the page shows; run again after the API key is entered. */
async function load() {
  try {
    await loadModels();
  } catch (error) {
    report(error);
    return;
  }
  await Promise.all([refreshSessions(), loadGpus()]);
  const evalId = hashEval(); // read first: starting a new chat clears the URL's hash
  const id = hashSession();
  if (id) await openSession(id);
  else newSession();
  if (evalId) {
    state.evalRun = evalId;
    await showView("evals");
  }
  document.body.dataset.ready = "true";
}

function main() {
  if (state.started) return;
  state.started = true;
  $("forget-key").hidden = !localStorage.getItem(KEY_STORAGE);
  restoreParams();
  wire();
  updateComposer();
  load();
}

main();
