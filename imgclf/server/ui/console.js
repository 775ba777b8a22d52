// imgclf web console: plain JavaScript over the server's REST API (no build step).
// Pages are sections switched by the URL hash; every request carries the token kept
// in sessionStorage (this tab only) as a bearer token.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "imgclf.token";
let models = [];          // [{name, labels, serving_labels, versions:[{version,state,error}], problems}]
let cards = {};           // name -> {aliases, versions:[summary]}
let openJob = null;       // the job whose details and log are shown
let logOffset = 0;
// What the Models page shows of a version's data audit (its card has more).
const AUDIT_KEYS = ["images", "test_with_train_copy", "val_with_train_copy", "duplicate_groups",
  "cross_label_groups", "label_suspects", "unreadable", "tiny", "grayscale"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const signedPct = (x) => (x === null || x === undefined ? "–" : (x > 0 ? "+" : "") + (100 * x).toFixed(1) + " pts");
const bytes = (n) => (n ? (n / 1048576).toFixed(1) + " MB" : "–");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", "Bearer " + token);
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");  // the server's cross-site rules ask for it
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
  return body;
}

function show(target, error) {
  target.textContent = error ? (error.status ? error.status + ": " : "") + error.message : "";
}

// ---- token -------------------------------------------------------------------------
function tokenState() {
  $("token-state").textContent = sessionStorage.getItem(TOKEN_KEY) ? "token set for this tab" : "no token";
}
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  tokenState();
  route();
});
$("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); tokenState(); route(); });

// ---- models --------------------------------------------------------------------------
async function loadModels() {
  show($("models-error"));
  try {
    models = (await api("/v1/models")).models;
  } catch (error) {
    show($("models-error"), error.status === 401 ? new Error("the model list needs the admin token: enter it above") : error);
    models = [];
  }
  cards = {};
  await Promise.all(models.map(async (m) => {
    try { cards[m.name] = await api(`/v1/models/${m.name}/cards`); } catch (error) { cards[m.name] = { error: error.message, versions: [], aliases: {} }; }
  }));
  fillModelSelects();
}

function stateOf(model, version) {
  const served = model.versions.find((v) => v.version === version);
  if (!served) return { text: "not loaded", error: "" };
  if (served.error) return { text: "refused", error: served.error };
  return { text: served.state, error: served.state === "END" ? "unloaded: no label or version policy holds it" : "" };
}

function renderModels() {
  const list = $("model-list");
  list.replaceChildren();
  if (!models.length) { list.append(el("p", {}, "No models yet.")); return; }
  for (const model of models) {
    const card = cards[model.name] || { versions: [], aliases: {} };
    const aliasesOf = (v) => Object.entries(model.labels).filter(([, n]) => n === v).map(([l]) => l);
    const rows = card.versions.filter((s) => s.version).map((s) => {
      const state = stateOf(model, s.version);
      const audit = s.audit ? AUDIT_KEYS.filter((k) => s.audit[k]).map((k) => `${k.replaceAll("_", " ")} ${s.audit[k]}`).join(", ") : "–";
      return el("tr", {},
        el("th", { scope: "row" }, String(s.version)),
        el("td", {}, aliasesOf(s.version).map((a) => el("span", { class: "alias" }, a))),
        el("td", { class: "state-" + state.text }, state.text, state.error ? el("div", { class: "reason" }, state.error) : null),
        el("td", {}, pct(s.test.accuracy)),
        el("td", {}, pct(s.test.macro_f1)),
        el("td", {}, s.diagnosis.status || "–", s.diagnosis.summary ? el("div", { class: "reason" }, s.diagnosis.summary) : null,
          s.calibration && s.calibration.ece_after !== undefined ? el("div", { class: "reason" }, `calibration error ${pct(s.calibration.ece_before)} → ${pct(s.calibration.ece_after)}`) : null),
        el("td", {}, audit),
        el("td", {}, bytes(s.artifact_bytes)),
        el("td", {}, when(s.created_at)),
        el("td", {}, s.report ? el("button", { type: "button", onclick: () => openReport(model.name, s.version) }, `Report v${s.version}`) : "–"));
    });
    const labelInput = el("input", { name: "label", value: "stable", required: true, id: `promote-label-${model.name}` });
    const versionSelect = el("select", { name: "version", id: `promote-version-${model.name}` },
      card.versions.filter((s) => s.version).map((s) => el("option", { value: s.version }, `version ${s.version}`)));
    const result = el("output", { "aria-live": "polite", id: `promote-result-${model.name}` });
    const rollbacks = Object.entries(card.rollback || {}).filter(([, v]) => v).map(([label, v]) =>
      el("button", { type: "button", class: "rollback", onclick: () => promoteLabel(model.name, label, v, result) }, `Roll back ${label} to version ${v}`));
    const promote = el("form", { class: "row promote", onsubmit: (event) => { event.preventDefault(); promoteLabel(model.name, labelInput.value, Number(versionSelect.value), result); } },
      el("label", {}, "Label ", labelInput), el("label", {}, "to ", versionSelect),
      el("button", { type: "submit" }, "Promote"), rollbacks, result);
    list.append(el("article", { class: "model", "data-model": model.name },
      el("h3", {}, model.name),
      el("p", {}, "Labels: ", Object.keys(model.labels).length ? Object.entries(model.labels).map(([l, v]) => el("span", { class: "alias" }, `${l} → ${v}`)) : "none"),
      model.problems.map((p) => el("p", { class: "error" }, p)),
      card.error ? el("p", { class: "error" }, card.error) : null,
      el("div", { class: "scroll" }, el("table", {},
        el("caption", {}, `${model.name}: versions, newest first`),
        el("thead", {}, el("tr", {}, ["Version", "Labels", "State", "Test accuracy", "Macro F1", "Diagnosis", "Data audit", "Size", "Created", "Report"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows))),
      promote));
  }
}

async function promoteLabel(name, label, version, output) {
  output.className = "";
  output.textContent = `moving ${label} to version ${version}: loading and checking it…`;
  try {
    const answer = await api(`/v1/models/${name}/labels/${encodeURIComponent(label)}`, { method: "POST", json: { version } });
    output.textContent = `${label} → version ${answer.labels[label]}: loaded and serving`;
  } catch (error) {
    output.className = "error";
    output.textContent = (error.status === 409 ? "refused: " : `${error.status}: `) + error.message;
  }
  await loadModels();
  renderModels();
  $(`promote-result-${name}`).replaceWith(output);
}

async function openReport(name, version) {
  // Fetched with the token, then shown as an inert document: images become data: URLs.
  const base = `/v1/models/${name}/versions/${version}/report/`;
  const html = await (await api(base + "report.html")).text();
  const doc = new DOMParser().parseFromString(html, "text/html");
  for (const img of doc.querySelectorAll("img[src]")) {
    const src = img.getAttribute("src");
    if (/^[a-z]+:/i.test(src)) continue;
    img.src = await new Promise((resolve) => {
      api(base + src).then((blob) => { const reader = new FileReader(); reader.onload = () => resolve(reader.result); reader.readAsDataURL(blob); }, () => resolve(""));
    });
  }
  $("report-h").textContent = `Report: ${name} version ${version}`;
  $("report-frame").srcdoc = "<!doctype html>" + doc.documentElement.outerHTML;
  $("report").hidden = false;
  $("report").scrollIntoView();
  $("report-close").focus();
}
$("report-close").addEventListener("click", () => { $("report").hidden = true; $("report-frame").srcdoc = ""; });

function fillModelSelects() {
  for (const id of ["try-model", "cmp-model"]) {
    const select = $(id), kept = select.value;
    select.replaceChildren(...models.map((m) => el("option", { value: m.name }, m.name)));
    if (models.some((m) => m.name === kept)) select.value = kept;
  }
  fillTargets();
  fillCompare();
}

function fillTargets() {
  const model = models.find((m) => m.name === $("try-model").value);
  const select = $("try-target"), kept = select.value;
  select.replaceChildren(el("option", { value: "" }, "default (stable, else newest)"));
  if (!model) return;
  for (const [label, version] of Object.entries(model.labels)) select.append(el("option", { value: `labels/${label}` }, `label ${label} (version ${version})`));
  for (const v of model.versions) select.append(el("option", { value: `versions/${v.version}` }, `version ${v.version} (${v.error ? "refused" : v.state})`));
  if ([...select.options].some((o) => o.value === kept)) select.value = kept;
}
$("try-model").addEventListener("change", fillTargets);

// ---- try it --------------------------------------------------------------------------
const readB64 = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result.split(",", 2)[1]);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});

async function hasExplain(base) {
  try {
    const meta = await api(base + "/metadata");
    const defs = ((meta.metadata || {}).signature_def || {}).signature_def || {};
    return "explain" in defs;
  } catch { return false; }
}

async function classify(files) {
  show($("try-error"));
  const out = $("try-results");
  if (!files.length) { $("try-error").textContent = "pick at least one image"; return; }
  const target = $("try-target").value;
  const base = `/v1/models/${$("try-model").value}` + (target ? "/" + target : "");
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  form.append("top_k", $("try-k").value || "3");
  // Below min_score a server with calibration answers "unknown" (one without ignores it).
  const minScore = $("try-min").value === "" ? undefined : Number($("try-min").value);
  if (minScore !== undefined) form.append("min_score", String(minScore));
  out.replaceChildren(el("p", {}, "classifying…"));
  const started = performance.now();
  let answer;
  try {
    answer = await api(base + ":upload", { method: "POST", body: form });
  } catch (error) { out.replaceChildren(); show($("try-error"), error); return; }
  const latency = performance.now() - started;
  let overlays = [];
  if (await hasExplain(base)) {
    try {
      const instances = await Promise.all(files.map(async (f) => ({ b64: await readB64(f) })));
      overlays = (await api(base + ":explain", { method: "POST", json: { instances, top_k: Number($("try-k").value || 3), min_score: minScore } })).explanations.map((e) => e.overlay && e.overlay.b64);
    } catch (error) { show($("try-error"), new Error("no heatmap: " + error.message)); }
  }
  out.replaceChildren(el("p", { class: "answered" }, `Answered by ${answer.model} version ${answer.version} in ${latency.toFixed(0)} ms`),
    ...answer.results.map((result, i) => el("figure", { class: "result" },
      el("div", { class: "images" },
        el("img", { src: URL.createObjectURL(files[i]), alt: `uploaded ${result.filename}` }),
        overlays[i] ? el("img", { src: "data:image/png;base64," + overlays[i], alt: `heatmap over ${result.filename}` }) : null),
      el("figcaption", {}, el("strong", {}, result.filename),
        el("ol", { class: "top" }, result.top.map((t) => el("li", {},
          el("span", { class: "label" }, t.label), " ", el("span", { class: "score" }, pct(t.score)),
          el("meter", { min: 0, max: 1, value: t.score, "aria-hidden": "true" }))))))));
}
$("try-form").addEventListener("submit", (event) => { event.preventDefault(); classify([...$("try-files").files]); });
$("drop").addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  classify([...event.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
});

// ---- compare -------------------------------------------------------------------------
function fillCompare() {
  const card = cards[$("cmp-model").value] || { versions: [] };
  const numbers = card.versions.filter((s) => s.version).map((s) => s.version);
  for (const [id, pick] of [["cmp-a", 1], ["cmp-b", 0]]) {
    const select = $(id), kept = select.value;
    select.replaceChildren(...numbers.map((v) => el("option", { value: v }, `version ${v}`)));
    select.value = numbers.includes(Number(kept)) ? kept : numbers[Math.min(pick, numbers.length - 1)] || "";
  }
}
$("cmp-model").addEventListener("change", fillCompare);

function matrix(title, rows, labels) {
  if (!rows) return el("p", {}, "no confusion matrix");
  return el("table", { class: "matrix" }, el("caption", {}, title),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "true \\ predicted"), labels.map((l) => el("th", { scope: "col" }, l)))),
    el("tbody", {}, rows.map((row, i) => el("tr", {}, el("th", { scope: "row" }, labels[i]), row.map((n, j) => el("td", { class: i === j ? "diag" : n ? "miss" : "" }, String(n)))))));
}

$("compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show($("compare-error"));
  let c;
  try {
    c = await api(`/v1/models/${$("cmp-model").value}/compare?a=${$("cmp-a").value}&b=${$("cmp-b").value}`);
  } catch (error) { show($("compare-error"), error); return; }
  const metrics = Object.keys(c.a).filter((k) => !["version", "labels"].includes(k));
  const fmt = (k, v) => (k === "count" || k === "loss" ? (v === undefined ? "–" : String(Math.round(v * 1000) / 1000)) : pct(v));
  const v = c.verdict;
  $("compare-result").replaceChildren(
    el("p", { class: "verdict " + v.decision }, `Promotion gate on version ${c.b.version} against version ${c.a.version}: ${v.decision}`),
    v.reasons.length ? el("ul", {}, v.reasons.map((r) => el("li", {}, r))) : el("p", {}, "Every rule passes."),
    el("p", { class: "muted" }, "Compared on " + v.compared_on + (v.note ? "; " + v.note : "") + (v.caveat ? "; " + v.caveat : "")),
    el("div", { class: "scroll" }, el("table", {}, el("caption", {}, "Test metrics"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Metric"), el("th", { scope: "col" }, `version ${c.a.version}`), el("th", { scope: "col" }, `version ${c.b.version}`))),
      el("tbody", {}, metrics.map((k) => el("tr", {}, el("th", { scope: "row" }, k.replaceAll("_", " ")), el("td", {}, fmt(k, c.a[k])), el("td", {}, fmt(k, c.b[k]))))))),
    el("div", { class: "scroll" }, el("table", { id: "per-class" }, el("caption", {}, "Per class (b minus a)"),
      el("thead", {}, el("tr", {}, ["Class", "Precision a", "Precision b", "Δ", "Recall a", "Recall b", "Δ", "F1 Δ"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, c.per_class.map((r) => el("tr", {}, el("th", { scope: "row" }, r.label),
        el("td", {}, pct(r.precision.a)), el("td", {}, pct(r.precision.b)), el("td", { class: r.precision.delta < 0 ? "worse" : "" }, signedPct(r.precision.delta)),
        el("td", {}, pct(r.recall.a)), el("td", {}, pct(r.recall.b)), el("td", { class: r.recall.delta < 0 ? "worse" : "" }, signedPct(r.recall.delta)),
        el("td", {}, signedPct(r.f1.delta))))))),
    el("div", { class: "matrices" }, matrix(`version ${c.a.version}`, c.confusion.a, c.a.labels), matrix(`version ${c.b.version}`, c.confusion.b, c.b.labels)));
});

// ---- jobs ----------------------------------------------------------------------------
function progressText(job) {
  const p = job.progress;
  if (job.status !== "running" || !p) return job.status === "failed" || job.status === "rejected" ? (job.error || "").slice(0, 160) : job.version ? `version ${job.version}` : "";
  const parts = [];
  if (p.trial !== null && p.trial !== undefined) parts.push(`trial ${p.trial} (${p.trials_done}/${p.trials_planned})`);
  if (p.fold) parts.push(`fold ${p.fold}/${p.folds}`);
  if (p.stage === "train") {
    parts.push(`${p.phase_name || "phase " + p.phase} epoch ${p.epoch}/${p.epochs} batch ${p.batch}/${p.steps}`);
    for (const k of ["loss", "accuracy", "val_loss", "val_accuracy"]) if (k in (p.metrics || {})) parts.push(`${k} ${p.metrics[k].toFixed(3)}`);
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${Math.round(p.eta_seconds)} s`);
  } else if (p.stage) parts.push(p.stage);
  return parts.join(", ");
}

async function refreshJobs() {
  let jobs;
  try { jobs = (await api("/v1/jobs?limit=50")).jobs; show($("jobs-error")); } catch (error) {
    show($("jobs-error"), error.status === 401 ? new Error("jobs need the admin token: enter it above") : error);
    return;
  }
  // Rows are updated in place (a re-created row would take the keyboard focus away).
  const body = $("job-table").tBodies[0];
  const rows = jobs.map((job) => {
    const row = [...body.rows].find((r) => r.dataset.job === job.id) || el("tr", { "data-job": job.id },
      el("th", { scope: "row" }, el("code", {}, job.id.slice(0, 8))), el("td", {}, job.kind), el("td", {}, job.name),
      el("td"), el("td", { class: "progress" }), el("td", {}, when(job.created_at)),
      el("td", {}, el("button", { type: "button", onclick: () => { openJob = job.id; logOffset = 0; $("job-log").textContent = ""; refreshDetail(); } }, `Details ${job.id.slice(0, 8)}`)));
    row.dataset.status = job.status;
    row.cells[3].className = "status-" + job.status;
    row.cells[3].textContent = job.status;
    row.cells[4].textContent = progressText(job);
    return row;
  });
  if (rows.map((r) => r.dataset.job).join() !== [...body.rows].map((r) => r.dataset.job).join()) body.replaceChildren(...rows);
  if (openJob) await refreshDetail();
}

async function refreshDetail() {
  const job = await api(`/v1/jobs/${openJob}`);
  $("job-detail").hidden = false;
  $("job-detail-h").textContent = `Job ${job.id.slice(0, 8)}: ${job.kind} ${job.name}`;
  const facts = [["Status", job.status], ["Progress", progressText(job) || "–"], ["Version", job.version || "–"],
    ["Test accuracy", job.metrics ? pct(job.metrics.accuracy) : "–"], ["Error", job.error || "–"], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)]];
  $("job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, String(v))]));
  $("job-cancel").disabled = ["succeeded", "failed", "rejected", "cancelled"].includes(job.status);
  const chunk = await api(`/v1/jobs/${job.id}/logs?offset=${logOffset}`);
  logOffset = chunk.next_offset;
  const log = $("job-log");
  log.textContent = (log.textContent + chunk.text).slice(-20000);
  log.scrollTop = log.scrollHeight;
}
$("job-cancel").addEventListener("click", async () => {
  try { await api(`/v1/jobs/${openJob}`, { method: "DELETE" }); } catch (error) { show($("jobs-error"), error); }
  refreshJobs();
});

function fieldOf(message) {
  const named = /field '([a-z_]+)/.exec(message);
  if (named) return named[1];
  if (/data path|data roots/i.test(message)) return "data";
  if (/model name|name /i.test(message)) return "name";
  return null;
}

$("job-kind").addEventListener("change", () => {
  for (const field of document.querySelectorAll("#job-form [data-kind]")) field.hidden = field.dataset.kind !== $("job-kind").value;
});

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  for (const span of form.querySelectorAll("span.error")) span.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  show($("job-form-error"));
  $("job-form-result").textContent = "";
  const doc = { kind: $("job-kind").value, name: $("job-name").value.trim(), data: $("job-data").value.trim() };
  for (const input of form.querySelectorAll("input[type=number], #job-weights")) {
    if (input.value !== "" && !input.closest("[hidden]")) doc[input.name] = input.type === "number" ? Number(input.value) : input.value;
  }
  if ($("job-extra").value.trim()) {
    try { Object.assign(doc, JSON.parse($("job-extra").value)); } catch (error) {
      $("err-extra").textContent = "not a JSON object: " + error.message; $("job-extra").setAttribute("aria-invalid", "true"); return;
    }
  }
  try {
    const job = await api("/v1/jobs", { method: "POST", json: doc });
    $("job-form-result").textContent = `job ${job.id.slice(0, 8)} ${job.status}`;
    openJob = job.id; logOffset = 0; $("job-log").textContent = "";
    refreshJobs();
  } catch (error) {
    let placed = false;
    for (const line of error.message.split("\n")) {
      const field = fieldOf(line);
      const span = field && ($(`err-${field}`) || (doc[field] !== undefined ? $("err-extra") : null));
      if (span) { span.textContent += line + " "; ($(`job-${field}`) || $("job-extra")).setAttribute("aria-invalid", "true"); placed = true; }
      else $("job-form-error").textContent += line + " ";
    }
    if (!placed && !$("job-form-error").textContent) show($("job-form-error"), error);
  }
});

// ---- pages -----------------------------------------------------------------------------
let timer = null;
async function route() {
  const page = (location.hash || "#models").slice(1).split("/")[0];
  const known = ["models", "try", "compare", "jobs"].includes(page) ? page : "models";
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== known;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.hash === "#" + known) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  clearInterval(timer);
  if (known === "jobs") {
    await refreshJobs();
    timer = setInterval(refreshJobs, 2000);
  } else {
    await loadModels();
    if (known === "models") renderModels();
  }
  document.body.dataset.ready = known;  // for tests and screenshots: the page has its data
}
window.addEventListener("hashchange", route);
tokenState();
$("job-kind").dispatchEvent(new Event("change"));
route();
