// The evaluation runs `scheda eval` saved: the list, and a run's figures and per-group bars.
//
// The runs are read only: a run started in a terminal shows here as its items
// are scored (press Refresh), and an unfinished one shows its figures so far.

import { browser } from "./browse.js";
import { $, el } from "./dom.js";
import { showCard } from "./evalcard.js";
import { duration, fullDate, number, when } from "./format.js";

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

/**
 * The tab's module (for the tab table): the spec sheet measured (evalcard.js) above the
 * runs' list and one run's figures (#eval=ID). The list's own module is the tab's, so that
 * the run it shows is the one in the URL; showing the tab shows the spec sheet too.
 */
export function evalsTab() {
  const runs = browser({
    prefix: "eval",
    title: "Evaluation runs",
    key: "runId",
    path: "/api/evals",
    columns: [
      ["Model"],
      ["Task"],
      ["Shots", "num"],
      ["Items", "num"],
      ["Score ± stderr", "num"],
      ["Date"],
      ["Run"],
    ],
    cells: runCells,
    draw: drawEval,
  });
  const showRuns = runs.show;
  runs.show = (item) => Promise.all([showCard(), showRuns(item)]);
  return runs;
}

/** One run of the list: model, task, shots, items, headline score ± stderr, date, id. */
function runCells(run, row) {
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
  const date = el("td", "browse-date", when(run.created));
  date.title = fullDate(run.created);
  return [
    model,
    el("td", "", run.task),
    el("td", "num", run.config?.shots == null ? "—" : String(run.config.shots)),
    items,
    score,
    date,
    el("td", "browse-id", run.id),
  ];
}

/** The run's heading, configuration, figures and (for a task with groups) the bar chart. */
function drawEval(run) {
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
