// The Hub's search in the model tab: `scheda search`'s table, best first, on a target.
//
// GET /api/hub/search asks the Hub for the repositories whose name holds the query,
// reads each one without downloading (eight at once, or from the search cache) and
// judges it on the target: this host, a GPU from GET /api/gpus, or a budget in GB, at
// the context. A row says what the repository is, its best file that fits (or how far
// the smallest is from fitting) and its figures, each with its kind written on it
// (published, declared, measured, predicted) and its source numbered in the notes under
// the table, and in its tooltip. A row opens the repository's card below it (hub.js):
// its files with their verdicts on the same target, and Pull. A new search aborts the
// one in flight: the server stops reading once its client has left.

import { api } from "./api.js";
import { $, el, report } from "./dom.js";
import { number, size } from "./format.js";

const DEFAULT_CONTEXT = 4096; // settings.DEFAULT_CONTEXT: a model's context when none is asked for

// What each kind of figure means, as the CLI's legend says it (display/render_search.py).
const KINDS = {
  published: "published by the model's makers or llama.cpp",
  declared: "declared by the repository (its model-index)",
  measured: "measured on this machine (scheda eval, compare, bench)",
  predicted: "predicted, not measured",
};

// The figure columns: a row's figures in each; a column is shown when some row has one.
const FIGURE_COLUMNS = [
  ["Quality", (row) => row.quality || []],
  ["Quant cost", (row) => (row.quant_cost ? [row.quant_cost] : [])],
  ["Speed here", (row) => (row.speed ? [row.speed] : [])],
];

const view = {
  asking: null, // the AbortController of the search in flight
  shown: false, // a search's answer is on the page: "fits only" asks again
  onOpen: null, // ({repo, file, target, context}) => void: hub.js opens the card
};

/** Wire the search form; `onOpen` opens a row's repository card (hub.js). */
export function wireHubSearch({ onOpen }) {
  view.onOpen = onOpen;
  $("hub-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("hub-target").addEventListener("change", () => {
    const budget = $("hub-target").value === "memory";
    $("hub-memory").hidden = !budget;
    if (budget) $("hub-memory").focus();
  });
  $("hub-fits").addEventListener("change", () => {
    if (view.shown) search();
  });
}

/** The targets a search is judged on: this host (the default), each GPU, a budget in GB. */
export function fillSearchTargets(gpus) {
  const host = gpus.find((g) => g.key === "host");
  const options = [
    [host?.key ?? "host", host ? `this host (${size(host.usable)} usable)` : "this host"],
    ...gpus.filter((g) => g.key !== "host").map((g) => [g.key, `${g.name} (${size(g.usable)})`]),
    ["memory", "a budget in GB…"],
  ];
  $("hub-target").replaceChildren(
    ...options.map(([key, label]) => {
      const option = el("option", "", label);
      option.value = key;
      return option;
    }),
  );
}

/** The target as the routes take it: {gpu}, {memory} or {} for this host; null if unusable. */
function target() {
  const key = $("hub-target").value;
  if (key === "memory") {
    const gb = Number($("hub-memory").value);
    return gb > 0 ? { memory: String(gb) } : null;
  }
  return key && key !== "host" ? { gpu: key } : {};
}

function note(text, error = false) {
  $("hub-search-note").textContent = text;
  $("hub-search-note").classList.toggle("message-error", error);
}

// --- the search --------------------------------------------------------------------

async function search() {
  const on = target();
  if (on === null) {
    note("Give the budget in GB: a number above 0.", true);
    $("hub-memory").focus();
    return;
  }
  const query = new URLSearchParams({ q: $("hub-query").value.trim(), sort: $("hub-sort").value });
  for (const [key, value] of Object.entries(on)) query.set(key, value);
  const context = $("hub-context").value.trim();
  if (context) query.set("context", context);
  if ($("hub-fits").checked) query.set("fits", "true");
  view.asking?.abort(); // the server stops the search it was reading for us
  const asking = new AbortController();
  view.asking = asking;
  $("hub-search-form").setAttribute("aria-busy", "true");
  note("Searching the Hub and reading each repository's card…");
  let answer;
  try {
    answer = await api(`/api/hub/search?${query}`, { signal: asking.signal });
  } catch (error) {
    if (error.name === "AbortError") return; // a newer search took its place
    view.shown = false;
    $("hub-search-result").hidden = true;
    note(error.message, true);
    if (error.status !== 400 && error.status !== 502) report(error);
    return;
  } finally {
    if (view.asking === asking) {
      view.asking = null;
      $("hub-search-form").removeAttribute("aria-busy");
    }
  }
  show(answer, on);
}

function show(answer, on) {
  view.shown = true;
  const sources = new Sources();
  const columns = FIGURE_COLUMNS.filter(([, pick]) => answer.rows.some((r) => pick(r).length));
  const table = $("hub-search-rows");
  table.tHead.rows[0].replaceChildren(
    ...["#", "Repository", "Downloads", "Likes", "Fits", ...columns.map(([name]) => name)].map(
      (h) => el("th", "", h),
    ),
  );
  table.tBodies[0].replaceChildren(
    ...answer.rows.map((row, i) => resultRow(row, i + 1, columns, sources, answer, on)),
  );
  $("hub-search-sources").replaceChildren(...legend(answer, sources));
  $("hub-search-result").hidden = !answer.rows.length;
  note(summary(answer));
}

/** "5 repositories on 0.23 GB of memory, context 4,096 (…); 3 answered from the cache; …". */
function summary(answer) {
  const t = answer.target;
  const on = t.device === "host" ? `this host (${size(t.usable)} usable)` : t.name;
  const context = answer.context
    ? `context ${number(answer.context)}`
    : `context ${number(DEFAULT_CONTEXT)} (less for a model trained on less)`;
  const cached = answer.rows.filter((r) => r.origin === "cache").length;
  const count = answer.rows.length;
  const parts = [
    count
      ? `${count} ${count === 1 ? "repository" : "repositories"} on ${on}, ${context}, best first`
      : `No repository ${answer.left_out ? "fits" : "matches"} on ${on}, ${context}`,
  ];
  if (cached) parts.push(`${cached} answered from the cache`);
  if (answer.left_out) parts.push(`${answer.left_out} that do not fit left out`);
  if (answer.note) parts.push(answer.note);
  return `${parts.join("; ")}.`;
}

// --- a row -------------------------------------------------------------------------

function resultRow(row, rank, columns, sources, answer, on) {
  const tr = el("tr", row.error ? "unreadable" : row.fits ? "fits" : "too-big");
  tr.dataset.repo = row.repo;
  const open = el("button", "hub-search-open", row.repo);
  open.type = "button";
  open.dataset.testid = "hub-search-open";
  open.title = "Open its card and its files, with Pull";
  const what = el("td", "hub-search-repo");
  what.append(open);
  const facts = [
    row.parameters ? `${shortCount(row.parameters)} parameters` : null,
    row.context_length ? `context ${number(row.context_length)}` : null,
    row.licence,
    row.gated ? "gated" : null,
  ].filter(Boolean);
  if (facts.length) what.append(el("div", "muted", facts.join(" · ")));
  const fit = el("td", `hub-search-fit ${tr.className}`, fitText(row));
  tr.append(el("td", "num", String(rank)), what, el("td", "num", shortCount(row.downloads)));
  tr.append(el("td", "num", shortCount(row.likes)), fit);
  // A row that could not be read has no figures: its reason takes their room, on one line.
  if (row.error) fit.colSpan = 1 + columns.length;
  else tr.append(...columns.map(([, pick]) => figureCell(pick(row), sources)));
  // A row that could not be read has no card to open: its reason is the row.
  if (row.error) open.disabled = true;
  else {
    const file = row.format === "gguf" ? row.file : null;
    const opened = { repo: row.repo, file, context: answer.context };
    opened.target = { ...on, name: answer.target.name };
    open.addEventListener("click", () => view.onOpen?.(opened));
  }
  return tr;
}

/** What fits the target: the GGUF file, or the precisions; else how far it is (the CLI's). */
function fitText(row) {
  if (row.error) return `cannot read: ${reason(row)}`;
  const needs = row.memory != null ? `needs ${size(row.memory)}` : "need unknown";
  if (row.format === "gguf") {
    const parts = row.parts > 1 ? ` in ${row.parts} parts` : "";
    const what = `${row.quant || row.file} ${size(row.size)}${parts}`;
    return row.fits ? `${what}, ${needs}` : `no: the smallest, ${what}, ${needs}`;
  }
  if (row.fits) return `${row.precisions.join(", ")}; ${needs} at ${row.precisions[0]}`;
  return `no: the smallest precision ${needs}`;
}

/** The read's error without the repository's name it starts with: the row names it. */
function reason(row) {
  const text = row.error || "";
  for (const prefix of [`${row.repo}/`, `${row.repo}: `, `${row.repo} `]) {
    if (text.startsWith(prefix)) return text.slice(prefix.length);
  }
  return text;
}

// --- figures -----------------------------------------------------------------------

/** Each figure's source, numbered in the order the table first shows it. */
class Sources {
  constructor() {
    this.numbers = new Map();
  }

  number(figure) {
    if (!this.numbers.has(figure.source)) this.numbers.set(figure.source, this.numbers.size + 1);
    return this.numbers.get(figure.source);
  }
}

function figureCell(figures, sources) {
  const cell = el("td", "hub-figures");
  if (!figures.length) cell.textContent = "—";
  for (const figure of figures) cell.append(figureChip(figure, sources));
  return cell;
}

/** "MMLU (5-shot) 30.1%", its kind written beside it, its source's number, the source as title. */
function figureChip(figure, sources) {
  const n = sources.number(figure);
  const unit = figure.unit === "%" || figure.unit === "" ? figure.unit : ` ${figure.unit}`;
  const chip = el("div", "hub-figure");
  chip.dataset.kind = figure.kind;
  chip.dataset.testid = "hub-figure";
  chip.title = `${figure.kind}: ${figure.source}`;
  const kind = el("span", "hub-kind", figure.kind);
  kind.title = KINDS[figure.kind] || "a kind this studio does not know";
  const mark = el("span", "hub-mark"); // the kind and the source's number, never apart
  mark.append(kind, el("sup", "", String(n)));
  chip.append(`${figure.name} ${figureNumber(figure.value)}${unit} `, mark);
  return chip;
}

/** The notes under the table: each source by its number, what each kind shown means. */
function legend(answer, sources) {
  const lines = [];
  const figures = answer.rows.flatMap((r) => FIGURE_COLUMNS.flatMap(([, pick]) => pick(r)));
  const kinds = new Set(figures.map((f) => f.kind));
  if (!kinds.size) {
    lines.push(el("p", "", "No figure of quality or speed is known for these repositories."));
    return lines;
  }
  lines.push(
    el(
      "p",
      "",
      Object.entries(KINDS)
        .filter(([kind]) => kinds.has(kind))
        .map(([, meaning]) => meaning)
        .join(" · "),
    ),
  );
  const list = el("ol", "hub-sources");
  for (const [source, n] of sources.numbers) {
    const item = el("li", "", source);
    item.value = n;
    list.append(item);
  }
  lines.push(list);
  return lines;
}

/** A figure's value with the digits that mean something at its size (the CLI's). */
function figureNumber(value) {
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return Math.round(value).toLocaleString("en-US");
  if (magnitude >= 10) return value.toFixed(1);
  if (magnitude >= 1) return value.toFixed(2);
  return value.toFixed(4);
}

/** A count as a person reads it in a list: 135M, 8.0B, 12.3k (the CLI's). */
function shortCount(n) {
  if (n == null) return "—";
  for (const [scale, suffix] of [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "k"],
  ]) {
    if (n >= scale) {
      const shown = n / scale;
      return shown < 100 ? `${shown.toFixed(1)}${suffix}` : `${Math.round(shown)}${suffix}`;
    }
  }
  return String(n);
}
