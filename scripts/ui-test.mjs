// Browser tests of the web UI, run by scripts/ui-test.sh against a real cluster (see there).
// `node scripts/ui-test.mjs --write-dags DIR WORK` writes the test DAGs; without arguments it
// drives headless Chromium through the scenarios of issue 16 and saves one screenshot per page
// into $UI_SHOTS. Each scenario prints "ok - <name>"; the first failure ends the run with exit 1.

import { createRequire } from "node:module";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

if (process.argv[2] === "--write-dags") {
  const [dir, work] = process.argv.slice(3);
  const mark = join(work, "flaky.mark");
  // Fails the first time; a plain retry is skipped by its precondition (the mark exists), a
  // retry that ignores preconditions succeeds.
  writeFileSync(join(dir, "flaky.yaml"), `name: ui-flaky
description: fails once; retry it ignoring its precondition
params:
  - NAME: world
  - TARGET
steps:
  - name: prepare
    command: echo preparing \${NAME}
  - name: flaky
    depends: [prepare]
    preconditions:
      - condition: "\`test -f ${mark} && echo again || echo first\`"
        expected: first
    command: sh -c 'if [ -f ${mark} ]; then echo second time lucky; else touch ${mark}; echo boom >&2; exit 3; fi'
  - name: report
    depends: [flaky]
    command: echo report for \${NAME}
`);
  writeFileSync(join(dir, "slow.yaml"), `name: ui-slow
description: three steps that take a few seconds
params:
  - NAME: world
steps:
  - name: fetch
    command: sleep 1.5
  - name: transform
    depends: [fetch]
    command: sleep 1.5
  - name: load
    depends: [transform]
    command: echo loaded \${NAME}
`);
  writeFileSync(join(dir, "sleepy.yaml"), `name: ui-sleepy
description: sleeps for a minute (to be stopped)
steps:
  - name: nap
    command: sleep 60
`);
  // 20 levels of 10 steps, each step after two of the level before.
  writeFileSync(join(dir, "broken.yaml"), `name: ui-broken
description: always fails
steps:
  - name: extract
    command: echo extracting
  - name: validate
    depends: [extract]
    command: sh -c 'echo bad date in row 17 >&2; exit 2'
`);
  // A parallel call step: three child runs of ui-item (issue 18).
  writeFileSync(join(dir, "fan.yaml"), `name: ui-fan
description: calls ui-item over three items
steps:
  - name: fan
    call: ui-item
    parallel: {items: [a, b, c], max_concurrent: 2}
    params: "WHO=\${ITEM}"
  - name: after
    depends: [fan]
    command: echo done
`);
  writeFileSync(join(dir, "item.yaml"), `name: ui-item
description: one item of ui-fan
params: "WHO=nobody"
steps:
  - name: hi
    command: echo hi \${WHO}
`);
  const steps = [];
  const n = (i) => "s" + String(i).padStart(3, "0");
  for (let i = 0; i < 200; i++) {
    const level = Math.floor(i / 10);
    const deps = level === 0 ? [] : [...new Set([n(i - 10), n((level - 1) * 10 + ((i + 3) % 10))])];
    steps.push(`  - name: ${n(i)}\n    command: "true"\n` + (deps.length ? `    depends: [${deps.join(", ")}]\n` : ""));
  }
  writeFileSync(join(dir, "big.yaml"), `name: ui-big\ndescription: 200 steps\nsteps:\n${steps.join("")}`);
  process.exit(0);
}

const require = createRequire(process.env.UI_NODE_MODULES + "/");
const { chromium } = require("playwright-core");
const URL = process.env.UI_URL;
const ADMIN = process.env.UI_ADMIN_TOKEN;
const READ = process.env.UI_READ_TOKEN;
const SHOTS = process.env.UI_SHOTS;
mkdirSync(SHOTS, { recursive: true });

async function call(path, body, method) {
  const res = await fetch(URL + path, {
    method: method || (body === undefined ? "GET" : "POST"),
    headers: { Authorization: "Bearer " + ADMIN, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

const browser = await chromium.launch({
  executablePath: process.env.UI_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const pageErrors = [];
async function session(tok) {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(30000);
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(URL + "/");
  await page.waitForSelector("#token");
  await page.screenshot({ path: join(SHOTS, "login.png") });
  await page.fill("#token", tok);
  await page.click("form.login button[type=submit]");
  await page.waitForSelector("#cluster-status");
  return page;
}
const nodeClass = (page, step) => page.getAttribute(`svg.graph g[data-step="${step}"]`, "class");
const runStatus = (page, status) => page.waitForSelector(`#run-status[data-status="${status}"]`, { timeout: 30000 });
let failed = false;
async function scenario(name, f) {
  if (failed) return;
  try {
    await f();
    console.log("ok - " + name);
  } catch (e) {
    failed = true;
    console.log("not ok - " + name + "\n" + (e.stack || e));
  }
}

const admin = await session(ADMIN);

await scenario("the token is checked, kept for the tab, and the overview shows the cluster", async () => {
  assert.equal(await admin.textContent("#cluster-status"), "ok");
  assert.equal(await admin.getAttribute("[data-role]", "data-role"), "admin");
});

await scenario("submit from the form; the run goes green live", async () => {
  await admin.goto(URL + "/#/dags/ui-slow");
  await admin.waitForSelector("#submit-form");
  await admin.fill('[data-param="NAME"]', "live");
  await admin.click("#submit-form button[type=submit]");
  await admin.waitForSelector("#run-status");
  await admin.evaluate(() => (window.__noReload = true));
  const first = await admin.getAttribute("#run-status", "data-status");
  assert.notEqual(first, "succeeded", "the run finished before the page showed it");
  await admin.waitForSelector('svg.graph g[data-step="fetch"].st-running, svg.graph g[data-step="fetch"].st-succeeded');
  await runStatus(admin, "succeeded");
  for (const s of ["fetch", "transform", "load"]) assert.match(await nodeClass(admin, s), /st-succeeded/);
  assert.equal(await admin.evaluate(() => window.__noReload), true, "the page reloaded instead of updating live");
  assert.match(await admin.textContent("td.params, .run-head"), /NAME=live/);
});

await scenario("a failing step turns red; retry it ignoring preconditions; the run ends succeeded", async () => {
  const r = await call("/api/v1/runs", { dag: "ui-flaky", params: { NAME: "retry" } });
  await admin.goto(URL + "/#/runs/" + r.id);
  await runStatus(admin, "failed");
  assert.match(await nodeClass(admin, "flaky"), /st-failed/);
  assert.match(await nodeClass(admin, "prepare"), /st-succeeded/);
  await admin.click('svg.graph g[data-step="flaky"]');
  await admin.waitForFunction(() => /boom/.test(document.querySelector("#step-log")?.textContent || ""));
  await admin.click('[data-retry-step="flaky"]');
  await admin.waitForSelector("dialog.confirm[open]");
  assert.match(await admin.textContent("#retry-what"), /Will run 1 step again: flaky\./);
  await admin.check("#retry-ignore");
  await admin.check("#retry-downstream");
  assert.match(await admin.textContent("#retry-what"), /Will run 2 steps again: flaky, report \(ignoring their preconditions\)/);
  await admin.click("dialog.confirm [data-confirm]");
  await runStatus(admin, "succeeded");
  for (const s of ["prepare", "flaky", "report"]) assert.match(await nodeClass(admin, s), /st-succeeded/);
  const run = await call("/api/v1/runs/" + r.id);
  const flaky = run.steps.find((s) => s.name === "flaky");
  assert.equal(flaky.attempt, 2);
  assert.equal(flaky.ignore_preconditions, true);
  assert.deepEqual(flaky.depends, ["prepare"]);
  await admin.click('svg.graph g[data-step="flaky"]');
  await admin.waitForFunction(() => /second time lucky/.test(document.querySelector("#step-log")?.textContent || ""));
  await admin.screenshot({ path: join(SHOTS, "run.png"), fullPage: true });
});

await scenario("stop a running run", async () => {
  const r = await call("/api/v1/runs", { dag: "ui-sleepy" });
  await admin.goto(URL + "/#/runs/" + r.id);
  await runStatus(admin, "running");
  await admin.click("#stop-run");
  await admin.click("dialog.confirm [data-confirm]");
  await runStatus(admin, "aborted");
  assert.equal((await call("/api/v1/runs/" + r.id)).status, "aborted");
});

await scenario("a read token sees everything and no action button", async () => {
  const reader = await session(READ);
  assert.equal(await reader.getAttribute("[data-role]", "data-role"), "read");
  const runs = (await call("/api/v1/runs?dag=ui-flaky&limit=1")).runs;
  await reader.goto(URL + "/#/runs/" + runs[0].id);
  await runStatus(reader, "succeeded");
  await reader.waitForSelector('svg.graph g[data-step="flaky"]');
  assert.equal(await reader.locator("[data-retry-step], #retry-run, #stop-run").count(), 0);
  await reader.goto(URL + "/#/dags/ui-flaky");
  await reader.waitForSelector("details pre.source", { state: "attached" });
  assert.equal(await reader.locator("#submit-form").count(), 0);
  await reader.goto(URL + "/#/queues");
  await reader.waitForSelector('[data-queue="ui-flaky"]');
  assert.equal(await reader.locator("main button").count(), 0);
  // And the API refuses a read token's write even if a page tried one.
  const res = await reader.evaluate(async (id) => (await fetch(`/api/v1/runs/${id}/retry`, {
    method: "POST", headers: { Authorization: "Bearer " + sessionStorage.getItem("dagrid.token") } })).status, runs[0].id);
  assert.equal(res, 403);
  await reader.context().close();
});

await scenario("the pages render with 1,000 runs and a 200-step DAG within 1 s", async () => {
  const batch = [...Array(1000).keys()].map((i) => ({ dag: "ui-slow", params: { NAME: "n" + i }, delay: "1h" }));
  await call("/api/v1/runs/batch", { runs: batch });
  const big = await call("/api/v1/runs", { dag: "ui-big", delay: "1h" });
  const timed = async (hash, ready, from = "#/queues") => {
    await admin.goto(URL + "/" + from);
    await admin.waitForSelector("main table");
    const t0 = Date.now();
    await admin.evaluate((h) => (location.hash = h), hash);
    await ready();
    return Date.now() - t0;
  };
  const runsMs = await timed("#/runs", () => admin.waitForFunction(() => document.querySelectorAll("table.runs tbody tr[data-run]").length === 100));
  const allMs = await timed("#/runs?limit=1000", () => admin.waitForFunction(() => document.querySelectorAll("table.runs tbody tr[data-run]").length === 1000));
  const runMs = await timed("#/runs/" + big.id, () => admin.waitForFunction(() => document.querySelectorAll("svg.graph g[data-step]").length === 200));
  await admin.screenshot({ path: join(SHOTS, "run-200-steps.png") });
  const dagMs = await timed("#/dags/ui-big", () => admin.waitForFunction(() => document.querySelectorAll("svg.graph g[data-step]").length === 200));
  const overviewMs = await timed("#/", () => admin.waitForSelector("#cluster-status"));
  console.log(`# render times: runs page (100 a page) ${runsMs} ms, all 1000 runs on one page ${allMs} ms, run of 200 steps ${runMs} ms, DAG of 200 steps ${dagMs} ms, overview ${overviewMs} ms`);
  for (const [what, ms] of [["runs", runsMs], ["run", runMs], ["dag", dagMs], ["overview", overviewMs]]) assert.ok(ms < 1000, `${what} page took ${ms} ms`);
  // One page of all 1,000 runs: the API's largest page, built in a debug binary; looser bound.
  assert.ok(allMs < 2000, `the runs page with 1000 rows took ${allMs} ms`);
});

await scenario("runs of one DAG are told apart by their params", async () => {
  await admin.goto(`${URL}/?filter=1#/runs?dag=ui-slow&q=${encodeURIComponent("NAME=n999")}`);
  await admin.waitForFunction(() => document.querySelectorAll("table.runs tbody tr[data-run]").length === 1);
  assert.match(await admin.textContent("table.runs tbody td.params"), /^NAME=n999$/);
  assert.equal(await admin.inputValue('form.filters input[name="q"]'), "NAME=n999");
});

await scenario("a parent run lists its child runs, and a child links back to its parent", async () => {
  const r = await call("/api/v1/runs", { dag: "ui-fan" });
  await admin.goto(URL + "/#/runs/" + r.id);
  await runStatus(admin, "succeeded");
  await admin.waitForFunction(() => document.querySelectorAll("#run-children table.runs tbody tr[data-run] .st-succeeded").length === 3);
  assert.equal(await admin.textContent("#children-total"), "(3)");
  assert.match(await admin.textContent('tr[data-step="fan"]'), /3 child runs/);
  const kids = (await call("/api/v1/runs?parent=" + r.id)).runs.map((k) => k.id);
  assert.deepEqual(await admin.$$eval("#run-children tr[data-run]", (trs) => trs.map((tr) => tr.dataset.run)), kids);
  await admin.screenshot({ path: join(SHOTS, "run-children.png"), fullPage: true });
  await admin.click(`#run-children tr[data-run="${kids[1]}"] a[href^="#/runs/"]`);
  await admin.waitForSelector("#run-parent");
  assert.equal(await admin.getAttribute("#run-parent a", "href"), "#/runs/" + r.id);
  assert.match(await admin.textContent("#run-parent"), /step fan, depth 1/);
  await admin.screenshot({ path: join(SHOTS, "run-child.png") });
  await admin.goto(`${URL}/?parent=1#/runs?parent=${r.id}`);
  await admin.waitForFunction(() => document.querySelectorAll("table.runs tbody tr[data-run]").length === 3);
  assert.equal(await admin.textContent("#runs-parent"), r.id);
});

await scenario("pause and resume a queue", async () => {
  await admin.goto(`${URL}/?queues=1#/queues`);
  await admin.click('[data-queue="ui-broken"] button');
  await admin.waitForSelector('[data-queue="ui-broken"] .st-paused');
  let q = (await call("/api/v1/queues")).queues.find((x) => x.name === "ui-broken");
  assert.equal(q.paused, true);
  await admin.click('[data-queue="ui-broken"] button');
  await admin.waitForSelector('[data-queue="ui-broken"] .st-active');
  q = (await call("/api/v1/queues")).queues.find((x) => x.name === "ui-broken");
  assert.equal(q.paused, false);
});

await scenario("the workers page shows each worker's labels", async () => {
  await admin.goto(`${URL}/?page=labels#/workers`);
  await admin.waitForSelector("[data-worker]");
  const rows = await admin.$$eval("[data-worker]", (trs) => trs.map((tr) => tr.textContent));
  assert.equal(rows.length, 2, rows.join("\n"));
  for (const row of rows) assert.match(row, /region=eu/);
});

await scenario("screenshots of every page", async () => {
  // Something to show: a failed run, and two running steps.
  const broken = await call("/api/v1/runs", { dag: "ui-broken" });
  const sleepers = [await call("/api/v1/runs", { dag: "ui-sleepy", dedup: "none" }), await call("/api/v1/runs", { dag: "ui-sleepy", dedup: "none" })];
  let b, z;
  for (let i = 0; i < 100; i++) {
    [b, z] = [await call("/api/v1/runs/" + broken.id), await call("/api/v1/runs/" + sleepers[1].id)];
    if (b.status === "failed" && z.status === "running") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(b.status, "failed", JSON.stringify(b));
  assert.equal(z.status, "running", JSON.stringify(z));
  for (const [name, hash, sel, full] of [
    ["overview", "#/", "#hour-counts a.count", true],
    ["dags", "#/dags", "table tbody tr a", true],
    ["dag", "#/dags/ui-flaky", "#submit-form", true],
    ["runs", "#/runs", "table.runs tr[data-run]", false],
    ["queues", "#/queues", '[data-queue="ui-slow"]', true],
    ["workers", "#/workers", "[data-worker] a", true],
  ]) {
    // A fresh load (the query differs each time; the token stays in sessionStorage).
    await admin.goto(`${URL}/?page=${name}${hash}`);
    await admin.waitForSelector(sel);
    await admin.screenshot({ path: join(SHOTS, name + ".png"), fullPage: full });
  }
  for (const r of sleepers) await call(`/api/v1/runs/${r.id}/stop`, {});
});

await scenario("no script error on any page", async () => {
  assert.deepEqual(pageErrors, []);
});

await browser.close();
process.exit(failed ? 1 : 0);
