/*
 * pylog console: the browser side (issue 14; the contract is docs/console.md).
 *
 * Plain JavaScript, no framework, no build step, nothing loaded from elsewhere.  It does
 * two things, every REFRESH_MS:
 *
 *  - Live refresh: every <section class="live" data-refresh="URL"> is replaced by the
 *    <section> the server renders at URL (the window's scroll position is kept).
 *  - Charts: every distinct data-src of the <div class="chart" data-src data-chart>
 *    elements is fetched once per round; each chart is drawn from the entry of the JSON's
 *    "charts" list whose "id" is its data-chart, as inline SVG sized to its container
 *    (redrawn when the container's width changes).
 *
 * After a round, document.body.dataset.updated is the time (ms) it finished, or "error"
 * when a fetch failed; a failed round shows the banner div#console-offline, the next
 * round without a failure removes it.  A round is skipped while the previous one is
 * still in flight.
 *
 * What a drawn chart looks like (the browser tests rely on it):
 *   div.chart[data-series=N]  (line)  or  div.chart[data-bars=N]  (bar), N the count given
 *     div.chart-title                    the chart's title
 *     svg.chart-svg
 *       g.axis.x / g.axis.y > text.tick  axis labels (HH:MM:SS; SI values with the unit)
 *       g.series[data-name] (.highlight)  one per series; a polyline.segment per run of
 *                                          non-null points (a null splits the line)
 *       rect.bar[data-name] (.highlight)  one per bar, text.bar-value its value
 *     div.legend > span.legend-item (.highlight)
 *     div.chart-tooltip                  shown on hover over a line chart
 *   An empty chart is p.chart-empty "no data yet" (data-series / data-bars = 0).
 * Every name and title is set as text (textContent), never parsed as HTML.
 */
(() => {
  "use strict";

  const REFRESH_MS = 2000;
  /** A fetch that takes longer than this fails the round (the cluster may be hanging). */
  const FETCH_TIMEOUT_MS = 10000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  /** Height of a chart's plot (px); its width is the container's. */
  const CHART_HEIGHT_PX = 220;
  const MARGIN = { top: 10, right: 16, bottom: 24, left: 64 };
  const BAR_MARGIN_BOTTOM = 40;
  /** Most series named in a legend and in a tooltip (a topic may have 1,000 partitions). */
  const LEGEND_MAX = 24;
  const TOOLTIP_MAX = 12;
  /** Series colours; the warning colour (CSS --warning) is kept for highlighted ones. */
  const PALETTE = ["#5794f2", "#73bf69", "#b877d9", "#fade2a", "#5ac8d8",
                   "#c0d8ff", "#96d98d", "#ca95e5", "#a0a0a0", "#3274d9"];
  /** Time-axis steps (ms) a tick interval is chosen from. */
  const TIME_STEPS_MS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                         7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

  let inFlight = false;
  /** div.chart -> {chart, src, width} of its last drawing, for redrawing on resize. */
  const drawn = new WeakMap();

  // ---------------------------------------------------------------- fetching

  /** fetch(url) as text, or throw an Error naming the URL and what went wrong. */
  async function fetchText(url) {
    let response;
    try {
      response = await fetch(url, {
        cache: "no-store",
        credentials: "same-origin",
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
    } catch (err) {
      const why = err && err.name === "TimeoutError" ? "no answer" : "unreachable";
      throw new Error(`${url}: ${why}`);
    }
    if (!response.ok) {
      throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`.trim());
    }
    if (response.redirected && new URL(response.url).pathname === "/login") {
      // a SASL cluster's session ended: never put the login page in place of a section
      throw new Error(`${url}: the session ended, log in again`);
    }
    return response.text();
  }

  async function fetchJSON(url) {
    const text = await fetchText(url);
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(`${url}: not JSON`);
    }
  }

  /** The fresh <section> rendered at url (the one with class live, else the first). */
  async function fetchSection(url) {
    const text = await fetchText(url);
    const doc = new DOMParser().parseFromString(text, "text/html");
    const fresh = doc.querySelector("section.live") || doc.querySelector("section");
    if (!fresh) {
      throw new Error(`${url}: no <section> in the answer`);
    }
    return fresh;
  }

  /** Put fresh (from the server) in place of section. */
  function replaceSection(section, fresh) {
    const url = section.dataset.refresh;
    const node = document.importNode(fresh, true);
    node.classList.add("live");
    if (!node.dataset.refresh) {
      node.dataset.refresh = url;
    }
    section.replaceWith(node);
  }

  // ---------------------------------------------------------------- a round

  async function round() {
    if (inFlight) {
      return; // the previous round is still waiting for the server: skip this one
    }
    inFlight = true;
    const errors = [];
    const fail = (err) => { errors.push(err instanceof Error ? err.message : String(err)); };
    try {
      // data-src -> {data} or {error}: one fetch per URL, however many charts use it
      const results = new Map();
      const pending = [];
      const load = (src) => {
        if (!results.has(src)) {
          results.set(src, null);
          pending.push(fetchJSON(src).then(
            (data) => { results.set(src, { data }); },
            (error) => { results.set(src, { error }); }));
        }
      };
      for (const div of document.querySelectorAll("div.chart[data-src]")) {
        load(div.dataset.src);
      }
      const sections = Array.from(document.querySelectorAll("section.live[data-refresh]"));
      const fresh = await Promise.allSettled(sections.map((s) => fetchSection(s.dataset.refresh)));
      for (const result of fresh) {
        if (result.status === "fulfilled") {
          for (const div of result.value.querySelectorAll("div.chart[data-src]")) {
            load(div.dataset.src); // a chart only the new section has
          }
        }
      }
      await Promise.all(pending);
      // Everything is here: change the page in one go (no layout in between, so the
      // sections' charts never show empty), keeping the window's scroll position.
      const x = window.scrollX;
      const y = window.scrollY;
      fresh.forEach((result, i) => {
        if (result.status === "rejected") {
          fail(result.reason);
        } else if (sections[i].isConnected) {
          replaceSection(sections[i], result.value);
        }
      });
      for (const div of document.querySelectorAll("div.chart[data-src]")) {
        const result = results.get(div.dataset.src);
        if (result && "data" in result) {
          try {
            drawFromData(div, result.data);
          } catch (err) {
            // the server's JSON, not the connection: say so in the chart, not the banner
            div.replaceChildren();
            htmlEl("p", "chart-error", `cannot draw chart ${div.dataset.chart}: ${err}`, div);
          }
        }
      }
      for (const result of results.values()) {
        if (result && "error" in result) {
          fail(result.error);
        }
      }
      if (window.scrollX !== x || window.scrollY !== y) {
        window.scrollTo(x, y);
      }
    } catch (err) {
      fail(err);
    } finally {
      inFlight = false;
    }
    if (errors.length) {
      document.body.dataset.updated = "error";
      showOffline(errors);
    } else {
      hideOffline();
      document.body.dataset.updated = String(Date.now());
    }
  }

  function showOffline(errors) {
    let banner = document.getElementById("console-offline");
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "console-offline";
      banner.setAttribute("role", "alert");
      const nav = document.querySelector("body > nav");
      if (nav) {
        nav.after(banner); // under the navigation bar, both sticky when scrolled
      } else {
        document.body.prepend(banner);
      }
    }
    banner.textContent = `console lost the cluster: ${errors.join("; ")}`;
  }

  function hideOffline() {
    const banner = document.getElementById("console-offline");
    if (banner) {
      banner.remove();
    }
  }

  // ---------------------------------------------------------------- formatting

  const SI_PREFIXES = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

  /** A number with at most 3 significant digits and no trailing zeros. */
  function short(value) {
    if (value === 0) {
      return "0";
    }
    const abs = Math.abs(value);
    const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
    return String(Number(value.toFixed(digits)).toPrecision(3) * 1);
  }

  /**
   * value with an SI prefix and the unit: 1.2 MB/s, 3.4k/s, 12.5%, 250 B.
   * Units starting with "/" (rates of counts) and "%" stick to the number.
   */
  function formatSI(value, unit) {
    if (value === null || value === undefined || !Number.isFinite(value)) {
      return "–";
    }
    unit = typeof unit === "string" ? unit : "";
    let number = short(value);
    let prefix = "";
    if (unit !== "%") {
      for (const [scale, p] of SI_PREFIXES) {
        if (Math.abs(value) >= scale) {
          number = short(value / scale);
          prefix = p;
          break;
        }
      }
    }
    if (!unit) {
      return number + prefix;
    }
    if (unit === "%" || unit.startsWith("/")) {
      return number + prefix + unit;
    }
    return `${number} ${prefix}${unit}`;
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  /** HH:MM:SS in the browser's time zone. */
  function formatTime(ms) {
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** 3 to 5 evenly spaced round values covering [lo, hi]. */
  function niceTicks(lo, hi) {
    if (!(hi > lo)) {
      hi = lo + (lo === 0 ? 1 : Math.abs(lo));
    }
    const raw = (hi - lo) / 4;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = magnitude;
    for (const m of [1, 2, 2.5, 5, 10, 20]) {
      step = m * magnitude;
      if (Math.ceil(hi / step - 1e-9) - Math.floor(lo / step + 1e-9) <= 4) {
        break;
      }
    }
    let first = Math.floor(lo / step + 1e-9);
    let last = Math.ceil(hi / step - 1e-9);
    if (last - first < 2) {
      step /= 2;
      first = Math.floor(lo / step + 1e-9);
      last = Math.ceil(hi / step - 1e-9);
    }
    const ticks = [];
    for (let i = first; i <= last; i++) {
      ticks.push(Number((i * step).toPrecision(12)));
    }
    return ticks;
  }

  /** Time ticks at a round step, about one per 110 px. */
  function timeTicks(t0, t1, widthPx) {
    const wanted = Math.max(2, Math.floor(widthPx / 110));
    const span = Math.max(t1 - t0, 1);
    const step = TIME_STEPS_MS.find((s) => span / s <= wanted) || TIME_STEPS_MS[TIME_STEPS_MS.length - 1];
    // round in local time, so ticks fall on whole minutes/hours of the clock shown
    const offset = new Date(t0).getTimezoneOffset() * 60000;
    const ticks = [];
    for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) {
      ticks.push(t);
    }
    return ticks;
  }

  // ---------------------------------------------------------------- SVG helpers

  function svgEl(name, attrs, parent) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) {
      el.setAttribute(k, String(v));
    }
    if (parent) {
      parent.appendChild(el);
    }
    return el;
  }

  function svgText(parent, x, y, text, attrs) {
    const el = svgEl("text", Object.assign({ x, y }, attrs || {}), parent);
    el.textContent = text;
    return el;
  }

  function htmlEl(name, className, text, parent) {
    const el = document.createElement(name);
    if (className) {
      el.className = className;
    }
    if (text !== undefined) {
      el.textContent = text;
    }
    if (parent) {
      parent.appendChild(el);
    }
    return el;
  }

  function cssColour(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  /** The y axis: grid lines and SI labels; returns value -> y (px). */
  function yAxis(svg, ticks, unit, width, plotBottom) {
    const lo = ticks[0];
    const hi = ticks[ticks.length - 1];
    const y = (v) => plotBottom - ((v - lo) / (hi - lo)) * (plotBottom - MARGIN.top);
    const axis = svgEl("g", { class: "axis y" }, svg);
    for (const t of ticks) {
      const py = y(t);
      svgEl("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: py, y2: py }, axis);
      svgText(axis, MARGIN.left - 6, py + 4, formatSI(t, unit), { class: "tick", "text-anchor": "end" });
    }
    return y;
  }

  // ---------------------------------------------------------------- charts

  /** Draw div's chart from the JSON of its data-src. */
  function drawFromData(div, data) {
    const id = div.dataset.chart;
    const charts = (data && Array.isArray(data.charts)) ? data.charts : [];
    const chart = charts.find((c) => c !== null && typeof c === "object" && c.id === id)
      || { id, title: id, kind: "line", series: [] };
    drawChart(div, chart);
  }

  /** The width (px) a chart is drawn at: its container's, inside the padding. */
  function contentWidth(div) {
    const style = getComputedStyle(div);
    const padding = (parseFloat(style.paddingLeft) || 0) + (parseFloat(style.paddingRight) || 0);
    return Math.max(Math.floor(div.clientWidth - padding), 200);
  }

  function drawChart(div, chart) {
    const width = contentWidth(div);
    const previous = drawn.get(div);
    drawn.set(div, { chart, width, hoverPx: previous ? previous.hoverPx : undefined });
    watch(div);
    div.replaceChildren();
    delete div.dataset.series;
    delete div.dataset.bars;
    htmlEl("div", "chart-title", String(chart.title ?? chart.id ?? ""), div);
    if (chart.kind === "bar") {
      drawBars(div, chart, width);
    } else {
      drawLines(div, chart, width);
    }
  }

  function noData(div, key) {
    div.dataset[key] = "0";
    htmlEl("p", "chart-empty", "no data yet", div);
  }

  /** A finite number, or null (a gap) for anything else. */
  const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

  /**
   * chart.series as [{name, highlight, points: [[time_ms, value or null]]}]: entries that
   * are not objects and points without a finite time are dropped, other values are gaps.
   */
  function normalSeries(chart) {
    const series = Array.isArray(chart.series) ? chart.series : [];
    return series.filter((s) => s !== null && typeof s === "object").map((s) => ({
      name: String(s.name ?? ""),
      highlight: s.highlight === true,
      points: (Array.isArray(s.points) ? s.points : [])
        .filter((p) => Array.isArray(p) && finite(p[0]) !== null)
        .map((p) => [p[0], finite(p[1])]),
    }));
  }

  function drawLines(div, chart, width) {
    const series = normalSeries(chart);
    const points = (s) => s.points;
    let t0 = Infinity, t1 = -Infinity, lo = 0, hi = -Infinity;
    for (const s of series) {
      for (const [t, v] of points(s)) {
        if (v === null) {
          continue;
        }
        t0 = Math.min(t0, t); t1 = Math.max(t1, t);
        lo = Math.min(lo, v); hi = Math.max(hi, v);
      }
    }
    if (!Number.isFinite(t0)) {
      noData(div, "series");
      return;
    }
    div.dataset.series = String(series.length);
    if (t1 === t0) {
      t0 -= 1000; t1 += 1000;
    }
    const height = CHART_HEIGHT_PX;
    const plotBottom = height - MARGIN.bottom;
    const plotRight = width - MARGIN.right;
    const svg = svgEl("svg", { class: "chart-svg", width, height, viewBox: `0 0 ${width} ${height}`,
                               role: "img" }, div);
    svg.setAttribute("aria-label", chart.title || chart.id || "chart");
    const y = yAxis(svg, niceTicks(lo, hi), chart.unit, width, plotBottom);
    const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0)) * (plotRight - MARGIN.left);

    const xAxis = svgEl("g", { class: "axis x" }, svg);
    svgEl("line", { class: "baseline", x1: MARGIN.left, x2: plotRight, y1: plotBottom, y2: plotBottom }, xAxis);
    for (const t of timeTicks(t0, t1, plotRight - MARGIN.left)) {
      svgEl("line", { class: "tick-mark", x1: x(t), x2: x(t), y1: plotBottom, y2: plotBottom + 4 }, xAxis);
      // labels near an edge are anchored inside the chart
      const anchor = x(t) < 28 ? "start" : x(t) > width - 28 ? "end" : "middle";
      svgText(xAxis, x(t), height - 6, formatTime(t), { class: "tick", "text-anchor": anchor });
    }

    const warning = cssColour("--warning", "#ff9830");
    const legend = htmlEl("div", "legend");
    const colours = [];
    series.forEach((s, i) => {
      const colour = s.highlight ? warning : PALETTE[i % PALETTE.length];
      colours.push(colour);
      const g = svgEl("g", { class: s.highlight ? "series highlight" : "series" }, svg);
      g.setAttribute("data-name", String(s.name));
      let run = [];
      const flush = () => {
        if (run.length) {
          // a single point is a zero-length line: its round caps draw a dot
          const pts = run.length === 1 ? [run[0], run[0]] : run;
          svgEl("polyline", {
            class: "segment", points: pts.join(" "), fill: "none", stroke: colour,
            "stroke-width": s.highlight ? 3 : 1.5, "stroke-linejoin": "round", "stroke-linecap": "round",
          }, g);
        }
        run = [];
      };
      for (const [t, v] of points(s)) {
        if (v !== null) {
          run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
        } else {
          flush();
        }
      }
      flush();
    });
    // highlighted series on top of the others
    for (const g of svg.querySelectorAll("g.series.highlight")) {
      svg.appendChild(g);
    }
    // the legend: highlighted series first when there are too many to name them all
    const named = series.map((s, i) => i);
    if (named.length > LEGEND_MAX) {
      named.sort((a, b) => Number(series[b].highlight) - Number(series[a].highlight) || a - b);
      named.length = LEGEND_MAX;
      named.sort((a, b) => a - b);
    }
    for (const i of named) {
      const s = series[i];
      const item = htmlEl("span", s.highlight ? "legend-item highlight" : "legend-item", undefined, legend);
      htmlEl("span", "swatch", undefined, item).style.background = colours[i];
      htmlEl("span", "name", s.name, item);
      if (s.highlight) {
        htmlEl("span", "mark", "⚠", item).title = "highlighted";
      }
    }
    if (series.length > named.length) {
      htmlEl("span", "legend-more", `… and ${series.length - named.length} more`, legend);
    }
    div.appendChild(legend);
    hover(div, svg, chart, series, colours, x, t0, t1, plotBottom);
  }

  /** The hover line and tooltip of a line chart: the time and each series' value. */
  function hover(div, svg, chart, series, colours, x, t0, t1, plotBottom) {
    const tip = htmlEl("div", "chart-tooltip", undefined, div);
    tip.hidden = true;
    const line = svgEl("line", { class: "hover-line", y1: MARGIN.top, y2: plotBottom, visibility: "hidden" }, svg);
    const plotLeft = MARGIN.left;
    const plotRight = svg.width.baseVal.value - MARGIN.right;
    const nearest = (pts, t) => {
      let best = null;
      for (const p of pts) {
        if (Number.isFinite(p[0]) && (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t))) {
          best = p;
        }
      }
      return best;
    };
    const show = (px) => {
      if (px < plotLeft || px > plotRight) {
        tip.hidden = true;
        line.setAttribute("visibility", "hidden");
        return;
      }
      const t = t0 + ((px - plotLeft) / (plotRight - plotLeft)) * (t1 - t0);
      const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
      const at = nearest(all, t);
      if (!at) {
        return;
      }
      line.setAttribute("x1", x(at[0]));
      line.setAttribute("x2", x(at[0]));
      line.setAttribute("visibility", "visible");
      tip.replaceChildren();
      htmlEl("div", "time", formatTime(at[0]), tip);
      const rows = series.map((s, i) => {
        const p = nearest(s.points, at[0]);
        return { s, i, value: p && p[0] === at[0] ? p[1] : null };
      });
      if (rows.length > TOOLTIP_MAX) {
        // too many to list: the highlighted ones, then the largest values
        rows.sort((a, b) => Number(b.s.highlight) - Number(a.s.highlight)
          || (b.value ?? -Infinity) - (a.value ?? -Infinity) || a.i - b.i);
      }
      for (const { s, i, value } of rows.slice(0, TOOLTIP_MAX)) {
        const row = htmlEl("div", s.highlight ? "row highlight" : "row", undefined, tip);
        htmlEl("span", "swatch", undefined, row).style.background = colours[i];
        htmlEl("span", "name", s.name, row);
        htmlEl("span", "value", formatSI(value, chart.unit), row);
      }
      if (rows.length > TOOLTIP_MAX) {
        htmlEl("div", "more", `… and ${rows.length - TOOLTIP_MAX} more`, tip);
      }
      tip.hidden = false;
      // position in div's coordinates, beside the cursor, kept inside the chart
      const svgBox = svg.getBoundingClientRect();
      const divBox = div.getBoundingClientRect();
      const offsetX = svgBox.left - divBox.left - div.clientLeft;
      const offsetY = svgBox.top - divBox.top - div.clientTop;
      let left = offsetX + px + 12;
      if (left + tip.offsetWidth > div.clientWidth) {
        left = offsetX + px - 12 - tip.offsetWidth;
      }
      tip.style.left = `${Math.max(0, left)}px`;
      tip.style.top = `${offsetY + MARGIN.top}px`;
    };
    svg.addEventListener("mousemove", (event) => {
      const px = event.clientX - svg.getBoundingClientRect().left;
      const state = drawn.get(div);
      if (state) {
        state.hoverPx = px; // a redraw (next round, resize) shows the tooltip again
      }
      show(px);
    });
    const state = drawn.get(div);
    if (state && state.hoverPx !== undefined) {
      show(state.hoverPx);
    }
    svg.addEventListener("mouseleave", () => {
      const state = drawn.get(div);
      if (state) {
        delete state.hoverPx;
      }
      tip.hidden = true;
      line.setAttribute("visibility", "hidden");
    });
  }

  function drawBars(div, chart, width) {
    const bars = (Array.isArray(chart.bars) ? chart.bars : [])
      .filter((b) => b !== null && typeof b === "object" && finite(b.value) !== null)
      .map((b) => ({ name: String(b.name ?? ""), value: b.value, highlight: b.highlight === true }));
    if (!bars.length) {
      noData(div, "bars");
      return;
    }
    div.dataset.bars = String(bars.length);
    const height = CHART_HEIGHT_PX;
    const plotBottom = height - BAR_MARGIN_BOTTOM;
    const plotRight = width - MARGIN.right;
    const svg = svgEl("svg", { class: "chart-svg", width, height, viewBox: `0 0 ${width} ${height}`,
                               role: "img" }, div);
    svg.setAttribute("aria-label", chart.title || chart.id || "chart");
    let lo = 0, hi = 0;
    for (const b of bars) {
      lo = Math.min(lo, b.value); hi = Math.max(hi, b.value);
    }
    const y = yAxis(svg, niceTicks(lo, hi), chart.unit, width, plotBottom);
    const slot = (plotRight - MARGIN.left) / bars.length;
    const barWidth = Math.max(1, slot * 0.7);
    const warning = cssColour("--warning", "#ff9830");
    const normal = cssColour("--bar", PALETTE[0]);
    // labels only where they fit: every k-th one
    const every = Math.max(1, Math.ceil(48 / slot));
    const zero = y(0);
    bars.forEach((b, i) => {
      const bx = MARGIN.left + i * slot + (slot - barWidth) / 2;
      const by = Math.min(y(b.value), zero);
      const rect = svgEl("rect", {
        class: b.highlight ? "bar highlight" : "bar", x: bx.toFixed(1), y: by.toFixed(1),
        width: barWidth.toFixed(1), height: Math.max(Math.abs(zero - y(b.value)), 0.5).toFixed(1),
        fill: b.highlight ? warning : normal,
      }, svg);
      rect.setAttribute("data-name", String(b.name));
      const title = svgEl("title", {}, rect);
      title.textContent = `${b.name}: ${formatSI(b.value, chart.unit)}`;
      if (i % every === 0) {
        const cx = bx + barWidth / 2;
        svgText(svg, cx, by - 4, formatSI(b.value, chart.unit),
                { class: b.highlight ? "bar-value highlight" : "bar-value", "text-anchor": "middle" });
        svgText(svg, cx, plotBottom + 16, String(b.name), { class: "tick category", "text-anchor": "middle" });
      }
    });
    svgEl("line", { class: "baseline", x1: MARGIN.left, x2: plotRight, y1: zero, y2: zero }, svg);
    const legend = htmlEl("div", "legend", undefined, div);
    for (const b of bars.filter((b) => b.highlight)) {
      const item = htmlEl("span", "legend-item highlight", undefined, legend);
      htmlEl("span", "swatch", undefined, item).style.background = warning;
      htmlEl("span", "name", String(b.name), item);
      htmlEl("span", "mark", "⚠", item).title = "highlighted";
    }
  }

  // ---------------------------------------------------------------- resizing

  let resizeObserver = null;
  const pending = new Set();

  /** Redraw div when its width changes (once per animation frame). */
  function watch(div) {
    if (typeof ResizeObserver === "undefined") {
      return;
    }
    if (!resizeObserver) {
      resizeObserver = new ResizeObserver((entries) => {
        for (const entry of entries) {
          pending.add(entry.target);
        }
        // redraw outside the observer's callback: no "ResizeObserver loop" error
        requestAnimationFrame(redrawPending);
      });
    }
    resizeObserver.observe(div);
  }

  function redrawPending() {
    for (const div of pending) {
      pending.delete(div);
      if (!div.isConnected) {
        resizeObserver.unobserve(div);
        continue;
      }
      const last = drawn.get(div);
      if (last && contentWidth(div) !== last.width) {
        drawChart(div, last.chart);
      }
    }
  }

  // ---------------------------------------------------------------- start

  function start() {
    round();
    setInterval(round, REFRESH_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
