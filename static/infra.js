// /infra, live: one websocket, keyed DOM updates, no framework and no build step.
// The server renders the first paint; this module only applies what changes. Markup for
// new rows comes from the page's <template> elements, so it has one source.
// Formatting mirrors dashboard/templatetags/infra.py; keep the two in step.

// dashboard/routing.py; websocket routes cannot be reversed from a template.
const WS_PATH = "/ws/infra/";
// Close codes that say why the server ended a connection (dashboard/consumers.py,
// door/wscap.py); they decide when, and how eagerly, to come back.
const CLOSE_TOO_SLOW = 4408; // this page fell behind: a fresh connection catches it up
const CLOSE_TOO_MANY_TABS = 4429; // too many connections from this address
const CLOSE_SERVER_FULL = 4503; // this server has no room; try later
// The wait before the next try is random, between `floor` and `floor + ceiling` ms, and
// the ceiling doubles with each failure in a row up to `cap` ("full jitter"). When a
// server restarts, every page it served loses its connection at the same instant; drawn
// this way, 5,000 of them come back over 2.5 s (2,000 a second, within what one web
// process accepts) instead of in one burst, and thinner with every round that fails.
const RETRY = {
  lost: { floor: 250, base: 2_500, cap: 30_000 },
  full: { floor: 5_000, base: 20_000, cap: 120_000 },
  tabs: { floor: 30_000, base: 60_000, cap: 300_000 },
};
// Missing this many poller ticks in a row means the numbers on screen are old news.
const STALE_AFTER_POLLS = 3;
const LIST_LIMIT = 20;
const GIB = 1024 ** 3;
const SPARK = { height: 40, margin: 4, minSpan: 10 };

const $ = (selector, root = document) => root.querySelector(selector);
const initial = JSON.parse($("#initial-state").textContent);
const pollMs = (initial.poll_interval_s || 5) * 1000;
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");

// -- formatting

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const fixed = (v, digits = 1) => (num(v) === null ? "—" : v.toFixed(digits));
const gib = (v) => (num(v) === null ? "—" : (v / GIB).toFixed(1));
const two = (n) => String(n).padStart(2, "0");
const clock = (d) => `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;

function level(percent) {
  const p = num(percent);
  if (p === null) return "unknown";
  return p >= 90 ? "critical" : p >= 70 ? "warning" : "ok";
}

function podsLevel(pods) {
  const running = num(pods?.running);
  const total = num(pods?.total);
  if (running === null || total === null) return "unknown";
  if (total === 0 || running >= total) return "ok";
  return running < total / 2 ? "critical" : "warning";
}

function toDate(value) {
  if (typeof value === "string") {
    // A time without a zone is UTC, as on the server (JavaScript would read it as local).
    const zoned = !/T/.test(value) || /(Z|[+-]\d\d:?\d\d)$/i.test(value);
    const d = new Date(zoned ? value : `${value}Z`);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  const n = num(value);
  return n === null ? null : new Date(n > 1e11 ? n : n * 1000);
}

function ratio(used, total) {
  const a = num(used);
  const b = num(total);
  return a === null || b === null || b <= 0 ? 0 : Math.max(0, Math.min(100, (a / b) * 100));
}

function setTime(el, value) {
  const d = toDate(value);
  el.dateTime = d ? d.toISOString() : "";
  el.textContent = d ? clock(d) : "—";
}

// -- numbers that glide to their new value

const glides = new WeakMap();

function glide(el, to, digits) {
  const target = num(to);
  glides.delete(el);
  if (target === null) {
    el.textContent = "—";
    return;
  }
  const from = Number.parseFloat(el.textContent);
  if (!Number.isFinite(from) || from === target || reducedMotion.matches || document.hidden) {
    el.textContent = target.toFixed(digits);
    return;
  }
  const token = {};
  glides.set(el, token);
  const start = performance.now();
  const step = (now) => {
    if (glides.get(el) !== token) return;
    const t = Math.min(1, (now - start) / 700);
    const eased = 1 - (1 - t) ** 3;
    el.textContent = (from + (target - from) * eased).toFixed(digits);
    if (t < 1) requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

// -- metrics

function card(id, value, digits, lvl) {
  const el = document.getElementById(id);
  el.dataset.level = lvl;
  glide($(".value", el), value, digits);
}

// [[ts, value], ...] -> "x,y" pairs in the sparkline's 0 0 100 40 viewBox.
function sparkPoints(series) {
  const clean = series
    .filter((p) => Array.isArray(p) && num(p[0]) !== null && num(p[1]) !== null)
    .sort((a, b) => a[0] - b[0]);
  if (clean.length < 2) return [];
  const values = clean.map((p) => p[1]);
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (high - low < SPARK.minSpan) {
    const middle = (high + low) / 2;
    [low, high] = [middle - SPARK.minSpan / 2, middle + SPARK.minSpan / 2];
  }
  const t0 = clean[0][0];
  const width = clean.at(-1)[0] - t0 || 1;
  const span = high - low || 1;
  const usable = SPARK.height - 2 * SPARK.margin;
  return clean.map(([t, v]) => [
    (((t - t0) / width) * 100).toFixed(2),
    (SPARK.height - SPARK.margin - ((v - low) / span) * usable).toFixed(2),
  ]);
}

function spark(id, history, ts, current) {
  // History is refreshed about once a minute; appending the live value keeps the line's
  // tip moving with the big number beside it.
  const series = Array.isArray(history) ? [...history] : [];
  const t = toDate(ts)?.getTime() / 1000;
  if (t && num(current) !== null && !(series.at(-1)?.[0] >= t)) series.push([t, current]);
  const points = sparkPoints(series);
  const line = points.map((p) => p.join(",")).join(" ");
  const svg = document.getElementById(id);
  $(".spark-line", svg).setAttribute("points", line);
  const bottom = (p) => `${p[0]},${SPARK.height}`;
  $(".spark-area", svg).setAttribute(
    "points",
    points.length ? `${bottom(points[0])} ${line} ${bottom(points.at(-1))}` : "",
  );
  // Element styles are CSSOM, which a CSP without 'unsafe-inline' allows.
  const dot = $(".spark-dot", svg.parentElement);
  const tip = points.at(-1);
  dot.hidden = !tip;
  if (tip) {
    dot.style.left = `${tip[0]}%`;
    dot.style.top = `${(tip[1] / SPARK.height) * 100}%`;
  }
}

function fromTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function field(el, name) {
  return el.querySelector(`[data-field="${name}"]`);
}

// Reconciles a list in place by key, touching only what changed, so running CSS
// animations (a pulsing dot) are not restarted by every frame. New rows come from the
// page's <template id="{kind}-template">, keyed by their data-{kind} attribute.
function reconcile(list, kind, items, update) {
  const existing = new Map([...list.children].map((el) => [el.dataset[kind], el]));
  items.forEach((item, index) => {
    const key = String(item.name);
    let el = existing.get(key);
    existing.delete(key);
    if (!el) {
      el = fromTemplate(`${kind}-template`);
      el.dataset[kind] = key;
    }
    update(el, item);
    if (list.children[index] !== el) list.insertBefore(el, list.children[index] || null);
  });
  for (const gone of existing.values()) gone.remove();
}

function renderNodes(nodes) {
  reconcile($("#nodes"), "node", Array.isArray(nodes) ? nodes : [], (el, n) => {
    const percent = ratio(n.memory_used_bytes, n.memory_total_bytes);
    el.dataset.ready = String(n.ready === true);
    field(el, "name").textContent = String(n.name);
    field(el, "state").textContent = n.ready ? "ready" : "not ready";
    const known = num(n.memory_used_bytes) !== null && num(n.memory_total_bytes) !== null;
    field(el, "memory").textContent = known
      ? `${gib(n.memory_used_bytes)} / ${gib(n.memory_total_bytes)} GiB`
      : "no data";
    const fill = $(".bar-fill", el);
    fill.setAttribute("width", percent.toFixed(2));
    fill.dataset.level = known ? level(percent) : "unknown";
  });
}

// One cell per pod, as dashboard/templatetags/infra.py's pod_cells draws them.
const MAX_POD_CELLS = 120;

function renderCells(pods) {
  const running = num(pods?.running);
  const total = num(pods?.total);
  const cells = total && running !== null ? Math.min(Math.trunc(total), MAX_POD_CELLS) : 0;
  const lit = cells ? Math.round((Math.max(0, Math.min(running, total)) / total) * cells) : 0;
  const list = $("#metric-pods .cells");
  while (list.children.length > cells) list.lastElementChild.remove();
  while (list.children.length < cells) list.append(document.createElement("li"));
  [...list.children].forEach((li, i) => li.classList.toggle("on", i < lit));
}

let metrics = initial.metrics;
let metricsHeardAt = metrics ? Date.now() : 0;

function renderMetrics(m) {
  // A replay of the frame we already have (on reconnect) is not news from the poller.
  if (!metrics || m?.ts !== metrics.ts) {
    metricsHeardAt = Date.now();
    heartbeat();
  }
  metrics = m;
  $("#waiting").hidden = Boolean(m);
  if (!m) return;
  card("metric-pods", m.pods?.running, 0, podsLevel(m.pods));
  $("#metric-pods .total").textContent = fixed(m.pods?.total, 0);
  renderCells(m.pods);
  card("metric-cpu", m.cpu?.used_percent, 1, level(m.cpu?.used_percent));
  card("metric-memory", m.memory?.used_percent, 1, level(m.memory?.used_percent));
  $("#memory-used").textContent = gib(m.memory?.used_bytes);
  $("#memory-total").textContent = gib(m.memory?.total_bytes);
  spark("spark-cpu", m.history?.cpu, m.ts, m.cpu?.used_percent);
  spark("spark-memory", m.history?.memory, m.ts, m.memory?.used_percent);
  renderNodes(m.nodes);
  setTime($("#updated-at"), m.ts);
  renderBadge();
}

// -- pods

function renderPods(list) {
  if (!list) return;
  const pods = Array.isArray(list.pods) ? list.pods : [];
  $("#pods-ready").textContent = fixed(list.ready, 0);
  $("#pods-desired").textContent = fixed(list.desired, 0);
  $("#pods-empty").hidden = pods.length > 0;
  reconcile($("#pods"), "pod", pods, (el, p) => {
    el.dataset.status = String(p.status);
    el.dataset.ready = String(p.ready === true);
    // The random tail is what tells replicas apart, so it is the part that stands out.
    const name = String(p.name);
    const cut = name.lastIndexOf("-") + 1;
    field(el, "name").title = name;
    field(el, "prefix").textContent = name.slice(0, cut);
    field(el, "suffix").textContent = name.slice(cut);
    field(el, "status").textContent = String(p.status);
    field(el, "node").textContent = p.node
      ? String(p.node)
      : p.status === "Pending"
        ? "unscheduled"
        : "";
  });
  // The narrated events feed is optional (it needs RBAC on events); its panel shows up
  // only once the watcher sends one.
  $(".k8s-panel").hidden = !Array.isArray(list.events);
  if (Array.isArray(list.events)) renderK8sEvents(list.events);
}

function renderK8sEvents(events) {
  const items = events.slice(-LIST_LIMIT).reverse().map((e) => {
    const li = document.createElement("li");
    const time = document.createElement("time");
    setTime(time, e.at);
    const reason = document.createElement("b");
    reason.textContent = String(e.reason ?? "");
    const text = document.createElement("span");
    text.textContent = String(e.text ?? "");
    li.append(time, " ", reason, " ", text);
    return li;
  });
  const list = $("#k8s-events");
  // Unchanged feeds are left alone so their entry animation does not replay.
  if (list.textContent !== items.map((li) => li.textContent).join("")) list.replaceChildren(...items);
}

// -- chaos events, recovery timing, history

const mine = new Set();

function markMine(el) {
  el.dataset.mine = "true";
  field(el, "who").textContent = "You";
}

// -- recovery timelines: the phases of each kill (chaos/timeline.py), drawn as
// dashboard/templatetags/infra.py's `timeline` tag draws them on the server.

const PHASES = {
  created: ["controller", "the ReplicaSet controller created a replacement"],
  scheduled: ["scheduler", "the scheduler placed it on a node"],
  started: ["kubelet", "the kubelet started its containers"],
  ready: ["probe", "the readiness probe passed"],
};
const TIMELINE_MIN_SCALE_S = 5;
const SVG_NS = "http://www.w3.org/2000/svg";
// What each row last showed, by event id, so a rescale can redraw every bar.
const shownEvents = new Map();

const duration = (v) => (num(v) === null ? "—" : `${v.toFixed(2)} s`);
const stepsOf = (ev) => (Array.isArray(ev?.phases?.steps) ? ev.phases.steps : []);

function timelineEnd(ev) {
  const total = num(ev.recovery_s);
  if (total !== null) return total;
  const ends = stepsOf(ev).map((s) => num(s.end_s)).filter((v) => v !== null);
  return ends.length ? Math.max(...ends) : null;
}

function timelineScale(events) {
  let longest = TIMELINE_MIN_SCALE_S;
  for (const ev of events) {
    longest = Math.max(longest, timelineEnd(ev) ?? 0, num(ev.phases?.terminated?.s) ?? 0);
  }
  return Math.ceil(longest);
}

function phaseWords(step) {
  const [label, what] = PHASES[step.name] ?? [String(step.name), String(step.name)];
  if (step.state === "done") return `${label} ${duration(step.s)}: ${what}`;
  return step.state === "unknown" ? `${label}: not seen` : `${label}: waiting`;
}

function renderTimeline(el, ev, span) {
  const box = field(el, "timeline");
  const phases = ev.phases && typeof ev.phases === "object" ? ev.phases : null;
  box.hidden = !phases;
  el.dataset.complete = String(phases?.complete === true);
  if (!phases) return;
  const steps = stepsOf(ev);
  const total = num(ev.recovery_s);
  const x = (s) => Number(Math.max(0, Math.min(100, (s / span) * 100)).toFixed(2));
  const segs = [...box.querySelectorAll(".tl-seg")];
  let start = 0;
  let pendingShown = false;
  steps.forEach((step, i) => {
    const seg = segs[i];
    if (!seg) return;
    let end = num(step.end_s);
    if (end === null && total !== null && i === steps.length - 1) end = total;
    let width = 0;
    let state = String(step.state);
    const left = x(start);
    if (end !== null) {
      width = x(end) - left;
      start = end;
    } else if (state === "pending" && !pendingShown) {
      pendingShown = true;
      width = 2;
    }
    seg.dataset.phase = String(step.name);
    seg.dataset.state = state;
    seg.setAttribute("x", String(left));
    seg.setAttribute("width", String(Math.max(0, width)));
  });
  const victim = phases.terminated ?? {};
  const victimS = num(victim.s);
  $(".tl-victim", box).setAttribute("width", String(victimS === null ? 0 : x(victimS)));
  const words = steps.map((step) => [String(step.name), String(step.state), phaseWords(step)]);
  words.push([
    "victim",
    String(victim.state),
    victimS !== null
      ? `victim shut down in ${duration(victimS)}`
      : victim.state === "unknown"
        ? "victim's shutdown: not seen"
        : "victim still shutting down",
  ]);
  const list = field(el, "timeline-words");
  const text = words.map((w) => w[2]).join("");
  if (list.textContent === text) return;
  list.replaceChildren(
    ...words.map(([phase, state, line]) => {
      const span_ = document.createElement("span");
      span_.className = "tl-word";
      span_.dataset.phase = phase;
      span_.dataset.state = state;
      span_.textContent = line;
      return span_;
    }),
  );
}

function historyScale() {
  return timelineScale([...shownEvents.values()]);
}

function rescale() {
  const history = $("#chaos-history");
  const span = historyScale();
  if (Number(history.dataset.scale) === span) return span;
  history.dataset.scale = String(span);
  for (const el of document.querySelectorAll(".event[data-event-id]")) {
    const ev = shownEvents.get(el.dataset.eventId);
    if (ev) renderTimeline(el, ev, span);
  }
  return span;
}

function fillEvent(el, ev) {
  el.dataset.eventId = String(ev.id);
  const healed = num(ev.recovery_s) !== null;
  el.dataset.healed = String(healed);
  if (mine.has(String(ev.id))) markMine(el);
  setTime(field(el, "at"), ev.at);
  field(el, "pod").textContent = String(ev.pod ?? "");
  field(el, "pod").title = String(ev.pod ?? "");
  field(el, "recovery").textContent = healed ? `healed in ${ev.recovery_s.toFixed(1)} s` : "healing…";
  // A frame without phases (the press's own quick answer) keeps what a row already has.
  const known = shownEvents.get(String(ev.id));
  const merged = ev.phases === undefined && known ? { ...ev, phases: known.phases } : ev;
  shownEvents.set(String(ev.id), merged);
  renderTimeline(el, merged, rescale());
}

function upsertEvent(list, ev) {
  let el = list.querySelector(`[data-event-id="${CSS.escape(String(ev.id))}"]`);
  if (!el) {
    el = fromTemplate("event-template");
    list.prepend(el);
    while (list.children.length > LIST_LIMIT) list.lastElementChild.remove();
  }
  fillEvent(el, ev);
}

function forgetGoneEvents() {
  const ids = new Set([...document.querySelectorAll(".event[data-event-id]")].map((el) => el.dataset.eventId));
  for (const id of shownEvents.keys()) if (!ids.has(id)) shownEvents.delete(id);
}

// -- the 24 h chart: one stack per healed kill, the running p50 of the last ten

const CHART = { width: 240, height: 60, bar: 1.6, windowS: 24 * 3600, p50Of: 10 };
let chartPoints = Array.isArray(initial.chaos?.chart) ? initial.chaos.chart : [];

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function renderChart() {
  const right = Date.now() / 1000;
  const left = right - CHART.windowS;
  const clean = chartPoints
    .filter((p) => Array.isArray(p) && num(p[1]) !== null && num(p[2]) !== null && p[1] >= left)
    .sort((a, b) => a[1] - b[1]);
  chartPoints = clean;
  const top = Math.ceil(Math.max(TIMELINE_MIN_SCALE_S, ...clean.map((p) => p[2])));
  const y = (s) => (s / top) * CHART.height;
  const rects = [];
  const line = [];
  const totals = [];
  for (const [, ts, total, parts] of clean) {
    const bx = Number(Math.min(CHART.width - CHART.bar, ((ts - left) / CHART.windowS) * CHART.width).toFixed(2));
    let base = 0;
    const stack = (phase, seconds) => {
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.dataset.phase = phase;
      rect.setAttribute("x", String(bx));
      rect.setAttribute("y", (CHART.height - y(base + seconds)).toFixed(2));
      rect.setAttribute("width", String(CHART.bar));
      rect.setAttribute("height", y(seconds).toFixed(2));
      rects.push(rect);
      base += seconds;
    };
    Object.keys(PHASES).forEach((phase, i) => {
      const part = Array.isArray(parts) ? num(parts[i]) : null;
      if (part !== null && part > 0) stack(phase, part);
    });
    if (total - base > 0.005) stack("unknown", total - base);
    totals.push(total);
    const p50 = median(totals.slice(-CHART.p50Of));
    line.push(`${(bx + CHART.bar / 2).toFixed(2)},${(CHART.height - y(p50)).toFixed(2)}`);
  }
  const svg = $("#recovery-chart");
  $(".rchart-bars", svg).replaceChildren(...rects);
  $(".rchart-p50", svg).setAttribute("points", line.join(" "));
  $("#rchart-top").textContent = String(top);
  $(".rchart-empty").hidden = clean.length > 0;
  svg.setAttribute(
    "aria-label",
    clean.length
      ? `${clean.length} recoveries in the last 24 hours, from ${Math.min(...totals).toFixed(1)} to ${Math.max(...totals).toFixed(1)} seconds, median ${median(totals).toFixed(1)} seconds`
      : "No recoveries in the last 24 hours yet",
  );
}

function chartAdd(ev) {
  if (num(ev.recovery_s) === null) return;
  const at = toDate(ev.at);
  if (!at) return;
  const parts = stepsOf(ev).map((s) => num(s.s));
  const point = [ev.id, at.getTime() / 1000, ev.recovery_s, parts.length ? parts : null];
  const index = chartPoints.findIndex((p) => String(p[0]) === String(ev.id));
  if (index >= 0) chartPoints[index] = point;
  else chartPoints.push(point);
  renderChart();
}

// -- what a screen reader hears: one polite sentence per kill and one per heal. The
// visitor who pressed hears theirs from the button's own message instead.

const announcer = $("#announcer");
const announced = new Set();
let pressing = false;
let deferred = [];

function announce(ev) {
  if (pressing) {
    deferred.push(ev);
    return;
  }
  const id = String(ev.id);
  const healed = num(ev.recovery_s) !== null;
  const key = `${id}:${healed ? "heal" : "kill"}`;
  if (mine.has(id) || announced.has(key)) return;
  announced.add(key);
  if (healed) {
    announced.add(`${id}:kill`);
    announcer.textContent = `Kubernetes healed ${ev.pod} in ${ev.recovery_s.toFixed(1)} seconds.`;
  } else {
    announcer.textContent = `A visitor killed ${ev.pod}. Kubernetes is replacing it.`;
  }
}

function flushAnnouncements() {
  pressing = false;
  const queued = deferred;
  deferred = [];
  queued.forEach(announce);
}

function renderRecovery(recovery) {
  if (!recovery) return;
  for (const [id, value] of [["#recovery-p50", recovery.p50_s], ["#recovery-p95", recovery.p95_s]]) {
    const el = $(id);
    el.textContent = fixed(value);
    el.parentElement.toggleAttribute("data-empty", num(value) === null);
  }
  $("#recovery-count").textContent = fixed(recovery.count, 0);
}

const healedMine = new Set();

function onChaos(ev) {
  if (!ev || ev.id === undefined || ev.outcome !== "deleted") return;
  upsertEvent($("#chaos-feed"), ev);
  upsertEvent($("#chaos-history"), ev);
  forgetGoneEvents();
  renderRecovery(ev.recovery);
  chartAdd(ev);
  announce(ev);
  const id = String(ev.id);
  if (mine.has(id) && num(ev.recovery_s) !== null && !healedMine.has(id)) {
    healedMine.add(id);
    say(`Kubernetes replaced ${ev.pod} in ${ev.recovery_s.toFixed(1)} s. Self-healing works.`, "ok");
  }
}

function renderSummary(chaos) {
  if (!chaos) return;
  renderRecovery(chaos.recovery);
  // The server's list is the truth after a reconnect: kills missed meanwhile may be older
  // than ones already shown, so the list is rebuilt in its order, reusing known rows.
  const history = $("#chaos-history");
  const recent = Array.isArray(chaos.recent) ? chaos.recent : [];
  history.replaceChildren(
    ...recent.slice(0, LIST_LIMIT).map((ev) => {
      const el = history.querySelector(`[data-event-id="${CSS.escape(String(ev.id))}"]`);
      const row = el ?? fromTemplate("event-template");
      fillEvent(row, ev);
      return row;
    }),
  );
  forgetGoneEvents();
  if (Array.isArray(chaos.chart)) {
    chartPoints = chaos.chart;
    renderChart();
  }
  setEnabled(chaos.enabled !== false);
}

// -- the connection badge, the door notice and the websocket

const badge = $("#connection");
let socket = null;
// A page over a connection cap is accepted and closed at once, with nothing sent, so a
// socket counts as let in only once it delivers a frame or stays open for LET_IN_MS;
// until then the badge does not flash "live".
const LET_IN_MS = 1000;
let letIn = false;
let everLetIn = false;
let openedAt = 0;
let attempt = 0;
let retryTimer = 0;
// Why the server keeps this page out ("tabs", "full"), or "" while it is let in.
let door = "";

function renderBadge() {
  let state = "live";
  let text = "live";
  const silent = Date.now() - metricsHeardAt > STALE_AFTER_POLLS * pollMs;
  if (door) {
    state = "paused";
    text = "paused";
  } else if (
    !socket ||
    socket.readyState !== WebSocket.OPEN ||
    (!letIn && Date.now() - openedAt < LET_IN_MS)
  ) {
    state = "reconnecting";
    text = everLetIn ? "reconnecting…" : "connecting…";
  } else if (metrics?.stale || silent || !metrics) {
    state = "stale";
    const since = toDate(metrics?.stale_since) ?? toDate(metrics?.ts);
    text = since ? `stale since ${clock(since)}` : "waiting for data";
  }
  if (badge.dataset.state !== state) badge.dataset.state = state;
  const label = $(".badge-text", badge);
  if (label.textContent !== text) label.textContent = text;
}

// The live dot beats once per fresh snapshot, so its rhythm is the poller's own.
function heartbeat() {
  badge.classList.remove("beat");
  void badge.offsetWidth; // restarts the CSS animation
  badge.classList.add("beat");
}

const handlers = { metrics: renderMetrics, pods: renderPods, chaos: onChaos };

// Shown while the server keeps this page out. The sentence goes into a polite live
// region once per reason, not once per try; the time of the next try is outside it.
const DOORS = {
  tabs: [
    "Too many tabs open.",
    "This dashboard is open in too many tabs or windows from your network, so live updates are paused in this one. Close a few and it rejoins by itself.",
  ],
  full: [
    "The server is full.",
    "So many people are watching that there is no room for this page right now. It rejoins by itself shortly; the numbers below are from before.",
  ],
};
const doorBox = $("#door");

function showDoor(kind, retryAt) {
  if (door !== kind) {
    door = kind;
    if (kind) {
      doorBox.dataset.kind = kind;
      $("#door-title").textContent = DOORS[kind][0];
      $("#door-text").textContent = DOORS[kind][1];
    } else {
      delete doorBox.dataset.kind;
      $("#door-title").textContent = "";
      $("#door-text").textContent = "";
    }
  }
  $("#door-next").hidden = !kind;
  if (kind) setTime($("#door-at"), retryAt);
  renderBadge();
}

function onFrame(event) {
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    return;
  }
  attempt = 0;
  welcome();
  handlers[frame?.type]?.(frame.data);
}

function welcome() {
  if (letIn) return;
  letIn = true;
  attempt = 0;
  // Chaos events that happened while we were away are not replayed by the socket.
  if (everLetIn) resync();
  everLetIn = true;
  showDoor("");
}

async function resync() {
  try {
    const response = await fetch(initial.snapshot_url, { headers: { Accept: "application/json" } });
    if (response.ok) renderSummary((await response.json()).chaos);
  } catch {
    // The socket is up again; the next chaos frame will refresh the summary anyway.
  }
}

function connect() {
  clearTimeout(retryTimer);
  if (socket && socket.readyState <= WebSocket.OPEN) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let ws;
  try {
    ws = new WebSocket(`${scheme}://${location.host}${WS_PATH}`);
  } catch {
    scheduleReconnect();
    return;
  }
  socket = ws;
  letIn = false;
  ws.addEventListener("open", () => {
    openedAt = Date.now();
    setTimeout(() => {
      if (socket === ws && ws.readyState === WebSocket.OPEN) welcome();
      renderBadge();
    }, LET_IN_MS);
  });
  ws.addEventListener("message", onFrame);
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    if (event.code === CLOSE_TOO_SLOW) {
      connect();
      return;
    }
    const kind =
      event.code === CLOSE_TOO_MANY_TABS ? "tabs" : event.code === CLOSE_SERVER_FULL ? "full" : "";
    // A change of reason starts its own backoff from the beginning.
    if (kind !== door) attempt = 0;
    const delay = retryDelay(RETRY[kind || "lost"]);
    showDoor(kind, Date.now() + delay);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  });
}

function retryDelay({ floor, base, cap }) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  attempt += 1;
  return floor + Math.random() * ceiling;
}

function scheduleReconnect() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryDelay(RETRY.lost));
}

$("#door-retry").addEventListener("click", connect);

// A returning laptop or tab should not wait out a long backoff.
addEventListener("online", connect);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) connect();
});
setInterval(renderBadge, 1000);

// -- the chaos button

const form = $("#chaos-form");
const button = $("#chaos-button");
const label = $(".chaos-label", button);
const message = $("#chaos-message");
const LABEL = label.textContent;
let enabled = !button.disabled;
let cooldownUntil = 0;
let cooldownTimer = 0;

function say(text, tone) {
  message.textContent = text;
  message.dataset.tone = tone;
}

function setEnabled(on) {
  if (on === enabled) return;
  enabled = on;
  if (!on) say("Chaos is switched off right now. The pods get a day off.", "off");
  else if (message.dataset.tone === "off") say("", "");
  idle();
}

function idle() {
  clearTimeout(cooldownTimer);
  button.removeAttribute("aria-busy");
  const wait = Math.ceil((cooldownUntil - Date.now()) / 1000);
  button.disabled = !enabled || wait > 0;
  label.textContent = wait > 0 ? `Try again in ${wait} s` : LABEL;
  // Tick on the second boundary of the deadline, so the count never skips or stalls.
  if (wait > 0) cooldownTimer = setTimeout(idle, (cooldownUntil - Date.now()) % 1000 || 1000);
}

function coolDown(seconds) {
  cooldownUntil = Date.now() + Math.max(1, seconds) * 1000;
}

// Kubernetes' own answer (the namespace's PodDisruptionBudget refused the eviction), in the
// words the page and this visitor's live feed both use.
const BUDGET_REFUSED = "Kubernetes refused: the disruption budget allows only one pod down at a time";

function noteBudgetRefusal() {
  const feed = $("#chaos-feed");
  const li = document.createElement("li");
  li.className = "event";
  li.dataset.refusal = "disruption_budget";
  // Not .event-text, which keeps a pod's name on one line: this sentence must wrap.
  const text = document.createElement("span");
  text.textContent = BUDGET_REFUSED;
  const time = document.createElement("time");
  setTime(time, new Date().toISOString());
  const meta = document.createElement("span");
  meta.className = "event-meta";
  meta.append(time);
  li.append(text, meta);
  feed.prepend(li);
  while (feed.children.length > LIST_LIMIT) feed.lastElementChild.remove();
}

const FAILURES = {
  disruption_budget: [`${BUDGET_REFUSED}.`, "warn"],
  not_enough_healthy: ["Kubernetes is still healing — try in a moment.", "warn"],
  busy: ["Someone pressed it at the same moment — try again in a second.", "warn"],
  cluster_unavailable: ["The cluster is not answering right now. Try again shortly.", "error"],
};

async function unleash(event) {
  event.preventDefault();
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  pressing = true;
  label.textContent = "Unleashing…";
  say("", "");
  const token = form.elements.csrfmiddlewaretoken?.value ?? "";
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), 15_000);
  try {
    const response = await fetch(form.action, {
      method: "POST",
      headers: { "X-CSRFToken": token, Accept: "application/json" },
      credentials: "same-origin",
      signal: abort.signal,
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok && body.ok) {
      // The chaos frame may have beaten this response here; relabel what it drew.
      const id = String(body.event_id);
      mine.add(id);
      for (const el of document.querySelectorAll(`[data-event-id="${CSS.escape(id)}"]`)) markMine(el);
      // Shown at once; the watcher's chaos frame for this id then refines the same row.
      if (!$(`#chaos-feed [data-event-id="${CSS.escape(id)}"]`)) {
        const at = new Date().toISOString();
        onChaos({ id: body.event_id, pod: body.pod, at, outcome: "deleted", recovery_s: null });
      }
      say(`You killed ${body.pod}. Now watch Kubernetes bring it back…`, "ok");
    } else if (response.status === 429) {
      const seconds = num(body.retry_after) ?? Number.parseInt(response.headers.get("Retry-After"), 10);
      coolDown(Number.isFinite(seconds) ? seconds : 60);
      say("Easy there — the monkey needs a breather. The button comes back by itself.", "warn");
    } else if (body.error === "chaos_disabled") {
      enabled = false;
      say("Chaos is switched off right now. The pods get a day off.", "off");
    } else if (response.status === 403) {
      say("Your session expired. Reload the page and try again.", "error");
    } else if (body.error === "disruption_budget") {
      noteBudgetRefusal();
      say(...FAILURES.disruption_budget);
    } else {
      say(...(FAILURES[body.error] ?? [`Something went wrong (HTTP ${response.status}).`, "error"]));
    }
  } catch {
    say("The request did not get through — check your connection and try again.", "error");
  } finally {
    clearTimeout(timeout);
    idle();
    flushAnnouncements();
  }
}

form.addEventListener("submit", unleash);

// -- start

for (const time of document.querySelectorAll("time[datetime]")) {
  if (time.dateTime) setTime(time, time.dateTime);
}
if (metrics) renderMetrics(metrics);
for (const ev of Array.isArray(initial.chaos?.recent) ? initial.chaos.recent : []) {
  shownEvents.set(String(ev.id), ev);
}
rescale();
renderChart();
// Kills age out of the 24 h window (and slide left) without any frame.
setInterval(renderChart, 60_000);
renderBadge();
connect();
