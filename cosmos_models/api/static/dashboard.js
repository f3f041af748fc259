// The cosmos_models dashboard: runs and their progress, pushed by Server-Sent Events.
// Stored text is only ever put in the page with textContent (never parsed as HTML).
"use strict";

const STATUSES = ["pending", "uploading", "running", "downloading", "completed", "failed", "cancelled"];
const FINAL = new Set(["completed", "failed", "cancelled"]);
const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);

// Measured by the browser tests: time to first render, cost of each pushed update.
const metrics = { firstRenderMs: null, updates: [] };
window.dashboardMetrics = metrics;

const state = {
  settings: { actions: false },
  live: new Map(),        // run id -> latest state pushed by /events (unfinished runs)
  rows: new Map(),        // run id -> { tr, cells } for the rows on the page
  order: [],              // run ids shown, newest first
  cursor: null,
  filters: { status: "", model: "" },
  modelTypes: new Set(),
  clockSkew: 0,           // server time - browser time (ms), from the stats events
  listToken: 0,
  runView: null,          // { id, source, events, run }
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function getJSON(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && (body.detail || body.title);
    throw new Error(`${response.status} ${typeof detail === "string" ? detail : response.statusText}`);
  }
  return body;
}

// -- formatting --------------------------------------------------------------------------------

function seconds(ms) {
  if (!(ms >= 0)) return "";
  const total = Math.floor(ms / 1000), h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
  return h ? `${h}h ${String(m).padStart(2, "0")}m` : m ? `${m}m ${String(s).padStart(2, "0")}s` : `${s}s`;
}

function elapsed(run) {
  const start = Date.parse(run.started_at || run.created_at);
  if (FINAL.has(run.status)) {
    const end = Date.parse(run.completed_at || run.updated_at);
    return run.started_at ? seconds(end - start) : "";
  }
  return seconds(Date.now() + state.clockSkew - start);
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// A run as the table shows it: a RunState from /events or a RunRead (+ latest_progress).
function normalise(run) {
  const latest = run.latest_progress || null;
  return {
    ...run,
    latest_percentage: run.latest_percentage ?? (latest ? latest.percentage : null),
    latest_stage: run.latest_stage ?? (latest ? latest.stage : null),
    latest_message: run.latest_message ?? (latest ? latest.message : null),
  };
}

// -- header ------------------------------------------------------------------------------------

function showStats(stats) {
  state.clockSkew = Date.parse(stats.at) - Date.now();
  const counts = $("counts");
  const items = STATUSES.map((status) => {
    const li = el("li", `status ${status}`);
    li.dataset.status = status;
    li.append(el("b", null, stats.runs_by_status[status] ?? 0), ` ${status}`);
    return li;
  });
  counts.replaceChildren(...items);
  $("rate").textContent = `${Number(stats.events_per_second).toFixed(2)} events/s (last minute)`;
  for (const id of state.order) refreshElapsed(id);
}

// -- the runs table ----------------------------------------------------------------------------

function matches(run) {
  const { status, model } = state.filters;
  return (!status || run.status === status) && (!model || run.model_type === model);
}

function rememberModelType(modelType) {
  if (!modelType || state.modelTypes.has(modelType)) return;
  state.modelTypes.add(modelType);
  const option = el("option");
  option.value = modelType;
  $("model-types").append(option);
}

function makeRow(run) {
  const tr = el("tr");
  tr.dataset.runId = run.id;
  const link = el("a", "run-link", run.id);
  link.href = `#/runs/${encodeURIComponent(run.id)}`;
  const cells = {
    id: el("td"), model: el("td", null, run.model_type), status: el("td"), progress: el("td"),
    stage: el("td"), message: el("td"), elapsed: el("td", "time"), created: el("td", "time", clock(run.created_at)),
  };
  cells.id.append(link);
  const bar = el("div", "bar");
  const fill = el("span");
  const label = el("em");
  bar.append(fill, label);
  cells.progress.append(bar);
  cells.fill = fill;
  cells.label = label;
  tr.append(cells.id, cells.model, cells.status, cells.progress, cells.stage, cells.message, cells.elapsed, cells.created);
  const row = { tr, cells, run };
  updateRow(row, run);
  return row;
}

function updateRow(row, run) {
  row.run = run;
  const { cells } = row;
  row.tr.className = run.status;
  cells.status.className = `status ${run.status}`;
  cells.status.textContent = run.status;
  const pct = run.latest_percentage;
  cells.fill.style.width = pct == null ? "0%" : `${pct}%`;
  cells.label.textContent = pct == null ? "" : `${pct.toFixed(1)}%`;
  cells.stage.textContent = run.latest_stage || "";
  cells.message.textContent = run.status === "failed" || run.status === "cancelled"
    ? run.error_message || run.latest_message || ""
    : run.latest_message || "";
  cells.message.title = cells.message.textContent;
  cells.elapsed.textContent = elapsed(run);
}

function refreshElapsed(id) {
  const row = state.rows.get(id);
  if (row && !FINAL.has(row.run.status)) row.cells.elapsed.textContent = elapsed(row.run);
}

function appendRuns(runs) {
  const tbody = $("runs").tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const item of runs) {
    if (state.rows.has(item.id)) continue;
    const run = normalise({ ...item, ...(state.live.get(item.id) || {}) });
    const row = makeRow(run);
    state.rows.set(run.id, row);
    state.order.push(run.id);
    rememberModelType(run.model_type);
    fragment.append(row.tr);
  }
  tbody.append(fragment);
}

// A pushed run not on the page yet: shown at the top if it is newer than every row there.
function insertNew(run) {
  const first = state.order.length ? state.rows.get(state.order[0]).run : null;
  if (first) {
    // By time (not by text: "…:14Z" sorts after "…:14.5Z"), then id, as the listing orders.
    const mine = Date.parse(run.created_at), theirs = Date.parse(first.created_at);
    if (mine < theirs || (mine === theirs && run.id < first.id)) return;
  }
  const row = makeRow(run);
  state.rows.set(run.id, row);
  state.order.unshift(run.id);
  $("runs").tBodies[0].prepend(row.tr);
}

async function loadRuns(reset) {
  const token = ++state.listToken;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.filters.status) params.set("status", state.filters.status);
  if (state.filters.model) params.set("model_type", state.filters.model);
  if (!reset && state.cursor) params.set("cursor", state.cursor);
  $("list-note").textContent = "loading…";
  try {
    const page = await getJSON(`/dashboard/runs?${params}`);
    if (token !== state.listToken) return;
    if (reset) {
      state.rows.clear();
      state.order = [];
      $("runs").tBodies[0].replaceChildren();
    }
    appendRuns(page.items);
    state.cursor = page.next_cursor;
    $("more").hidden = !state.cursor;
    $("list-note").textContent = state.order.length ? "" : "no runs match";
    if (metrics.firstRenderMs === null) metrics.firstRenderMs = performance.now();
  } catch (error) {
    if (token === state.listToken) $("list-note").textContent = `could not load runs: ${error.message}`;
  }
}

// Pushed states, as JSON text: parsing is part of the measured cost of an update.
function applyStates(json) {
  const started = performance.now();
  const runs = JSON.parse(json);
  for (const raw of runs) {
    const run = normalise(raw);
    rememberModelType(run.model_type);
    if (FINAL.has(run.status)) state.live.delete(run.id);
    else state.live.set(run.id, run);
    const row = state.rows.get(run.id);
    if (row) {
      // A row that stops matching the status filter stays until the list is reloaded.
      updateRow(row, { ...row.run, ...run });
    } else if (matches(run)) {
      insertNew(run);
    }
    if (state.runView && state.runView.id === run.id) showRunFacts({ ...state.runView.run, ...run });
  }
  metrics.updates.push({ runs: runs.length, ms: performance.now() - started });
  if (metrics.updates.length > 1000) metrics.updates.shift();
}

function removeRuns(ids) {
  for (const id of ids) {
    state.live.delete(id);
    const row = state.rows.get(id);
    if (!row) continue;
    row.tr.remove();
    state.rows.delete(id);
    state.order = state.order.filter((other) => other !== id);
  }
}

function follow() {
  const source = new EventSource("/events");
  const connection = $("connection");
  source.addEventListener("open", () => { connection.textContent = "live"; connection.className = "live"; });
  source.addEventListener("error", () => { connection.textContent = "reconnecting…"; connection.className = "offline"; });
  source.addEventListener("snapshot", (event) => {
    state.live.clear();
    applyStates(event.data);
  });
  source.addEventListener("runs", (event) => applyStates(event.data));
  source.addEventListener("removed", (event) => removeRuns(JSON.parse(event.data)));
  source.addEventListener("stats", (event) => showStats(JSON.parse(event.data)));
}

// -- the run page ------------------------------------------------------------------------------

function fact(list, name, value) {
  list.append(el("dt", null, name), el("dd", null, value ?? ""));
}

function showRunFacts(run) {
  if (!state.runView) return;
  state.runView.run = run;
  $("run-title").textContent = run.id;
  const facts = $("run-facts");
  facts.replaceChildren();
  fact(facts, "status", run.status);
  fact(facts, "model type", run.model_type);
  fact(facts, "prompt", run.prompt_id);
  fact(facts, "worker", run.worker_id);
  fact(facts, "created", clock(run.created_at));
  fact(facts, "started", clock(run.started_at));
  fact(facts, "finished", clock(run.completed_at));
  fact(facts, FINAL.has(run.status) ? "duration" : "elapsed", elapsed(run));
  if (run.error_message) fact(facts, "error", run.error_message);
  $("run-actions").hidden = !(state.settings.actions && !FINAL.has(run.status));
}

function jsonBlock(title, value) {
  const box = el("div");
  box.append(el("h3", null, title), el("pre", "json", JSON.stringify(value ?? {}, null, 2)));
  return box;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Percentage over time as an inline SVG polyline (time on x, 0-100 % on y).
function drawChart(events) {
  const width = 640, height = 200, left = 36, bottom = 20, top = 8, right = 8;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "percentage over time" });
  for (const pct of [0, 50, 100]) {
    const y = top + (height - top - bottom) * (1 - pct / 100);
    chart.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y }), svg("text", { x: 4, y: y + 3 }, `${pct}%`));
  }
  if (events.length) {
    const times = events.map((event) => Date.parse(event.timestamp));
    const start = Math.min(...times), span = Math.max(Math.max(...times) - start, 1);
    const points = events.map((event, i) => {
      const x = left + (width - left - right) * ((times[i] - start) / span);
      const y = top + (height - top - bottom) * (1 - event.percentage / 100);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    chart.append(svg("polyline", { points: points.join(" ") }));
    chart.append(svg("text", { x: left, y: height - 4 }, new Date(start).toLocaleTimeString()));
    chart.append(svg("text", { x: width - right - 60, y: height - 4 }, seconds(span)));
  }
  $("chart").replaceChildren(chart);
}

function timelineItem(event) {
  const li = el("li");
  li.dataset.seq = event.seq;
  li.append(el("span", "time", clock(event.timestamp)), el("span", "stage", event.stage),
    el("span", "pct", `${event.percentage.toFixed(1)}%`), el("span", "message", event.message));
  return li;
}

function addEvents(view, events) {
  const fresh = events.filter((event) => event.seq > view.lastSeq);
  if (!fresh.length) return;
  view.events.push(...fresh);
  view.lastSeq = fresh[fresh.length - 1].seq;
  $("timeline").append(...fresh.map(timelineItem));
  drawChart(view.events);
}

// The run's events: its history first (the stream starts at seq 1), then live; "end" brings
// the finished run, after which the stream closes (and is not reopened).
function followRun(view) {
  const source = new EventSource(`/runs/${encodeURIComponent(view.id)}/events`);
  view.source = source;
  let batch = [];
  let scheduled = false;
  source.addEventListener("progress", (event) => {
    batch.push(JSON.parse(event.data));
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      if (state.runView === view) addEvents(view, batch);
      batch = [];
    });
  });
  source.addEventListener("end", (event) => {
    source.close();
    if (state.runView === view) showRunFacts(normalise({ ...view.run, ...JSON.parse(event.data) }));
  });
}

async function openRun(id) {
  closeRun();
  const view = { id, events: [], lastSeq: 0, run: null, source: null };
  state.runView = view;
  $("list-view").hidden = true;
  $("run-view").hidden = false;
  for (const target of ["run-facts", "prompt-text", "json-blocks", "timeline", "chart", "action-note"]) $(target).replaceChildren();
  $("run-title").textContent = id;
  try {
    const run = await getJSON(`/runs/${encodeURIComponent(id)}`);
    if (state.runView !== view) return;
    showRunFacts(normalise(run));
    const prompt = await getJSON(`/prompts/${encodeURIComponent(run.prompt_id)}`);
    if (state.runView !== view) return;
    $("prompt-text").textContent = prompt.prompt_text;
    $("json-blocks").replaceChildren(jsonBlock("Inputs", prompt.inputs), jsonBlock("Parameters", prompt.parameters),
      jsonBlock("Execution config", run.execution_config), jsonBlock("Outputs", run.outputs), jsonBlock("Metadata", run.run_metadata));
    drawChart([]);
    followRun(view);
  } catch (error) {
    $("run-title").textContent = `${id}: ${error.message}`;
  }
}

function closeRun() {
  if (state.runView && state.runView.source) state.runView.source.close();
  state.runView = null;
}

async function cancelRun() {
  const view = state.runView;
  if (!view) return;
  const token = $("token").value;
  sessionStorage.setItem("cosmos-token", token);
  $("action-note").textContent = "cancelling…";
  try {
    const run = await getJSON(`/runs/${encodeURIComponent(view.id)}/cancel`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: "{}",
    });
    $("action-note").textContent = `now ${run.status}`;
    if (state.runView === view) showRunFacts(normalise(run));
  } catch (error) {
    $("action-note").textContent = `refused: ${error.message}`;
  }
}

// -- routing and start -------------------------------------------------------------------------

function route() {
  const match = /^#\/runs\/(.+)$/.exec(location.hash);
  let id = null;
  try {
    id = match ? decodeURIComponent(match[1]) : null;
  } catch {
    id = match[1]; // not %-encoded text: the id as typed
  }
  if (id !== null) {
    openRun(id);
  } else {
    closeRun();
    $("run-view").hidden = true;
    $("list-view").hidden = false;
  }
}

async function start() {
  const select = $("status-filter");
  for (const status of STATUSES) {
    const option = el("option", null, status);
    option.value = status;
    select.append(option);
  }
  select.addEventListener("change", () => { state.filters.status = select.value; loadRuns(true); });
  const model = $("model-filter");
  model.addEventListener("change", () => { state.filters.model = model.value.trim(); loadRuns(true); });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("more").addEventListener("click", () => loadRuns(false));
  $("cancel").addEventListener("click", cancelRun);
  $("token").value = sessionStorage.getItem("cosmos-token") || "";
  window.addEventListener("hashchange", route);
  try {
    state.settings = await getJSON("/dashboard/settings");
    showStats(await getJSON("/stats"));
  } catch (error) {
    $("rate").textContent = `stats unavailable: ${error.message}`;
  }
  follow();
  await loadRuns(true);
  route();
  document.body.dataset.ready = "true";
}

start();
