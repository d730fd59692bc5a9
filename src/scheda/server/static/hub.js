// A Hub repository before it is downloaded: its card, its files with a verdict each, and Pull.
//
// The card is read on the Hub without downloading the weights (GET /api/hub/card,
// `scheda card org/name`); a GGUF repository lists each of its files with what it
// needs at the context the engines take and whether that fits this host and the
// device picked. Pull (POST /api/hub/pull, `scheda pull`) streams its progress as
// server-sent events; a model that will not fit is refused with what would (409),
// and "Pull anyway" forces it. A pulled model joins the served ones and the pickers.
// A row of the Hub's search (hubsearch.js) opens here: its repository's card, the file
// the search chose, at the search's context, with verdicts on the search's target.

import { api, postEvents } from "./api.js";
import { $, el, report } from "./dom.js";
import { duration, number, size } from "./format.js";
import { fillSearchTargets, wireHubSearch } from "./hubsearch.js";

const view = {
  card: null, // the last GET /api/hub/card answer
  file: null, // the file whose header the card reads (a search row's best file), or the default
  context: null, // the context of the verdicts (a search's), or the engines' default
  pulling: null, // {controller} while a pull streams
  onPulled: null, // (model) => Promise: the studio refreshes its pickers
};

/** Wire the Hub panel; `onPulled(model)` is called with the served model after a pull. */
export function wireHub({ onPulled }) {
  view.onPulled = onPulled;
  $("hub-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.file = null; // a repository typed in: its default file, at the default context
    view.context = null;
    look();
  });
  $("hub-gpu").addEventListener("change", () => {
    if (view.card) look();
  });
  $("hub-stop").addEventListener("click", () => view.pulling?.controller.abort());
  wireHubSearch({ onOpen: openRepository });
}

/** A search row's repository: its card with the file the search chose, judged on the
 * search's target ({gpu}, {memory} or {} for this host, and its name) at its context. */
function openRepository({ repo, file, target, context }) {
  $("hub-repo").value = repo;
  view.file = file;
  view.context = context;
  selectDevice(target);
  look().then(() => $("hub-form").scrollIntoView({ block: "start" }));
}

/** The verdicts' device picker set to a search's target; a budget in GB joins it. */
function selectDevice(target) {
  const picker = $("hub-gpu");
  if (target.memory == null) {
    picker.value = target.gpu || "host";
    return;
  }
  const value = `memory:${target.memory}`;
  if (![...picker.options].some((o) => o.value === value)) {
    const option = el("option", "", `and ${target.name}`);
    option.value = value;
    picker.append(option);
  }
  picker.value = value;
}

/** The device picked, as the routes take it: {gpu}, {memory} (a search's budget) or {}. */
function device() {
  const value = $("hub-gpu").value;
  if (value.startsWith("memory:")) return { memory: Number(value.slice("memory:".length)) };
  return value && value !== "host" ? { gpu: value } : {};
}

/** The devices a verdict may be for: this host first (GET /api/gpus lists it last). */
export async function loadHubDevices() {
  let gpus;
  try {
    gpus = await api("/api/gpus");
  } catch (error) {
    report(error);
    return;
  }
  const host = gpus.filter((g) => g.key === "host");
  const others = gpus.filter((g) => g.key !== "host");
  $("hub-gpu").replaceChildren(
    ...[...host, ...others].map((gpu) => {
      const option = el("option", "", gpu.key === "host" ? "this host only" : `and ${gpu.name}`);
      option.value = gpu.key;
      return option;
    }),
  );
  fillSearchTargets(gpus);
}

function note(text, error = false) {
  $("hub-note").textContent = text;
  $("hub-note").classList.toggle("message-error", error);
}

// --- the card ----------------------------------------------------------------------

async function look() {
  const repo = $("hub-repo").value.trim();
  if (!repo) return;
  const query = new URLSearchParams({ repo });
  for (const [key, value] of Object.entries(device())) query.set(key, String(value));
  if (view.file) query.set("file", view.file);
  if (view.context) query.set("context", String(view.context));
  $("hub-look").disabled = true;
  note(`Reading ${repo} on the Hub…`);
  try {
    view.card = await api(`/api/hub/card?${query}`);
  } catch (error) {
    view.card = null;
    $("hub-result").hidden = true;
    note(error.message, true);
    return;
  } finally {
    $("hub-look").disabled = false;
  }
  showCard(view.card);
}

function showCard(card) {
  note(card.caption || `${card.reference} is on this machine already: read here.`);
  $("hub-title").textContent = card.name;
  $("hub-card").tBodies[0].replaceChildren(
    ...card.rows.map(([label, value]) => {
      const row = el("tr");
      row.append(el("th", "", String(label)), el("td", "", String(value ?? "")));
      return row;
    }),
  );
  const header = $("hub-files").tHead.rows[0];
  header.replaceChildren(
    ...["File", "Quant", "Size", `Needs at ${number(card.context)}`].map((h) => el("th", "", h)),
    ...card.devices.map((d) => el("th", "", d.name)),
    el("th", "", ""),
  );
  // A GGUF repository: a row per file, pulled by name. An HF repository: one row, the model.
  const repo = card.reference.split(":")[0];
  const rows = card.files.length
    ? card.files.map((f) => fileRow(f, card, { repo, file: f.file }))
    : [fileRow(wholeModel(card), card, { repo, file: null })];
  $("hub-files").tBodies[0].replaceChildren(...rows);
  $("hub-result").hidden = false;
}

/** An HF repository as the one row of its files table. */
function wholeModel(card) {
  const { file_type: quant, file_size: bytes } = card.spec;
  return { file: card.reference, quant, size: bytes, total: card.need.total, fits: card.need.fits };
}

/** One model the repository holds: its name, size, need, a verdict per device, Pull. */
function fileRow(f, card, pull) {
  const target = card.devices[card.devices.length - 1]; // the device asked about
  const row = el("tr");
  row.dataset.file = f.file;
  const fits = Boolean(f.fits[target.key]);
  const cells = [
    el("td", "", f.file),
    el("td", "", f.quant || "—"),
    el("td", "num", size(f.size)),
    el("td", "num", size(f.total)),
    ...card.devices.map((d) => {
      const ok = Boolean(f.fits[d.key]);
      return el("td", `hub-verdict ${ok ? "ok" : "bad"}`, ok ? "fits" : "too big");
    }),
  ];
  const button = el("button", `${fits ? "primary" : "danger"} small`, fits ? "Pull" : "Pull anyway");
  button.type = "button";
  button.dataset.testid = "hub-pull";
  button.title = fits
    ? "Download into the Hugging Face cache and serve it here"
    : `It needs ${size(f.total)}, more than ${target.name} has: download it all the same`;
  button.addEventListener("click", () => startPull(pull.repo, pull.file, !fits));
  const action = el("td");
  action.append(button);
  row.append(...cells, action);
  return row;
}

// --- the pull ----------------------------------------------------------------------

async function startPull(repo, file, force) {
  if (view.pulling) return;
  const controller = new AbortController();
  view.pulling = { controller };
  const body = { repo, file, force, ...device() };
  if (view.context) body.context = view.context;
  for (const button of document.querySelectorAll("#hub-files button")) button.disabled = true;
  $("hub-progress").hidden = false;
  $("hub-stop").hidden = false;
  $("hub-bar").value = 0;
  $("hub-progress-text").textContent = "Checking the fit…";
  $("hub-progress").dataset.state = "running";
  const speed = { at: performance.now(), done: null, rate: 0 };
  try {
    for await (const event of postEvents("/api/hub/pull", body, controller.signal)) {
      if (event.plan) {
        const { reference, size: bytes } = event.plan;
        $("hub-progress-text").textContent = `${reference}: ${size(bytes)} to fetch…`;
      }
      if (event.progress != null) showProgress(event.progress, event.total, speed);
      if (event.error) throw new Error(event.error.message);
      if (event.done) {
        $("hub-bar").value = 1;
        const pulled = event.pulled;
        const fetched = pulled.files.length
          ? `${size(pulled.downloaded)} downloaded and checked`
          : "already in the cache";
        const served = `served here as ${event.model.id}`;
        $("hub-progress-text").textContent = `${pulled.reference}: ${fetched}; ${served}.`;
        $("hub-progress").dataset.state = "done";
        await view.onPulled?.(event.model);
      }
    }
  } catch (error) {
    $("hub-progress").dataset.state = "failed";
    const stopped = error.name === "AbortError";
    $("hub-progress-text").textContent = stopped
      ? "Stopped: the bytes so far are kept, and Pull continues from them."
      : error.message;
    if (!stopped && error.status !== 409) report(error);
  } finally {
    view.pulling = null;
    $("hub-stop").hidden = true;
    for (const button of document.querySelectorAll("#hub-files button")) button.disabled = false;
  }
}

/** The bar, and "12.3 MiB of 93.8 MiB · 45.0 MiB/s · 2 s left". */
function showProgress(done, total, speed) {
  const now = performance.now();
  if (speed.done != null && now > speed.at) {
    const rate = ((done - speed.done) / (now - speed.at)) * 1000;
    speed.rate = speed.rate ? 0.7 * speed.rate + 0.3 * rate : rate; // smoothed
  }
  speed.at = now;
  speed.done = done;
  $("hub-bar").value = total ? done / total : 0;
  const parts = [`${size(done)} of ${size(total)}`];
  if (speed.rate > 0) {
    parts.push(`${size(speed.rate)}/s`);
    parts.push(`${duration((total - done) / speed.rate) || "0 s"} left`);
  }
  $("hub-progress-text").textContent = parts.join(" · ");
}
