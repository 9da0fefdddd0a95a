// The embedtrain dashboard: plain JavaScript over the REST API, charts drawn as SVG (works offline).
"use strict";

const view = document.getElementById("view");
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#a16207", "#475569"];
let timer = null;

// Each draw of a page is numbered. An answer that comes after a later draw began (the user moved on, or a page was
// drawn again) is dropped: it neither replaces what is shown nor leaves a refresh timer behind.
let draws = 0;
function newDraw() { const mine = ++draws; return () => mine !== draws; }

function key() { return sessionStorage.getItem("embedtrain-key"); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(options.json); }
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { sessionStorage.removeItem("embedtrain-key"); showLogin("the key was refused"); throw new Error("401"); }
  if (options.raw && response.ok) return response;  // a file: the caller reads it
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(body && body.error ? errorText(body.error) : `HTTP ${response.status}`);
  return body;
}

// an error answer's message, then each further problem it lists (a refused config's every mistake), a line each
function errorText(error) {
  const more = (error.details || []).slice(1).map((d) => (d.field ? `${d.field}: ${d.message}` : d.message));
  return [error.message, ...more].join("\n");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    // styles through the CSSOM: the page's Content-Security-Policy refuses inline style attributes
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function fmt(x, digits = 3) { return x === null || x === undefined ? "" : Number(x).toFixed(digits); }
function eta(s) { if (!s) return ""; const m = Math.floor(s / 60); return m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`; }

// ---- charts ---------------------------------------------------------------------------------------------
function lineChart(title, series, testid) {
  const names = Object.keys(series).filter((n) => series[n] && series[n].length);
  const card = el("div", { class: "card" }, el("h3", {}, title));
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 400 200");
  svg.setAttribute("data-testid", testid);
  const all = names.flatMap((n) => series[n]);
  svg.setAttribute("data-points", String(all.length));
  card.append(svg);
  if (!all.length) { card.append(el("p", {}, "no data yet")); return card; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 40 + (x1 === x0 ? 0 : (x - x0) / (x1 - x0)) * 350;
  const sy = (y) => 180 - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0)) * 165;
  for (const [text, x, y] of [[fmt(y1), 2, 18], [fmt(y0), 2, 182], [String(x0), 40, 197], [String(x1), 360, 197]]) {
    const t = document.createElementNS(svgNS, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", "10"); t.textContent = text; svg.append(t);
  }
  const legend = el("div", { class: "legend" });
  names.forEach((name, i) => {
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", COLORS[i % COLORS.length]); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("points", series[name].map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
    svg.append(line);
    legend.append(el("span", { style: `color:${COLORS[i % COLORS.length]}` }, `■ ${name}`));
  });
  card.append(legend);
  return card;
}

function scatter(points, testid) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", "0 0 400 300"); svg.style.height = "300px";
  svg.setAttribute("data-testid", testid); svg.setAttribute("data-points", String(points.length));
  if (!points.length) return svg;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const labels = [...new Set(points.map((p) => p.label))];
  for (const p of points) {
    const c = document.createElementNS(svgNS, "circle");
    c.setAttribute("cx", (10 + (p.x - x0) / ((x1 - x0) || 1) * 380).toFixed(1));
    c.setAttribute("cy", (290 - (p.y - y0) / ((y1 - y0) || 1) * 280).toFixed(1));
    c.setAttribute("r", "2.5"); c.setAttribute("fill", COLORS[labels.indexOf(p.label) % COLORS.length]);
    svg.append(c);
  }
  return svg;
}

function series(metrics, name) { return (metrics[name] || []).map((p) => [p.step, p.value]); }

// ---- pages ----------------------------------------------------------------------------------------------
const JOBS_PER_PAGE = 100;

// Where a page of a list sits among all its rows, with links to the newer and older pages.
function pager(page, offset, perPage, list) {
  const shown = page.items.length ? `${offset + 1}-${offset + page.items.length} of ${page.total}` : `none from ${offset + 1}`;
  return el("p", { "data-testid": `${list}-pager` }, `${shown} `,
    offset > 0 ? el("a", { href: `#/${list}?offset=${Math.max(0, offset - perPage)}` }, "newer") : "", " ",
    offset + page.items.length < page.total ? el("a", { href: `#/${list}?offset=${offset + perPage}` }, "older") : "");
}

async function jobsPage(offset = 0, stale = newDraw()) {
  const page = await api(`/v1/jobs?limit=${JOBS_PER_PAGE}&offset=${offset}`);
  if (stale()) return;
  const table = el("table", { "data-testid": "jobs" },
    el("tr", {}, ...["name", "status", "dataset", "progress", "samples/s", "ETA", "created"].map((h) => el("th", {}, h))));
  for (const j of page.items) {
    const bar = el("span", { class: "bar" }, el("span", { style: `width:${Math.round(j.progress.fraction * 100)}%` }));
    table.append(el("tr", { "data-job": j.id },
      el("td", {}, el("a", { href: `#/jobs/${j.id}` }, j.name)), el("td", { class: `status-${j.status}` }, j.status),
      el("td", {}, j.dataset_id ? j.dataset_id.slice(0, 8) : ""), el("td", {}, bar, ` ${Math.round(j.progress.fraction * 100)}%`),
      el("td", {}, j.progress.samples_per_s ? Math.round(j.progress.samples_per_s) : ""), el("td", {}, eta(j.progress.eta_s)),
      el("td", {}, j.created_at.slice(0, 19).replace("T", " "))));
  }
  view.replaceChildren(el("h2", {}, `Jobs (${page.total})`), table, pager(page, offset, JOBS_PER_PAGE, "jobs"));
  timer = setTimeout(route, 2000);  // live refresh without a page reload
}

// A running job's page refreshes every 2 s in place: the header, charts and events are drawn again, while the
// checkpoint rows (with a model name being typed), the picture and its checkpoint choice stay. The picture is
// fetched only when a checkpoint is chosen: it embeds held-out records with that checkpoint on the server (3.7 s
// for 400 texts with the MiniLM model on 2 cores), which a refresh every 2 s would redo without end.
let shownJob = null;

// the API counts epochs from 0; people from 1, out of the run's epochs where it names them (not with max_steps)
function epochShown(job) {
  const epochs = job.config.train && job.config.train.epochs;
  return `${job.progress.epoch + 1}${epochs ? ` of ${epochs}` : ""}`;
}

async function jobPage(id, stale = newDraw()) {
  const [job, metrics, checkpoints, events] = await Promise.all([
    api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/metrics?max_points=500`).then((m) => m.series),  // a chart is 350 px wide
    api(`/v1/jobs/${id}/checkpoints`), api(`/v1/jobs/${id}/events`)]);
  if (stale()) return;
  if (!shownJob || shownJob.id !== id || !view.contains(shownJob.root)) shownJob = buildJobPage(id);
  const page = shownJob;
  page.head.replaceChildren(
    el("h2", {}, `${job.name} `, el("span", { class: `status-${job.status}`, "data-testid": "job-status" }, job.status)),
    el("p", { "data-testid": "job-progress" }, `step ${job.progress.step} / ${job.progress.total_steps} · epoch ${epochShown(job)} · attempts ${job.attempts}`,
      job.error ? el("span", { class: "error" }, ` · ${job.error}`) : ""),
    job.start_from ? el("p", { "data-testid": "job-start" }, `started from model ${job.start_from.model} version ${job.start_from.version}`) : "");
  if (job.status === "queued" || job.status === "running") {
    page.head.append(el("button", { "data-testid": "cancel", onclick: () => act(async () => {
      await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); route();
    }) }, "Cancel"));
  } else {
    if (job.status === "cancelled" || job.status === "failed") {
      page.head.append(el("button", { "data-testid": "resume", onclick: () => act(async () => {
        await api(`/v1/jobs/${id}/resume`, { method: "POST" }); route();
      }) }, "Resume"));
    }
    page.head.append(el("button", { "data-testid": "delete-job", onclick: () => act(async () => {
      if (!confirm(`Delete job ${job.name} with its metrics and checkpoints?`)) return;
      await api(`/v1/jobs/${id}`, { method: "DELETE" });
      location.hash = "#/jobs";
    }) }, "Delete"));
  }
  page.charts.replaceChildren(
    lineChart("Loss", { loss: series(metrics, "loss"), val_loss: series(metrics, "val_loss") }, "chart-loss"),
    lineChart("Learning rate", { lr: series(metrics, "lr") }, "chart-lr"),
    lineChart("Temperature", { temperature: series(metrics, "temperature") }, "chart-temperature"),
    lineChart("Alignment and uniformity (at the start, then per epoch)", { alignment: series(metrics, "alignment"), uniformity: series(metrics, "uniformity") }, "chart-geometry"),
    lineChart("k-NN and linear probe top-1 (at the start, then per epoch)", { knn_top1: series(metrics, "knn_top1"), linear_probe_top1: series(metrics, "linear_probe_top1") }, "chart-accuracy"),
    lineChart("Negative similarity diagnostics", { pos_sim_mean: series(metrics, "pos_sim_mean"), neg_sim_mean: series(metrics, "neg_sim_mean"), neg_sim_max: series(metrics, "neg_sim_max") }, "chart-diagnostics"),
    lineChart("Entropy of the weights on negatives", { neg_weight_entropy_ratio: series(metrics, "neg_weight_entropy_ratio") }, "chart-entropy"));
  showCheckpoints(page, checkpoints);
  page.events.replaceChildren(...events.map((e) => el("li", {}, `${e.created_at.slice(11, 19)} ${e.kind} ${e.message}`)));
  if (job.status === "queued" || job.status === "running") timer = setTimeout(route, 2000);
}

function buildJobPage(id) {
  const page = {
    id, head: el("div"), charts: el("div", { class: "grid" }), rows: new Map(),
    checkpoints: el("table", { "data-testid": "checkpoints" }, el("tr", {}, ...["step", "val_loss", "k-NN", "", ""].map((h) => el("th", {}, h)))),
    marks: new Map(),  // checkpoint id -> the cell that says whether it is the one "best" names
    picture: el("div", { class: "card" }, el("h3", {}, "Embedding picture (PCA of held-out records)")), choice: null,
    events: el("ol", { "data-testid": "events" }),
  };
  page.root = el("div", {}, page.head, page.charts, el("h3", {}, "Checkpoints"), page.checkpoints, page.picture,
    el("h3", {}, "Events"), page.events, el("p", { id: "notice" }));
  view.replaceChildren(page.root);
  return page;
}

// The rows and the picture's choices follow the job's checkpoints: new ones are added, pruned ones removed, the
// others (and what was typed or chosen in them) left as they are.
function showCheckpoints(page, checkpoints) {
  const ids = new Set(checkpoints.map((c) => c.id));
  for (const [cid, row] of page.rows) if (!ids.has(cid)) { row.remove(); page.rows.delete(cid); page.marks.delete(cid); }
  for (const c of checkpoints) {
    if (page.rows.has(c.id)) continue;
    const name = el("input", { placeholder: "model name", size: "16", "data-testid": `model-name-${c.step}` });
    const mark = el("td", { "data-testid": `best-${c.step}` });
    const row = el("tr", {}, el("td", {}, c.step), el("td", {}, fmt(c.metrics.val_loss)), el("td", {}, fmt(c.metrics.knn_top1)), mark,
      el("td", {}, name, el("button", { "data-testid": `register-${c.step}`, onclick: () => act(async () => {
        const m = await api("/v1/models", { method: "POST", json: { job_id: page.id, checkpoint: c.id, name: name.value } });
        alertText(`registered ${m.name} v${m.version}`);
      }) }, "Register model")));
    page.rows.set(c.id, row);
    page.marks.set(c.id, mark);
    page.checkpoints.append(row);  // checkpoints come in step order, and a new one is the latest
  }
  for (const c of checkpoints) page.marks.get(c.id).textContent = c.best ? "best" : "";  // it moves as the job goes on
  if (!checkpoints.length) return;
  if (!page.choice) {
    const holder = el("div");
    page.choice = el("select", { "data-testid": "projection-checkpoint" });
    const draw = () => act(async () => {
      const p = await api(`/v1/jobs/${page.id}/projection?checkpoint_id=${page.choice.value}&limit=400`);
      holder.replaceChildren(scatter(p.points, "projection"));
    });
    page.choice.addEventListener("change", draw);
    page.picture.append(page.choice, holder);
    syncOptions(page.choice, checkpoints);
    page.choice.value = checkpoints[checkpoints.length - 1].id;
    draw();
  } else syncOptions(page.choice, checkpoints);
}

function syncOptions(select, checkpoints) {
  const ids = new Set(checkpoints.map((c) => c.id));
  for (const option of [...select.options]) if (!ids.has(option.value) && option.value !== select.value) option.remove();
  const present = new Set([...select.options].map((o) => o.value));
  for (const c of checkpoints) if (!present.has(c.id)) select.append(el("option", { value: c.id }, `step ${c.step}`));
}

function alertText(text) { const n = document.getElementById("notice"); if (n) n.textContent = text; }
// A button's action: an error answer shows in the page's notice line rather than only in the console.
async function act(action) { try { await action(); } catch (e) { alertText(e.message); } }

const DATASETS_PER_PAGE = 100;

// Upload a file (the same form fields as POST /v1/datasets), list what is there, start a job on one, delete one.
async function datasetsPage(offset = 0, stale = newDraw()) {
  const page = await api(`/v1/datasets?limit=${DATASETS_PER_PAGE}&offset=${offset}`);
  if (stale()) return;
  const file = el("input", { type: "file", "data-testid": "upload-file" });
  const modality = el("select", { "data-testid": "upload-modality" }, ...["text", "vectors", "image"].map((m) => el("option", { value: m }, m)));
  const name = el("input", { size: "20", placeholder: "name (default: the file's)", "data-testid": "upload-name" });
  // the columns a text or vectors file's labels, texts or pairs are in, where not "label", "text", "anchor", "positive"
  const columns = [["label_column", "label column"], ["text_column", "text column"], ["anchor_column", "anchor column"],
    ["positive_column", "positive column"]].map(([field, hint]) =>
    [field, el("input", { size: "14", placeholder: hint, "data-testid": `upload-${field.replace("_", "-")}` })]);
  const upload = el("button", { "data-testid": "upload", onclick: () => act(async () => {
    if (!file.files.length) throw new Error("choose a file to upload");
    const form = new FormData();
    form.append("file", file.files[0]);
    form.append("modality", modality.value);
    if (name.value.trim()) form.append("name", name.value.trim());
    for (const [field, input] of columns) if (input.value.trim()) form.append(field, input.value.trim());
    upload.disabled = true;
    try {
      const d = await api("/v1/datasets", { method: "POST", body: form });
      await datasetsPage(0);
      alertText(`uploaded ${d.name}: ${d.num_records} records${d.num_labels ? `, ${d.num_labels} labels` : ""}`);
    } finally { upload.disabled = false; }
  }) }, "Upload");
  const table = el("table", { "data-testid": "datasets" },
    el("tr", {}, ...["name", "modality", "records", "labels", "created", "id", ""].map((h) => el("th", {}, h))));
  for (const d of page.items) {
    table.append(el("tr", { "data-dataset": d.id },
      el("td", {}, d.name), el("td", {}, d.modality), el("td", {}, d.num_records), el("td", {}, d.num_labels || ""),
      el("td", {}, d.created_at.slice(0, 19).replace("T", " ")), el("td", {}, el("code", {}, d.id)),
      el("td", {}, el("a", { href: `#/new?dataset=${d.id}` }, "New job"), " ",
        el("button", { onclick: () => act(async () => {
          if (!confirm(`Delete dataset ${d.name}?`)) return;
          await api(`/v1/datasets/${d.id}`, { method: "DELETE" }); await datasetsPage(offset);
        }) }, "Delete"))));
  }
  view.replaceChildren(el("h2", {}, `Datasets (${page.total})`),
    el("div", { class: "card" }, el("h3", {}, "Upload"), file, " ", modality, " ", name, " ", ...columns.flatMap(([, input]) => [input, " "]), upload,
      el("p", { "data-testid": "upload-formats" },
        "Text: JSONL, JSON, CSV, Parquet (text, or anchor and positive, or the columns named above; an optional label column) or plain text. ",
        "Vectors: CSV, Parquet or NPY. Images: a ZIP of class folders or an NPZ of images and labels. ",
        "Any of them may be gzipped (.gz).")),
    el("p", { id: "notice" }), table, pager(page, offset, DATASETS_PER_PAGE, "datasets"));
}

const DATASETS_LISTED = 200;

async function newJobPage(chosen = "", stale = newDraw()) {
  const [datasets, models] = await Promise.all([api(`/v1/datasets?limit=${DATASETS_LISTED}`), api("/v1/models")]);
  if (stale()) return;
  // a registered model's weights to start from (its model and head sections are then the config's defaults)
  const start = el("select", { id: "start-from", "data-testid": "start-from" }, el("option", { value: "" }, "new weights"),
    ...models.data.flatMap((entry) => entry.versions.map((v) => el("option", { value: JSON.stringify({ model: v.name, version: v.version }) },
      `model ${v.name} version ${v.version} (${v.modality})`))));
  const select = el("select", { id: "dataset", "data-testid": "dataset" }, ...datasets.items.map((d) => el("option", { value: d.id, "data-modality": d.modality }, `${d.name} (${d.modality}, ${d.num_records})`)));
  // beyond the newest listed, a dataset is named by id (the CLI's `datasets list --offset` pages through them all)
  const byId = el("input", { id: "dataset-id", size: "34", placeholder: "dataset id", "data-testid": "dataset-id" });
  const name = el("input", { id: "job-name", value: "job", "data-testid": "job-name" });
  const config = el("textarea", { id: "config", rows: "14", "data-testid": "config" });
  let offered = "";  // the config last filled in: one edited since is the user's and stays
  const setDefault = (modality) => {
    if (config.value !== offered) return;
    config.value = offered = JSON.stringify({ data: { modality, val_fraction: 0.2 }, train: { epochs: 5, batch_size: 64 } }, null, 2);
  };
  const fromList = () => setDefault(select.selectedOptions[0] ? select.selectedOptions[0].dataset.modality : "vectors");
  const error = el("p", { class: "error", "data-testid": "submit-error" });
  const fromId = async () => {
    error.textContent = "";
    if (!byId.value.trim()) return fromList();
    try { setDefault((await api(`/v1/datasets/${encodeURIComponent(byId.value.trim())}`)).modality); } catch (e) { error.textContent = e.message; }
  };
  select.addEventListener("change", () => { byId.value = ""; fromList(); });
  byId.addEventListener("change", fromId);
  // a dataset chosen on the datasets page: picked from the list, or named by id where it is older than those listed
  if (chosen && datasets.items.some((d) => d.id === chosen)) select.value = chosen;
  else if (chosen) byId.value = chosen;
  if (byId.value) await fromId(); else fromList();
  const submit = el("button", { "data-testid": "submit", onclick: async () => {
    try {
      const job = await api("/v1/jobs", { method: "POST", json: { dataset_id: byId.value.trim() || select.value, name: name.value,
        start_from: start.value ? JSON.parse(start.value) : null, config: JSON.parse(config.value) } });
      location.hash = `#/jobs/${job.id}`;
    } catch (e) { error.textContent = e.message; }
  } }, "Submit job");
  const listed = datasets.total === 0
    ? el("span", { "data-testid": "no-datasets" }, "none yet: upload one first on the ", el("a", { href: "#/datasets" }, "datasets page"),
      " (or POST /v1/datasets, or `embedtrain datasets upload FILE --modality ...`)")
    : el("span", {}, select, datasets.total > datasets.items.length ? ` (the ${datasets.items.length} newest of ${datasets.total}) or by id ` : " or by id ", byId);
  view.replaceChildren(el("h2", {}, "New training job"), el("p", {}, "Dataset ", listed), el("p", {}, "Name ", name),
    el("p", {}, "Start from ", start), el("p", {}, "Run config (the same JSON as POST /v1/jobs)"), config, submit, error);
}

async function modelsPage(stale = newDraw()) {
  const models = (await api("/v1/models")).data.flatMap((entry) => entry.versions);
  if (stale()) return;
  const table = el("table", { "data-testid": "models" }, el("tr", {}, ...["name", "version", "modality", "dims", "deployed", ""].map((h) => el("th", {}, h))));
  for (const m of models) {
    const weights = el("button", { onclick: () => act(async () => {
      const response = await api(`/v1/models/${m.name}/weights?version=${m.version}`, { raw: true });
      const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `${m.name}-v${m.version}.safetensors` });
      link.click();
      URL.revokeObjectURL(link.href);
    }) }, "Weights");
    const actions = m.deployed
      ? [el("button", { onclick: () => act(async () => { await api(`/v1/models/${m.name}/undeploy`, { method: "POST" }); route(); }) }, "Undeploy")]
      : [el("button", { onclick: () => act(async () => { await api(`/v1/models/${m.name}/deploy`, { method: "POST", json: { version: m.version } }); route(); }) }, "Deploy"),
         el("button", { onclick: () => act(async () => {
           if (!confirm(`Delete ${m.name} version ${m.version}? Its job and checkpoint stay.`)) return;
           await api(`/v1/models/${m.name}?version=${m.version}`, { method: "DELETE" }); route();
         }) }, "Delete")];
    table.append(el("tr", {}, el("td", {}, m.name), el("td", {}, m.version), el("td", {}, m.modality), el("td", {}, m.dimensions),
      el("td", {}, m.deployed ? (m.precision ? `yes (${m.precision})` : "yes") : ""), el("td", {}, ...actions, weights)));
  }
  const deployedText = models.filter((m) => m.deployed && m.modality === "text");
  const tryIt = el("div", { class: "card" }, el("h3", {}, "Try it: nearest records of the training data"));
  if (deployedText.length) {
    const which = el("select", {}, ...deployedText.map((m) => el("option", { value: m.name }, m.name)));
    const text = el("input", { size: "50", placeholder: "a text" });
    const out = el("ol");
    tryIt.append(which, text, el("button", { "data-testid": "neighbors", onclick: () => act(async () => {
      const hits = await api(`/v1/models/${which.value}/neighbors`, { method: "POST", json: { input: text.value, k: 5 } });
      out.replaceChildren(...hits.map((h) => el("li", {}, `${fmt(h.score)} ${h.text}${h.label ? ` [${h.label}]` : ""}`)));
    }) }, "Embed"), out);
  } else tryIt.append(el("p", {}, "Deploy a text model to try it here."));
  view.replaceChildren(el("h2", {}, "Models"), table, el("p", { id: "notice" }), tryIt);
}

// ---- routing and login ----------------------------------------------------------------------------------
function showLogin(message = "") {
  clearTimeout(timer);
  newDraw();  // a page's answer still on its way is not drawn over the login
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message;
  view.replaceChildren();
}

async function route() {
  clearTimeout(timer);
  if (!key()) return showLogin();
  document.getElementById("login").hidden = true;
  document.getElementById("logout").hidden = false;
  const hash = location.hash || "#/jobs";
  const stale = newDraw();
  try {
    const params = new URLSearchParams(hash.split("?")[1]);
    const offset = Math.max(0, parseInt(params.get("offset"), 10) || 0);
    if (hash.startsWith("#/jobs/")) await jobPage(hash.slice(7), stale);
    else if (hash.startsWith("#/new")) await newJobPage(params.get("dataset") || "", stale);
    else if (hash.startsWith("#/datasets")) await datasetsPage(offset, stale);
    else if (hash === "#/models") await modelsPage(stale);
    else await jobsPage(offset, stale);
  } catch (e) {
    if (e.message !== "401" && !stale()) view.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("embedtrain-key", document.getElementById("key").value.trim());
  route();
});
document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem("embedtrain-key"); showLogin(); });
window.addEventListener("hashchange", route);
route();
