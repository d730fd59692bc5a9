// The Evaluations tab's spec sheet: a model's card measured here, and a card run to measure it.
//
// The table is GET /api/evals/card: each row of the card (the catalog's published
// figure) beside the model's own, from its latest finished run of that task in the
// evaluation store, with the difference and whether it is inside the noise (within
// 1.96 standard errors); a row with no figure says where its data would come from.
// The form starts `scheda eval --card` on the server (POST /api/evals/card); its
// progress is polled (GET /api/evals/card/run) into a bar with an ETA, and when the
// run ends the table and the runs' list are read again.

import { api, enc } from "./api.js";
import { $, el, report } from "./dom.js";
import { duration, number } from "./format.js";
import { state } from "./state.js";

const POLL_MS = 700;
const ENDED = new Set(["finished", "cancelled", "failed"]);

const view = {
  model: null, // the model the table shows
  seq: 0, // only the newest table asked for is drawn
  polling: false,
};

/** A figure in points (percent), one decimal; "—" for none. */
const points = (value) => (value == null ? "—" : value.toFixed(1));

export function wireCard() {
  $("evalcard-model").addEventListener("change", () => loadTable());
  $("evalcard-card").addEventListener("change", () => loadTable());
  $("evalcard-form").addEventListener("submit", startRun);
  $("evalcard-cancel").addEventListener("click", cancelRun);
}

/** The tab is shown: the picker, the table, and a run that is going (from another page too). */
export async function showCard() {
  fillPicker();
  await Promise.all([loadTable(), followRun()]);
}

/** The served models that generate (an embedding model has no benchmarks to run). */
function fillPicker() {
  const picker = $("evalcard-model");
  const chosen = picker.value || $("model-picker").value;
  const models = state.models.filter((m) => m.kind === "chat");
  picker.replaceChildren(...models.map((m) => {
    const option = el("option", "", m.id);
    option.value = m.id;
    return option;
  }));
  picker.value = models.some((m) => m.id === chosen) ? chosen : models[0]?.id ?? "";
}

function query() {
  const params = new URLSearchParams({ model: $("evalcard-model").value });
  const card = $("evalcard-card").value.trim();
  if (card) params.set("card", card);
  return params.toString();
}

// --- the table ---------------------------------------------------------------------

async function loadTable() {
  const seq = ++view.seq;
  view.model = $("evalcard-model").value;
  if (!view.model) return;
  let answer;
  try {
    answer = await api(`/api/evals/card?${query()}`);
  } catch (error) {
    if (seq !== view.seq) return;
    // No card for this model (or a card name mistyped): the panel says so, not the banner.
    drawMessage(error.message);
    if (error.status !== 400 && error.status !== 404) report(error);
    return;
  }
  if (seq !== view.seq) return;
  drawTable(answer);
}

function drawMessage(message) {
  $("evalcard-title").textContent = "";
  $("evalcard-message").textContent = message;
  $("evalcard-message").hidden = false;
  $("evalcard-table").hidden = true;
  $("evalcard-notes").replaceChildren();
}

function drawTable(answer) {
  const quick = answer.rows.some((r) => r.quick_look);
  $("evalcard-title").textContent =
    `${answer.model} against the ${answer.card} card` +
    (quick ? " · a quick look: some rows are over the first items only (a limit)" : "");
  $("evalcard-message").hidden = true;
  $("evalcard-table").hidden = false;
  $("evalcard-table").dataset.model = answer.model;
  $("evalcard-table").tBodies[0].replaceChildren(...answer.rows.map(tableRow));
  $("evalcard-notes").replaceChildren(...answer.rows.map(noteItem));
}

/** Benchmark, shots, metric, published, yours ± stderr, difference, inside the noise. */
function tableRow(row, index) {
  const tr = el("tr");
  tr.dataset.task = row.task ?? "";
  tr.dataset.benchmark = row.benchmark;
  const name = el("th", "", row.benchmark);
  name.scope = "row";
  name.append(el("sup", "evalcard-ref", String(index + 1)));
  tr.append(
    name,
    el("td", "num", row.shots == null ? "—" : String(row.shots)),
    el("td", "", row.metric ?? "—"),
    el("td", "num", points(row.published)),
  );
  if (row.yours == null) {
    tr.classList.add("no-figure");
    const why = el("td", "evalcard-why", row.why || "no figure");
    why.colSpan = 3;
    tr.append(why);
    return tr;
  }
  const yours = el("td", "num evalcard-yours");
  // The figure opens its stored run below (the runs' list and its per-subject bars).
  const figure = el(row.run ? "a" : "span", "score-value", points(row.yours));
  if (row.run) figure.href = `#eval=${enc(row.run)}`;
  yours.append(figure);
  if (row.stderr != null) yours.append(` ± ${points(row.stderr)}`);
  const per = row.quick_look ? ` (the first ${number(row.limit)} per task or subject)` : "";
  yours.title = `over ${number(row.n)} items${per}`;
  if (row.quick_look) yours.append(el("span", "badge", `limit ${row.limit}`));
  const sign = row.difference > 0 ? "+" : "";
  tr.append(
    yours,
    el("td", "num", row.difference == null ? "—" : `${sign}${points(row.difference)}`),
    noiseCell(row.within_noise),
  );
  return tr;
}

function noiseCell(within) {
  if (within == null) return el("td", "muted", "— (no stderr)");
  const cell = el("td", within ? "evalcard-noise inside" : "evalcard-noise outside");
  cell.textContent = within ? "yes" : "no";
  cell.title = within
    ? "the difference is within 1.96 standard errors of your figure"
    : "the difference is larger than 1.96 standard errors of your figure";
  return cell;
}

/** The row's footnote: whose method it follows, and what differs from the card's. */
function noteItem(row) {
  const item = el("li");
  item.append(el("strong", "", row.benchmark), ": ", row.method || "no task runs this row here");
  if (row.differs) item.append(el("span", "evalcard-differs", ` Differs: ${row.differs}.`));
  return item;
}

// --- the run -----------------------------------------------------------------------

async function startRun(event) {
  event.preventDefault();
  const body = { model: $("evalcard-model").value };
  const card = $("evalcard-card").value.trim();
  const limit = $("evalcard-limit").value.trim();
  const data = $("evalcard-data").value.trim();
  if (card) body.card = card;
  if (limit) body.limit = Number(limit);
  if (data) body.data = data;
  let run;
  try {
    run = await api("/api/evals/card", { method: "POST", body });
  } catch (error) {
    report(error);
    return;
  }
  drawProgress(run);
  poll();
}

async function cancelRun() {
  try {
    drawProgress(await api("/api/evals/card/run", { method: "DELETE" }));
  } catch (error) {
    report(error);
  }
}

/** A run already going when the tab opens (started from another page, or before a reload). */
async function followRun() {
  let run;
  try {
    run = await api("/api/evals/card/run");
  } catch (error) {
    if (error.status !== 404) report(error);
    return;
  }
  drawProgress(run);
  if (!ENDED.has(run.state)) poll();
}

async function poll() {
  if (view.polling) return;
  view.polling = true;
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const run = await api("/api/evals/card/run");
      drawProgress(run);
      if (ENDED.has(run.state)) break;
    }
  } catch (error) {
    report(error);
  } finally {
    view.polling = false;
  }
  // The run ended: its figures are in the store now.
  await loadTable();
  $("eval-refresh").click();
}

function drawProgress(run) {
  const box = $("evalcard-progress");
  box.hidden = false;
  box.dataset.state = run.state;
  box.dataset.runId = run.id;
  const bar = $("evalcard-bar");
  bar.max = Math.max(1, run.total);
  bar.value = run.done;
  $("evalcard-cancel").hidden = ENDED.has(run.state);
  $("evalcard-start").disabled = !ENDED.has(run.state);
  $("evalcard-progress-text").textContent = progressText(run);
  $("evalcard-tasks").replaceChildren(...run.tasks.map(taskItem));
}

function progressText(run) {
  const items = `${number(run.done)} / ${number(run.total)} items`;
  const where = `${run.card} on ${run.model}`;
  if (run.state === "failed") return `Failed: ${run.error}`;
  if (ENDED.has(run.state)) {
    const took = run.ended ? ` in ${duration(run.ended - run.started)}` : "";
    return `${run.state === "finished" ? "Finished" : "Cancelled"}: ${where}, ${items}${took}`;
  }
  if (run.state === "cancelling") return `Cancelling after the item in progress… ${items}`;
  const now = run.task ? `${run.task}: ` : "Preparing the tasks: ";
  const eta = run.eta_s == null ? "" : ` · about ${duration(run.eta_s)} left`;
  return `${now}${items} (${where})${eta}`;
}

/** One task's line: its state, its items, and why it has no figure. */
function taskItem(task) {
  const item = el("li");
  item.dataset.task = task.task;
  item.dataset.state = task.state;
  const count = task.total == null ? "" : ` ${number(task.done)} / ${number(task.total)}`;
  item.append(el("span", "badge", task.state), ` ${task.benchmark}${count}`);
  if (task.why) item.append(el("span", "muted", ` · ${task.why}`));
  return item;
}
