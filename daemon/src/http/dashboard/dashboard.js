// anomalyd dashboard: the series list, a chart of the selected series and
// the recent anomalies, kept live by GET /events (server-sent events).
// No framework and no network beyond the daemon: it is compiled into the
// binary. State is read from the JSON endpoints, then kept current by the
// events; after a `lagged` event or a reconnection it is read again.
"use strict";

const MAX_ANOMALIES = 200;
const state = {
  series: new Map(),      // name -> summary from /series
  sortKey: "anomalies",
  sortDesc: true,
  filter: "",
  selected: null,         // name of the selected series
  detail: null,           // /series/{name} of the selected series
  anomalies: [],          // newest first
  source: null,           // the EventSource
  historyPoints: 300,
};

const $ = (id) => document.getElementById(id);
const fmt = (x) => (x === null || x === undefined) ? "–" :
  (Math.abs(x) >= 1e6 || (Math.abs(x) < 1e-3 && x !== 0)) ? x.toExponential(3) : Number(x.toFixed(3)).toString();
const timeOf = (t) => {
  const d = new Date(t * 1000);
  return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace("Z", "");
};
const enc = (name) => encodeURIComponent(name);

async function getJson(path) {
  const reply = await fetch(path, { cache: "no-store" });
  // Tokens are on and the session's token was rotated out: the page
  // itself is then the login form.
  if (reply.status === 401) location.reload();
  if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
  return reply.json();
}

// --- series list -----------------------------------------------------------

function globToRegExp(glob) {
  let re = "";
  for (const c of glob) {
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function matchesFilter(name) {
  const f = state.filter.trim();
  if (!f) return true;
  if (/[*?]/.test(f)) return globToRegExp(f).test(name);
  return name.toLowerCase().includes(f.toLowerCase());
}

function compareSeries(a, b) {
  const k = state.sortKey;
  let c;
  if (k === "series") c = a.series < b.series ? -1 : a.series > b.series ? 1 : 0;
  else if (k === "warming_up") c = Number(a.warming_up) - Number(b.warming_up);
  else c = (a[k] ?? 0) - (b[k] ?? 0);
  if (state.sortDesc) c = -c;
  if (c === 0 && k === "anomalies") c = b.points - a.points;
  return c !== 0 ? c : (a.series < b.series ? -1 : a.series > b.series ? 1 : 0);
}

let renderQueued = false;
function renderSeriesSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderSeries(); });
}

function renderSeries() {
  const rows = [...state.series.values()].filter((s) => matchesFilter(s.series)).sort(compareSeries);
  const body = document.createElement("tbody");
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.dataset.series = s.series;
    if (s.series === state.selected) tr.className = "selected";
    const cells = [
      [s.series, ""],
      [String(s.points), "num"],
      [fmt(s.last_value), "num"],
      [String(s.anomalies), s.anomalies > 0 ? "num anomalous" : "num"],
      [s.warming_up ? "warming up" : "ready", ""],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $("series-table").replaceChild(body, $("series-table").tBodies[0]);
  $("series-count").textContent = `${rows.length} of ${state.series.size} series`;
}

function mergeSeries(list) {
  for (const s of list) state.series.set(s.series, s);
  renderSeriesSoon();
}

// --- chart -----------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function drawChart() {
  const svg = $("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const detail = state.detail;
  if (!detail) return;
  const points = detail.history;
  const direction = detail.settings.direction;
  $("chart-title").textContent = detail.series;
  $("chart-info").textContent =
    `${detail.history.length} recent points · ${detail.settings.detector}` +
    ` · window ${detail.settings.window_size}` +
    ` · k ${detail.settings.threshold_multiplier} · ${direction}` +
    (detail.rule ? ` · rule ${detail.rule}` : " · defaults") +
    (points.length > 0 && points[points.length - 1].in_episode ? " · episode open" : "");
  if (points.length === 0) {
    el("text", { x: 20, y: 30, class: "axis" }, svg).textContent =
      "No history for this series yet (see [server] history_series).";
    return;
  }
  const width = svg.clientWidth || 600, height = svg.clientHeight || 320;
  const pad = { l: 60, r: 10, t: 10, b: 24 };
  const t0 = points[0].timestamp, t1 = points[points.length - 1].timestamp;
  let lo = Infinity, hi = -Infinity;
  for (const p of points) {
    lo = Math.min(lo, p.value); hi = Math.max(hi, p.value);
    if (p.mean !== null) {
      if (direction !== "lower") hi = Math.max(hi, p.threshold);
      if (direction !== "upper") lo = Math.min(lo, p.lower_threshold);
    }
  }
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => pad.l + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    el("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }, svg);
    el("text", { x: 4, y: y(v) + 4, class: "axis" }, svg).textContent = fmt(v);
  }
  // Episodes: a shaded span over each run of points inside one, from the
  // point that opened it to the one that closed it.
  let runStart = null;
  points.forEach((p, i) => {
    if (p.in_episode && runStart === null) runStart = p;
    const next = points[i + 1];
    if (runStart !== null && (!next || !next.in_episode)) {
      const x0 = x(runStart.timestamp), x1 = x(p.timestamp);
      el("rect", {
        x: x0 - 3, y: pad.t, width: Math.max(x1 - x0, 0) + 6,
        height: height - pad.t - pad.b, class: "episode",
      }, svg);
      runStart = null;
    }
  });
  el("text", { x: pad.l, y: height - 6, class: "axis" }, svg).textContent = timeOf(t0);
  el("text", { x: width - pad.r, y: height - 6, class: "axis", "text-anchor": "end" }, svg).textContent = timeOf(t1);
  // The band: between the thresholds the direction checks (the other side
  // of the mean when only one side is checked).
  const judged = points.filter((p) => p.mean !== null);
  if (judged.length > 0) {
    const upper = (p) => direction === "lower" ? p.mean : p.threshold;
    const lower = (p) => direction === "upper" ? p.mean : p.lower_threshold;
    const top = judged.map((p) => `${x(p.timestamp)},${y(upper(p))}`);
    const bottom = judged.slice().reverse().map((p) => `${x(p.timestamp)},${y(lower(p))}`);
    el("polygon", { points: top.concat(bottom).join(" "), class: "band" }, svg);
    el("polyline", { points: judged.map((p) => `${x(p.timestamp)},${y(p.mean)}`).join(" "), class: "mean" }, svg);
  }
  el("polyline", { points: points.map((p) => `${x(p.timestamp)},${y(p.value)}`).join(" "), class: "value" }, svg);
  for (const p of points) {
    const cx = x(p.timestamp), cy = y(p.value);
    if (p.anomaly) {
      const s = 7;
      el("polygon", { points: `${cx},${cy - s} ${cx - s},${cy + s * 0.8} ${cx + s},${cy + s * 0.8}`, class: "anomaly" }, svg);
    } else {
      el("circle", { cx, cy, r: 2, class: "point" }, svg);
    }
  }
  svg.onmousemove = (event) => {
    const box = svg.getBoundingClientRect();
    const mx = event.clientX - box.left;
    let best = null, dist = Infinity;
    for (const p of points) {
      const d = Math.abs(x(p.timestamp) - mx);
      if (d < dist) { dist = d; best = p; }
    }
    const tip = $("tooltip");
    if (!best) { tip.hidden = true; return; }
    tip.textContent =
      `${timeOf(best.timestamp)} UTC\nvalue ${fmt(best.value)}${best.anomaly ? "  ANOMALY" : ""}` +
      `${best.in_episode ? "\nin an episode" : ""}\n` +
      (best.mean === null ? "warming up" :
        `mean ${fmt(best.mean)}\nσ ${fmt(best.std_dev)}\nthreshold ${fmt(best.threshold)}\nscore ${fmt(best.score)}` +
        (direction !== "upper" ? `\nlower threshold ${fmt(best.lower_threshold)}` : ""));
    tip.hidden = false;
    tip.style.left = `${Math.min(mx + 12, box.width - 180)}px`;
    tip.style.top = `${Math.max(y(best.value) - 20, 0)}px`;
  };
  svg.onmouseleave = () => { $("tooltip").hidden = true; };
}

async function select(name) {
  state.selected = name;
  history.replaceState(null, "", `#${enc(name)}`);
  renderSeriesSoon();
  try {
    state.detail = await getJson(`/series/${enc(name)}`);
  } catch (e) {
    state.detail = null;
    $("chart-title").textContent = name;
    $("chart-info").textContent = `Cannot read the series: ${e.message}`;
  }
  drawChart();
  connect();
}

function appendPoints(event) {
  if (!state.detail || event.series !== state.selected) return;
  const points = state.detail.history.concat(event.points);
  state.detail.history = points.slice(Math.max(0, points.length - state.historyPoints));
  drawChart();
}

// --- anomalies -------------------------------------------------------------

function renderAnomalies() {
  const body = document.createElement("tbody");
  for (const a of state.anomalies) {
    const tr = document.createElement("tr");
    tr.dataset.series = a.series;
    const cells = [timeOf(a.timestamp), a.series, fmt(a.value), fmt(a.mean), fmt(a.threshold), a.direction];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i >= 2 && i <= 4) td.className = "num";
      if (i === 2) td.className = "num anomalous";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  $("anomaly-table").replaceChild(body, $("anomaly-table").tBodies[0]);
}

function addAnomalies(records) {
  state.anomalies = records.slice().reverse().concat(state.anomalies).slice(0, MAX_ANOMALIES);
  renderAnomalies();
}

// --- live ------------------------------------------------------------------

function setStatus(text, cls) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${cls}`;
}

async function reloadAll() {
  const [series, anomalies] = await Promise.all([
    getJson("/series?limit=10000&sort=anomalies"),
    getJson(`/anomalies?limit=${MAX_ANOMALIES}`),
  ]);
  state.series = new Map(series.map((s) => [s.series, s]));
  renderSeries();
  state.anomalies = anomalies.reverse();
  renderAnomalies();
  if (state.selected) {
    try { state.detail = await getJson(`/series/${enc(state.selected)}`); } catch (e) { state.detail = null; }
    drawChart();
  }
}

function connect() {
  if (state.source) state.source.close();
  const url = state.selected ? `/events?series=${enc(state.selected)}` : "/events";
  const source = new EventSource(url);
  state.source = source;
  let wasDown = false;
  source.onopen = () => {
    setStatus("live", "live");
    // After a restart or an outage, what happened meanwhile is re-read.
    if (wasDown) reloadAll().catch(() => {});
    wasDown = false;
  };
  source.onerror = () => {
    wasDown = true;
    setStatus("disconnected — reconnecting…", "disconnected");
    // A refused stream (401 once a token was rotated out) is not retried
    // by the browser: find out why, and reconnect ourselves.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => getJson("/series?limit=1").then(connect, connect), 2000);
    }
  };
  source.addEventListener("anomalies", (e) => addAnomalies(JSON.parse(e.data).anomalies));
  source.addEventListener("series", (e) => mergeSeries(JSON.parse(e.data)));
  source.addEventListener("points", (e) => appendPoints(JSON.parse(e.data)));
  source.addEventListener("lagged", () => { reloadAll().catch(() => {}); });
}

// --- wiring ----------------------------------------------------------------

$("series-table").addEventListener("click", (e) => {
  const th = e.target.closest("th");
  if (th) {
    const key = th.dataset.sort;
    if (state.sortKey === key) state.sortDesc = !state.sortDesc;
    else { state.sortKey = key; state.sortDesc = key !== "series"; }
    for (const h of th.parentNode.children) h.classList.remove("sorted", "asc", "desc");
    th.classList.add("sorted", state.sortDesc ? "desc" : "asc");
    renderSeries();
    return;
  }
  const tr = e.target.closest("tr[data-series]");
  if (tr) select(tr.dataset.series);
});
$("anomaly-table").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-series]");
  if (tr) select(tr.dataset.series);
});
$("filter").addEventListener("input", (e) => { state.filter = e.target.value; renderSeries(); });
window.addEventListener("resize", drawChart);

reloadAll()
  .catch((e) => setStatus(`cannot reach anomalyd: ${e.message}`, "disconnected"))
  .finally(() => {
    // When the first state is on screen (read by the browser test).
    window.dashboardReadyAt = performance.now();
    const wanted = decodeURIComponent(location.hash.slice(1));
    if (wanted) select(wanted); else connect();
  });
