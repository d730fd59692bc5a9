// The chat: the model picker, the messages, the composer, the streamed answer and its counters.
//
// An answer streams in as server-sent events and is rendered as Markdown as it
// grows; the stop button aborts the request, and the server keeps the partial
// answer. Sessions (sessions.js) hold what is said; the sampling controls
// (sampling.js) say how the model answers.

import { enc, postEvents } from "./api.js";
import { $, el, hideBanner, report } from "./dom.js";
import { number } from "./format.js";
import { renderInto } from "./markdown.js";
import { fits, modelOption, refreshModelLabels } from "./model.js";
import { applyParams, markEngine, turnParams } from "./sampling.js";
import {
  createSession,
  listedSession,
  matchModel,
  patchSession,
  refreshSessions,
  showSessionNote,
} from "./sessions.js";
import { modelById, state } from "./state.js";

const MODEL_STORAGE = "scheda.model";

let streaming = null; // {controller} while an answer streams

export function wireChat() {
  $("composer").addEventListener("submit", send);
  $("message-input").addEventListener("keydown", composerKeys);
  $("stop").addEventListener("click", stopAnswer);
  $("model-picker").addEventListener("change", pickModel);
  $("system-prompt").addEventListener("change", saveSystem);
  updateComposer();
}

// --- the model ---------------------------------------------------------------------

/** Fill the chat picker: the chat models, then the embedding models (listed, not choosable). */
export function fillModelPicker() {
  const picker = $("model-picker");
  const saved = localStorage.getItem(MODEL_STORAGE);
  const chat = state.models.filter((m) => m.kind === "chat");
  const other = state.models.filter((m) => m.kind !== "chat");
  // A model too large for the server's memory budget is listed, but cannot answer.
  picker.replaceChildren(...chat.map((m) => modelOption(m, !fits(m))));
  if (other.length) {
    // Shown so the user knows they are served, but an embedding model cannot chat.
    const group = document.createElement("optgroup");
    group.label = "Embedding models (no chat)";
    group.append(...other.map((m) => modelOption(m, true)));
    picker.append(group);
  }
  if (chat.some((m) => m.id === saved && fits(m))) picker.value = saved;
  modelChosen();
}

/** What follows from the picker's model: the composer, and the controls its engine lacks. */
function modelChosen() {
  markEngine(modelById($("model-picker").value)?.engine);
  updateComposer();
}

/** The chat model changed: remember it, and move the open session to it. */
async function pickModel() {
  const model = $("model-picker").value;
  localStorage.setItem(MODEL_STORAGE, model);
  modelChosen();
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

// --- a session in the chat -------------------------------------------------------------

/** Show an opened session: its messages, system prompt, sampling options and model. */
export function showSession(session) {
  $("system-prompt").value = session.system ?? "";
  applyParams(session.params || {});
  const served = matchModel(session.model);
  if (served) $("model-picker").value = served.id;
  modelChosen();
  renderMessages(session.messages || []);
}

/** An empty chat, ready for a first message. */
export function clearChat() {
  renderMessages([]);
  resetCounters();
  $("message-input").focus();
}

// --- messages ----------------------------------------------------------------------

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

// --- counters ----------------------------------------------------------------------

function statsLine(done) {
  const parts = [];
  if (done.completion_tokens != null) parts.push(`${number(done.completion_tokens)} tokens`);
  if (done.tokens_per_s != null) parts.push(`${done.tokens_per_s.toFixed(1)} tok/s`);
  if (done.first_token_s != null) parts.push(`first token ${done.first_token_s.toFixed(2)} s`);
  // The prompt's tokens read from the engine's cache of the earlier turns, not evaluated again.
  if (done.cached_tokens) {
    parts.push(`${number(done.cached_tokens)} of ${number(done.prompt_tokens)} prompt tokens cached`);
  }
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

// --- the composer ------------------------------------------------------------------

function updateComposer() {
  const busy = Boolean(streaming);
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
  if (!content.trim() || streaming || !model) return;
  hideBanner();
  try {
    if (!state.current) await createSession(model, $("system-prompt").value.trim());
    else await saveSystem();
  } catch (error) {
    report(error);
    return;
  }
  input.value = "";
  appendMessage("user", content);
  const view = appendMessage("assistant", "", "streaming");
  const session = state.current;
  // The model goes with the turn: the answer comes from the one the picker shows.
  await streamAnswer(session.id, { content, model, params: turnParams() }, view);
  session.model = model;
  await Promise.all([refreshSessions(), refreshModelLabels()]);
  // Another session may have been opened meanwhile (which stops this answer): leave it be.
  if (state.current !== session) return;
  showSessionNote();
  const listed = listedSession(session.id);
  if (listed?.title) $("chat-title").textContent = listed.title;
}

/** POST the message and render the SSE answer as it grows; the stop button aborts it. */
async function streamAnswer(sessionId, turn, view) {
  const controller = new AbortController();
  streaming = { controller };
  updateComposer();
  resetCounters();
  $("count-tokens").textContent = "writing…";
  let text = "";
  let ended = false;
  try {
    for await (const event of postEvents(`/api/sessions/${enc(sessionId)}/chat`, turn, controller.signal)) {
      if (typeof event.text === "string") {
        if (!text) $("count-tokens").textContent = "writing…";
        text += event.text;
        view.update(text);
      } else if (event.loading) {
        $("count-tokens").textContent = `loading ${event.loading}…`; // its first request
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
    streaming = null;
    updateComposer();
  }
}

export function stopAnswer() {
  streaming?.controller.abort();
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
