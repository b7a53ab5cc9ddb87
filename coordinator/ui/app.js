// The dagrid web UI: a hash router and one function per page. Every read and every action goes
// through the HTTP API (api.js); nothing is written into the page as HTML, so names, params and
// logs are always shown as text.

import { api, apiText, events, token, setToken, whenUnauthorized, ApiError } from "/ui/api.js";
import { drawGraph, descendants } from "/ui/graph.js";

const app = document.getElementById("app");
let session = null; // {role, name, auth}
let cleanup = []; // what the current page stops when leaving it

// ---------- small helpers ----------

/** An element: h("a", {href: "#/"}, "text", child…); `on<event>` attributes become listeners. */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "value") e.value = v;
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** Appends the nodes to the page, skipping null ones. */
const put = (...nodes) => app.append(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
/** Replaces the children of `el`, skipping null ones. */
const fill = (el, ...nodes) => el.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
const isAdmin = () => session && session.role === "admin";
const badge = (s) => h("span", { class: "badge st-" + s }, s);
const enc = encodeURIComponent;

function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return "in " + dur(-s * 1000);
  return dur(s * 1000) + " ago";
}

function dur(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = ms / 1000;
  if (s < 1) return Math.round(ms) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " m " + Math.round(s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " m";
  return Math.floor(s / 86400) + " d " + Math.round((s % 86400) / 3600) + " h";
}

// One formatter for every date (toLocaleString builds a new one per call: slow on 1,000 rows).
const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

function when(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const iso = d.toISOString();
  return h("time", { datetime: iso, title: iso }, DATE.format(d));
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function paramsText(params) {
  return (params || []).map((p) => (p.name ? p.name + "=" + p.value : p.value)).join(" ");
}

function table(head, rows, attrs) {
  return h(
    "table",
    attrs || {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "none"))),
  );
}

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e instanceof ApiError ? e.code + ": " + e.message : String(e));
}

/** Shows `message` at the top of the page for a few seconds. */
function flash(message, kind, keep) {
  const old = document.getElementById("flash");
  if (old) old.remove();
  const f = h("div", { id: "flash", class: "flash " + (kind || "ok"), role: "status", "data-keep": keep ? "1" : null }, message);
  document.body.append(f);
  setTimeout(() => f.remove(), 6000);
}

/** Calls `f` at most once per `ms`, the last call winning. */
function debounce(f, ms) {
  let t = null;
  const d = () => {
    clearTimeout(t);
    t = setTimeout(f, ms);
  };
  cleanup.push(() => clearTimeout(t));
  return d;
}

function every(ms, f) {
  const t = setInterval(f, ms);
  cleanup.push(() => clearInterval(t));
}

function follow(path, on) {
  const ctl = new AbortController();
  cleanup.push(() => ctl.abort());
  events(path, on, ctl.signal);
}

/** A modal confirmation: resolves true when the user confirms. */
function confirmBox(title, body, okLabel) {
  return new Promise((resolve) => {
    const close = (v) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    const dlg = h(
      "dialog",
      { class: "confirm" },
      h("h3", {}, title),
      body,
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", class: "secondary", onclick: () => close(false) }, "Cancel"),
        h("button", { type: "button", class: "primary", "data-confirm": "", onclick: () => close(true) }, okLabel),
      ),
    );
    dlg.addEventListener("cancel", () => resolve(false));
    document.body.append(dlg);
    dlg.showModal();
  });
}

async function act(label, f, after) {
  try {
    const out = await f();
    flash(label);
    if (after) after(out);
    return out;
  } catch (e) {
    flash(e instanceof ApiError ? e.code + ": " + e.message : String(e), "bad");
    return null;
  }
}

// ---------- routing ----------

const routes = [
  [/^\/login$/, pageLogin, null],
  [/^\/$/, pageOverview, "overview"],
  [/^\/dags$/, pageDags, "dags"],
  [/^\/dags\/(.+)$/, pageDag, "dags"],
  [/^\/runs$/, pageRuns, "runs"],
  [/^\/runs\/(.+)$/, pageRun, "runs"],
  [/^\/queues$/, pageQueues, "queues"],
  [/^\/workers$/, pageWorkers, "workers"],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { path, query: new URLSearchParams(query || "") };
}

async function route() {
  const flashed = document.getElementById("flash");
  if (flashed && !flashed.dataset.keep) flashed.remove();
  for (const f of cleanup) f();
  cleanup = [];
  const { path, query } = parseHash();
  if (path !== "/login" && !session) {
    if (!(await loadSession())) return;
  }
  for (const [re, page, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === nav);
    app.textContent = "";
    try {
      await page(m.slice(1).map(decodeURIComponent), query);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) app.append(errorBox(e));
    }
    return;
  }
  app.textContent = "";
  put(h("p", {}, "No such page. ", h("a", { href: "#/" }, "Overview")));
}

async function loadSession() {
  try {
    session = await api("/api/v1/session");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      app.textContent = "";
      app.append(errorBox(e));
    }
    return false;
  }
  const who = document.getElementById("who");
  who.textContent = "";
  fill(who,
    h("span", { class: "role role-" + session.role, "data-role": session.role }, session.auth ? (session.name || "token") + " · " + session.role : "open API"),
    session.auth ? h("button", { type: "button", class: "link", onclick: logout }, "Sign out") : null,
  );
  return true;
}

function logout() {
  setToken(null);
  session = null;
  document.getElementById("who").textContent = "";
  location.hash = "#/login";
}

whenUnauthorized(() => {
  session = null;
  setToken(null);
  const back = location.hash.startsWith("#/login") ? "" : location.hash;
  location.hash = "#/login" + (back ? "?next=" + enc(back) : "");
});

// ---------- login ----------

async function pageLogin(_, query) {
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off", required: true, placeholder: "API token" });
  const out = h("div");
  const form = h(
    "form",
    { class: "login", onsubmit: async (ev) => {
      ev.preventDefault();
      setToken(input.value.trim());
      session = null;
      if (await loadSession()) location.hash = query.get("next") || "#/";
      else fill(out, h("p", { class: "error" }, "This token is not one the coordinator knows."));
    } },
    h("h2", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an API token (read or admin). It is kept in this browser tab only and sent as an Authorization header."),
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    out,
  );
  put(form);
  input.focus();
}

// ---------- overview ----------

async function pageOverview() {
  const root = h("div", { class: "overview" });
  const countsBox = h("div", { class: "counts", id: "hour-counts" }, h("span", { class: "muted" }, "counting…"));
  put(h("h2", {}, "Overview"), root);
  let loads = 0;
  // Runs created in the last hour, per status: one page of each status, newest first, so the
  // count is exact up to a page (then shown as "≥"). Read every 30 s, after the rest.
  const PAGE = 500;
  const STATUSES = ["queued", "running", "succeeded", "failed", "aborted"];
  const countHour = async () => {
    const hourAgo = Date.now() - 3600 * 1000;
    const pages = await Promise.all(STATUSES.map((st) => api(`/api/v1/runs?status=${st}&limit=${PAGE}`)));
    fill(countsBox, ...STATUSES.map((st, i) => {
      const n = pages[i].runs.filter((x) => x.created_ms >= hourAgo).length;
      const more = n === PAGE && pages[i].next_cursor ? "≥ " : "";
      return h("a", { class: "count", href: "#/runs?status=" + st + "&since=1h" }, h("b", {}, more + n), badge(st));
    }));
  };
  const load = async () => {
    const [health, queues, failed] = await Promise.all([
      api("/health"),
      api("/api/v1/queues"),
      api("/api/v1/runs?status=failed&limit=10"),
    ]);
    const w = health.workers || { list: [] };
    if (loads++ % 6 === 0) countHour().catch(() => {});
    fill(root,
      h("section", { class: "card health" },
        h("h3", {}, "Cluster ", h("span", { class: "badge health-" + health.status, id: "cluster-status" }, health.status)),
        (health.reasons || []).length ? h("ul", { class: "reasons" }, health.reasons.map((r) => h("li", {}, r))) : h("p", { class: "muted" }, "No problems found."),
        (health.warnings || []).length ? h("ul", { class: "warnings" }, health.warnings.map((r) => h("li", {}, r))) : null,
        h("p", { class: "muted" }, `version ${health.version}, up ${dur(health.uptime_s * 1000)}; Redis ${health.redis && health.redis.reachable ? "reachable, " + bytes(health.redis.used_memory_bytes) + " used" : "unreachable"}`),
      ),
      h("section", { class: "card" },
        h("h3", {}, "Runs in the last hour"),
        countsBox,
      ),
      h("section", { class: "card" },
        h("h3", {}, `Workers: ${w.alive || 0} alive, ${w.slots_busy || 0}/${w.slots_total || 0} slots busy`),
        table(["worker", "slots busy", "CPU", "memory", "heartbeat", "state"], (w.list || []).map((x) =>
          h("tr", {}, h("td", {}, x.id), h("td", {}, `${x.slots_busy}/${x.slots_total}`), h("td", {}, x.cpu_percent.toFixed(1) + " %"),
            h("td", {}, bytes(x.memory_bytes)), h("td", {}, dur(x.heartbeat_age_ms) + " ago"),
            h("td", {}, workerState(x))))),
      ),
      h("section", { class: "card" },
        h("h3", {}, "Queues"),
        table(["queue", "active", "waiting", "delayed", "oldest wait", ""], queues.queues.map((q) =>
          h("tr", {}, h("td", {}, q.name), h("td", {}, q.active + (q.max_concurrency ? " / " + q.max_concurrency : "")),
            h("td", {}, q.waiting), h("td", {}, q.delayed), h("td", {}, q.oldest_wait_ms ? ago(q.oldest_wait_ms).replace(" ago", "") : "—"),
            h("td", {}, q.paused ? badge("paused") : "")))),
      ),
      h("section", { class: "card wide" },
        h("h3", {}, "Latest failures"),
        table(["run", "DAG", "failed step", "error", "finished"], failed.runs.map((r) =>
          h("tr", {}, h("td", {}, h("a", { href: "#/runs/" + enc(r.id) }, shortId(r.id))), h("td", {}, r.dag),
            h("td", {}, r.failed_step || "—"), h("td", { class: "err" }, r.error || "—"), h("td", {}, when(r.finished_ms))))),
      ),
    );
  };
  await load();
  every(5000, () => load().catch(() => {}));
}

function workerState(x) {
  if (x.draining) return badge("draining");
  if (x.stalled) return badge("stalled");
  if (x.late) return badge("late");
  if (x.healthy === false) return badge("unhealthy");
  return badge("healthy");
}

// ---------- DAGs ----------

async function pageDags() {
  const { dags } = await api("/api/v1/dags");
  const last = await Promise.all(dags.map((d) => api("/api/v1/runs?limit=1&dag=" + enc(d.name)).then((r) => r.runs[0]).catch(() => null)));
  put(
    h("h2", {}, "DAGs"),
    table(["DAG", "description", "schedule", "next fire", "queue", "last run"], dags.map((d, i) =>
      h("tr", {},
        h("td", {}, h("a", { href: "#/dags/" + enc(d.name) }, d.name)),
        h("td", {}, d.description || ""),
        h("td", {}, (d.schedule || []).join(", ") || "—"),
        h("td", {}, (d.next_fire_ms || []).length ? when(Math.min(...d.next_fire_ms)) : "—"),
        h("td", {}, d.queue),
        h("td", {}, last[i] ? h("a", { href: "#/runs/" + enc(last[i].id) }, badge(last[i].status), " ", ago(last[i].created_ms)) : "—"),
      ))),
  );
}

async function pageDag([name]) {
  const [dag, runs] = await Promise.all([api("/api/v1/dags/" + enc(name)), api("/api/v1/runs?limit=20&dag=" + enc(name))]);
  const graph = h("div", { class: "graph-box" });
  put(
    h("h2", {}, "DAG ", h("span", { class: "mono" }, dag.name)),
    h("p", {}, dag.description || ""),
    h("p", { class: "muted" }, `queue ${dag.queue}, priority ${dag.priority}` + ((dag.schedule || []).length ? `, schedule ${dag.schedule.join(", ")}` : "") + `, ${dag.steps.length} steps`),
    (dag.warnings || []).length ? h("ul", { class: "warnings" }, dag.warnings.map((w) => h("li", {}, typeof w === "string" ? w : JSON.stringify(w)))) : null,
    graph,
    isAdmin() ? submitForm(dag) : null,
    h("h3", {}, "Runs"),
    runsTable(runs.runs),
    h("p", {}, h("a", { href: "#/runs?dag=" + enc(dag.name) }, "All runs of this DAG")),
    h("details", {}, h("summary", {}, "YAML source"), h("pre", { class: "source" }, dag.source || "")),
  );
  drawGraph(graph, dag.steps, () => "pending", null);
}

function submitForm(dag) {
  const fields = (dag.params || []).map((p, i) => {
    const label = p.name || "$" + (i + 1);
    const required = p.name && (p.default === null || p.default === undefined);
    const input = h("input", { name: "param-" + label, value: p.default ?? "", required, "data-param": label });
    return { p, i, input, row: h("label", {}, h("span", {}, label, required ? h("b", { class: "req", title: "required" }, " *") : ""), input) };
  });
  const priority = h("select", { name: "priority" }, h("option", { value: "" }, `DAG default (${dag.priority})`),
    ["high", "normal", "low"].map((p) => h("option", { value: p }, p)),
    [...Array(10).keys()].reverse().map((n) => h("option", { value: String(n) }, String(n))));
  const delay = h("input", { name: "delay", placeholder: "e.g. 30s, 10m" });
  const dedup = h("select", { name: "dedup" }, h("option", { value: "" }, "DAG default"), h("option", { value: "active" }, "active"), h("option", { value: "none" }, "none"), h("option", { value: "window" }, "window…"));
  const win = h("input", { name: "dedup-window", placeholder: "window, e.g. 1h" });
  const key = h("input", { name: "dedup-key", placeholder: "computed from the params" });
  const out = h("div");
  return h("form", { class: "card submit", id: "submit-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { dag: dag.name, params: {} };
    for (const f of fields) {
      const v = f.input.value;
      if (v !== (f.p.default ?? "")) body.params[f.p.name || String(f.i + 1)] = v;
    }
    if (priority.value) body.priority = /^\d$/.test(priority.value) ? Number(priority.value) : priority.value;
    if (delay.value.trim()) body.delay = delay.value.trim();
    if (dedup.value) body.dedup = dedup.value === "window" ? "window:" + win.value.trim() : dedup.value;
    if (key.value.trim()) body.dedup_key = key.value.trim();
    try {
      const r = await api("/api/v1/runs", { method: "POST", body });
      flash(r.deduplicated ? `Deduplicated onto run ${r.id} (${r.status})` : `Submitted run ${r.id}`, "ok", true);
      location.hash = "#/runs/" + enc(r.id);
    } catch (e) {
      fill(out, errorBox(e));
    }
  } },
  h("h3", {}, "Submit a run"),
  fields.length ? fields.map((f) => f.row) : h("p", { class: "muted" }, "This DAG has no params."),
  h("label", {}, h("span", {}, "priority"), priority),
  h("label", {}, h("span", {}, "delay"), delay),
  h("label", {}, h("span", {}, "dedup"), dedup, win),
  h("label", {}, h("span", {}, "dedup key"), key),
  h("button", { type: "submit", class: "primary" }, "Submit"),
  out);
}

// ---------- runs ----------

/** A run id as tables show it: whole (26 characters); the 36-character UUID of a run made by
 * an earlier version shortened to its first 13, its time stamp. */
const shortId = (id) => (id.length > 26 ? id.slice(0, 13) : id);

/** A table of runs; `fullIds` shows whole ids, also of runs made by earlier versions (those
 * created in the same ms, such as the child runs of one call step, share their first 13
 * characters). */
function runsTable(runs, fullIds) {
  return table(["run", "DAG", "status", "params", "trigger", "created", "duration", "failed step / reason"], runs.map((r) =>
    h("tr", { "data-run": r.id },
      h("td", { class: "mono" }, h("a", { href: "#/runs/" + enc(r.id) }, fullIds ? r.id : shortId(r.id))),
      h("td", {}, h("a", { href: "#/dags/" + enc(r.dag) }, r.dag)),
      h("td", {}, badge(r.status)),
      h("td", { class: "mono params" }, paramsText(r.params)),
      h("td", {}, r.trigger),
      h("td", {}, when(r.created_ms)),
      h("td", {}, r.started_ms ? dur((r.finished_ms || Date.now()) - r.started_ms) : "—"),
      h("td", { class: "err" }, r.failed_step ? r.failed_step + ": " + (r.error || "") : r.reason || ""),
    )), { class: "runs" });
}

const SINCE = { "": 0, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };

async function pageRuns(_, query) {
  const { dags } = await api("/api/v1/dags");
  const f = {
    dag: query.get("dag") || "", status: query.get("status") || "", q: query.get("q") || "",
    trigger: query.get("trigger") || "", since: query.get("since") || "", limit: query.get("limit") || "100",
    parent: query.get("parent") || "",
  };
  const cursors = [null];
  let page = 0;
  const sel = (name, values, cur) => h("select", { name }, values.map(([v, l]) => h("option", { value: v, selected: v === cur }, l)));
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    location.hash = "#/runs?" + q.toString();
  } },
  sel("dag", [["", "all DAGs"], ...dags.map((d) => [d.name, d.name])], f.dag),
  sel("status", [["", "any status"], ...["queued", "running", "succeeded", "failed", "aborted"].map((s) => [s, s])], f.status),
  h("input", { name: "q", value: f.q, placeholder: "params contain, e.g. NAME=x" }),
  sel("trigger", [["", "any trigger"], ["api", "api"], ["batch", "batch"], ["schedule", "schedule"]], f.trigger),
  sel("since", [["", "any time"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"]], f.since),
  sel("limit", [["50", "50 / page"], ["100", "100 / page"], ["500", "500 / page"], ["1000", "1000 / page"]], f.limit),
  f.parent ? h("input", { type: "hidden", name: "parent", value: f.parent }) : null,
  h("button", { type: "submit" }, "Filter"));
  const body = h("div");
  const pager = h("div", { class: "pager" });
  // `parent`: the child runs of one run, oldest first (creation order).
  const title = f.parent
    ? h("h2", {}, "Child runs of ", h("a", { class: "mono", id: "runs-parent", href: "#/runs/" + enc(f.parent) }, f.parent))
    : h("h2", {}, "Runs");
  put(title, form, body, pager);
  // The time filter is fixed when the page opens, so that pages and live reloads agree.
  const since = SINCE[f.since] ? Date.now() - SINCE[f.since] : 0;
  const load = async () => {
    const q = new URLSearchParams({ limit: f.limit });
    if (f.dag) q.set("dag", f.dag);
    if (f.status) q.set("status", f.status);
    if (f.trigger) q.set("trigger", f.trigger);
    if (f.q) q.set("params", f.q);
    if (f.parent) q.set("parent", f.parent);
    if (SINCE[f.since]) q.set("since_ms", String(since));
    if (cursors[page]) q.set("cursor", cursors[page]);
    const res = await api("/api/v1/runs?" + q.toString());
    cursors[page + 1] = res.next_cursor;
    fill(body, runsTable(res.runs, !!f.parent), h("p", { class: "muted" }, `${res.runs.length} runs on this page`));
    fill(pager, 
      h("button", { type: "button", disabled: page === 0, onclick: () => { page--; load(); } }, f.parent ? "← Earlier" : "← Newer"),
      h("span", {}, ` page ${page + 1} `),
      h("button", { type: "button", disabled: !res.next_cursor, onclick: () => { page++; load(); } }, f.parent ? "Later →" : "Older →"),
    );
  };
  await load();
  const reload = debounce(() => load().catch(() => {}), 1000);
  follow("/api/v1/events" + (f.dag ? "?dag=" + enc(f.dag) : ""), (type) => {
    if (type === "run" || type === "reset" || type === "ready") reload();
  });
}

// ---------- a run ----------

const FINISHED = new Set(["succeeded", "failed", "aborted"]);

async function pageRun([id]) {
  let run = await api("/api/v1/runs/" + enc(id));
  // Each step's `depends` comes from the DAG version the run was submitted with.
  const graphSteps = () => run.steps.map((s) => ({ name: s.name, depends: s.depends || [] }));
  let selected = null;
  const head = h("div", { class: "run-head" });
  const graphBox = h("div", { class: "graph-box" });
  const gantt = h("div", { class: "gantt" });
  const steps = h("div");
  const detail = h("div", { class: "step-detail" });
  const kids = h("div", { id: "run-children" });
  put(head, graphBox, h("h3", {}, "Steps"), steps, detail, kids, h("h3", {}, "Timeline"), gantt);
  const stepOf = (name) => run.steps.find((s) => s.name === name);
  const graph = drawGraph(graphBox, graphSteps(), (n) => (stepOf(n) || {}).status, (n) => selectStep(n));
  let logCtl = null;

  function selectStep(name) {
    selected = name;
    graph.select(name);
    renderDetail(true);
  }

  function renderHead() {
    const finished = FINISHED.has(run.status);
    fill(head, 
      h("h2", {}, "Run ", h("span", { class: "mono" }, run.id), " ", h("span", { id: "run-status", "data-status": run.status }, badge(run.status))),
      h("p", {}, "DAG ", h("a", { href: "#/dags/" + enc(run.dag) }, run.dag), ` · queue ${run.queue} · priority ${run.priority} · trigger ${run.trigger}`,
        run.worker_selector ? h("span", {}, " · workers with ", h("span", { class: "mono", id: "run-selector" }, run.worker_selector)) : "",
        run.params.length ? h("span", {}, " · params ", h("span", { class: "mono" }, paramsText(run.params))) : ""),
      h("p", { class: "muted" }, "created ", when(run.created_ms), " · started ", when(run.started_ms), " · finished ", when(run.finished_ms),
        run.started_ms ? ` · took ${dur((run.finished_ms || Date.now()) - run.started_ms)}` : "",
        run.reason ? ` · waiting: ${run.reason}` : "", run.waiting_for ? h("span", { id: "run-waiting-for" }, ` · waiting: ${run.waiting_for}`) : "", run.due_ms ? h("span", {}, " · due ", when(run.due_ms)) : ""),
      run.parent ? h("p", { id: "run-parent" }, "Child run of ", h("a", { class: "mono", href: "#/runs/" + enc(run.parent.run) }, run.parent.run),
        " (step ", h("span", { class: "mono" }, run.parent.step), `, depth ${run.parent.depth})`) : null,
      run.error ? h("p", { class: "error" }, (run.failed_step ? run.failed_step + ": " : "") + run.error) : null,
      isAdmin() ? h("div", { class: "actions" },
        !finished ? h("button", { type: "button", class: "danger", id: "stop-run", onclick: stopRun }, "Stop run") : null,
        finished && run.status !== "succeeded" ? h("button", { type: "button", class: "primary", id: "retry-run", onclick: () => retry(null) }, "Retry run") : null,
      ) : null,
    );
  }

  async function stopRun() {
    const ok = await confirmBox("Stop this run?", h("p", {}, "Queued steps are removed and running ones are signalled; the run ends aborted."), "Stop run");
    if (ok) await act("Stop requested", () => api(`/api/v1/runs/${enc(run.id)}/stop`, { method: "POST" }), refresh);
  }

  /** The retry dialog; `name` null retries the run's failed steps. */
  async function retry(name) {
    const ign = h("input", { type: "checkbox", id: "retry-ignore" });
    const down = h("input", { type: "checkbox", id: "retry-downstream" });
    const what = h("p", { class: "what", id: "retry-what" });
    const explain = () => {
      let list;
      if (name) {
        list = [name, ...(down.checked ? descendants(graphSteps(), name) : [])];
      } else {
        const failed = run.steps.filter((s) => !s.handler && (s.status === "failed" || s.status === "aborted")).map((s) => s.name);
        const all = new Set(failed);
        for (const f of failed) for (const d of descendants(graphSteps(), f)) all.add(d);
        list = [...all];
      }
      const order = run.steps.map((s) => s.name);
      list.sort((a, b) => order.indexOf(a) - order.indexOf(b));
      const handlers = run.steps.some((s) => s.handler) ? " The DAG's handlers (handlerOn) run again at the end." : "";
      what.textContent = `Will run ${list.length} step${list.length === 1 ? "" : "s"} again: ${list.join(", ")}` +
        (ign.checked ? " (ignoring their preconditions)" : "") + ". Other steps keep their state and outputs." + handlers;
    };
    ign.addEventListener("change", explain);
    down.addEventListener("change", explain);
    explain();
    const body = h("div", {},
      h("label", { class: "check" }, ign, " ignore preconditions"),
      name ? h("label", { class: "check" }, down, " also run what follows (downstream)") : null,
      what);
    const ok = await confirmBox(name ? `Retry step ${name}?` : "Retry the failed steps?", body, "Retry");
    if (!ok) return;
    const req = { ignore_preconditions: ign.checked };
    if (name) {
      req.step = name;
      req.downstream = down.checked;
    }
    await act("Retry started", () => api(`/api/v1/runs/${enc(run.id)}/retry`, { method: "POST", body: req }), (r) => {
      if (r) apply(r);
    });
  }

  function renderSteps() {
    const finished = FINISHED.has(run.status);
    fill(steps, table(["step", "status", "attempt", "worker", "exit", "took", "error / output", ""], run.steps.map((s) =>
      h("tr", { "data-step": s.name, class: s.name === selected ? "selected" : "" },
        h("td", {}, h("button", { type: "button", class: "link", onclick: () => selectStep(s.name) }, s.name)),
        h("td", {}, badge(s.status)),
        h("td", {}, s.attempt),
        h("td", { class: "mono" }, s.worker || "—"),
        h("td", {}, s.exit_code ?? "—"),
        h("td", {}, s.started_ms ? dur((s.finished_ms || Date.now()) - s.started_ms) : "—"),
        h("td", { class: "err" }, s.children ? h("span", { class: "muted" }, `${s.children} child run${s.children === 1 ? "" : "s"} `) : "",
          s.error || (s.output ? s.output[0] + "=" + s.output[1] : "")),
        h("td", {}, isAdmin() && finished ? h("button", { type: "button", class: "small", "data-retry-step": s.name, onclick: () => retry(s.name) }, "Retry") : ""),
      )), { class: "steps" }));
  }

  function renderGantt() {
    const bars = [];
    for (const s of run.steps) {
      for (const a of [...(s.history || []), s]) {
        if (a.started_ms) bars.push({ step: s.name, attempt: a.attempt, worker: a.worker, status: a.status, from: a.started_ms, to: a.finished_ms || Date.now() });
      }
    }
    if (!bars.length) {
      fill(gantt, h("p", { class: "muted" }, "No step has started yet."));
      return;
    }
    const t0 = Math.min(...bars.map((b) => b.from));
    const span = Math.max(1, Math.max(...bars.map((b) => b.to)) - t0);
    fill(gantt, h("div", { class: "gantt-scale muted" }, `0 → ${dur(span)}`), ...run.steps.filter((s) => bars.some((b) => b.step === s.name)).map((s) =>
      h("div", { class: "gantt-row" }, h("span", { class: "gantt-label" }, s.name), h("div", { class: "gantt-track" },
        bars.filter((b) => b.step === s.name).map((b) => {
          const bar = h("span", { class: "gantt-bar st-" + b.status, title: `attempt ${b.attempt} on ${b.worker || "?"}: ${b.status}, ${dur(b.to - b.from)}` }, b.worker ? b.worker.split("-").pop() : "");
          bar.style.left = ((100 * (b.from - t0)) / span).toFixed(2) + "%";
          bar.style.width = Math.max(0.5, (100 * (b.to - b.from)) / span).toFixed(2) + "%";
          return bar;
        })))));
  }

  function renderDetail(reloadLog) {
    const s = selected && stepOf(selected);
    if (!s) {
      fill(detail, h("p", { class: "muted" }, "Click a step to see its attempts and log."));
      return;
    }
    const attempts = [...(s.history || []), s].filter((a) => a.attempt > 0);
    const pick = h("select", { id: "log-attempt" }, attempts.map((a) => h("option", { value: String(a.attempt), selected: a === s }, "attempt " + a.attempt)));
    const followBox = h("input", { type: "checkbox", id: "log-follow", checked: !FINISHED.has(s.status) && s.status !== "skipped" });
    const pre = h("pre", { class: "log", id: "step-log" });
    if (!reloadLog && detail.dataset.step === s.name) {
      // Keep the log (and its follower); refresh the attempts table only.
      const t = detail.querySelector("table");
      if (t) t.replaceWith(attemptsTable(attempts));
      return;
    }
    detail.dataset.step = s.name;
    fill(detail, 
      h("h3", {}, "Step ", h("span", { class: "mono" }, s.name), " ", badge(s.status)),
      attemptsTable(attempts),
      h("div", { class: "log-bar" }, pick, h("label", { class: "check" }, followBox, " follow")),
      pre,
    );
    const start = () => {
      if (logCtl) logCtl.abort();
      logCtl = new AbortController();
      tailLog(run.id, s.name, pick.value, pre, followBox, logCtl.signal);
    };
    pick.addEventListener("change", start);
    followBox.addEventListener("change", start);
    start();
  }

  function attemptsTable(attempts) {
    return table(["attempt", "status", "worker", "queued", "started", "took", "exit", "error"], attempts.map((a) =>
      h("tr", {}, h("td", {}, a.attempt), h("td", {}, badge(a.status)), h("td", { class: "mono" }, a.worker || "—"), h("td", {}, when(a.queued_ms)),
        h("td", {}, when(a.started_ms)), h("td", {}, a.started_ms ? dur((a.finished_ms || Date.now()) - a.started_ms) : "—"),
        h("td", {}, a.exit_code ?? "—"), h("td", { class: "err" }, a.error || ""))));
  }

  // The child runs (of its call steps): the first 100 with their status, and the total.
  // Their own events refresh the list while some of them have not finished.
  let kidsFollowed = "";
  let kidsCtl = null;
  cleanup.push(() => kidsCtl && kidsCtl.abort());
  const soonKids = debounce(() => loadChildren().catch(() => {}), 300);
  async function loadChildren() {
    const total = run.children ? run.children.total : 0;
    if (!total) {
      fill(kids);
      return;
    }
    const res = await api(`/api/v1/runs?parent=${enc(run.id)}&limit=100`);
    fill(kids, h("h3", {}, "Child runs ", h("span", { class: "muted", id: "children-total" }, `(${total})`)),
      runsTable(res.runs, true),
      total > res.runs.length || res.next_cursor
        ? h("p", {}, h("a", { href: "#/runs?parent=" + enc(run.id) }, `All ${total} child runs`))
        : null);
    const open = res.runs.filter((r) => !FINISHED.has(r.status)).map((r) => enc(r.id)).join(",");
    if (open !== kidsFollowed) {
      kidsFollowed = open;
      if (kidsCtl) kidsCtl.abort();
      kidsCtl = null;
      if (open) {
        kidsCtl = new AbortController();
        events("/api/v1/events?run=" + open, (type) => {
          if (type === "run" || type === "reset" || type === "ready") soonKids();
        }, kidsCtl.signal);
      }
    }
  }

  function apply(r) {
    const before = new Set(run.steps.map((s) => s.name));
    run = r;
    if (run.steps.some((s) => !before.has(s.name))) location.reload();
    renderHead();
    soonKids();
    graph.update((n) => (stepOf(n) || {}).status);
    renderSteps();
    renderGantt();
    renderDetail(false);
  }

  async function refresh() {
    try {
      apply(await api("/api/v1/runs/" + enc(run.id)));
    } catch (_) {
      /* shown on the next event */
    }
  }

  renderHead();
  renderSteps();
  renderGantt();
  renderDetail(true);
  loadChildren().catch((e) => fill(kids, errorBox(e)));
  cleanup.push(() => logCtl && logCtl.abort());
  const soon = debounce(refresh, 150);
  follow("/api/v1/events?run=" + enc(run.id), (type) => {
    // `ready`: the subscription is live; read the run again, since it may have changed
    // between the first read and the subscription.
    if (type === "run" || type === "step" || type === "reset" || type === "ready") soon();
  });
}

/** Shows a step's log in `pre`; while `followBox` is checked, appends what is written next. */
async function tailLog(runId, step, attempt, pre, followBox, signal) {
  pre.textContent = "";
  let offset = 0;
  const base = `/api/v1/runs/${enc(runId)}/steps/${enc(step)}/log?attempt=${enc(attempt)}`;
  while (!signal.aborted) {
    try {
      const { text, headers } = await apiText(base + "&offset=" + offset, signal);
      const start = Number(headers.get("x-dagrid-log-offset") || offset);
      if (start > offset && offset === 0) pre.append(`… (${bytes(start)} before this are not shown)\n`);
      if (text) pre.append(text);
      offset = Number(headers.get("x-dagrid-log-size") || offset + text.length);
      const status = headers.get("x-dagrid-step-status") || "";
      if (!followBox.checked || ["succeeded", "failed", "skipped", "aborted"].includes(status)) {
        if (!pre.textContent) pre.textContent = "(empty log)";
        return;
      }
      pre.scrollTop = pre.scrollHeight;
    } catch (e) {
      if (signal.aborted) return;
      if (!pre.textContent) pre.textContent = e instanceof ApiError ? e.message : String(e);
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---------- queues ----------

async function pageQueues() {
  const root = h("div");
  put(h("h2", {}, "Queues"), root);
  const load = async () => {
    const q = await api("/api/v1/queues");
    fill(root, 
      h("h3", {}, "Named queues"),
      table(["queue", "state", "max concurrency", "active", "waiting", "waiting by priority", "delayed", "oldest wait", ""], q.queues.map((x) =>
        h("tr", { "data-queue": x.name }, h("td", {}, x.name), h("td", {}, x.paused ? badge("paused") : badge("active")), h("td", {}, x.max_concurrency ?? "∞"),
          h("td", {}, x.active), h("td", {}, x.waiting), h("td", {}, Object.entries(x.waiting_by_priority || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "—"),
          h("td", {}, x.delayed), h("td", {}, x.oldest_wait_ms ? ago(x.oldest_wait_ms).replace(" ago", "") : "—"),
          h("td", {}, isAdmin() ? h("button", { type: "button", class: "small", onclick: () =>
            act(x.paused ? `Queue ${x.name} resumed` : `Queue ${x.name} paused`, () => api(`/api/v1/queues/${enc(x.name)}/${x.paused ? "resume" : "pause"}`, { method: "POST" }), load) },
          x.paused ? "Resume" : "Pause") : "")))),
      h("h3", {}, "Priority levels (ready steps)"),
      table(["priority", "ready", "claimed", "oldest ready"], q.levels.map((l) =>
        h("tr", {}, h("td", {}, l.priority), h("td", {}, l.ready), h("td", {}, l.claimed), h("td", {}, l.oldest_ready_ms ? ago(l.oldest_ready_ms) : "—")))),
    );
  };
  await load();
  every(5000, () => load().catch(() => {}));
}

// ---------- workers ----------

async function pageWorkers() {
  const root = h("div");
  put(h("h2", {}, "Workers"), root);
  const load = async () => {
    const [{ workers }, health, running] = await Promise.all([
      api("/api/v1/workers"),
      api("/health").catch(() => ({ workers: { list: [] } })),
      api("/api/v1/runs?status=running&limit=50"),
    ]);
    const runs = await Promise.all(running.runs.map((r) => api("/api/v1/runs/" + enc(r.id)).catch(() => null)));
    const busy = new Map();
    for (const r of runs.filter(Boolean)) for (const s of r.steps) if (s.status === "running" && s.worker) {
      if (!busy.has(s.worker)) busy.set(s.worker, []);
      busy.get(s.worker).push(h("div", {}, h("a", { href: "#/runs/" + enc(r.id) }, r.dag + " / " + s.name)));
    }
    const state = new Map(((health.workers || {}).list || []).map((x) => [x.id, x]));
    fill(root, table(["worker", "host / pid", "version", "labels", "slots busy", "running steps", "CPU", "memory", "last heartbeat", "up", "state"], workers.map((w) =>
      h("tr", { "data-worker": w.worker_id }, h("td", { class: "mono" }, w.worker_id), h("td", {}, `${w.host} / ${w.pid}`), h("td", {}, w.version),
        h("td", { class: "mono" }, Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
        h("td", {}, `${w.slots_busy}/${w.slots_total}`), h("td", {}, busy.get(w.worker_id) || "—"),
        h("td", {}, w.cpu_percent.toFixed(1) + " %"), h("td", {}, bytes(w.memory_bytes)), h("td", {}, ago(w.sent_ms)),
        h("td", {}, dur(Date.now() - w.started_ms)), h("td", {}, state.has(w.worker_id) ? workerState(state.get(w.worker_id)) : w.stalled ? badge("stalled") : badge("healthy"))))));
  };
  await load();
  every(5000, () => load().catch(() => {}));
}

// ---------- start ----------

window.addEventListener("hashchange", route);
if (!token() && !location.hash.startsWith("#/login")) {
  // An open API (no tokens) needs no login: try without one first.
  api("/api/v1/session").then(() => route(), () => {});
} else {
  route();
}
