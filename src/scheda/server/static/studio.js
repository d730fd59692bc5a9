// scheda studio: chat with the served models, keep sessions, read spec sheets and fits,
// see how each model splits a text, read the saved evaluation runs (`scheda eval`) and
// measure a model's spec sheet, and judge two models' answers blind in the arena.
//
// Plain ES modules, no framework and no build step, so the page works offline
// from the files the server ships. This entry declares the tabs (the tab table, which
// router.js makes the tab bar and the URL's routes from) and wires the views together:
// one module per view (chat.js, sessions.js, model.js, tokens.js, evals.js, compare.js,
// the last two on browse.js's list and detail; evalcard.js is the evals tab's spec
// sheet and card run; arena.js), the sampling controls (sampling.js),
// and what they share (api.js, dom.js, format.js, state.js). Text from a model or a
// user only ever goes into the page through textContent or markdown.js (which builds
// DOM nodes), never through innerHTML.

import { forgetKey, hasKey, saveKey } from "./api.js";
import { arenaTab } from "./arena.js";
import { clearChat, fillModelPicker, showSession, stopAnswer, wireChat } from "./chat.js";
import { compareTab } from "./compare.js";
import { $, hideBanner, report } from "./dom.js";
import { wireCard } from "./evalcard.js";
import { evalsTab } from "./evals.js";
import { loadHubDevices, wireHub } from "./hub.js";
import { fillCardPicker, loadGpus, loadModels, showModel, wireModel } from "./model.js";
import { declareTabs, go, selected, start } from "./router.js";
import { loadSampling, wireSampling } from "./sampling.js";
import { closeSession, openSession, refreshSessions, showSessionNote, wireSessions } from "./sessions.js";
import { state } from "./state.js";
import { showTokens, wireTokens } from "./tokens.js";

/** The chat's tab: the open session (#session=ID), or a new chat (no hash). */
const chatTab = {
  async show(id) {
    if (id && id !== state.current?.id) await loadChat(id);
    else if (!id && state.current) startChat();
  },
  selected: () => state.current?.id ?? null,
};

/**
 * The tabs, declared once: the tab bar and the router (router.js) are made from this.
 * Each has its pane (#view-ID, and `panes` shown with it), its label, the word of its
 * hash (#WORD or #WORD=ITEM) and its module: show(item), and selected() where it has items.
 */
function tabTable() {
  return [
    { id: "chat", label: "Chat", hash: "session", module: chatTab, panes: ["settings"] },
    {
      id: "model",
      label: "Spec sheet & fit",
      hash: "model",
      module: { show: () => showModel($("card-model").value) },
    },
    { id: "tokens", label: "Tokens", hash: "tokens", module: { show: showTokens } },
    { id: "evals", label: "Evaluations", hash: "eval", module: evalsTab() },
    { id: "compare", label: "Quantization", hash: "compare", module: compareTab() },
    { id: "arena", label: "Arena", hash: "arena", module: arenaTab() },
  ];
}

/** Put a saved session in the chat: its messages, system prompt, sampling options and model. */
async function loadChat(id) {
  stopAnswer();
  const session = await openSession(id);
  if (!session) return;
  showSession(session);
  showSessionNote();
}

/** Open a saved session (from the list), in the chat's tab. */
async function openChat(id) {
  await loadChat(id);
  await go("chat");
}

/** Start an unsaved chat; it is saved as a session when the first message is sent. */
function startChat() {
  stopAnswer();
  closeSession();
  clearChat();
}

function newChat() {
  startChat();
  go("chat");
}

/** Wire the page's controls once. */
function wire() {
  declareTabs(tabTable());
  wireChat();
  wireSampling();
  wireSessions({ open: openChat, fresh: newChat, located: (id) => selected(chatTab, id) });
  wireModel();
  wireTokens();
  wireCard();
  wireHub({ onPulled: joinPickers });
  $("auth-form").addEventListener("submit", (event) => {
    if (saveKey(event)) load();
  });
  $("forget-key").addEventListener("click", forgetKey);
  $("banner-close").addEventListener("click", hideBanner);
}

/** A model pulled from the Hub is served now: it joins the chat's and the spec sheet's pickers. */
async function joinPickers(model) {
  await loadModels();
  fillModelPicker();
  fillCardPicker($("card-model").value || model.id);
}

/** Load what the page shows, then the tab and item the URL names; again after the API key. */
async function load() {
  try {
    // The sampling controls first: the chat picker marks those its model's engine lacks.
    await Promise.all([loadModels(), loadSampling()]);
  } catch (error) {
    report(error);
    return;
  }
  fillModelPicker();
  fillCardPicker($("model-picker").value);
  await Promise.all([refreshSessions(), loadGpus(), loadHubDevices()]);
  await start();
  document.body.dataset.ready = "true";
}

function main() {
  $("forget-key").hidden = !hasKey();
  wire();
  load();
}

main();
