"use strict";
// Everything comes from this daemon's admin API; nothing is fetched from elsewhere.
// Values from events reach the page only as text nodes (see `el`), never as markup.
//
// The admin token, when the daemon has one, never goes into a URL the server
// sees: it comes in the fragment (/#token=…, which browsers do not send) or
// from the sign-in form, and is kept for this tab only. API calls send it as a
// bearer token; the live stream opens with a single-use ticket bought with it.
const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromFragment) {
  sessionStorage.setItem("hookwire-token", fromFragment);
  history.replaceState(null, "", location.pathname + location.search);
}
const token = sessionStorage.getItem("hookwire-token") || "";
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
};
async function api(path, method = "GET") {
  const r = await fetch(path, { method, headers });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) signIn();
  if (!r.ok) throw Object.assign(new Error(body.error || r.status), { status: r.status });
  return body;
}
function signIn() {
  $("login").hidden = false;
  $("token").focus();
}
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("hookwire-token", $("token").value);
  location.reload();
});
let next = null, selected = null;

// The live stream can bring hundreds of messages a second. What they make the
// page fetch again (changed rows, the open event, the queue count) is fetched
// at most once per RELOAD_EVERY, after the messages of that second (trailing
// edge): an open dashboard costs the daemon a few reads a second, not a few per
// message, and never starves delivery.
const RELOAD_EVERY = 1000;
// Live rows kept at most; older ones are one click away ("older events").
const MAX_ROWS = 200;
// Changed rows fetched again per reload at most, newest first.
const MAX_ROW_RELOADS = 25;
function throttled(fn) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, RELOAD_EVERY);
  };
}

function pill(status) { return el("span", { class: "pill " + status }, status); }
function deliverySummary(ds) {
  const counts = {};
  for (const d of ds) counts[d.status] = (counts[d.status] || 0) + 1;
  const span = el("span");
  for (const [s, n] of Object.entries(counts)) span.append(pill(n > 1 ? `${s} ×${n}` : s), " ");
  return span;
}
// Attempt numbers are the delivery's lifetime count and never repeat; the
// budget count (what the retry policy counts) starts again at a manual retry.
const ofBudget = (n, budget) => budget != null ? `${n}/${budget}` : `${n}`;
function deliveryAttempts(dl) {
  let text = `attempts ${dl.attempts}`;
  if (dl.manual_retries > 0) {
    text += ` (${ofBudget(dl.attempts_in_budget, dl.budget)} since retry${dl.retried_by ? " " + dl.retried_by : ""}, ` +
      `${dl.manual_retries} manual retr${dl.manual_retries === 1 ? "y" : "ies"})`;
  }
  if (dl.replayed_by) text += `, made by replay ${dl.replayed_by}`;
  return text;
}
function attemptLabel(a, budget) {
  let why = "";
  if (a.after_retry) why = " after retry" + (a.requested_by ? " " + a.requested_by : "");
  else if (a.requested_by) why = " of replay " + a.requested_by;
  return `#${a.number} (${ofBudget(a.budget_number, budget)}${why})`;
}
function eventRow(e, isNew) {
  const tr = el("tr", { "data-id": e.id, class: isNew ? "new" : "", onclick: () => showEvent(e.id) },
    el("td", { class: "mono" }, (e.received_at || "").replace("T", " ").slice(0, 19)),
    el("td", {}, e.source),
    el("td", {}, (e.matched || []).length ? (e.matched || []).join(", ") : el("span", { class: "muted" }, "none")),
    el("td", {}, deliverySummary(e.deliveries || [])));
  if (e.id === selected) tr.classList.add("selected");
  return tr;
}
function query() {
  const q = new URLSearchParams({ limit: "50" });
  if ($("source").value) q.set("source", $("source").value);
  if ($("matched").value) q.set("matched", $("matched").value);
  return q;
}
async function loadEvents(more) {
  const q = query();
  if (more && next) q.set("before", next);
  const page = await api("/api/events?" + q);
  if (!more) $("events").replaceChildren();
  for (const e of page.events) $("events").append(eventRow(e, false));
  next = page.next_before;
  $("more").hidden = page.events.length < 50;
}
function stepRows(steps, depth, tbody) {
  for (const s of steps || []) {
    // Indented through the CSSOM: the policy refuses inline style attributes.
    const condition = el("td", { class: "mono" }, s.condition);
    condition.style.paddingLeft = `${0.6 + depth * 1.2}rem`;
    tbody.append(el("tr", { class: "cond-" + s.result },
      condition,
      el("td", { class: "mono" }, (s.found || []).join(", ")),
      el("td", { class: "res " + (s.result ? "yes" : "no") }, s.result ? "true" : "false"),
      el("td", {}, s.reason),
      el("td", { class: "muted mono" }, `${s.line}:${s.col}`)));
    stepRows(s.children, depth + 1, tbody);
  }
}
// Steps (actions with `needs`) and outputs. Everything here is drawn as text
// too: an output is whatever a remote answered or a command printed.
const EXCERPT = 160;
// One line, cut short: whitespace (and any control character) runs become one space.
function excerpt(text) {
  const t = String(text).replace(/[\s\x00-\x1f\x7f]+/g, " ").trim();
  return t.length > EXCERPT ? t.slice(0, EXCERPT - 1) + "…" : t;
}
// What an action's successful attempt returned: its status or exit code,
// then its parsed JSON, else its body or stdout. Email keeps nothing ({}).
function outputText(o) {
  if (!o || typeof o !== "object") return "";
  const parts = [];
  if (o.status != null) parts.push("HTTP " + o.status);
  else if (o.exit_code != null) parts.push("exit " + o.exit_code);
  const data = o.json != null ? JSON.stringify(o.json) : o.body || o.stdout || "";
  if (data !== "") parts.push(excerpt(data));
  return parts.length ? parts.join(" ") : "sent";
}
// The delivery of a step's need: same rule, and made by the same replay (a
// replay's step follows the replay's own need), else any of that action.
function needOf(all, dl, name) {
  const same = all.filter((x) => x.rule === dl.rule && x.action === name);
  return same.find((x) => (x.replayed_by || null) === (dl.replayed_by || null)) || same[0];
}
const shortTime = (t) => (t || "").replace("T", " ").slice(0, 19) + " UTC";
function fromNow(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return "now";
  if (s < 90) return `in ${s} s`;
  if (s < 90 * 60) return `in ${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}
// Label/value rows under a delivery's heading: what it runs after, when it
// is due, why it was skipped, its `when` as evaluated, the outputs it used
// (or, for a need, what it returned). Null when there is nothing to say.
function deliveryAbout(dl, all, trace) {
  const tbody = el("tbody");
  const row = (label, ...value) => tbody.append(el("tr", { class: label }, el("th", {}, label), el("td", {}, ...value)));
  const needs = dl.needs || [];
  if (needs.length) {
    const after = [];
    needs.forEach((n, i) => {
      const need = needOf(all, dl, n);
      if (i) after.push(", ");
      after.push(el("span", { class: "mono" }, n), " ", need ? pill(need.status) : el("span", { class: "muted" }, "(no delivery)"));
    });
    row("after", ...after);
  }
  if ((dl.status === "pending" || dl.status === "retrying") && dl.due_at) {
    row("due", el("span", { class: "mono" }, shortTime(dl.due_at)), " ", el("span", { class: "muted" }, `(${fromNow(dl.due_at_ms)})`));
  }
  if (dl.reason) row("skipped", dl.reason);
  if ((dl.when || []).length) {
    const body = el("tbody");
    stepRows(dl.when, 0, body);
    row("when", el("table", { class: "trace when" }, body));
  } else if (dl.status === "waiting") {
    // Not evaluated yet: the trace says when it will be.
    const rule = (trace || []).find((r) => r.rule === dl.rule);
    const line = rule && (rule.actions || []).find((a) => a.action === dl.action);
    if (line && line.note) row("when", el("span", { class: "muted" }, line.note));
  }
  if (needs.length) {
    const used = [];
    for (const n of needs) {
      const need = needOf(all, dl, n);
      const text = need && need.output ? outputText(need.output) : "none";
      used.push(el("div", { class: "output" }, el("span", { class: "mono need" }, n + ": "), el("span", { class: "mono" }, text)));
    }
    row("used", ...used);
  } else if (dl.output) {
    row("returned", el("span", { class: "mono" }, outputText(dl.output)));
  }
  return tbody.rows.length ? el("table", { class: "about", "data-id": dl.id }, tbody) : null;
}
async function showEvent(id) {
  selected = id;
  history.replaceState(null, "", "#" + id);
  for (const tr of document.querySelectorAll("#events tr")) tr.classList.toggle("selected", tr.dataset.id === id);
  const e = await api("/api/events/" + encodeURIComponent(id));
  const d = $("detail");
  d.replaceChildren(
    el("h2", {}, `${e.id} `, el("button", { id: "replay", onclick: () => replay(e.id) }, "Replay")),
    el("p", { class: "muted" }, `${e.method} ${e.path} from source ${e.source} at ${e.received_at}`));
  for (const f of e.facts || []) d.append(el("p", { class: "error" }, "note: " + f));
  d.append(el("h2", {}, "Why each rule did or did not fire"));
  for (const r of e.trace || []) {
    const verdict = r.disabled ? el("span", { class: "muted" }, "disabled") : r.matched ? el("span", { class: "yes" }, "matched") : el("span", { class: "no" }, "not matched");
    d.append(el("h3", { class: "rule" }, r.rule + " — ", verdict));
    const tbody = el("tbody");
    if (!(r.conditions || []).length && !r.disabled) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "no conditions: every event of the source")));
    stepRows(r.conditions, 0, tbody);
    d.append(el("table", { class: "trace" }, el("thead", {}, el("tr", {}, el("th", {}, "condition"), el("th", {}, "found"), el("th", {}, "result"), el("th", {}, "why"), el("th", {}, "at"))), tbody));
  }
  d.append(el("h2", {}, "Deliveries"));
  if (!(e.deliveries || []).length) d.append(el("p", { class: "muted" }, "none"));
  for (const dl of e.deliveries || []) {
    const head = el("h3", { class: "delivery", "data-id": dl.id }, `${dl.rule}/${dl.action} (${dl.type}) `, pill(dl.status), ` ${deliveryAttempts(dl)} `);
    if (dl.status === "dead" || dl.status === "skipped") head.append(el("button", { class: "retry", onclick: () => retry(dl.id) }, "Retry"));
    d.append(head);
    const about = deliveryAbout(dl, e.deliveries, e.trace);
    if (about) d.append(about);
    const tbody = el("tbody");
    for (const a of dl.attempt_log || []) {
      tbody.append(el("tr", {},
        el("td", { class: "attempt" }, attemptLabel(a, dl.budget)), el("td", { class: "mono" }, a.started_at), el("td", {}, a.duration_ms + " ms"),
        el("td", { class: a.outcome === "succeeded" ? "yes" : "no" }, a.outcome),
        el("td", {}, a.status_code != null ? "HTTP " + a.status_code : a.exit_code != null ? "exit " + a.exit_code : ""),
        el("td", { class: "error" }, a.error || "")));
      if (a.response) tbody.append(el("tr", {}, el("td", { colspan: "6" }, el("pre", {}, a.response))));
    }
    d.append(el("table", { class: "attempts" }, tbody));
  }
  d.append(el("h2", {}, "Request"), el("pre", { class: "headers" }, (e.headers || []).map(([k, v]) => `${k}: ${v}`).join("\n")), el("pre", {}, e.body));
}
async function retry(id) { await api(`/api/deliveries/${encodeURIComponent(id)}/retry`, "POST"); setTimeout(() => showEvent(selected), 300); }
async function replay(id) { await api(`/api/events/${encodeURIComponent(id)}/replay`, "POST"); setTimeout(() => showEvent(id), 300); }
async function loadRules() {
  const r = await api("/api/rules");
  const err = r.reload && r.reload.last_error;
  $("ruleset").replaceChildren(`rule set v${r.version}: ${r.sources.length} sources, ${r.rules.length} rules`);
  if (err && err.length) $("ruleset").append(" — ", el("span", { class: "error", id: "reload-error" }, `last reload failed: ${err[0].file}:${err[0].line}:${err[0].col}: ${err[0].message}`));
  // After a reload: what it changed on the stored events, one click away.
  if (r.version > 1) $("ruleset").append(" ", el("button", { id: "reload-diff", onclick: () => showReloadDiff().catch((e) => $("detail").replaceChildren(el("p", { class: "error" }, "cannot backtest: " + e.message))) }, `what v${r.version} changed`));
  const current = $("source").value;
  $("source").replaceChildren(el("option", { value: "" }, "all sources"), ...r.sources.map((s) => el("option", { value: s.name }, s.name)));
  $("source").value = current;
}
// What the last reload changed on the last 1,000 stored events
// (GET /api/backtest/last-reload): per rule, the events that started or
// stopped matching and the rendered fields that differ.
const ids = (list) => {
  const span = el("span", { class: "mono" });
  list.slice(0, 5).forEach((id, i) => span.append(i ? ", " : "", el("a", { href: "#" + id, onclick: (ev) => { ev.preventDefault(); showEvent(id).catch(() => {}); } }, id)));
  if (list.length > 5) span.append(` and ${list.length - 5} more`);
  return span;
};
async function showReloadDiff() {
  selected = null;
  const r = await api("/api/backtest/last-reload");
  const d = $("detail");
  d.replaceChildren(
    el("h2", { id: "backtest" }, `What v${r.candidate_version} changed (against v${r.baseline_version})`),
    el("p", { class: "muted" }, `on the last ${r.events} stored events, evaluated with each set; nothing was sent`),
    el("p", { class: r.changed ? "no" : "yes", id: "verdict" }, r.verdict));
  const rows = el("tbody");
  let same = 0;
  for (const rule of r.rules) {
    if (rule.status === "same") { same++; continue; }
    const what = el("td");
    if (rule.started.length) what.append(el("div", {}, `+${rule.started.length} started: `, ids(rule.started)));
    if (rule.stopped.length) what.append(el("div", {}, `−${rule.stopped.length} stopped: `, ids(rule.stopped)));
    for (const x of rule.differences) {
      what.append(el("div", {}, `${x.action}/${x.field} differs on ${x.events} event(s), e.g. `, ids([x.example])),
        el("pre", { class: "diff" }, `- ${JSON.stringify(x.before)}\n+ ${JSON.stringify(x.after)}`));
    }
    rows.append(el("tr", { "data-rule": rule.rule }, el("td", {}, rule.rule), el("td", {}, rule.status), el("td", {}, `${rule.before} → ${rule.after}`), what));
  }
  d.append(el("table", { class: "backtest" }, el("thead", {}, el("tr", {}, el("th", {}, "rule"), el("th", {}, ""), el("th", {}, "matched"), el("th", {}, "what changed"))), rows));
  if (same) d.append(el("p", { class: "muted" }, `${same} rule${same === 1 ? "" : "s"} unchanged`));
}
// The queue depth as /metrics counts it: one count over an index, where
// listing the waiting deliveries would read and send hundreds of them.
async function loadQueue() {
  const r = await fetch("/metrics").catch(() => null);
  const text = r && r.ok ? await r.text().catch(() => "") : "";
  const m = /^hookwire_queue_depth(?:\{[^}]*\})? (\d+)/m.exec(text);
  if (m) $("queue").textContent = `queue: ${m[1]}`;
}
const reloadQueue = throttled(loadQueue);
const reloadSelected = throttled(() => { if (selected) showEvent(selected).catch(() => {}); });
// Rows whose deliveries changed since the last reload.
const changed = new Set();
const rowOf = (id) => document.querySelector(`#events tr[data-id="${CSS.escape(id)}"]`);
const reloadRows = throttled(() => {
  for (const id of changed) if (!rowOf(id)) changed.delete(id);
  const ids = [...changed].sort().reverse().slice(0, MAX_ROW_RELOADS);
  for (const id of ids) {
    changed.delete(id);
    const row = rowOf(id);
    api("/api/events/" + encodeURIComponent(id)).then((e) => row.replaceWith(eventRow(e, false))).catch(() => {});
  }
  // The rest in the next reload.
  if (changed.size) reloadRows();
});
// Keeps the table at MAX_ROWS: paging goes on from the last row kept.
function trimRows() {
  const rows = $("events").rows;
  if (rows.length <= MAX_ROWS) return;
  while (rows.length > MAX_ROWS) rows[rows.length - 1].remove();
  next = rows[rows.length - 1].dataset.id;
  $("more").hidden = false;
}
// Targets whose breaker is open or probing: their deliveries are held.
async function loadTargets() {
  const t = await api("/api/targets").catch(() => null);
  if (!t) return;
  const failing = t.targets.filter((x) => x.breaker !== "closed");
  $("targets").textContent = failing.length
    ? "breaker open: " + failing.map((x) => `${x.target} (${x.consecutive_failures} failures${x.probe_in_secs != null ? `, probe in ${Math.ceil(x.probe_in_secs)} s` : ", probing"})`).join(", ")
    : "";
}
async function live() {
  let ticket;
  try {
    ticket = (await api("/api/stream/ticket", "POST")).ticket;
  } catch (e) {
    $("live").textContent = "○ offline"; $("live").className = "muted";
    if (e.status !== 401) setTimeout(live, 3000);
    return;
  }
  const src = new EventSource("/api/stream?ticket=" + encodeURIComponent(ticket));
  src.onopen = () => { $("live").textContent = "● live"; $("live").className = "yes"; };
  // A ticket opens one stream once, so EventSource's own reconnect (same URL)
  // would be refused: this stream is done, and the next one gets a new ticket.
  src.onerror = () => {
    src.close();
    $("live").textContent = "○ reconnecting"; $("live").className = "muted";
    setTimeout(live, 2000);
  };
  src.addEventListener("event", async (m) => {
    const e = JSON.parse(m.data);
    if ($("source").value && $("source").value !== e.source) return;
    const matched = (e.matched || []).length > 0;
    if ($("matched").value && String(matched) !== $("matched").value) return;
    $("events").prepend(eventRow({ ...e, deliveries: [] }, true));
    trimRows();
  });
  src.addEventListener("delivery", (m) => {
    const dl = JSON.parse(m.data);
    if (rowOf(dl.event_id)) {
      changed.add(dl.event_id);
      reloadRows();
    }
    if (selected === dl.event_id) reloadSelected();
    reloadQueue();
  });
}
// The overview strip: this instance's last hour (/api/overview), drawn as
// inline SVG built node by node (names reach it only as text nodes), so the
// strict policy needs no exception: no library, no inline style.
const SVG_NS = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}, ...kids) => {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const CHART_W = 300, CHART_H = 64, SOURCE_COLOURS = 6;
const minuteLabel = (start, i) => new Date(start + i * 60000).toISOString().slice(11, 16) + " UTC";
function legend(figure, items) {
  const p = figure.querySelector(".legend");
  p.replaceChildren(...items.flatMap(([cls, text]) => [el("span", { class: "swatch " + cls }), text]));
}
function empty(chart, text) {
  chart.replaceChildren(svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, class: "empty" },
    svg("text", { x: CHART_W / 2, y: CHART_H / 2, "text-anchor": "middle" }, text)));
}
// Bars per minute, one stacked segment per series, oldest minute on the left.
function stackedBars(figure, series, cls, start, what) {
  const chart = figure.querySelector(".chart");
  const minutes = series.length ? series[0].per_minute.length : 60;
  const sums = Array.from({ length: minutes }, (_, i) => series.reduce((n, s) => n + s.per_minute[i], 0));
  const max = Math.max(...sums, 0);
  legend(figure, series.map((s, k) => [cls(s, k), `${s.name} ${s.total}`]));
  if (max === 0) return empty(chart, `no ${what} in the last hour`);
  const w = CHART_W / minutes;
  const g = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img", "aria-label": `${what} per minute, most ${max}` });
  for (let i = 0; i < minutes; i++) {
    let y = CHART_H - 10;
    series.forEach((s, k) => {
      const v = s.per_minute[i];
      if (!v) return;
      const h = Math.max(1, (v / max) * (CHART_H - 14));
      y -= h;
      g.append(svg("rect", { class: "bar " + cls(s, k), x: (i * w).toFixed(2), y: y.toFixed(2), width: Math.max(0.5, w - 0.6).toFixed(2), height: h.toFixed(2) },
        svg("title", {}, `${s.name}: ${v} at ${minuteLabel(start, i)}`)));
    });
  }
  g.append(svg("line", { class: "axis", x1: 0, x2: CHART_W, y1: CHART_H - 10, y2: CHART_H - 10 }),
    svg("text", { x: 0, y: CHART_H }, "−60 min"), svg("text", { x: CHART_W, y: CHART_H, "text-anchor": "end" }, "now"),
    svg("text", { x: CHART_W, y: 8, "text-anchor": "end" }, `${max}/min`));
  chart.replaceChildren(g);
}
function queueChart(figure, samples, start, now) {
  const chart = figure.querySelector(".chart");
  if (!samples.length) { legend(figure, []); return empty(chart, "no readings yet"); }
  const max = Math.max(...samples.map((s) => s.depth), 1);
  const x = (at) => ((at - start) / Math.max(1, now - start)) * CHART_W;
  const y = (d) => CHART_H - 10 - (d / max) * (CHART_H - 14);
  const pts = samples.map((s) => `${x(s.at).toFixed(1)},${y(s.depth).toFixed(1)}`);
  const first = x(samples[0].at).toFixed(1), last = x(samples[samples.length - 1].at).toFixed(1);
  const g = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img", "aria-label": `queue depth, now ${samples[samples.length - 1].depth}` },
    svg("polygon", { class: "depth-area", points: `${first},${CHART_H - 10} ${pts.join(" ")} ${last},${CHART_H - 10}` }),
    svg("polyline", { class: "depth-line", points: pts.join(" ") }),
    // The newest reading, visible even when it is the only one.
    svg("circle", { class: "depth-now", cx: last, cy: y(samples[samples.length - 1].depth).toFixed(1), r: 2.5 }),
    svg("line", { class: "axis", x1: 0, x2: CHART_W, y1: CHART_H - 10, y2: CHART_H - 10 }),
    svg("text", { x: 0, y: CHART_H }, "−60 min"), svg("text", { x: CHART_W, y: CHART_H, "text-anchor": "end" }, "now"),
    svg("text", { x: CHART_W, y: 8, "text-anchor": "end" }, `max ${max}`));
  chart.replaceChildren(g);
  const d = samples[samples.length - 1].depth;
  figure.querySelector(".legend").textContent = `now ${d} waiting, ${samples.length} reading${samples.length === 1 ? "" : "s"}`;
}
const ms = (v) => v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s` : `${v.toFixed(v >= 10 ? 0 : 1)} ms`;
function slowestChart(figure, slow) {
  const chart = figure.querySelector(".chart");
  if (!slow.length) return empty(chart, "no attempts in the last hour");
  const max = Math.max(...slow.map((s) => s.p95_ms), 0.001);
  const row = CHART_H / 5;
  const g = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img", "aria-label": "slowest actions by p95 attempt duration" });
  slow.forEach((s, i) => {
    const y = i * row;
    const w = Math.max(1, (s.p95_ms / max) * (CHART_W * 0.35));
    g.append(svg("g", { class: "slow" },
      svg("title", {}, `${s.target}: p95 ${ms(s.p95_ms)} over ${s.attempts} attempts`),
      svg("text", { class: "label", x: 0, y: y + row - 3 }, s.target.length > 30 ? s.target.slice(0, 29) + "…" : s.target),
      svg("rect", { class: "slow-bar", x: CHART_W * 0.48, y: y + 2, width: w.toFixed(1), height: row - 4 }),
      svg("text", { x: CHART_W, y: y + row - 3, "text-anchor": "end" }, ms(s.p95_ms))));
  });
  chart.replaceChildren(g);
}
async function loadOverview() {
  const o = await api("/api/overview").catch(() => null);
  if (!o) return;
  stackedBars($("chart-events"), o.events, (s, k) => "s" + (k % SOURCE_COLOURS), o.start, "events");
  stackedBars($("chart-outcomes"), o.outcomes, (s) => "o-" + s.name, o.start, "attempts");
  queueChart($("chart-queue"), o.queue_depth, o.start, o.now);
  slowestChart($("chart-slowest"), o.slowest);
}
// Cheap (counts kept in memory), and a minute is the charts' resolution.
const OVERVIEW_EVERY = 5000;
loadOverview();
setInterval(loadOverview, OVERVIEW_EVERY);

$("source").onchange = $("matched").onchange = () => loadEvents(false);
$("more").onclick = () => loadEvents(true);
loadRules().catch((e) => { $("ruleset").textContent = "cannot load: " + e.message; });
loadEvents(false).catch((e) => { $("detail").replaceChildren(el("p", { class: "error" }, "cannot load events: " + e.message)); });
// A link to one event: /#evt_…
if (location.hash.startsWith("#evt_")) showEvent(location.hash.slice(1)).catch(() => {});
loadQueue();
setInterval(() => loadRules().catch(() => {}), 5000);
live();
loadTargets();
setInterval(loadTargets, 5000);
