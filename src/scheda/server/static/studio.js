// scheda studio: chat with the served models, keep sessions, read spec sheets and fits,
// see how each model splits a text, and read the saved evaluation runs (`scheda eval`).
//
// Plain ES modules, no framework and no build step, so the page works offline
// from the files the server ships. This entry wires the views together: one
// module per view (chat.js, sessions.js, model.js, tokens.js, evals.js), the sampling
// controls (sampling.js), and what they share (api.js, dom.js, format.js,
// state.js). Text from a model or a user only ever goes into the page through
// textContent or markdown.js (which builds DOM nodes), never through innerHTML.

import { forgetKey, hasKey, saveKey } from "./api.js";
import { clearChat, fillModelPicker, showSession, stopAnswer, wireChat } from "./chat.js";
import { $, hideBanner, report } from "./dom.js";
import { askForComparison, hashComparison, showCompare, wireCompare } from "./compare.js";
import { askForEval, hashEval, showEvals, wireEvals } from "./evals.js";
import { loadHubDevices, wireHub } from "./hub.js";
import { fillCardPicker, loadGpus, loadModels, showModel, wireModel } from "./model.js";
import { loadSampling, wireSampling } from "./sampling.js";
import {
  closeSession,
  hashSession,
  openSession,
  refreshSessions,
  setHashSession,
  showSessionNote,
  wireSessions,
} from "./sessions.js";
import { state } from "./state.js";
import { showTokens, wireTokens } from "./tokens.js";

function showView(view) {
  $("layout").dataset.view = view;
  $("view-chat").hidden = view !== "chat";
  $("settings").hidden = view !== "chat";
  $("view-model").hidden = view !== "model";
  $("view-tokens").hidden = view !== "tokens";
  $("view-evals").hidden = view !== "evals";
  $("view-compare").hidden = view !== "compare";
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  }
  if (view === "model") showModel($("card-model").value);
  // The URL names what a reload comes back to: the open session, or the evaluation run shown.
  if (view === "chat") setHashSession(state.current?.id ?? null);
  if (view === "evals") return showEvals();
  if (view === "compare") return showCompare();
  if (view === "tokens") return showTokens();
  return Promise.resolve();
}

/** Open a saved session in the chat: its messages, system prompt, sampling options and model. */
async function openChat(id) {
  stopAnswer();
  const session = await openSession(id);
  if (!session) return;
  showSession(session);
  showSessionNote();
  showView("chat");
}

/** Start an unsaved chat; it is saved as a session when the first message is sent. */
function newChat() {
  stopAnswer();
  closeSession();
  clearChat();
  showView("chat");
}

/** Wire the page's controls once. */
function wire() {
  wireChat();
  wireSampling();
  wireSessions({ open: openChat, fresh: newChat });
  wireModel();
  wireTokens();
  wireEvals();
  wireCompare();
  wireHub({ onPulled: joinPickers });
  $("auth-form").addEventListener("submit", (event) => {
    if (saveKey(event)) load();
  });
  $("forget-key").addEventListener("click", forgetKey);
  $("banner-close").addEventListener("click", hideBanner);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
}

/** A model pulled from the Hub is served now: it joins the chat's and the spec sheet's pickers. */
async function joinPickers(model) {
  await loadModels();
  fillModelPicker();
  fillCardPicker($("card-model").value || model.id);
}

/** Load what the page shows; run again after the API key is entered. */
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
  const evalId = hashEval(); // read first: starting a new chat clears the URL's hash
  const comparisonId = hashComparison();
  const id = hashSession();
  if (id) await openChat(id);
  else newChat();
  if (evalId) {
    askForEval(evalId);
    await showView("evals");
  }
  if (comparisonId) {
    askForComparison(comparisonId);
    await showView("compare");
  }
  document.body.dataset.ready = "true";
}

function main() {
  $("forget-key").hidden = !hasKey();
  wire();
  load();
}

main();
