// The studio's one router: the tab bar, built from the tab table, and the URL's hash.
//
// The entry (studio.js) declares the tabs once: id, label, the word of their hash and
// their module. The hash names a tab and, where the tab shows one stored item, the item:
// "#session=ID" (the chat), "#eval=ID", "#compare=ID"; a tab alone is "#model"; no hash
// is a new chat. Moving to another tab adds a history entry, so back and forward go
// through the tabs; choosing an item within a tab replaces the entry, so a reload comes
// back to it without every click filling the history.
//
// A tab's module has show(item), which shows the tab on that item (null: its default),
// and may have selected(), the item it shows now. It reports a change of item with
// `selected(module, item)`, which writes the URL only while that module's tab is the one
// shown: what a hidden tab does cannot take the URL from the one in view.

import { enc } from "./api.js";
import { $, el } from "./dom.js";

let tabs = []; // the tab table: {id, label, hash, module, panes?}
let shown = null; // the tab in view
let routed = null; // the hash last shown, so that popstate and hashchange show it once

/** Build the tab bar from the table and follow the URL from now on. */
export function declareTabs(table) {
  tabs = table;
  $("tabs").replaceChildren(...tabs.map(tabButton));
  // Back and forward fire popstate; a hash typed or followed fires both events.
  window.addEventListener("popstate", follow);
  window.addEventListener("hashchange", follow);
}

function tabButton(tab) {
  const button = el("button", "tab", tab.label);
  button.type = "button";
  button.id = `tab-${tab.id}`;
  button.dataset.view = tab.id;
  button.setAttribute("role", "tab");
  button.setAttribute("aria-selected", "false");
  button.setAttribute("aria-controls", `view-${tab.id}`);
  button.addEventListener("click", () => go(tab.id));
  return button;
}

/** The tab and item a hash names; an empty or unknown hash is the first tab's, with none. */
function parse(hash) {
  const m = /^#([a-z]+)(?:=([^&]+))?$/.exec(hash);
  const tab = tabs.find((t) => t.hash === m?.[1]);
  if (!tab) return { tab: tabs[0], item: null };
  return { tab, item: m[2] ? decodeURIComponent(m[2]) : null };
}

/** The URL of a tab on an item; the first tab with none is the page's own URL, no hash. */
function urlOf(tab, item) {
  if (item) return `#${tab.hash}=${enc(item)}`;
  return tab === tabs[0] ? location.pathname + location.search : `#${tab.hash}`;
}

function write(url, push) {
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  routed = location.hash;
}

/** Show a tab (its button was pressed, or a module moves to it) on the item it had. */
export function go(id) {
  const tab = tabs.find((t) => t.id === id);
  const item = tab.module.selected?.() ?? null;
  const url = urlOf(tab, item);
  const moved = new URL(url, location.href).href !== location.href;
  if (tab !== shown || moved) write(url, tab !== shown);
  return display(tab, item);
}

/** A tab's module shows another item (or none): the URL says so while the tab is in view. */
export function selected(module, item) {
  if (shown?.module === module) write(urlOf(shown, item), false);
}

/** The first route, once the page has what its tabs need: the tab and item the URL names. */
export function start() {
  routed = location.hash;
  const { tab, item } = parse(location.hash);
  return display(tab, item);
}

/** The URL changed under the page (back, forward, a hash typed or followed): show it. */
function follow() {
  if (location.hash === routed) return;
  routed = location.hash;
  const { tab, item } = parse(location.hash);
  display(tab, item);
}

function display(tab, item) {
  shown = tab;
  $("layout").dataset.view = tab.id;
  for (const t of tabs) {
    const on = t === tab;
    for (const pane of [`view-${t.id}`, ...(t.panes ?? [])]) $(pane).hidden = !on;
    $(`tab-${t.id}`).setAttribute("aria-selected", String(on));
  }
  return Promise.resolve(tab.module.show(item));
}
