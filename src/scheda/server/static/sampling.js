// The chat's sampling controls, made from the server's declarations (GET /api/sampling).
//
// The server declares every sampling option once (scheda/sampling.py): its
// type, bounds, step, default, help and the engines that honour it. The studio
// builds one control for each option marked for it, so an option added there
// shows here with no change to these files. The values last used are kept in
// this browser (localStorage); a saved session brings back its own.

import { api } from "./api.js";
import { $, el } from "./dom.js";

const PARAMS_STORAGE = "scheda.params";

let controls = []; // {option, input, label, note}: one per option the studio shows

/** Fetch the declarations and build the controls, with the values this browser last used. */
export async function loadSampling() {
  const declared = await api("/api/sampling");
  buildControls(declared.filter((option) => option.studio));
  restoreParams();
}

export function wireSampling() {
  $("reset-params").addEventListener("click", () => {
    applyParams(defaults());
    saveParams();
  });
}

function buildControls(options) {
  const fields = $("sampling-fields");
  fields.replaceChildren();
  controls = options.map((option) => {
    const control = makeControl(option);
    fields.append(control.label, control.input);
    control.input.addEventListener("change", saveParams);
    return control;
  });
}

/** A label and an input for one option: bounds, step and default from its declaration. */
function makeControl(option) {
  const input = el(option.type === "strings" ? "textarea" : "input");
  // The id is the option's name as the page's ids are written (top_k: #top-k), unless
  // another element has it already (an option named "stop" and the stop button).
  const plain = option.name.replaceAll("_", "-");
  input.id = document.getElementById(plain) ? `param-${plain}` : plain;
  input.name = option.name;
  input.dataset.param = option.name;
  if (option.type === "boolean") {
    input.type = "checkbox";
  } else if (option.type === "strings") {
    input.rows = 2;
    input.placeholder = "one per line";
  } else {
    input.type = "number";
    if (option.minimum != null) input.min = String(option.minimum);
    if (option.maximum != null) input.max = String(option.maximum);
    input.step = option.step == null ? "any" : String(option.step);
    input.placeholder = option.default == null ? "none" : String(option.default);
  }
  const label = el("label", option.type === "strings" ? "wide" : "", labelText(option.name));
  label.htmlFor = input.id;
  const note = el("small");
  label.append(note);
  const control = { option, input, label, note };
  setValue(control, option.default);
  explain(control, null);
  return control;
}

/** "max_tokens" reads "Max tokens"; a one-letter word joins the one before it: "Top-k". */
function labelText(name) {
  const words = name.split("_");
  const joined = words.reduce((text, word) => `${text}${word.length === 1 ? "-" : " "}${word}`);
  return joined.charAt(0).toUpperCase() + joined.slice(1);
}

/** The control's tooltip: the option's help, or why the chosen model's engine leaves it out. */
function explain(control, engine) {
  const { option, input, label, note } = control;
  const off = Boolean(engine) && !option.engines.includes(engine);
  input.disabled = off;
  label.classList.toggle("unsupported", off);
  const why = `The ${engine} engine has no ${option.name}: it stays at ${JSON.stringify(option.default)}.`;
  input.title = off ? why : option.help;
  label.title = input.title;
  note.textContent = off ? `not in ${engine}` : option.nullable ? "empty: none" : "";
}

/** Mark the controls the engine of the chosen model does not honour (disabled, with why). */
export function markEngine(engine) {
  for (const control of controls) explain(control, engine);
}

function setValue({ option, input }, value) {
  if (option.type === "boolean") input.checked = Boolean(value);
  else if (option.type === "strings") input.value = (value ?? []).join("\n");
  else input.value = value == null ? "" : String(value);
}

/** A control's value, or undefined for an empty or unreadable field (left to the server). */
function valueOf({ option, input }) {
  if (option.type === "boolean") return input.checked;
  if (option.type === "strings") {
    const lines = input.value.split("\n").filter((line) => line !== "");
    return lines.length ? lines : undefined;
  }
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value)) return undefined;
  return option.type === "integer" ? Math.trunc(value) : value;
}

/** The options as the controls set them; an empty or invalid field is left to the server. */
function readParams() {
  const params = {};
  for (const control of controls) {
    const value = valueOf(control);
    if (value !== undefined) params[control.option.name] = value;
  }
  return params;
}

/**
 * The options a chat turn sends (POST /api/sessions/{id}/chat takes the same declarations).
 *
 * An option the engine does not honour is sent at its default, which is what
 * that engine does anyway: a value kept from another model (or saved with the
 * session) would otherwise make the server refuse the turn.
 */
export function turnParams() {
  const params = readParams();
  for (const { option, input } of controls) {
    if (!input.disabled) continue;
    delete params[option.name];
    if (option.default != null) params[option.name] = option.default;
  }
  return params;
}

/** Put a session's (or the saved) options into the controls; missing ones keep their value. */
export function applyParams(params) {
  for (const control of controls) {
    if (control.option.name in params) setValue(control, params[control.option.name]);
  }
}

/** The server's default for one option (the arena's shared settings start from it). */
export const declaredDefault = (name) => controls.find((c) => c.option.name === name)?.option.default;

function defaults() {
  return Object.fromEntries(controls.map(({ option }) => [option.name, option.default]));
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
