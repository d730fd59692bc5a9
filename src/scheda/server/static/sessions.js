// Saved chats: the session list (open, rename, delete), the open session and its URL.
//
// Sessions are the server's SQLite store, the one `scheda chat` uses, so a chat
// begun in the terminal shows here and goes on in the browser. What opening a
// session or starting a new chat does to the rest of the page (the messages, the
// sampling controls, the view) is the entry's (studio.js): it hands its two
// actions to `wireSessions`, so this module needs nothing of the chat's.

import { api, enc } from "./api.js";
import { $, el, hideBanner, report } from "./dom.js";
import { when } from "./format.js";
import { state } from "./state.js";

let sessions = []; // GET /api/sessions
const actions = { open: async () => {}, fresh: () => {}, located: () => {} };

/**
 * Wire the list's actions: open(id) opens a session, fresh() starts a new chat, and
 * located(id) puts the open session (or none) in the URL, through the router.
 */
export function wireSessions({ open, fresh, located }) {
  actions.open = open;
  actions.fresh = fresh;
  actions.located = located;
  $("new-session").addEventListener("click", () => fresh());
}

export async function refreshSessions() {
  try {
    sessions = await api("/api/sessions");
  } catch (error) {
    report(error);
    return;
  }
  renderSessionList();
}

/** The listed session with this id (its title is the server's, made from the first message). */
export const listedSession = (id) => sessions.find((s) => s.id === id);

function renderSessionList() {
  const list = $("session-list");
  if (!sessions.length) {
    list.replaceChildren(el("li", "empty", "No saved chats yet."));
    return;
  }
  list.replaceChildren(...sessions.map(sessionItem));
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
  open.addEventListener("click", () => actions.open(session.id));

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

  const buttons = el("div", "session-actions");
  buttons.append(rename, remove);
  item.append(open, buttons);
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
  if (state.current?.id === session.id) actions.fresh();
  await refreshSessions();
}

export function patchSession(id, changes) {
  return api(`/api/sessions/${enc(id)}`, { method: "PATCH", body: changes });
}

/** Save a new session (the first message of a new chat); it becomes the open one. */
export async function createSession(model, system) {
  const body = { model };
  if (system) body.system = system;
  state.current = { messages: [], ...(await api("/api/sessions", { method: "POST", body })) };
  setHashSession(state.current.id);
  showSessionNote();
  return state.current;
}

/**
 * Make a saved session the open one: its title, the URL and the list.
 *
 * Returns the session (with its messages, system prompt, sampling options and
 * model), or null when it could not be had (the error is reported).
 */
export async function openSession(id) {
  let session;
  try {
    session = await api(`/api/sessions/${enc(id)}`);
  } catch (error) {
    if (error.status === 404) {
      setHashSession(null);
      refreshSessions();
    }
    report(error);
    return null;
  }
  hideBanner();
  state.current = session;
  setHashSession(session.id);
  $("chat-title").textContent = session.title || "Untitled chat";
  markCurrent();
  return session;
}

/** No session open: a new chat, saved as a session when its first message is sent. */
export function closeSession() {
  state.current = null;
  setHashSession(null);
  $("chat-title").textContent = "New chat";
  $("session-note").textContent = "";
  markCurrent();
}

/**
 * The served chat model a stored session names, or null.
 *
 * A session begun in the terminal may name a file path rather than a served
 * id, so a path or a file name that matches a served model counts too.
 */
export function matchModel(stored) {
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

/** Say so when a session was made with a model this server does not serve. */
export function showSessionNote() {
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
  actions.located(id);
}
