// How each served model splits a text: `scheda tokens`, side by side, as the user types.
//
// POST /api/tokens answers with `scheda tokens --json`'s shape for the models ticked.
// Each piece is whole characters (a character split across byte-level tokens is
// one piece with all their ids), coloured in turn; its ids show on hover. A GGUF
// answers from its vocabulary, so nothing needs to be loaded to show its tokens.

import { api } from "./api.js";
import { $, el, report } from "./dom.js";
import { number } from "./format.js";
import { fits } from "./model.js";
import { state } from "./state.js";

const TYPE_DEBOUNCE_MS = 150;
const FEW_MODELS = 6; // up to this many served, all are ticked
const COLOURS = 5; // .piece-0 ... .piece-4 in studio.css

const view = {
  seq: 0, // only the newest answer is drawn
  timer: 0,
  filled: false, // the model list is built once the models are known
};

export function wireTokens() {
  $("tokens-input").addEventListener("input", scheduleTokens);
  $("tokens-models").addEventListener("change", loadTokens);
}

/** The view is shown: list the models (the first time) and split the text. */
export function showTokens() {
  if (!view.filled) fillModels();
  return loadTokens();
}

/** One checkbox per served model, all ticked: the comparison is the point. With many (a
 * server of every model here), only the loaded ones, since a model not loaded may load. */
function fillModels() {
  view.filled = true;
  const few = state.models.length <= FEW_MODELS;
  $("tokens-models").replaceChildren(
    ...state.models.map((model, i) => {
      const box = el("input");
      box.type = "checkbox";
      box.value = model.id;
      box.disabled = !fits(model);
      box.checked = fits(model) && (few || model.loaded || i === 0);
      const label = el("label", "tokens-model");
      label.append(box, el("span", "", model.id));
      return label;
    }),
  );
}

const chosen = () => [...$("tokens-models").querySelectorAll("input:checked")].map((box) => box.value);

function scheduleTokens() {
  clearTimeout(view.timer);
  view.timer = setTimeout(loadTokens, TYPE_DEBOUNCE_MS);
}

async function loadTokens() {
  const seq = ++view.seq;
  const models = chosen();
  const results = $("tokens-results");
  if (!models.length) {
    results.replaceChildren(el("p", "muted", "Tick a model to see how it splits the text."));
    return;
  }
  results.setAttribute("aria-busy", "true");
  try {
    const answer = await api("/api/tokens", {
      method: "POST",
      body: { text: $("tokens-input").value, models },
    });
    if (seq === view.seq) results.replaceChildren(...answer.models.map(modelTokens));
  } catch (error) {
    if (seq === view.seq) {
      results.replaceChildren(el("p", "message-error", error.message));
      report(error);
    }
  } finally {
    if (seq === view.seq) results.removeAttribute("aria-busy");
  }
}

/** A piece with its whitespace shown, as the terminal shows it (render.visible). */
const visible = (text) => text.replaceAll(" ", "␣").replaceAll("\n", "↵").replaceAll("\t", "⇥");

/** One model's answer: its counts, then its pieces in alternating colours. */
function modelTokens(result) {
  const panel = el("section", "panel tokens-model-result");
  panel.dataset.model = result.id;
  const heading = el("div", "tokens-heading");
  const name = el("p", "tokens-name", result.id);
  name.title = result.model;
  heading.append(
    name,
    el(
      "span",
      "muted",
      `${number(result.count)} tokens · ${number(result.characters)} characters · ` +
        `${result.chars_per_token.toFixed(2)} characters per token · ${result.tokenizer ?? "tokenizer"}`,
    ),
  );
  const strip = el("p", "tokens-strip");
  strip.dataset.testid = "pieces";
  result.pieces.forEach((piece, i) => {
    const span = el("span", `piece piece-${i % COLOURS}`, visible(piece.text));
    const ids = piece.ids.join(" + ");
    span.title =
      piece.ids.length > 1 ? `ids ${ids} (${piece.ids.length} tokens make these characters)` : `id ${ids}`;
    span.dataset.ids = piece.ids.join(" ");
    span.dataset.text = piece.text;
    strip.append(span);
    if (piece.text.endsWith("\n")) strip.append(el("br"));
  });
  panel.append(heading, strip, el("p", "tokens-ids muted", `ids: ${result.ids.join(" ")}`));
  return panel;
}
