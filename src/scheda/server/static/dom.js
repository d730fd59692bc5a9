// The page's small DOM helpers and its error banner.
//
// Text from a model or a user only ever goes into the page through textContent
// (here) or markdown.js (which builds DOM nodes), never through innerHTML.

export const $ = (id) => document.getElementById(id);

/** A new element with a class and text; the text is always textContent. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One line across the top of the page for errors that belong to no message. */
function showBanner(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

export function hideBanner() {
  $("banner").hidden = true;
}

/** Report an error unless it is a 401, which the key form already shows. */
export function report(error) {
  if (error?.status === 401) return;
  showBanner(error?.message || String(error));
}
