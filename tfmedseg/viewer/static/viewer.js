// tfmedseg viewer page: plain JavaScript + canvas, talks to the JSON API of tfmedseg.viewer.app.
// Views (see tfmedseg/viewer/scans.py): axial rows = H, cols = W; coronal rows = D (superior on top), cols = W;
// sagittal rows = D (superior on top), cols = H. A voxel is [d, h, w] on the canonical grid.
"use strict";

const VIEWS = ["axial", "coronal", "sagittal"];
const PRESETS = {
  abdomen: { level: 40, width: 400, cmap: "grey" },
  liver: { level: 60, width: 150, cmap: "grey" },
  bone: { level: 400, width: 1800, cmap: "grey" },
  lung: { level: -600, width: 1500, cmap: "grey" },
};
const BOX = 412; // CSS pixels of a view's square box

const S = {
  info: null, dir: "", scan: null, models: [], results: null,
  index: { axial: 0, coronal: 0, sagittal: 0 }, cursor: null,
  level: 40, width: 400, cmap: "grey", opacity: 0.4, crosshair: true,
  hidden: new Set(), cache: new Map(), generation: 0, active: "axial", jobs: new Map(),
};
window.tfmedsegViewer = S; // for scripts and tests: the page's state

const $ = (id) => document.getElementById(id);

function message(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.style.display = "block";
  clearTimeout(message.timer);
  message.timer = setTimeout(() => { box.style.display = "none"; }, kind === "error" ? 12000 : 4000);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const body = isJson ? await response.json() : await response.arrayBuffer();
  if (!response.ok) {
    throw new Error(isJson && body.error ? body.error : `${path}: HTTP ${response.status}`);
  }
  return { body, headers: response.headers };
}

async function postJson(path, data) {
  return (await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) })).body;
}

// ---------------------------------------------------------------------------------------------
// Files, runs, uploads

async function listDir(path) {
  let listing;
  try {
    listing = (await api(`/api/files?path=${encodeURIComponent(path)}`)).body;
  } catch (err) { message(err.message); return; }
  S.dir = listing.path;
  const crumb = $("breadcrumb");
  crumb.innerHTML = "";
  const rootLink = document.createElement("a");
  rootLink.href = "#"; rootLink.textContent = "root";
  rootLink.onclick = (e) => { e.preventDefault(); listDir(""); };
  crumb.append(rootLink, document.createTextNode(listing.path ? ` / ${listing.path}` : ""));
  const list = $("file-list");
  list.innerHTML = "";
  if (listing.parent !== null && listing.parent !== undefined) {
    list.append(fileItem({ name: "..", path: listing.parent, kind: "dir" }));
  }
  for (const entry of listing.entries) list.append(fileItem(entry));
}

function fileItem(entry) {
  const li = document.createElement("li");
  li.dataset.path = entry.path;
  li.dataset.kind = entry.kind;
  const name = document.createElement("span");
  name.textContent = entry.name + (["dir", "dicom", "run"].includes(entry.kind) ? "/" : "");
  const kind = document.createElement("span");
  kind.className = "kind";
  kind.textContent = { nifti: "NIfTI", dicom: "DICOM series", dicom_file: "DICOM file", run: "run", dir: "", file: "",
    refused: "refused" }[entry.kind];
  li.append(name, kind);
  if (entry.kind === "refused") {
    li.className = "refused";
    li.title = entry.note || "outside the root";
    li.onclick = () => message(`${entry.path}: ${entry.note || "refused"}`);
    return li;
  }
  if (entry.kind === "nifti" || entry.kind === "dicom") {
    const counts = document.createElement("button");
    counts.textContent = "use as SPECT counts";
    counts.title = "resample this scan onto the open scan as MAA SPECT counts (SIRT plan)";
    counts.onclick = (e) => { e.stopPropagation(); useCounts(entry.path); };
    li.append(counts);
  }
  li.onclick = () => {
    if (entry.kind === "dir") listDir(entry.path);
    else if (entry.kind === "file") message(`${entry.path}: not a NIfTI file, DICOM folder or run directory`);
    else openPath(entry.path);
  };
  return li;
}

async function openPath(path) {
  message(`opening ${path} ...`, "info");
  let body;
  try { body = await postJson("/api/open", { path }); } catch (err) { message(err.message); return; }
  if (body.run) { showRun(body.run); return; }
  await showScan(body.scan);
  message(`opened ${path}`, "info");
}

async function upload(file) {
  message(`uploading ${file.name} ...`, "info");
  try {
    const body = (await api(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file })).body;
    await showScan(body.scan);
    message(`opened upload ${file.name}`, "info");
  } catch (err) { message(err.message); }
  $("upload-input").value = "";
}

function showRun(run) {
  $("run-panel").hidden = false;
  $("run-name").textContent = run.path;
  const box = $("run-content");
  box.innerHTML = "";
  if (run.summary) {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(run.summary, null, 2);
    box.append(heading("summary.json"), pre);
  }
  for (const table of run.tables) {
    const t = document.createElement("table");
    t.innerHTML = "<thead><tr></tr></thead><tbody></tbody>";
    for (const h of table.header) t.tHead.rows[0].append(cell("th", h));
    for (const row of table.rows) {
      const tr = t.tBodies[0].insertRow();
      for (const v of row) tr.append(cell("td", v));
    }
    box.append(heading(table.name), t);
  }
  for (const md of run.markdown) {
    const pre = document.createElement("pre");
    pre.textContent = md.text;
    box.append(heading(md.name), pre);
  }
  for (const image of run.images) {
    const img = document.createElement("img");
    img.src = `/api/run/file?path=${encodeURIComponent(image.path)}`;
    img.alt = image.name;
    box.append(heading(image.name), img);
  }
  if (run.volumes.length) {
    box.append(heading("label maps and volumes"));
    const ul = document.createElement("ul");
    ul.className = "list";
    for (const v of run.volumes) {
      const li = document.createElement("li");
      li.textContent = v.name;
      const open = document.createElement("button");
      open.textContent = "open";
      open.onclick = () => openPath(v.path);
      const labels = document.createElement("button");
      labels.textContent = "show as labels on the open scan";
      labels.onclick = () => showLabels(v.path);
      li.append(open, labels);
      ul.append(li);
    }
    box.append(ul);
  }
}

function heading(text) { const h = document.createElement("h2"); h.textContent = text; return h; }
function cell(tag, text) { const c = document.createElement(tag); c.textContent = text; return c; }

async function showLabels(path) {
  if (!S.scan) { message("open a scan first"); return; }
  try {
    const body = await postJson(`/api/scans/${S.scan.id}/labels`, { path });
    await showScan(body.scan, true);
  } catch (err) { message(err.message); }
}

async function useCounts(path) {
  if (!S.scan) { message("open the CT first, then its SPECT counts"); return; }
  try {
    const body = await postJson(`/api/scans/${S.scan.id}/counts`, { path });
    S.scan = body.scan;
    $("counts-status").textContent = `SPECT counts: ${path}`;
    updateButtons();
  } catch (err) { message(err.message); }
}

// ---------------------------------------------------------------------------------------------
// Scans, models, segmentation jobs

async function refreshScans() {
  const scans = (await api("/api/scans")).body.scans;
  const select = $("scan-select");
  select.innerHTML = "";
  for (const scan of scans) {
    const option = document.createElement("option");
    option.value = scan.id;
    option.textContent = `${scan.name} (${scan.id})`;
    select.append(option);
  }
  if (S.scan) select.value = S.scan.id;
}

async function showScan(scan, keepPosition = false) {
  const same = S.scan && S.scan.id === scan.id;
  S.scan = scan;
  S.generation += 1;
  S.cache.clear();
  if (!same || !keepPosition) {
    const [D, H, W] = scan.shape;
    S.index = { axial: Math.floor(D / 2), coronal: Math.floor(H / 2), sagittal: Math.floor(W / 2) };
    S.cursor = [S.index.axial, S.index.coronal, S.index.sagittal];
    applyPreset(scan.modality === "CT" ? "abdomen" : (scan.modality === "NM" || scan.modality === "PT" ? "spect" : "auto"));
  }
  for (const view of VIEWS) {
    const slider = $(`slider-${view}`);
    slider.max = scan.shape[VIEWS.indexOf(view)] - 1;
    slider.value = S.index[view];
  }
  const [D, H, W] = scan.shape;
  $("scan-info").textContent = `${scan.path} · ${scan.modality} ${scan.format || ""} · ${D}×${H}×${W} · ` +
    `${scan.spacing.map((s) => s.toFixed(2)).join(" × ")} mm` + (scan.segmented ? ` · labels: ${scan.model}` : "");
  $("counts-status").textContent = scan.has_counts ? "SPECT counts: opened" : "";
  for (const view of ["coronal", "sagittal"]) document.querySelector(`.view[data-view='${view}']`).hidden = scan.planar;
  buildLabelToggles();
  updateButtons();
  await refreshScans();
  await renderAll();
  await loadResults();
}

async function loadModels() {
  S.models = (await api("/api/models")).body.models;
  const select = $("model-select");
  select.innerHTML = "";
  for (const m of S.models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.name} v${m.version}`;
    select.append(option);
  }
  if (!S.models.length) {
    const option = document.createElement("option");
    option.textContent = S.info.models_root ? "no exported model under --models" : "no --models folder given";
    select.append(option);
  }
  showModelInfo();
}

function showModelInfo() {
  const m = S.models.find((x) => x.id === $("model-select").value);
  $("model-info").textContent = m ? `labels: ${m.labels.join(", ")} · expects ${m.modality}` +
    (m.spacing_mm ? ` at ${m.spacing_mm.join(" × ")} mm` : "") + ` · ${m.kind}` : "";
}

async function segment() {
  if (!S.scan) return;
  const model = $("model-select").value;
  let job;
  try { job = (await postJson(`/api/scans/${S.scan.id}/segment`, { model })).job; } catch (err) { message(err.message); return; }
  S.jobs.set(job.id, job);
  pollJob(job.id);
}

async function pollJob(jobId) {
  let job;
  try { job = (await api(`/api/jobs/${jobId}`)).body.job; } catch (err) { message(err.message); return; }
  const status = $("job-status");
  const bar = $("job-progress");
  status.dataset.state = job.state;
  status.dataset.job = job.id;
  bar.hidden = false;
  bar.value = job.progress;
  if (job.state === "queued") {
    status.textContent = `${job.id}: queued` + (job.position ? ` (${job.position} request(s) ahead)` : " (next)");
  } else if (job.state === "running") {
    status.textContent = `${job.id}: ${job.stage} (${Math.round(job.progress * 100)} %)`;
  } else if (job.state === "done") {
    status.textContent = `${job.id}: done in ${job.seconds} s`;
    bar.hidden = true;
    if (S.scan && S.scan.id === job.scan_id) {
      const scan = (await api(`/api/scans/${job.scan_id}`)).body.scan;
      await showScan(scan, true);
    }
    return;
  } else {
    status.textContent = `${job.id}: failed`;
    bar.hidden = true;
    message(job.error);
    return;
  }
  setTimeout(() => pollJob(jobId), 250);
}

// ---------------------------------------------------------------------------------------------
// Read-outs: volumes, lesions, SIRT

async function loadResults() {
  if (!S.scan) return;
  const results = (await api(`/api/scans/${S.scan.id}/results`)).body;
  S.results = results;
  const vbody = $("volume-table").tBodies[0];
  vbody.innerHTML = "";
  for (const row of results.volumes) {
    const tr = vbody.insertRow();
    tr.dataset.name = row.name;
    tr.dataset.voxels = row.voxels;
    tr.dataset.ml = row.volume_ml;
    const name = cell("td", row.name);
    name.prepend(swatch(row.value));
    tr.append(name, cell("td", row.voxels), cell("td", row.volume_ml.toFixed(2)));
  }
  const ibody = $("instance-table").tBodies[0];
  ibody.innerHTML = "";
  $("instance-section").hidden = !(results.instances || []).length;
  for (const inst of results.instances || []) {
    const tr = ibody.insertRow();
    tr.dataset.center = inst.center.join(",");
    const cls = cell("td", inst.class_name);
    cls.prepend(swatch(inst.class_id));
    tr.append(cell("td", inst.id), cell("td", inst.view), cls, cell("td", inst.score.toFixed(2)), cell("td", inst.mask_pixels));
    tr.onclick = () => jumpTo(inst.center);
  }
  const lbody = $("lesion-table").tBodies[0];
  lbody.innerHTML = "";
  for (const lesion of results.lesions) {
    const tr = lbody.insertRow();
    tr.dataset.center = lesion.center.join(",");
    tr.append(cell("td", lesion.id), cell("td", lesion.label_name), cell("td", lesion.volume_ml.toFixed(2)),
      cell("td", lesion.largest_diameter_mm.toFixed(1)), cell("td", `${lesion.slices[0]}–${lesion.slices[1]}`));
    tr.onclick = () => jumpTo(lesion.center);
  }
  updateButtons();
}

function swatch(value) {
  const span = document.createElement("span");
  span.className = "swatch";
  const label = (S.scan.labels || []).find((l) => l.value === value);
  if (label) span.style.background = `rgb(${label.color.join(",")})`;
  return span;
}

async function sirt() {
  try {
    const plan = (await postJson(`/api/scans/${S.scan.id}/sirt`, {
      lung_shunt: parseFloat($("lung-shunt").value), target_normal_dose_gy: parseFloat($("target-dose").value),
    })).sirt;
    const body = $("sirt-table").tBodies[0];
    body.innerHTML = "";
    const rows = [
      ["TLR", plan.tlr === null ? "-" : plan.tlr.toFixed(2)],
      ["tumour volume (ml)", plan.volume_tumour_ml.toFixed(1)],
      ["normal liver volume (ml)", plan.volume_normal_ml.toFixed(1)],
      ["lung shunt fraction", plan.lung_shunt_fraction.toFixed(3)],
      ["activity to inject (GBq)", plan.activity_gbq === null ? "-" : plan.activity_gbq.toFixed(2)],
    ];
    if (plan.doses) {
      rows.push(["normal liver dose (Gy)", plan.doses.dose_normal_gy.toFixed(1)],
        ["tumour dose (Gy)", plan.doses.dose_tumour_gy.toFixed(1)], ["lung dose (Gy)", plan.doses.dose_lung_gy.toFixed(1)]);
    }
    if (plan.note) rows.push(["note", plan.note]);
    for (const [k, v] of rows) { const tr = body.insertRow(); tr.append(cell("td", k), cell("td", v)); }
  } catch (err) { message(err.message); }
}

function updateButtons() {
  const scan = S.scan;
  $("segment-button").disabled = !scan || !S.models.length;
  const segmented = scan && scan.segmented;
  const dicom = scan && scan.format === "dicom";
  const planar = scan && scan.planar;
  for (const [id, what, needsDicom] of [["download-label", "label.nii.gz", false], ["download-seg", "seg.dcm", true],
    ["download-overlay", "overlay.zip", true], ["download-instances", "instances.json", false]]) {
    const a = $(id);
    const ok = segmented && (what === "instances.json" ? planar : !planar && (!needsDicom || dicom));
    a.classList.toggle("disabled", !ok);
    if (ok) a.href = `/api/scans/${scan.id}/download/${what}`; else a.removeAttribute("href");
  }
  $("download-note").textContent = segmented && !dicom && !planar ? "DICOM-SEG and overlay series need a DICOM source series" : "";
  $("sirt-button").disabled = !(segmented && (scan.has_counts || scan.modality === "NM"));
}

// ---------------------------------------------------------------------------------------------
// Display: window, colour map, labels, rendering

function applyPreset(name) {
  $("preset-select").value = name;
  const scan = S.scan;
  if (PRESETS[name]) Object.assign(S, PRESETS[name]);
  else if (scan) {
    const lo = name === "spect" ? Math.max(scan.min, 0) : scan.min;
    S.level = (lo + scan.max) / 2; S.width = Math.max(scan.max - lo, 1e-6);
    S.cmap = name === "spect" ? "hot" : "grey";
  }
  syncDisplayControls();
  renderAll();
}

function syncDisplayControls() {
  const scan = S.scan;
  const lo = scan ? Math.min(-1200, Math.floor(scan.min)) : -1200;
  const hi = scan ? Math.max(3000, Math.ceil(scan.max)) : 3000;
  $("level").min = lo; $("level").max = hi; $("width").min = 1; $("width").max = Math.max(4000, hi - lo);
  $("level").step = $("width").step = hi - lo > 100 ? 1 : (hi - lo) / 1000;
  $("level").value = S.level; $("width").value = S.width;
  $("level-value").textContent = Number(S.level).toFixed(0);
  $("width-value").textContent = Number(S.width).toFixed(0);
  $("colormap").value = S.cmap;
}

function buildLabelToggles() {
  const box = $("label-toggles");
  box.innerHTML = "";
  for (const label of (S.scan && S.scan.labels) || []) {
    const l = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !S.hidden.has(label.value);
    input.dataset.label = label.value;
    input.onchange = () => { if (input.checked) S.hidden.delete(label.value); else S.hidden.add(label.value); renderAll(); };
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = `rgb(${label.color.join(",")})`;
    l.append(input, sw, document.createTextNode(`${label.value} ${label.name}`));
    box.append(l);
  }
}

async function getSlice(view, index) {
  const key = `${S.scan.id}/${view}/${index}/${S.generation}`;
  if (S.cache.has(key)) return S.cache.get(key);
  const promise = (async () => {
    const { body, headers } = await api(`/api/scans/${S.scan.id}/slice?view=${view}&index=${index}`);
    const rows = +headers.get("X-Rows"), cols = +headers.get("X-Cols");
    const image = new Float32Array(body, 0, rows * cols);
    const labels = headers.get("X-Has-Labels") === "1" ? new Uint8Array(body, rows * cols * 4, rows * cols) : null;
    return { rows, cols, image, labels, rowSpacing: +headers.get("X-Row-Spacing"), colSpacing: +headers.get("X-Col-Spacing") };
  })();
  S.cache.set(key, promise);
  if (S.cache.size > 600) S.cache.delete(S.cache.keys().next().value);
  return promise;
}

function colourOf(t) { // t in [0, 1] -> [r, g, b] 0..255
  if (S.cmap === "hot") {
    return [Math.min(Math.max(3 * t, 0), 1) * 255, Math.min(Math.max(3 * t - 1, 0), 1) * 255, Math.min(Math.max(3 * t - 2, 0), 1) * 255];
  }
  return [t * 255, t * 255, t * 255];
}

async function render(view) {
  if (!S.scan) return;
  const index = S.index[view];
  const generation = S.generation;
  let slice;
  try { slice = await getSlice(view, index); } catch (err) { message(err.message); return; }
  if (generation !== S.generation || index !== S.index[view]) return; // a newer render is on its way
  const { rows, cols, image, labels } = slice;
  const off = document.createElement("canvas");
  off.width = cols; off.height = rows;
  const octx = off.getContext("2d");
  const data = octx.createImageData(cols, rows);
  const low = S.level - S.width / 2, width = S.width, alpha = S.opacity;
  const colours = {};
  for (const l of S.scan.labels || []) if (!S.hidden.has(l.value)) colours[l.value] = l.color;
  for (let i = 0; i < rows * cols; i++) {
    const t = Math.min(Math.max((image[i] - low) / width, 0), 1);
    let [r, g, b] = colourOf(t);
    if (labels && labels[i] && colours[labels[i]]) {
      const c = colours[labels[i]];
      r = (1 - alpha) * r + alpha * c[0]; g = (1 - alpha) * g + alpha * c[1]; b = (1 - alpha) * b + alpha * c[2];
    }
    data.data[4 * i] = r; data.data[4 * i + 1] = g; data.data[4 * i + 2] = b; data.data[4 * i + 3] = 255;
  }
  octx.putImageData(data, 0, 0);
  const physW = cols * slice.colSpacing, physH = rows * slice.rowSpacing; // mm: spacing-correct aspect
  const scale = Math.min(BOX / physW, BOX / physH);
  const canvas = $(`view-${view}`);
  canvas.width = Math.max(1, Math.round(physW * scale));
  canvas.height = Math.max(1, Math.round(physH * scale));
  canvas.dataset.rows = rows; canvas.dataset.cols = cols;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  if (S.crosshair && S.cursor) {
    const [r, c] = voxelToPixel(view, S.cursor);
    const y = (r + 0.5) * canvas.height / rows, x = (c + 0.5) * canvas.width / cols;
    ctx.strokeStyle = "rgba(255, 220, 0, 0.6)";
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke();
  }
  $(`slider-${view}`).value = index;
  $(`index-${view}`).textContent = S.scan.planar ? `${S.scan.view_names[index]} view` :
    `${index + 1} / ${S.scan.shape[VIEWS.indexOf(view)]}`;
  canvas.dataset.rendered = `${S.scan.id}/${index}/${S.generation}/${S.level}/${S.width}/${S.opacity}/${[...S.hidden].join("-")}`;
}

async function renderAll() { await Promise.all(VIEWS.map(render)); }

function pixelToVoxel(view, r, c) {
  const [D] = S.scan.shape;
  if (view === "axial") return [S.index.axial, r, c];
  if (view === "coronal") return [D - 1 - r, S.index.coronal, c];
  return [D - 1 - r, c, S.index.sagittal];
}

function voxelToPixel(view, [d, h, w]) {
  const [D] = S.scan.shape;
  if (view === "axial") return [h, w];
  if (view === "coronal") return [D - 1 - d, w];
  return [D - 1 - d, h];
}

function jumpTo(voxel) {
  S.cursor = voxel.slice();
  S.index = { axial: voxel[0], coronal: voxel[1], sagittal: voxel[2] };
  renderAll();
}

function step(view, delta) {
  if (!S.scan) return;
  const n = S.scan.shape[VIEWS.indexOf(view)];
  S.index[view] = Math.min(Math.max(S.index[view] + delta, 0), n - 1);
  render(view);
}

async function showCursor(view, event) {
  if (!S.scan) return null;
  const canvas = event.currentTarget;
  const rect = canvas.getBoundingClientRect();
  const rows = +canvas.dataset.rows, cols = +canvas.dataset.cols;
  const c = Math.floor((event.clientX - rect.left) / rect.width * cols);
  const r = Math.floor((event.clientY - rect.top) / rect.height * rows);
  if (r < 0 || c < 0 || r >= rows || c >= cols) return null;
  const slice = await getSlice(view, S.index[view]);
  const voxel = pixelToVoxel(view, r, c);
  const value = slice.image[r * cols + c];
  const label = slice.labels ? slice.labels[r * cols + c] : null;
  const name = label ? ((S.scan.labels.find((l) => l.value === label) || {}).name || `label ${label}`) : (slice.labels ? "background" : "-");
  const mm = voxel.map((v, i) => (v * S.scan.spacing[i]).toFixed(1));
  $("cursor-info").textContent = `value  ${Number.isInteger(value) ? value : value.toFixed(2)} ${S.scan.units}\nlabel  ${label ?? "-"} ${name}\n` +
    `voxel  [${voxel.join(", ")}] (d, h, w)\nmm     [${mm.join(", ")}]`;
  return voxel;
}

function savePng(canvases, name) {
  const width = canvases.reduce((s, c) => s + c.width, 0) + 8 * (canvases.length - 1);
  const height = Math.max(...canvases.map((c) => c.height));
  const out = document.createElement("canvas");
  out.width = width; out.height = height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, width, height);
  let x = 0;
  for (const c of canvases) { ctx.drawImage(c, x, 0); x += c.width + 8; }
  const a = document.createElement("a");
  a.href = out.toDataURL("image/png");
  a.download = name;
  document.body.append(a); a.click(); a.remove();
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("upload-input").onchange = (e) => { if (e.target.files.length) upload(e.target.files[0]); };
  $("scan-select").onchange = async (e) => {
    try { await showScan((await api(`/api/scans/${e.target.value}`)).body.scan); } catch (err) { message(err.message); }
  };
  $("model-select").onchange = showModelInfo;
  $("segment-button").onclick = segment;
  $("preset-select").onchange = (e) => applyPreset(e.target.value);
  $("level").oninput = (e) => { S.level = +e.target.value; syncDisplayControls(); renderAll(); };
  $("width").oninput = (e) => { S.width = +e.target.value; syncDisplayControls(); renderAll(); };
  $("colormap").onchange = (e) => { S.cmap = e.target.value; renderAll(); };
  $("opacity").oninput = (e) => { S.opacity = +e.target.value; $("opacity-value").textContent = S.opacity.toFixed(2); renderAll(); };
  $("crosshair").onchange = (e) => { S.crosshair = e.target.checked; renderAll(); };
  $("sirt-button").onclick = sirt;
  $("run-close").onclick = () => { $("run-panel").hidden = true; };
  $("download-png").onclick = () => { if (S.scan) savePng(VIEWS.map((v) => $(`view-${v}`)), `${S.scan.name}_views.png`); };
  for (const button of document.querySelectorAll("button.png")) {
    button.onclick = () => { if (S.scan) savePng([$(`view-${button.dataset.view}`)], `${S.scan.name}_${button.dataset.view}.png`); };
  }
  for (const view of VIEWS) {
    const canvas = $(`view-${view}`);
    const figure = canvas.closest(".view");
    const activate = () => {
      S.active = view;
      for (const f of document.querySelectorAll(".view")) f.classList.toggle("active", f === figure);
    };
    $(`slider-${view}`).oninput = (e) => { S.index[view] = +e.target.value; render(view); };
    canvas.addEventListener("wheel", (e) => { e.preventDefault(); activate(); step(view, e.deltaY > 0 ? 1 : -1); }, { passive: false });
    canvas.addEventListener("mousemove", (e) => { activate(); showCursor(view, e); });
    canvas.addEventListener("click", async (e) => {
      canvas.focus();
      const voxel = await showCursor(view, e);
      if (voxel) jumpTo(voxel);
    });
  }
  document.addEventListener("keydown", (e) => {
    const focused = document.activeElement;  // a range, number field or select handles its own arrow keys
    if (["SELECT", "TEXTAREA"].includes(focused.tagName) || (focused.tagName === "INPUT" && focused.type !== "checkbox")) return;
    const delta = { ArrowUp: 1, ArrowDown: -1, PageUp: 10, PageDown: -10, ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (delta !== undefined && S.scan) { e.preventDefault(); step(S.active, delta); }
  });
}

async function start() {
  wire();
  S.info = (await api("/api/info")).body;
  $("version").textContent = `v${S.info.version}`;
  $("upload-cap").textContent = S.info.max_upload_mb;
  syncDisplayControls();
  await Promise.all([listDir(""), loadModels(), refreshScans()]);
  updateButtons();
  document.body.dataset.ready = "1";
}

start().catch((err) => message(err.message));
