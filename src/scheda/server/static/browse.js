// A list of stored items and the detail of one: the evaluation runs, the comparisons
// (and the tabs to come that read a store the same way).
//
// One module for what those tabs share: the list panel (its title, Refresh, the
// empty note, the table), fetching the list and an item, which row is current, and
// the item in the URL's hash (router.js), so a reload comes back to it. A tab declares
// only what is its own: its columns and cells, and how an item's detail is drawn.
// The items are read only: what a terminal command stores shows after Refresh.

import { api, enc } from "./api.js";
import { $, el, report } from "./dom.js";
import { selected } from "./router.js";

/**
 * Make a tab's list and detail; returns the tab's module for the tab table.
 *
 * The spec:
 * - prefix: the ids: PREFIX-list, PREFIX-refresh, PREFIX-empty, PREFIX-detail (the
 *   empty note and the detail are the tab's own markup, in its pane in index.html);
 * - title: the list panel's heading;
 * - key: the data attribute that names an item on its row and on the detail (runId);
 * - path: GET path lists the items (newest first), GET path/ID is one of them;
 * - columns: [label, class] for each column of the list;
 * - cells(item, row): the row's cells (td elements); it may mark the row too;
 * - draw(record): draw the detail of one item (the detail pane is shown already).
 */
export function browser(spec) {
  const view = {
    items: [], // GET path
    shown: null, // the id of the item shown (or asked for by the URL)
    seq: 0, // only the newest item asked for is drawn
  };
  const list = listPanel(spec);
  const detail = $(`${spec.prefix}-detail`);
  $(`${spec.prefix}-refresh`).addEventListener("click", load);

  async function load() {
    try {
      view.items = await api(spec.path);
    } catch (error) {
      report(error);
      return;
    }
    renderList();
    const id = view.shown ?? view.items[0]?.id;
    if (id) await open(id);
  }

  function renderList() {
    const empty = !view.items.length;
    $(`${spec.prefix}-empty`).hidden = !empty;
    list.hidden = empty;
    if (empty) detail.hidden = true;
    list.tBodies[0].replaceChildren(...view.items.map(row));
  }

  /** One row of the list: the tab's cells; it opens on a click, Enter or Space. */
  function row(item) {
    const tr = el("tr", "browse-item");
    tr.dataset[spec.key] = item.id;
    tr.tabIndex = 0;
    tr.append(...spec.cells(item, tr));
    tr.addEventListener("click", () => open(item.id));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open(item.id);
      }
    });
    markRow(tr);
    return tr;
  }

  function markRow(tr) {
    if (tr.dataset[spec.key] === view.shown) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
  }

  /** Show one item (GET path/ID); only the newest asked for is drawn. */
  async function open(id) {
    const seq = ++view.seq;
    let record;
    try {
      record = await api(`${spec.path}/${enc(id)}`);
    } catch (error) {
      if (seq !== view.seq) return;
      if (error.status === 404) show(null);
      report(error);
      return;
    }
    if (seq !== view.seq) return;
    show(record.id);
    detail.hidden = false;
    detail.dataset[spec.key] = record.id;
    spec.draw(record);
  }

  /** The item shown: in the URL and marked in the list; none hides the detail. */
  function show(id) {
    view.shown = id;
    selected(module, id);
    if (!id) detail.hidden = true;
    for (const tr of list.tBodies[0].rows) markRow(tr);
  }

  const module = {
    /** The tab is shown (on this item, or on the one it had): the list is fetched again. */
    show(item) {
      if (item) view.shown = item;
      return load();
    },
    selected: () => view.shown,
  };
  return module;
}

/** The list panel, put above the detail: heading, Refresh, the empty note, the table. */
function listPanel({ prefix, title, columns }) {
  const refresh = el("button", "ghost small", "Refresh");
  refresh.type = "button";
  refresh.id = `${prefix}-refresh`;
  const header = el("div", "panel-header");
  header.append(el("h2", "", title), refresh);

  const table = el("table", "data-table");
  table.id = `${prefix}-list`;
  table.dataset.testid = table.id;
  table.hidden = true;
  const heads = columns.map(([label, className]) => {
    const th = el("th", className ?? "", label);
    th.scope = "col";
    return th;
  });
  table.createTHead().insertRow().append(...heads);
  table.createTBody();
  const scroll = el("div", "table-scroll");
  scroll.append(table);

  const panel = el("section", "panel");
  panel.append(header, $(`${prefix}-empty`), scroll);
  $(`${prefix}-detail`).before(panel);
  return table;
}
