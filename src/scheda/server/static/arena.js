// The arena: two models' answers judged side by side and blind, the leaderboard, the battles.
//
// A blind battle (the default) posts the prompt to POST /api/arena/battles, which picks
// which model is A at random and streams both answers at once as server-sent events,
// each tagged with its column; the page learns who answered only from the vote's answer.
// Until then it asks the server for nothing else: every other request it could make
// (the models, the leaderboard, the battles' list) might change with the battle and so
// hint at who is in which column. A battle is an item of the tab (#arena=ID): a reload
// shows it, revealed once voted, with the vote buttons while it waits for one.
//
// Side by side is not blind and not stored: the same chat request to up to four models
// at once through the OpenAI route (/v1/chat/completions, streamed), each in its column.
//
// The leaderboard is GET /api/arena/leaderboard: Bradley-Terry ratings with bootstrap
// intervals (a table, and the intervals as bars), the win matrix, and beside each model
// its `scheda compare` KLD and eval accuracy where stored.
//
// A quantization arena starts from a stored comparison (GET /api/comparisons): choosing
// one sets the pickers to its reference and a candidate, or any of its candidates drawn at
// Fight. The battle is as blind as any: the pickers say who fights, never who is in which
// column. After the vote, a revealed candidate's column shows its KLD from that comparison.

import { api, apiBlob, enc, postEvents } from "./api.js";
import { $, el, hideBanner, report } from "./dom.js";
import { fullDate, number, when } from "./format.js";
import { renderInto } from "./markdown.js";
import { selected } from "./router.js";
import { declaredDefault } from "./sampling.js";
import { state } from "./state.js";

const SVG = "http://www.w3.org/2000/svg";
const MAX_SIDE_BY_SIDE = 4;
const HISTORY_ROWS = 30;
const STOP_POLLS = 10;
const STOP_POLL_MS = 300;
// The shared settings: [sampling option, the field's id].
const SETTINGS = [
  ["temperature", "arena-temperature"],
  ["max_tokens", "arena-max-tokens"],
  ["seed", "arena-seed"],
];
const VOTES = { a: "A is better", b: "B is better", tie: "Tie", bad: "Both are bad" };

const view = {
  mode: "battle", // "battle" (blind by default) or "side" (side by side, named)
  battle: null, // the battle shown, as GET /api/arena/battles/{id} has it (or as far as streamed)
  columns: new Map(), // column key ("a", "b", or a model id side by side) -> its view
  controller: null, // an AbortController while answers stream
  // From Fight to the vote the page fetches nothing but the battle's own routes.
  fighting: false,
  prompts: null, // GET /api/arena/prompts, once
  seq: 0, // only the newest battle asked for is drawn
  module: null, // the tab's module, which router.selected() is told about
  comparisons: [], // the stored comparisons this server can fight: [{summary, reference, candidates}]
  // The comparison chosen: {id, reference: {model, name}, candidates: [{model, path, kld}]},
  // its candidates those served here, each with its mean KLD; null for none.
  comparison: null,
  fought: null, // the comparison the battle shown was fought from (its KLDs shown after the vote)
};

// A model too large for the budget cannot answer: it is not offered.
const chatModels = () => state.models.filter((m) => m.kind === "chat" && m.fit?.fits !== false);

/** The tab's module (for the tab table): the arena, on a battle (#arena=ID) or on none. */
export function arenaTab() {
  const module = {
    async show(item) {
      fillPickers();
      showDefaults();
      if (item && item !== view.battle?.id) await openBattle(item);
      await refresh();
    },
    selected: () => (view.mode === "battle" ? (view.battle?.id ?? null) : null),
  };
  wire(module);
  return module;
}

function wire(module) {
  view.module = module;
  $("arena-mode-battle").addEventListener("click", () => setMode("battle"));
  $("arena-mode-side").addEventListener("click", () => setMode("side"));
  $("arena-form").addEventListener("submit", fight);
  $("arena-stop").addEventListener("click", () => view.controller?.abort());
  $("arena-draw").addEventListener("click", drawPrompt);
  $("arena-new").addEventListener("click", newBattle);
  $("arena-board-tag").addEventListener("change", loadBoard);
  $("arena-refresh").addEventListener("click", refresh);
  $("arena-export").addEventListener("click", exportBattles);
  for (const button of document.querySelectorAll(".arena-vote-button")) {
    button.addEventListener("click", () => vote(button.dataset.outcome));
  }
  $("arena-several-models").addEventListener("change", limitSeveral);
  $("arena-comparison").addEventListener("change", chooseComparison);
  $("arena-candidate").addEventListener("change", applyComparison);
  $("arena-first").addEventListener("change", pickedByHand);
  $("arena-second").addEventListener("change", pickedByHand);
}

// --- the form ----------------------------------------------------------------------

/** The pickers from the models the page loaded at its start (never fetched again here). */
function fillPickers() {
  const models = chatModels();
  for (const id of ["arena-first", "arena-second"]) {
    const picker = $(id);
    const chosen = picker.value;
    const any = el("option", "", "Any");
    any.value = "";
    picker.replaceChildren(any, ...models.map((m) => option(m.id)));
    picker.value = models.some((m) => m.id === chosen) ? chosen : "";
  }
  const box = $("arena-several-models");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(...models.map((m) => checkbox(m.id, checked.has(m.id))));
  limitSeveral();
  if (view.comparison) applyComparison();
}

function option(id) {
  const node = el("option", "", id);
  node.value = id;
  return node;
}

function checkbox(id, checked) {
  const label = el("label", "arena-check");
  const input = el("input");
  input.type = "checkbox";
  input.value = id;
  input.checked = checked;
  label.append(input, el("span", "", id));
  return label;
}

/** At most four models side by side: the other boxes are disabled once four are ticked. */
function limitSeveral() {
  const boxes = [...$("arena-several-models").querySelectorAll("input")];
  const full = boxes.filter((b) => b.checked).length >= MAX_SIDE_BY_SIDE;
  for (const box of boxes) box.disabled = full && !box.checked;
}

function setMode(mode) {
  if (view.mode === mode) return;
  view.controller?.abort();
  view.mode = mode;
  const side = mode === "side";
  $("arena-mode-battle").setAttribute("aria-pressed", String(!side));
  $("arena-mode-side").setAttribute("aria-pressed", String(side));
  $("arena-pair").hidden = side;
  $("arena-several").hidden = !side;
  $("arena-fight").textContent = side ? "Ask them all" : "Fight";
  $("arena-mode-note").textContent = side
    ? "Named and not stored: the same prompt to each model at once."
    : "";
  clearBattle();
}

/**
 * The sampling the answers share: each field as given, else the server's declared default
 * (shown as the field's placeholder), as the chat sends it; no seed unless one is given.
 */
function params() {
  const out = {};
  for (const [name, id] of SETTINGS) {
    const typed = $(id).value.trim();
    const value = typed === "" ? declaredDefault(name) : Number(typed);
    if (value != null) out[name] = value;
  }
  return out;
}

function showDefaults() {
  for (const [name, id] of SETTINGS) {
    const value = declaredDefault(name);
    if (value != null) $(id).placeholder = String(value);
  }
}

/** The two models asked for, or null for any two; "Any" beside a model is another at random. */
function pair() {
  const first = $("arena-first").value;
  const second = $("arena-second").value;
  // "Any candidate" of the chosen comparison (the pickers hold its reference and no other).
  if (view.comparison && !second) {
    const { candidates } = view.comparison;
    return [first, candidates[Math.floor(Math.random() * candidates.length)].model];
  }
  if (!first && !second) return null;
  if (first && second) return [first, second];
  const named = first || second;
  const others = chatModels().filter((m) => m.id !== named);
  if (!others.length) return [named, named]; // the server says why that cannot be
  return [named, others[Math.floor(Math.random() * others.length)].id];
}

async function drawPrompt() {
  try {
    view.prompts ??= await api("/api/arena/prompts");
  } catch (error) {
    report(error);
    return;
  }
  if (!view.prompts.length) return;
  const drawn = view.prompts[Math.floor(Math.random() * view.prompts.length)];
  $("arena-prompt").value = drawn.prompt;
  $("arena-tag").value = drawn.tag ?? "";
}

function setBusy(busy) {
  $("arena-fight").disabled = busy;
  $("arena-stop").disabled = !busy;
}

// --- a battle from a stored comparison -------------------------------------------------

const fileName = (path) => String(path || "").split(/[\\/]/).pop();
const isAbsolute = (path) => path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path);

/**
 * Whether two paths name one file. `scheda compare` and `scheda serve` keep a path as it was
 * typed, and the page cannot resolve one: a relative path is taken for the absolute path
 * it ends (compared in the folder the file is in, served from anywhere).
 */
function samePath(a, b) {
  if (!a || !b) return false;
  if (a === b) return true;
  if (isAbsolute(a) === isAbsolute(b)) return false;
  const [whole, tail] = isAbsolute(a) ? [a, b] : [b, a];
  const rest = tail.replace(/^(\.[\\/])+/, "");
  if (rest.startsWith("..")) return false;
  return whole.endsWith(`/${rest}`) || whole.endsWith(`\\${rest}`);
}

/** The served chat model whose file this is, or undefined. */
const servedAt = (path) => chatModels().find((m) => samePath(m.path, path));

/** The stored comparisons; those whose reference and a candidate are served, in the picker. */
async function loadComparisons() {
  if (view.fighting) return;
  let listed;
  try {
    listed = await api("/api/comparisons");
  } catch (error) {
    report(error);
    return;
  }
  view.comparisons = listed.map(fightable).filter(Boolean);
  drawComparisons();
}

/** A comparison with who would fight: its served reference and served candidates; else null. */
function fightable(summary) {
  const reference = servedAt(summary.reference);
  if (!reference) return null;
  const candidates = [];
  for (const path of summary.candidates) {
    const model = servedAt(path);
    if (model && model.id !== reference.id && !candidates.includes(model)) candidates.push(model);
  }
  return candidates.length ? { summary, reference, candidates } : null;
}

function drawComparisons() {
  const picker = $("arena-comparison");
  const none = el("option", "", "None");
  none.value = "";
  picker.replaceChildren(none, ...view.comparisons.map(comparisonOption));
  $("arena-from").hidden = view.comparisons.length === 0;
  if (view.comparisons.some((c) => c.summary.id === view.comparison?.id)) {
    picker.value = view.comparison.id;
  } else if (view.comparison) dropComparison();
}

/** "ref.gguf against a.gguf, b.gguf · the date", the full paths in its title. */
function comparisonOption({ summary }) {
  const candidates = summary.candidates.map(fileName).join(", ");
  const text = `${fileName(summary.reference)} against ${candidates} · ${fullDate(summary.created)}`;
  const node = el("option", "", text);
  node.value = summary.id;
  node.title = [summary.reference, ...summary.candidates].join("\n");
  return node;
}

/** A comparison chosen: its candidates' KLDs read (GET /api/comparisons/{id}), the pickers set. */
async function chooseComparison() {
  const id = $("arena-comparison").value;
  const found = view.comparisons.find((c) => c.summary.id === id);
  if (!found) {
    dropComparison();
    return;
  }
  let record;
  try {
    record = await api(`/api/comparisons/${enc(id)}`);
  } catch (error) {
    report(error);
    $("arena-comparison").value = view.comparison?.id ?? "";
    return;
  }
  if ($("arena-comparison").value !== id) return; // another was chosen meanwhile
  view.comparison = chosenComparison(found, record);
  drawCandidates();
  applyComparison();
}

/** What the arena keeps of a comparison: the reference's name, each served candidate's KLD. */
function chosenComparison(found, record) {
  const rows = record.rows ?? [];
  const reference = rows.find((r) => r.role === "reference");
  const kld = (path) =>
    rows.find((r) => r.role === "candidate" && samePath(r.path, path))?.kld?.mean ?? null;
  return {
    id: found.summary.id,
    reference: { model: found.reference.id, name: reference?.type || fileName(record.reference) },
    candidates: found.candidates.map((m) => ({ model: m.id, path: m.path, kld: kld(m.path) })),
  };
}

/** The candidate's picker, shown when there are several: any of them (at Fight), or one. */
function drawCandidates() {
  const candidates = view.comparison.candidates;
  const any = el("option", "", "Any candidate");
  any.value = "";
  $("arena-candidate").replaceChildren(any, ...candidates.map((c) => option(c.model)));
  $("arena-candidate-label").hidden = candidates.length < 2;
}

/** The pickers set to the comparison's reference and its candidate (or "Any candidate"). */
function applyComparison() {
  const { reference, candidates } = view.comparison;
  $("arena-first").value = reference.model;
  $("arena-second").value = candidates.length === 1 ? candidates[0].model : $("arena-candidate").value;
  nameAny();
}

/** A picker changed by hand: the comparison holds while the pair is still its own. */
function pickedByHand() {
  const comparison = view.comparison;
  if (!comparison) return;
  const first = $("arena-first").value;
  const second = $("arena-second").value;
  const candidate = comparison.candidates.some((c) => c.model === second);
  if (first !== comparison.reference.model || (second && !candidate)) dropComparison();
  else $("arena-candidate").value = second;
}

function dropComparison() {
  view.comparison = null;
  $("arena-comparison").value = "";
  $("arena-candidate-label").hidden = true;
  nameAny();
}

/** The second picker's "Any": any other model, or any candidate of the chosen comparison. */
function nameAny() {
  const any = $("arena-second").options[0];
  if (any) any.textContent = view.comparison ? "Any candidate" : "Any";
}

/** "KLD 0.0123 vs F16" for a candidate of the comparison (matched by its file); else "". */
function kldAgainst(comparison, path) {
  const candidate = comparison?.candidates.find((c) => samePath(c.path, path));
  if (candidate?.kld == null) return "";
  return `KLD ${kldText(candidate.kld)} vs ${comparison.reference.name}`;
}

/** A mean KLD with the leaderboard's four decimals, or two significant digits when smaller. */
const kldText = (value) => (value >= 1e-4 || value === 0 ? value.toFixed(4) : value.toPrecision(2));

// --- the columns ---------------------------------------------------------------------

/**
 * One answer's column: its heading, the answer (Markdown, rendered at most once a frame
 * while it streams) and its figures. While it streams, the count is of the pieces the
 * server sent (one per token the engine decoded) and the rate is theirs since the first;
 * when it ends, the server's own counts replace them.
 */
function makeColumn(key, title) {
  const root = el("article", "arena-column");
  root.dataset.column = key;
  root.dataset.state = "waiting";
  const head = el("header", "arena-column-head");
  const name = el("h3", "arena-column-title", title);
  const who = el("div", "arena-column-who");
  head.append(name, who);
  const body = el("div", "arena-answer message-body");
  const stats = el("div", "arena-stats", "waiting…");
  root.append(head, body, stats);
  $("arena-columns").append(root);

  let text = "";
  let pieces = 0;
  let first = 0;
  let frame = 0;
  const render = () => {
    frame = 0;
    renderInto(body, text);
    if (root.dataset.state === "streaming") stats.textContent = liveStats(pieces, first);
  };
  return {
    root,
    get text() {
      return text;
    },
    add(piece) {
      if (!pieces) first = performance.now();
      pieces += 1;
      text += piece;
      root.dataset.state = "streaming";
      if (!frame) frame = requestAnimationFrame(render);
    },
    end(figures) {
      if (frame) cancelAnimationFrame(frame);
      render();
      root.dataset.state = "done";
      stats.textContent = endStats(figures, pieces, first);
    },
    fail(message) {
      if (frame) cancelAnimationFrame(frame);
      render();
      root.dataset.state = "error";
      const error = el("div", "message-error", message);
      error.setAttribute("role", "alert");
      root.append(error);
      stats.textContent = pieces ? `${number(pieces)} tokens before the error` : "";
    },
    stopped() {
      if (frame) cancelAnimationFrame(frame);
      render();
      if (root.dataset.state === "done" || root.dataset.state === "error") return;
      root.dataset.state = "stopped";
      stats.textContent = "stopped";
    },
    /** A stored answer (a battle opened from the list or the URL). */
    stored(side) {
      text = side.answer ?? "";
      render();
      if (side.error) this.fail(side.error);
      else if (side.answer == null) {
        root.dataset.state = "waiting";
        stats.textContent = "still answering";
      } else this.end(side);
    },
    /** Who answered here: the model, its engine and its file's short SHA-256. */
    reveal(side) {
      who.replaceChildren(el("span", "arena-model", side.model));
      const facts = [side.engine, side.sha256 ? `sha256 ${side.sha256.slice(0, 12)}` : ""];
      who.append(el("span", "arena-model-facts", facts.filter(Boolean).join(" · ")));
      if (side.path) who.title = side.path;
      root.dataset.model = side.model;
      const kld = kldAgainst(view.fought, side.path);
      if (kld) who.append(el("span", "arena-model-kld", kld));
    },
    /** A line under the heading (side by side: the engine of the model named above). */
    note(text) {
      who.replaceChildren(el("span", "arena-model-facts", text));
    },
  };
}

function liveStats(pieces, first) {
  const seconds = (performance.now() - first) / 1000;
  const rate = pieces > 1 && seconds > 0 ? ` · ${((pieces - 1) / seconds).toFixed(1)} tok/s` : "";
  return `${number(pieces)} tokens${rate}`;
}

/** The server's figures when it gave them (a battle's), else the page's own count and rate. */
function endStats(figures, pieces, first) {
  const tokens = figures.completion_tokens ?? pieces;
  const parts = [`${number(tokens)} tokens`];
  if (figures.tokens_per_s != null) parts.push(`${figures.tokens_per_s.toFixed(1)} tok/s`);
  else if (first && pieces > 1) {
    const seconds = (performance.now() - first) / 1000;
    parts.push(`${((pieces - 1) / seconds).toFixed(1)} tok/s`);
  }
  if (figures.first_token_s != null) parts.push(`first token ${figures.first_token_s.toFixed(2)} s`);
  if (figures.finish_reason) parts.push(figures.finish_reason);
  return parts.join(" · ");
}

function resetColumns(count) {
  view.columns.clear();
  $("arena-columns").replaceChildren();
  $("arena-columns").style.setProperty("--arena-columns", String(count));
}

// --- a blind battle ----------------------------------------------------------------

async function fight(event) {
  event.preventDefault();
  if (view.controller) return;
  hideBanner();
  if (view.mode === "side") await sideBySide();
  else await battle();
}

/** Post the battle and stream both answers into columns A and B as they come. */
async function battle() {
  const body = {
    models: pair(),
    prompt: $("arena-prompt").value,
    system: "",
    tag: $("arena-tag").value.trim(),
    params: params(),
    blind: true,
  };
  const seq = ++view.seq;
  view.fought = view.comparison;
  view.fighting = true;
  view.battle = null;
  selected(view.module, null);
  showBattle({ prompt: body.prompt, tag: body.tag, blind: true, state: "answering" });
  resetColumns(2);
  for (const side of ["a", "b"]) view.columns.set(side, makeColumn(side, side.toUpperCase()));
  const controller = new AbortController();
  view.controller = controller;
  setBusy(true);
  try {
    for await (const e of postEvents("/api/arena/battles", body, controller.signal)) {
      battleEvent(e);
    }
    if (view.battle?.state === "answering") status("The connection closed before both answers ended.");
  } catch (error) {
    // Another battle opened, or the mode changed: what this one left is no longer shown.
    if (seq !== view.seq) return;
    if (error.name === "AbortError") await stopped(seq);
    else {
      for (const column of view.columns.values()) column.stopped();
      if (!view.battle) {
        $("arena-battle").hidden = true;
        view.fighting = false;
      }
      report(error);
    }
  } finally {
    if (view.controller === controller) view.controller = null;
    setBusy(false);
  }
}

function battleEvent(e) {
  if (e.battle && !e.end) {
    view.battle = { ...view.battle, ...e.battle, state: "answering" };
    selected(view.module, e.battle.id);
    $("arena-battle").dataset.battleId = e.battle.id;
    if (e.a?.model) view.columns.get("a").reveal(e.a);
    if (e.b?.model) view.columns.get("b").reveal(e.b);
  } else if (e.side && typeof e.text === "string") {
    view.columns.get(e.side)?.add(e.text);
  } else if (e.side && e.done) {
    view.columns.get(e.side)?.end(e);
  } else if (e.side && e.error) {
    view.columns.get(e.side)?.fail(e.error.message || "The answer failed.");
  } else if (e.end && e.battle) {
    view.battle = e.battle;
    showBattleState(e.battle);
  }
}

/**
 * Stop pressed: the server cancels both answers and keeps what was said. It stores them as
 * they end, a moment after the page hung up; the stored battle says whether it can be voted.
 */
async function stopped(seq) {
  for (const column of view.columns.values()) column.stopped();
  const id = view.battle?.id;
  if (!id) {
    status("Stopped before the battle began.");
    $("arena-new").hidden = false;
    view.fighting = false;
    return;
  }
  status("Stopped; saving what was said…");
  for (let tries = 0; tries < STOP_POLLS; tries += 1) {
    let stored;
    try {
      stored = await api(`/api/arena/battles/${enc(id)}`);
    } catch (error) {
      report(error);
      return;
    }
    if (seq !== view.seq) return;
    if (stored.state !== "answering" || tries === STOP_POLLS - 1) {
      view.battle = stored;
      showBattleState(stored);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
  }
}

/** The battle's heading, prompt and state. */
function showBattle(battle) {
  $("arena-battle").hidden = false;
  $("arena-battle").dataset.battleId = battle.id ?? "";
  $("arena-battle").dataset.state = battle.state ?? "";
  $("arena-battle-title").textContent = battle.blind ? "Blind battle" : "Battle";
  const meta = [battle.tag ? `tag ${battle.tag}` : "", battle.created ? fullDate(battle.created) : ""];
  $("arena-battle-meta").textContent = meta.filter(Boolean).join(" · ");
  $("arena-battle-prompt").textContent = battle.prompt ?? "";
  $("arena-vote").hidden = false;
  for (const button of document.querySelectorAll(".arena-vote-button")) {
    button.disabled = true;
    button.setAttribute("aria-pressed", "false");
  }
  $("arena-new").hidden = true;
  status("");
}

/** What a battle's state allows: a vote when both answered, none when one failed. */
function showBattleState(battle) {
  const box = $("arena-battle");
  box.dataset.state = battle.state;
  const votable = battle.state === "answered";
  for (const button of document.querySelectorAll(".arena-vote-button")) {
    button.disabled = !votable;
    button.setAttribute("aria-pressed", String(button.dataset.outcome === battle.vote));
  }
  $("arena-new").hidden = battle.state === "answered" || battle.state === "answering";
  if (battle.state === "voted") {
    for (const side of ["a", "b"]) if (battle[side]?.model) view.columns.get(side)?.reveal(battle[side]);
    view.fighting = false;
    status(`Your vote: ${VOTES[battle.vote] ?? battle.vote}.`);
  } else if (battle.state === "failed") {
    view.fighting = false;
    status("An answer failed, so this battle cannot be voted: start a new one.");
  } else if (votable) {
    status(battle.blind ? "Which answer is better? The names show after your vote." : "Which answer is better?");
  } else {
    status("Still answering.");
  }
  if (!battle.blind && battle.state !== "voted") {
    for (const side of ["a", "b"]) if (battle[side]?.model) view.columns.get(side)?.reveal(battle[side]);
  }
}

function status(text) {
  $("arena-status").textContent = text;
}

async function vote(outcome) {
  const id = view.battle?.id;
  if (!id) return;
  for (const button of document.querySelectorAll(".arena-vote-button")) button.disabled = true;
  let revealed;
  try {
    revealed = await api(`/api/arena/battles/${enc(id)}/vote`, { method: "POST", body: { outcome } });
  } catch (error) {
    report(error);
    if (view.battle?.id === id) showBattleState(view.battle);
    return;
  }
  view.fighting = false;
  if (view.battle?.id !== id) return;
  view.battle = revealed;
  showBattleState(revealed);
  await refresh();
}

/** Show a stored battle (from the list or the URL): its answers, and its names once revealed. */
async function openBattle(id) {
  view.controller?.abort();
  const seq = ++view.seq;
  let battle;
  try {
    battle = await api(`/api/arena/battles/${enc(id)}`);
  } catch (error) {
    if (seq !== view.seq) return;
    if (error.status === 404) clearBattle();
    report(error);
    return;
  }
  if (seq !== view.seq) return;
  if (view.mode !== "battle") setMode("battle");
  view.fighting = false;
  // A stored battle says not which comparison it came from: the one chosen now, if any.
  view.fought = view.comparison;
  view.battle = battle;
  selected(view.module, battle.id);
  showBattle(battle);
  resetColumns(2);
  for (const side of ["a", "b"]) {
    const column = makeColumn(side, side.toUpperCase());
    view.columns.set(side, column);
    column.stored(battle[side]);
  }
  showBattleState(battle);
  markHistory();
}

/** Back to an empty arena: no battle shown, the prompt ready for another. */
function clearBattle() {
  view.seq += 1;
  view.battle = null;
  view.fighting = false;
  resetColumns(0);
  $("arena-battle").hidden = true;
  selected(view.module, null);
  markHistory();
}

function newBattle() {
  view.controller?.abort();
  clearBattle();
  $("arena-prompt").focus();
}

// --- side by side ---------------------------------------------------------------------

/** The same chat request to each ticked model at once, each streamed into its column. */
async function sideBySide() {
  const models = [...$("arena-several-models").querySelectorAll("input:checked")].map((i) => i.value);
  if (!models.length) {
    report(new Error("Tick the models to ask (up to four)."));
    return;
  }
  const prompt = $("arena-prompt").value;
  if (!prompt.trim()) {
    report(new Error("Write a prompt first (or draw one)."));
    return;
  }
  clearBattle();
  showBattle({ prompt, tag: "", blind: false });
  $("arena-battle-title").textContent = "Side by side";
  $("arena-vote").hidden = true;
  resetColumns(models.length);
  const controller = new AbortController();
  view.controller = controller;
  setBusy(true);
  await Promise.all(
    models.map((model) => {
      const column = makeColumn(model, model);
      column.note(state.models.find((m) => m.id === model)?.engine ?? "");
      view.columns.set(model, column);
      return streamChat(model, prompt, column, controller.signal);
    }),
  );
  if (view.controller === controller) view.controller = null;
  setBusy(false);
}

async function streamChat(model, prompt, column, signal) {
  const body = {
    model,
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
    ...params(),
  };
  const figures = {};
  try {
    for await (const chunk of postEvents("/v1/chat/completions", body, signal)) {
      if (chunk.error) {
        column.fail(chunk.error.message || "The answer failed.");
        return;
      }
      const choice = chunk.choices?.[0];
      if (typeof choice?.delta?.content === "string" && choice.delta.content) column.add(choice.delta.content);
      if (choice?.finish_reason) figures.finish_reason = choice.finish_reason;
      if (chunk.usage) figures.completion_tokens = chunk.usage.completion_tokens;
    }
    column.end(figures);
  } catch (error) {
    if (error.name === "AbortError") column.stopped();
    else column.fail(error.message || String(error));
  }
}

// --- the leaderboard and the battles' list ----------------------------------------------

/** The leaderboard and the list again, unless a blind battle waits for its vote. */
async function refresh() {
  if (view.fighting) return;
  await Promise.all([loadBoard(), loadHistory(), loadComparisons()]);
}

async function loadBoard() {
  if (view.fighting) return;
  const tag = $("arena-board-tag").value;
  let board;
  try {
    board = await api(`/api/arena/leaderboard${tag ? `?tag=${enc(tag)}` : ""}`);
  } catch (error) {
    report(error);
    return;
  }
  drawBoard(board);
}

function drawBoard(board) {
  const picker = $("arena-board-tag");
  const all = el("option", "", "All tags");
  all.value = "";
  picker.replaceChildren(all, ...(board.tags ?? []).map(option));
  picker.value = board.tag ?? "";
  const standings = board.standings ?? [];
  $("arena-board-empty").hidden = standings.length > 0;
  $("arena-board-body").hidden = standings.length === 0;
  $("arena-standings").tBodies[0].replaceChildren(...standings.map(standingRow));
  drawChart(standings);
  drawMatrix(standings.map((s) => s.model), board.matrix ?? {});
  const rounds = board.rounds ? `, intervals from ${number(board.rounds)} bootstrap rounds` : "";
  const battles = board.battles ?? 0;
  $("arena-board-note").textContent =
    `${number(battles)} voted ${battles === 1 ? "battle" : "battles"}` +
    `${board.tag ? ` tagged ${board.tag}` : ""}${rounds}. ` +
    "Bradley-Terry ratings (mean 1000); a tie or both bad counts half a win to each, " +
    "and both are in T.";
}

const fixed = (value, digits) => (value == null ? "—" : Number(value).toFixed(digits));

function standingRow(s, index) {
  const tr = el("tr");
  tr.dataset.model = s.model;
  const name = el("th", "", s.model);
  name.scope = "row";
  tr.append(
    el("td", "num", String(index + 1)),
    name,
    el("td", "num arena-rating", fixed(s.rating, 0)),
    el("td", "num", `${fixed(s.lower, 0)} – ${fixed(s.upper, 0)}`),
    el("td", "num arena-games", number(s.games)),
    el("td", "num arena-wtl", `${s.wins} / ${s.ties} / ${s.losses}`),
    el("td", "num", number(s.both_bad)),
    kld(s.kld),
    el("td", "", accuracy(s.accuracy)),
  );
  if (s.path) name.title = s.path;
  return tr;
}

/** The mean KLD of the newest `scheda compare` with this file as a candidate, ± its uncertainty. */
function kld(figure) {
  const td = el("td", "num", "—");
  if (figure?.mean == null) return td;
  const pm = figure.uncertainty ? ` ± ${fixed(figure.uncertainty, 4)}` : "";
  td.textContent = `${fixed(figure.mean, 4)}${pm}`;
  td.title = `against ${figure.reference} (comparison ${figure.comparison})`;
  return td;
}

/** {task: {metric, value}} of the newest finished runs, as "mmlu acc 45.2%"; a value is of 1. */
function accuracy(figures) {
  const entries = Object.entries(figures ?? {}).filter(([, f]) => f?.value != null);
  if (!entries.length) return "—";
  return entries.map(([task, f]) => `${task} ${f.metric} ${fixed(100 * f.value, 1)}%`).join(", ");
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Each model's rating (the dot) and its 95% interval (the bar), on one shared scale. */
function drawChart(standings) {
  const chart = $("arena-chart");
  if (!standings.length) {
    chart.replaceChildren();
    return;
  }
  const row = 28;
  const box = { x: 150, y: 24, w: 420 };
  const height = box.y + row * standings.length + 24;
  const figure = svg("svg", { viewBox: `0 0 ${box.x + box.w + 60} ${height}`, role: "img" });
  figure.setAttribute("aria-label", "Ratings with their 95% intervals");
  const low = Math.min(...standings.map((s) => s.lower ?? s.rating), 1000);
  const high = Math.max(...standings.map((s) => s.upper ?? s.rating), 1000);
  const step = niceStep(high - low);
  const [from, to] = [Math.floor(low / step) * step, Math.ceil(high / step) * step || step];
  const x = (v) => box.x + ((v - from) / (to - from || 1)) * box.w;
  const bottom = box.y + row * standings.length;
  for (let tick = from; tick <= to; tick += step) {
    figure.append(svg("line", { x1: x(tick), x2: x(tick), y1: box.y - 6, y2: bottom, class: "arena-grid" }));
    figure.append(svg("text", { x: x(tick), y: bottom + 16, class: "compare-tick", "text-anchor": "middle" }, String(tick)));
  }
  figure.append(svg("text", { x: box.x, y: 12, class: "compare-axis-title" }, "rating, 95% interval"));
  standings.forEach((s, i) => {
    const y = box.y + i * row + row / 2;
    figure.append(svg("text", { x: box.x - 10, y: y + 4, class: "compare-label", "text-anchor": "end" }, s.model));
    const lower = s.lower ?? s.rating;
    const upper = s.upper ?? s.rating;
    const bar = svg("rect", { x: x(lower), y: y - 6, width: Math.max(2, x(upper) - x(lower)), height: 12, rx: 6, class: "arena-interval" });
    bar.append(svg("title", {}, `${s.model}: ${fixed(s.rating, 0)} (${fixed(lower, 0)} – ${fixed(upper, 0)})`));
    figure.append(bar, svg("circle", { cx: x(s.rating), cy: y, r: 4.5, class: "arena-point" }));
    figure.append(svg("text", { x: x(upper) + 8, y: y + 4, class: "compare-label" }, fixed(s.rating, 0)));
  });
  chart.replaceChildren(figure);
}

/** A round step that cuts a range into about four to eight ticks. */
function niceStep(range) {
  const rough = Math.max(range, 1) / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((f) => f * power).find((s) => s >= rough);
}

/** The win matrix: a row's share of the points against a column's, shaded by it. */
function drawMatrix(models, matrix) {
  const table = $("arena-matrix");
  table.replaceChildren();
  if (models.length < 2) return;
  const corner = el("th", "arena-matrix-corner", "row vs column");
  const head = table.createTHead().insertRow();
  head.append(corner, ...models.map((m) => Object.assign(el("th", "", m), { scope: "col" })));
  const body = table.createTBody();
  for (const x of models) {
    const tr = body.insertRow();
    tr.append(Object.assign(el("th", "", x), { scope: "row" }));
    for (const y of models) {
      const share = x === y ? null : matrix[x]?.[y];
      const td = el("td", "num", share == null ? "" : `${Math.round(100 * share)}%`);
      if (share != null) {
        td.style.background = `color-mix(in srgb, var(--accent) ${Math.round(80 * share)}%, var(--panel))`;
        td.title = `${x} against ${y}: ${(100 * share).toFixed(1)}% of the points`;
      }
      tr.append(td);
    }
  }
}

/** Every battle as JSONL (GET /api/arena/export), saved as a file. */
async function exportBattles() {
  let blob;
  try {
    blob = await apiBlob("/api/arena/export");
  } catch (error) {
    report(error);
    return;
  }
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = "arena-battles.jsonl";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 0);
}

async function loadHistory() {
  if (view.fighting) return;
  let battles;
  try {
    battles = await api("/api/arena/battles");
  } catch (error) {
    report(error);
    return;
  }
  const rows = battles.slice(0, HISTORY_ROWS).map(historyRow);
  $("arena-history-empty").hidden = rows.length > 0;
  $("arena-history").hidden = rows.length === 0;
  $("arena-history").tBodies[0].replaceChildren(...rows);
  markHistory();
}

/** One battle of the list; an unrevealed one names no model. It opens on a click or Enter. */
function historyRow(battle) {
  const tr = el("tr", "browse-item");
  tr.dataset.battleId = battle.id;
  tr.tabIndex = 0;
  const date = el("td", "browse-date", when(battle.created));
  date.title = fullDate(battle.created);
  const prompt = el("td", "arena-history-prompt", battle.prompt);
  prompt.title = battle.prompt;
  const hidden = battle.state === "failed" ? "—" : "hidden";
  tr.append(
    date,
    prompt,
    el("td", "", battle.tag || ""),
    el("td", "", battle.a?.model ?? hidden),
    el("td", "", battle.b?.model ?? hidden),
    el("td", "", battle.vote ? VOTES[battle.vote] : battle.state),
    el("td", "browse-id", battle.id),
  );
  const open = () => openBattle(battle.id);
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open();
    }
  });
  return tr;
}

function markHistory() {
  for (const tr of $("arena-history").tBodies[0].rows) {
    if (tr.dataset.battleId === view.battle?.id) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
  }
}
