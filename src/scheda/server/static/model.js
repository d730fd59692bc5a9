// The served models, and a model's spec sheet and fit calculator.
//
// The spec sheet is the card `scheda card` prints; the fit calculator draws
// `scheda fit`'s answer as one stacked bar per precision (weights, KV cache,
// engine) against a device's usable memory, for a context the slider picks.

import { api, enc } from "./api.js";
import { $, el, report } from "./dom.js";
import { number, size } from "./format.js";
import { modelById, state } from "./state.js";

const FIT_DEBOUNCE_MS = 120;

const view = {
  gpus: [], // GET /api/gpus
  contexts: [], // the fit slider's stops
  fitSeq: 0, // only the newest fit answer is drawn
  fitTimer: 0,
  cardModel: null, // the model the spec sheet shows
};

export function wireModel() {
  $("card-model").addEventListener("change", () => showModel($("card-model").value));
  $("model-load").addEventListener("click", loadOrUnload);
  $("fit-context").addEventListener("input", scheduleFit);
  $("fit-gpu").addEventListener("change", loadFit);
}

// --- the served models -------------------------------------------------------------

/** The served models (GET /api/models), into the shared state. */
export async function loadModels() {
  state.models = await api("/api/models");
}

/** The spec sheet's picker lists every model; it starts on `preferred` (the chat's). */
export function fillCardPicker(preferred) {
  $("card-model").replaceChildren(...state.models.map((m) => modelOption(m)));
  $("card-model").value = preferred || state.models[0]?.id || "";
}

/** Whether the model may load at all: one that needs more than the whole budget may not. */
export const fits = (model) => model?.fit?.fits !== false;

const modelLabel = (model) =>
  `${model.id}${model.loaded ? " (loaded)" : fits(model) ? "" : " (too large)"}`;

/** An option of a model picker: the id, "(loaded)" or "(too large)", the engine and path as
 * title. */
export function modelOption(model, disabled = false) {
  const option = el("option", "", modelLabel(model));
  option.value = model.id;
  option.disabled = disabled;
  option.title = `${model.engine ?? ""} ${model.path ?? ""}`.trim();
  return option;
}

/** After an answer a model may have been loaded (or another unloaded): update the labels. */
export async function refreshModelLabels() {
  try {
    state.models = await api("/api/models");
  } catch {
    return; // only labels; the next action reports a real problem
  }
  for (const option of document.querySelectorAll("#model-picker option, #card-model option")) {
    const model = modelById(option.value);
    if (model) option.textContent = modelLabel(model);
  }
  showLoadState();
}

// --- loaded or not -------------------------------------------------------------------

/** The model tab's button and line: loaded or not, and what it needs of the budget. */
function showLoadState() {
  const model = modelById($("card-model").value);
  const button = $("model-load");
  button.hidden = !model;
  if (!model) return;
  button.textContent = model.loaded ? "Unload" : "Load";
  button.disabled = !model.loaded && !fits(model);
  const fit = model.fit;
  const need = fit ? `needs ${size(fit.need)} of the ${size(fit.budget)} budget` : "";
  const state = model.loaded ? "loaded" : fits(model) ? "not loaded" : "too large to load";
  $("model-state").textContent = need ? `${state}; ${need}` : state;
}

/** Load the model shown, or unload it (POST /models/load, /models/unload). */
async function loadOrUnload() {
  const model = modelById($("card-model").value);
  if (!model) return;
  const button = $("model-load");
  button.disabled = true;
  $("model-state").textContent = model.loaded ? "unloading…" : "loading…";
  try {
    await api(model.loaded ? "/models/unload" : "/models/load", {
      method: "POST",
      body: { model: model.id },
    });
  } catch (error) {
    report(error);
  }
  await refreshModelLabels();
}

// --- spec sheet --------------------------------------------------------------------

/** Show the spec sheet and the fit calculator for a model (once per model). */
export async function showModel(id) {
  showLoadState();
  if (!id || view.cardModel === id) return;
  view.cardModel = id;
  $("card-title").textContent = id;
  $("card").tBodies[0].replaceChildren(cardRow("Loading", "…"));
  let card;
  try {
    card = await api(`/api/models/${enc(id)}/card`);
  } catch (error) {
    view.cardModel = null;
    $("card").tBodies[0].replaceChildren(cardRow("Error", error.message));
    report(error);
    return;
  }
  $("card-title").textContent = card.name || id;
  $("card").tBodies[0].replaceChildren(...(card.rows || []).map(([label, value]) => cardRow(label, value)));
  setContexts(card.spec, modelById(id));
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
  view.contexts = stops;
  const slider = $("fit-context");
  slider.max = String(stops.length - 1);
  const start = served || Math.min(4096, top);
  let index = stops.findIndex((c) => c >= start);
  if (index < 0) index = stops.length - 1;
  slider.value = String(index);
  showContext();
}

function currentContext() {
  return view.contexts[Number($("fit-context").value)] ?? 4096;
}

function showContext() {
  const context = currentContext();
  $("fit-context-value").textContent = `${number(context)} tokens`;
  $("fit-context").setAttribute("aria-valuetext", `${context} tokens`);
}

export async function loadGpus() {
  try {
    view.gpus = await api("/api/gpus");
  } catch (error) {
    report(error);
    return;
  }
  const picker = $("fit-gpu");
  picker.replaceChildren(
    ...view.gpus.map((gpu) => {
      const option = el("option", "", `${gpu.name} (${size(gpu.usable)} usable)`);
      option.value = gpu.key;
      return option;
    }),
  );
  // The last device is this host, the one the user most likely asks about.
  if (view.gpus.length) picker.value = view.gpus[view.gpus.length - 1].key;
}

/** Ask for the fit after the slider rests a moment; only the newest answer is drawn. */
function scheduleFit() {
  showContext();
  clearTimeout(view.fitTimer);
  view.fitTimer = setTimeout(loadFit, FIT_DEBOUNCE_MS);
}

async function loadFit() {
  const id = view.cardModel;
  if (!id) return;
  const seq = ++view.fitSeq;
  const query = new URLSearchParams({ context: String(currentContext()) });
  const gpu = $("fit-gpu").value;
  if (gpu) query.set("gpu", gpu);
  $("fit-bars").setAttribute("aria-busy", "true");
  try {
    const fit = await api(`/api/models/${enc(id)}/fit?${query}`);
    if (seq === view.fitSeq) drawFit(fit, gpu);
  } catch (error) {
    if (seq === view.fitSeq) {
      $("fit-bars").replaceChildren(el("p", "message-error", error.message));
      report(error);
    }
  } finally {
    if (seq === view.fitSeq) $("fit-bars").removeAttribute("aria-busy");
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
