// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// Why hand-written: the studio works offline with no build step, and the text
// it renders comes from a model or a user, so it must never reach innerHTML.
// Every node here is made with document.createElement (fixed tag names) and
// filled with textContent or text nodes; a raw "<img onerror=...>" in the
// input is shown as those characters. Links are made only for http(s) URLs.
//
// Supported: fenced code blocks (``` or ~~~, with a language), inline code,
// **bold** / __bold__, *italic* / _italic_, ATX headings (#..######), bullet
// and numbered lists (nested by indentation), block quotes, paragraphs with
// line breaks, [text](http://...) links and bare http(s) URLs. Everything else
// is text. An unclosed fence (an answer still streaming) runs to the end.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const URL_START = /^https?:\/\/[^\s<>"'`]+/;

/** Render Markdown text into a new DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

/** Replace an element's children with the rendered Markdown of `text`. */
export function renderInto(element, text) {
  element.replaceChildren(renderMarkdown(text));
}

/** An http(s) URL as an absolute string, or null for any other scheme or a bad URL. */
export function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

// --- blocks -------------------------------------------------------------------

/** Walk the lines once, appending one block element per construct to `parent`. */
function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      i = codeBlock(lines, i, fence, parent);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const h = document.createElement(`h${heading[1].length}`);
      renderInline(heading[2], h);
      parent.append(h);
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      i = quoteBlock(lines, i, parent);
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      i = listBlock(lines, i, parent);
      continue;
    }
    i = paragraph(lines, i, parent);
  }
}

/** True where a line starts a block other than a paragraph (so a paragraph ends there). */
function startsBlock(line) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    QUOTE.test(line) ||
    BULLET.test(line) ||
    NUMBERED.test(line)
  );
}

/** A fenced code block: the text is kept verbatim, its language shown as a label. */
function codeBlock(lines, start, fence, parent) {
  const marker = fence[1];
  const lang = fence[2].replace(/[^\w+#.-]/g, "").slice(0, 32);
  const body = [];
  let i = start + 1;
  while (i < lines.length) {
    const close = lines[i].trim();
    // A closing fence is the same character, at least as long, with nothing after it.
    if (close.startsWith(marker[0].repeat(marker.length)) && /^(`+|~+)$/.test(close)) {
      i += 1;
      break;
    }
    body.push(lines[i]);
    i += 1;
  }
  parent.append(codeFigure(body.join("\n"), lang));
  return i;
}

/** The code block's DOM: a header with the language and a copy button, then pre > code. */
function codeFigure(code, lang) {
  const figure = document.createElement("div");
  figure.className = "code-block";
  const header = document.createElement("div");
  header.className = "code-header";
  const label = document.createElement("span");
  label.className = "code-lang";
  label.textContent = lang || "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "code-copy";
  copy.textContent = "Copy";
  // The clipboard API needs a secure context (localhost is one); fail quietly elsewhere.
  copy.addEventListener("click", () => {
    navigator.clipboard?.writeText(code).then(
      () => flash(copy, "Copied"),
      () => flash(copy, "Copy failed"),
    );
  });
  header.append(label, copy);
  const pre = document.createElement("pre");
  const codeEl = document.createElement("code");
  if (lang) codeEl.className = `language-${lang}`;
  codeEl.textContent = code;
  pre.append(codeEl);
  figure.append(header, pre);
  return figure;
}

/** Show a short confirmation on a button, then put its label back. */
function flash(button, text) {
  button.textContent = text;
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1200);
}

/** Consecutive "> " lines become a blockquote whose inside is Markdown again. */
function quoteBlock(lines, start, parent) {
  const inner = [];
  let i = start;
  while (i < lines.length) {
    const m = QUOTE.exec(lines[i]);
    if (!m) break;
    inner.push(m[1]);
    i += 1;
  }
  const quote = document.createElement("blockquote");
  renderBlocks(inner, quote);
  parent.append(quote);
  return i;
}

/**
 * A list, with nesting by indentation.
 *
 * Why a stack: a model writes nested lists with 2, 3 or 4 spaces; any item
 * indented deeper than the current list's items opens a sub-list inside the
 * last item, and a shallower one closes lists until the indentation matches.
 * An indented line that is not an item continues the last item's text.
 */
function listBlock(lines, start, parent) {
  const stack = []; // {indent, el, kind}
  let lastItem = null;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      // A blank line ends the list unless the next line is another item or a continuation.
      const next = lines[i + 1];
      if (next !== undefined && (BULLET.test(next) || NUMBERED.test(next) || /^\s{2,}\S/.test(next))) {
        i += 1;
        continue;
      }
      break;
    }
    const item = BULLET.exec(line) || NUMBERED.exec(line);
    if (!item) {
      if (lastItem && /^\s+\S/.test(line) && !FENCE.test(line)) {
        lastItem.append(document.createElement("br"));
        renderInline(line.trim(), lastItem);
        i += 1;
        continue;
      }
      if (lastItem && !startsBlock(line)) {
        // A lazy continuation line (not indented) still belongs to the item.
        lastItem.append(document.createElement("br"));
        renderInline(line.trim(), lastItem);
        i += 1;
        continue;
      }
      break;
    }
    const indent = item[1].replace(/\t/g, "    ").length;
    const kind = BULLET.test(line) ? "ul" : "ol";
    while (stack.length && indent < stack[stack.length - 1].indent) stack.pop();
    let top = stack[stack.length - 1];
    if (!top || indent > top.indent || top.kind !== kind) {
      if (top && indent === top.indent && top.kind !== kind) stack.pop();
      const list = document.createElement(kind);
      if (kind === "ol" && item[2] !== "1") list.start = Number(item[2]);
      const host = stack.length && lastItem ? lastItem : parent;
      host.append(list);
      top = { indent, el: list, kind };
      stack.push(top);
    }
    lastItem = document.createElement("li");
    renderInline(item[3], lastItem);
    top.el.append(lastItem);
    i += 1;
  }
  return i;
}

/** Lines up to a blank line or another block: one <p>, single newlines kept as <br>. */
function paragraph(lines, start, parent) {
  const p = document.createElement("p");
  let i = start;
  while (i < lines.length && lines[i].trim() && (i === start || !startsBlock(lines[i]))) {
    if (i > start) p.append(document.createElement("br"));
    renderInline(lines[i].trim(), p);
    i += 1;
  }
  parent.append(p);
  return i;
}

// --- inline -------------------------------------------------------------------

/**
 * Append the inline Markdown of `text` to `parent`.
 *
 * One left-to-right scan: plain characters gather in a buffer that becomes one
 * text node; a recognised construct flushes the buffer and appends its element,
 * whose inside is scanned again (except code, which is verbatim). Anything
 * that does not close properly stays as the literal characters.
 */
function renderInline(text, parent, depth = 0) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);

    if (ch === "\\" && i + 1 < text.length && /[\\`*_[\]()#+\-.!>~]/.test(text[i + 1])) {
      buffer += text[i + 1]; // a backslash escape: the next character is literal
      i += 2;
      continue;
    }

    if (ch === "`") {
      const run = /^`+/.exec(rest)[0];
      const end = findClosingTicks(text, i + run.length, run.length);
      if (end >= 0) {
        flush();
        const code = document.createElement("code");
        let inner = text.slice(i + run.length, end);
        if (/^ .* $/.test(inner) && inner.trim()) inner = inner.slice(1, -1);
        code.textContent = inner;
        parent.append(code);
        i = end + run.length;
        continue;
      }
      buffer += run;
      i += run.length;
      continue;
    }

    if (depth < 8 && (rest.startsWith("**") || rest.startsWith("__"))) {
      const end = findClosing(text, i + 2, rest.slice(0, 2));
      if (end >= 0 && canOpen(text, i, ch)) {
        flush();
        const strong = document.createElement("strong");
        renderInline(text.slice(i + 2, end), strong, depth + 1);
        parent.append(strong);
        i = end + 2;
        continue;
      }
    }

    if (depth < 8 && (ch === "*" || ch === "_") && text[i + 1] !== ch) {
      const end = findClosing(text, i + 1, ch);
      if (end >= 0 && canOpen(text, i, ch)) {
        flush();
        const em = document.createElement("em");
        renderInline(text.slice(i + 1, end), em, depth + 1);
        parent.append(em);
        i = end + 1;
        continue;
      }
    }

    if (ch === "[") {
      const link = parseLink(text, i);
      if (link) {
        flush();
        const a = makeLink(link.url);
        renderInline(link.label, a, depth + 1);
        parent.append(a);
        i = link.end;
        continue;
      }
    }

    if ((ch === "h" || ch === "H") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = URL_START.exec(rest);
      if (m) {
        // Trailing punctuation is the sentence's, not the URL's.
        const raw = m[0].replace(/[.,;:!?'")\]]+$/, "");
        const url = safeUrl(raw);
        if (url) {
          flush();
          const a = makeLink(url);
          a.textContent = raw;
          parent.append(a);
          i += raw.length;
          continue;
        }
      }
    }

    buffer += ch;
    i += 1;
  }
  flush();
}

/** The index of a run of exactly `n` backticks at or after `from`, or -1. */
function findClosingTicks(text, from, n) {
  let i = from;
  while (i < text.length) {
    if (text[i] === "`") {
      const run = /^`+/.exec(text.slice(i))[0].length;
      if (run === n) return i;
      i += run;
    } else {
      i += 1;
    }
  }
  return -1;
}

/**
 * The index of the marker that closes an emphasis opened before `from`, or -1.
 *
 * The inside must not be empty or start/end with a space ("2 * 3 * 4" is not
 * italic), and an underscore must not close inside a word (snake_case_names).
 */
function findClosing(text, from, marker) {
  if (from >= text.length || /\s/.test(text[from])) return -1;
  let i = from;
  while (i < text.length) {
    if (text[i] === "`") {
      // Code spans bind tighter than emphasis: skip over them.
      const run = /^`+/.exec(text.slice(i))[0].length;
      const end = findClosingTicks(text, i + run, run);
      i = end >= 0 ? end + run : i + run;
      continue;
    }
    if (text.startsWith(marker, i) && i > from && !/\s/.test(text[i - 1])) {
      const after = text[i + marker.length];
      const single = marker.length === 1;
      // For a single marker, skip the first half of a double one (**bold** inside *it*).
      if (single && after === marker) {
        i += 2;
        continue;
      }
      if (!single && after === marker[0]) {
        // "***both***": the closing "**" is the last two of the run, so the inside keeps its "*".
        i += 1;
        continue;
      }
      if (marker[0] === "_" && after && /\w/.test(after)) {
        i += marker.length;
        continue;
      }
      return i;
    }
    i += 1;
  }
  return -1;
}

/** An underscore opens emphasis only at a word's start; an asterisk anywhere. */
function canOpen(text, i, ch) {
  return ch !== "_" || i === 0 || !/\w/.test(text[i - 1]);
}

/** `[label](url)` at `start` with an http(s) URL, as {label, url, end}; else null. */
function parseLink(text, start) {
  let depth = 0;
  let close = -1;
  for (let i = start; i < text.length; i += 1) {
    if (text[i] === "[") depth += 1;
    else if (text[i] === "]") {
      depth -= 1;
      if (depth === 0) {
        close = i;
        break;
      }
    }
  }
  if (close < 0 || text[close + 1] !== "(") return null;
  const m = /^\(\s*<?([^\s()<>]+)>?(?:\s+"[^"]*")?\s*\)/.exec(text.slice(close + 1));
  if (!m) return null;
  const url = safeUrl(m[1]);
  if (!url) return null; // javascript:, data:, relative paths: left as text
  const label = text.slice(start + 1, close);
  if (!label.trim()) return null;
  return { label, url, end: close + 1 + m[0].length };
}

/** An anchor for a checked http(s) URL that opens in a new tab without a window.opener. */
function makeLink(url) {
  const a = document.createElement("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}
