// The comparisons `scheda compare` stored: the list, and one comparison's table and chart.
//
// Read only, as the evaluation runs are: a comparison made in a terminal shows here
// (press Refresh). The table has the terminal's columns, a row per model with the
// reference first; the chart puts each model's mean KL divergence and file size against
// its bits per weight, the reference marked.

import { browser } from "./browse.js";
import { $, el } from "./dom.js";
import { fullDate, number, size, when } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";

/** The tab's module (for the tab table): the comparisons' list and one's table (#compare=ID). */
export const compareTab = () =>
  browser({
    prefix: "compare",
    title: "What quantization costs",
    key: "comparisonId",
    path: "/api/comparisons",
    columns: [
      ["Reference"],
      ["Candidates"],
      ["Text"],
      ["Context", "num"],
      ["Largest KLD", "num"],
      ["Date"],
      ["Id"],
    ],
    cells: comparisonCells,
    draw,
  });

const fileName = (path) => String(path || "").split(/[\\/]/).pop();
const fixed = (value, digits) => (value == null ? "—" : Number(value).toFixed(digits));

/** "7.139 ± 0.819" (the ± part only when there is an uncertainty). */
function plusMinus(figure, digits, scale = 1, unit = "") {
  const value = figure?.value ?? figure?.mean;
  if (value == null) return "—";
  const text = `${(value * scale).toFixed(digits)}${unit}`;
  return figure.uncertainty ? `${text} ± ${(figure.uncertainty * scale).toFixed(digits)}` : text;
}

/** One comparison of the list: reference, candidates, text, context, worst KLD, date, id. */
function comparisonCells(item) {
  const reference = el("td", "", fileName(item.reference));
  reference.title = item.reference;
  const date = el("td", "browse-date", when(item.created));
  date.title = fullDate(item.created);
  return [
    reference,
    el("td", "", item.candidates.map(fileName).join(", ")),
    el("td", "", item.text),
    el("td", "num", number(item.context)),
    el("td", "num", fixed(item.largest_kld, 4)),
    date,
    el("td", "browse-id", item.id),
  ];
}

function draw(record) {
  $("compare-title").textContent = `Against ${fileName(record.reference)}`;
  const text = record.text;
  $("compare-meta").textContent =
    `comparison ${record.id} · ${fullDate(record.created)} · ${text.name}: ` +
    `${number(text.tokens)} tokens, ${text.chunks} chunks of ${record.context}, ` +
    `${number(text.scored)} scored`;
  $("compare-table").tBodies[0].replaceChildren(...record.rows.map(tableRow));
  drawChart(record);
  const notes = Object.entries(record.how || {}).map(([key, how]) =>
    el("li", "", `${key}: ${how.kind}, ${how.how}`),
  );
  notes.push(el("li", "", `reference cache: ${record.cache?.how} (${size(record.cache?.bytes)})`));
  const machine = record.machine || {};
  const versions = Object.entries(machine.versions || {})
    .map(([name, version]) => `${name} ${version}`)
    .join(", ");
  notes.push(
    el("li", "", `machine: ${machine.cpu}, ${machine.physical_cores} cores, ${machine.memory_gib} GiB; ${versions}`),
  );
  $("compare-how").replaceChildren(...notes);
}

function accuracy(row) {
  const acc = row.accuracy;
  if (!acc) return "—";
  const err = acc.stderr == null ? "" : ` ± ${(100 * acc.stderr).toFixed(1)}`;
  const sign = acc.delta >= 0 ? "+" : "";
  return `${sign}${(100 * acc.delta).toFixed(1)}${err} pts (${acc.task}, ${acc.items} items, ${acc.gained}↑ ${acc.lost}↓)`;
}

function tableRow(row) {
  const reference = row.role === "reference";
  const tr = el("tr", reference ? "compare-reference" : "");
  tr.dataset.role = row.role;
  const name = el("th", "", fileName(row.path) + (row.engine === "transformers" ? " [transformers]" : ""));
  name.scope = "row";
  name.title = row.path;
  if (reference) name.append(el("span", "badge", "reference"));
  const kld = row.kld;
  tr.append(
    name,
    el("td", "", row.type || "—"),
    el("td", "num", row.size ? size(row.size) : "—"),
    el("td", "num", fixed(row.bits_per_weight, 2)),
    el("td", "num", row.memory ? size(row.memory) : "—"),
    el("td", "num", row.bench ? `${fixed(row.bench.load_s, 2)} s` : "—"),
    el("td", "num", fixed(row.bench?.pp512, 1)),
    el("td", "num", fixed(row.bench?.tg128, 1)),
    el("td", "num", plusMinus(row.perplexity, 3)),
    el("td", "num", reference ? "1" : plusMinus(row.perplexity_ratio, 4)),
    el("td", "num compare-kld", reference ? "0" : plusMinus(kld, 5)),
    el("td", "num", reference || !kld ? "—" : [kld.median, kld.p99, kld.max].map((v) => fixed(v, 4)).join(" / ")),
    el("td", "num", reference ? "100%" : plusMinus(row.same_top, 1, 100, "%")),
    el("td", "num", reference ? "0" : plusMinus(row.rms_delta_p, 2, 100, "%")),
    el("td", "num", reference ? "—" : accuracy(row)),
  );
  return tr;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Two panels: mean KLD (log scale) and file size against bits per weight. The reference
 * has no divergence from itself: it is the dotted line on the left panel and the star
 * on the right.
 */
function drawChart(record) {
  const rows = record.rows.filter((r) => r.bits_per_weight);
  const chart = $("compare-chart");
  const figure = svg("svg", { viewBox: "0 0 760 300", role: "img" });
  figure.setAttribute("aria-label", "Mean KL divergence and file size against bits per weight");
  const bpws = rows.map((r) => r.bits_per_weight);
  const [xLow, xHigh] = [Math.min(...bpws) - 0.5, Math.max(...bpws) + 0.5];
  const klds = rows.filter((r) => r.role !== "reference" && r.kld?.mean > 0).map((r) => r.kld.mean);
  const sizes = rows.map((r) => r.size / 2 ** 20);
  panel(figure, 0, "mean KLD (nats, log scale)", xLow, xHigh, klds, true, rows, (r) =>
    r.role === "reference" ? null : r.kld?.mean,
  );
  panel(figure, 380, "file size (MiB)", xLow, xHigh, sizes, false, rows, (r) => r.size / 2 ** 20);
  chart.replaceChildren(figure);
}

function panel(figure, left, title, xLow, xHigh, values, log, rows, valueOf) {
  const box = { x: left + 60, y: 30, w: 290, h: 220 };
  const group = svg("g", { class: "compare-panel" });
  group.append(svg("text", { x: box.x, y: 18, class: "compare-axis-title" }, title));
  group.append(svg("rect", { x: box.x, y: box.y, width: box.w, height: box.h, class: "compare-frame" }));
  const transform = log ? Math.log10 : (v) => v;
  const finite = values.filter((v) => v > 0 || !log).map(transform);
  let [yLow, yHigh] = finite.length ? [Math.min(...finite), Math.max(...finite)] : [0, 1];
  if (log) {
    yLow = Math.floor(yLow);
    yHigh = Math.ceil(yHigh);
  } else {
    yLow = 0;
    yHigh *= 1.1;
  }
  if (yHigh <= yLow) yHigh = yLow + 1;
  const x = (v) => box.x + ((v - xLow) / (xHigh - xLow)) * box.w;
  const y = (v) => box.y + box.h - ((transform(v) - yLow) / (yHigh - yLow)) * box.h;
  for (let tick = Math.ceil(xLow); tick <= xHigh; tick += 2) {
    group.append(svg("text", { x: x(tick), y: box.y + box.h + 16, class: "compare-tick", "text-anchor": "middle" }, String(tick)));
  }
  const yTicks = log
    ? Array.from({ length: yHigh - yLow + 1 }, (_, i) => 10 ** (yLow + i))
    : [0, 0.5, 1].map((f) => yLow + f * (yHigh - yLow));
  for (const tick of yTicks) {
    const label = log ? tick.toExponential(0) : tick.toFixed(0);
    group.append(svg("text", { x: box.x - 6, y: y(tick) + 4, class: "compare-tick", "text-anchor": "end" }, label));
  }
  group.append(svg("text", { x: box.x + box.w / 2, y: box.y + box.h + 32, class: "compare-tick", "text-anchor": "middle" }, "bits per weight"));
  for (const row of rows) {
    const name = row.type || fileName(row.path);
    const value = valueOf(row);
    if (row.role === "reference" && value == null) {
      group.append(svg("line", { x1: x(row.bits_per_weight), x2: x(row.bits_per_weight), y1: box.y, y2: box.y + box.h, class: "compare-reference-line" }));
      group.append(svg("text", { x: x(row.bits_per_weight) - 4, y: box.y + 12, class: "compare-label", "text-anchor": "end" }, `${name} (reference)`));
      continue;
    }
    if (value == null || (log && !(value > 0))) continue;
    const mark = row.role === "reference"
      ? svg("text", { x: x(row.bits_per_weight), y: y(value) + 5, class: "compare-star", "text-anchor": "middle" }, "★")
      : svg("circle", { cx: x(row.bits_per_weight), cy: y(value), r: 4, class: "compare-point" });
    const tip = svg("title", {}, `${name}: ${log ? value.toFixed(5) : value.toFixed(1)} at ${row.bits_per_weight.toFixed(2)} bits per weight`);
    mark.append(tip);
    group.append(mark);
    group.append(svg("text", { x: x(row.bits_per_weight) + 6, y: y(value) - 6, class: "compare-label" }, name));
  }
  figure.append(group);
}
