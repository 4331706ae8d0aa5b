/* pointseg serve — the page. Plain JavaScript, no build step.
 *
 * The page keeps no project state of its own beyond what is on screen: every edit goes to the server
 * (which commits it at once) and the server's answers and its event stream (/api/events) drive the view.
 * Images are referred to by id only.
 */
"use strict";

// ------------------------------------------------------------------------------------------------ state
const S = {
  project: null,
  images: [],          // [{id, name, width, height, n_points, n_scribbles, prediction}]
  classes: [],         // [{id, name, color, index, n_annotations}]
  classId: null,       // selected class
  currentId: null,
  current: null,       // image detail
  annotations: [],
  history: { can_undo: 0, can_redo: 0 },
  annRev: -1,
  rev: 0,
  model: null,
  training: false,
  tool: "point",
  brush: 12,
  view: "labels",
  opacity: 0.45,
  overlayOn: true,
  vt: { s: 1, tx: 0, ty: 0 },
  suggestions: [],
  pending: [],         // optimistic marks not yet confirmed by the server
  erasing: null,       // eraser path in progress
  stroke: null,        // scribble in progress
  overlay: null,       // {id, want, inflight, viewKey}
  clickT0: null,       // {rev, t0} of the last edit, for the click → overlay latency
  lastLatency: null,
  featuresReady: {},
  batch: null,
};
const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
};

// ------------------------------------------------------------------------------------------------ API
const TOKEN = (() => {
  const q = new URLSearchParams(location.search).get("token");
  if (q) {
    sessionStorage.setItem("pointseg-token", q);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  return sessionStorage.getItem("pointseg-token");
})();

function headers(extra = {}) {
  return TOKEN ? { "X-Pointseg-Token": TOKEN, ...extra } : extra;
}

async function api(method, url, body) {
  const opts = { method, headers: headers() };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(url, opts);
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (type.includes("application/json")) data = await r.json();
  if (!r.ok) {
    const err = new Error((data && data.detail) || `${r.status} ${r.statusText}`);
    err.status = r.status;
    err.data = data;
    throw err;
  }
  return data;
}

function toast(message, kind = "error", ms = 5000) {
  const t = el("div", { class: `toast ${kind}` }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), ms);
}

function fail(err) {
  console.error(err);
  toast(err.message || String(err));
}

// ------------------------------------------------------------------------------------------------ loading
async function loadProject() {
  S.project = await api("GET", "/api/project");
  S.rev = S.project.rev;
  S.model = S.project.model;
  S.training = S.project.training;
  S.batch = S.project.batch;
  $("#project-name").textContent = S.project.name;
  document.title = `${S.project.name} — pointseg`;
  renderStatus();
  renderBatch();
}

async function loadClasses() {
  const data = await api("GET", "/api/classes");
  S.classes = data.classes;
  if (!S.classes.some((c) => c.id === S.classId)) S.classId = S.classes.length ? S.classes[0].id : null;
  renderClasses();
  renderViewOptions();
  drawMarks();
}

async function loadImages() {
  const data = await api("GET", "/api/images");
  S.images = data.images;
  renderImages();
  if (S.currentId === null && S.images.length) {
    const want = +sessionStorage.getItem("pointseg-image");
    const first = S.images.find((i) => i.id === want) || S.images[0];
    await openImage(first.id);
  } else if (S.currentId !== null && !S.images.some((i) => i.id === S.currentId)) {
    S.currentId = null;
    if (S.images.length) await openImage(S.images[0].id);
  }
  $("#empty").hidden = S.images.length > 0;
}

let imagesTimer = null;
function loadImagesSoon() {      // badges and per-class counts, a moment after edits settle
  clearTimeout(imagesTimer);
  imagesTimer = setTimeout(() => Promise.all([loadImages(), loadClasses()]).catch(fail), 400);
}

async function openImage(id) {
  if (id === S.currentId && S.current) return;
  S.currentId = id;
  sessionStorage.setItem("pointseg-image", id);
  S.suggestions = [];
  S.pending = [];
  S.overlay = { id, want: -1, inflight: false, viewKey: null };
  const ov = $("#overlay-img");
  ov.removeAttribute("src");
  ov.dataset.rev = "-1";
  ov.dataset.image = String(id);
  renderImages();
  const detail = await api("GET", `/api/images/${id}`);
  if (S.currentId !== id) return;
  S.current = detail;
  S.annotations = detail.annotations;
  S.history = detail.history;
  S.annRev = S.rev;
  S.featuresReady[id] = detail.features_ready;
  const img = $("#base-img");
  img.onload = () => {
    if (S.currentId !== id) return;
    fitView();
    refreshOverlay();
  };
  img.src = `/api/images/${id}/file`;
  img.width = detail.width;
  img.height = detail.height;
  ov.width = detail.width;
  ov.height = detail.height;
  renderHistory();
  renderImageInfo();
  renderHint();
  drawMarks();
  document.querySelector(`#image-list li[data-id="${id}"]`)?.scrollIntoView({ block: "nearest" });
}

async function reloadAnnotations() {
  const id = S.currentId;
  if (id === null) return;
  const data = await api("GET", `/api/images/${id}/annotations`);
  if (S.currentId !== id) return;
  S.annotations = data.annotations;
  S.history = data.history;
  S.annRev = data.rev;
  renderHistory();
  drawMarks();
}

// ------------------------------------------------------------------------------------------------ overlay
function viewKey() {
  return `${S.view}`;
}

function overlayUrl(id, minRev) {
  let view = S.view, k = 0;
  if (view.startsWith("proba:")) { k = +view.split(":")[1]; view = "proba"; }
  return `/api/images/${id}/overlay.png?view=${view}&class_index=${k}&min_rev=${minRev}`;
}

async function refreshOverlay(minRev) {
  const O = S.overlay;
  if (!O || S.currentId === null) return;
  O.want = Math.max(O.want, minRev ?? S.rev);
  if (O.inflight) return;      // the running loop picks the newer revision up when it finishes
  O.inflight = true;
  try {
    for (;;) {
      const target = O.want;
      const key = viewKey();
      const r = await fetch(overlayUrl(O.id, target), { headers: headers() });
      if (S.overlay !== O) return;                       // the user moved to another image
      if (r.status === 409) {                            // no usable model yet: say why
        const data = await r.json();
        $("#overlay-img").removeAttribute("src");
        $("#overlay-img").dataset.rev = "-1";
        showHint(data.detail);
        if (O.want <= target) return;
        continue;
      }
      if (!r.ok) {
        let msg = `${r.status}`;
        try { msg = (await r.json()).detail; } catch (_) { /* not JSON */ }
        if (r.status !== 504) toast(msg);
        return;
      }
      const rev = +r.headers.get("X-Model-Rev");
      const timings = JSON.parse(r.headers.get("X-Timings") || "{}");
      const blob = await r.blob();
      const url = URL.createObjectURL(blob);
      const ov = $("#overlay-img");
      const tmp = new Image();
      tmp.src = url;
      try { await tmp.decode(); } catch (_) { /* shown anyway */ }
      if (S.overlay !== O) { URL.revokeObjectURL(url); return; }
      const old = ov.src;
      ov.src = url;
      ov.dataset.rev = String(rev);
      ov.dataset.view = key;
      if (old && old.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(old), 1000);
      S.timings = timings;
      if (S.clickT0 && rev >= S.clickT0.rev) {
        S.lastLatency = performance.now() - S.clickT0.t0;
        S.clickT0 = null;
      }
      S.pending = [];
      renderHint();
      renderInfobar();
      drawMarks();
      scheduleImageStats();
      if (O.want <= rev && viewKey() === key) return;
    }
  } catch (err) {
    fail(err);
  } finally {
    O.inflight = false;
  }
}

let statsTimer = null;
function scheduleImageStats() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(async () => {
    const id = S.currentId;
    try {
      const st = await api("GET", `/api/images/${id}/stats`);
      if (S.currentId === id) { S.imageStats = st; renderImageInfo(); }
    } catch (_) { /* no model: nothing to show */ }
  }, 700);
}

// ------------------------------------------------------------------------------------------------ edits
// Edits of this tab: their event-stream echoes need no reload (the POST answer carries the data).
const own = { inflight: 0, revs: new Set(), deferred: 0 };

async function ownEdit(fn) {
  own.inflight++;
  try {
    const data = await fn();
    if (data && data.rev !== undefined && data.rev !== null) own.revs.add(data.rev);
    return data;
  } finally {
    own.inflight--;
    if (!own.inflight && own.deferred) {       // another tab edited this image meanwhile
      const rev = own.deferred;
      own.deferred = 0;
      if (!own.revs.has(rev) && rev > S.annRev) reloadAnnotations().then(() => refreshOverlay(rev)).catch(fail);
    }
  }
}

function editDone(rev) {
  own.revs.add(rev);
  S.rev = Math.max(S.rev, rev);
  S.annRev = rev;
  S.suggestions = [];
  S.clickT0 = { rev, t0: S.clickT0Pending || performance.now() };
  S.clickT0Pending = null;
  refreshOverlay(rev);
  loadImagesSoon();
}

async function addAnnotation(item) {
  if (S.currentId === null) return;
  if (S.classId === null) { toast("Add a class first (right panel), then click.", "info"); return; }
  const id = S.currentId;
  S.pending.push({ ...item, class_id: S.classId });
  drawMarks();
  S.clickT0Pending = performance.now();
  try {
    const data = await ownEdit(() => api("POST", `/api/images/${id}/annotations`, { items: [{ ...item, class_id: S.classId }] }));
    if (S.currentId !== id) return;
    S.annotations = S.annotations.concat(data.annotations);
    S.history = data.history;
    renderHistory();
    editDone(data.rev);
  } catch (err) {
    S.pending = [];
    drawMarks();
    fail(err);
  }
}

async function erasePath(points) {
  const id = S.currentId;
  try {
    S.clickT0Pending = performance.now();
    const data = await ownEdit(() => api("POST", `/api/images/${id}/erase`, { points, radius: Math.max(1, S.brush / 2) }));
    if (!data.removed.length) return;
    S.annotations = S.annotations.filter((a) => !data.removed.includes(a.id));
    S.history = data.history;
    renderHistory();
    editDone(data.rev);
  } catch (err) { fail(err); } finally { drawMarks(); }
}

async function undoRedo(which) {
  const id = S.currentId;
  if (id === null) return;
  try {
    S.clickT0Pending = performance.now();
    const data = await ownEdit(() => api("POST", `/api/images/${id}/${which}`));
    if (S.currentId !== id) return;
    if (!data.edit) { toast(`Nothing to ${which} on this image.`, "info", 1800); return; }
    S.annotations = data.annotations;
    S.history = data.history;
    renderHistory();
    drawMarks();
    editDone(data.rev);
  } catch (err) { fail(err); }
}

// ------------------------------------------------------------------------------------------------ viewer
const vp = $("#viewport");
const stage = $("#stage");
const canvas = $("#marks");
const ctx = canvas.getContext("2d");

function applyTransform() {
  const { s, tx, ty } = S.vt;
  stage.style.transform = `translate(${tx}px, ${ty}px) scale(${s})`;
  $("#overlay-img").classList.toggle("smooth", s < 1.5);
  $("#zoom-label").textContent = S.current ? `${Math.round(s * 100)}%` : "";
  drawMarks();
}

function fitView() {
  if (!S.current) return;
  const r = vp.getBoundingClientRect();
  const pad = 16;
  const s = Math.min((r.width - 2 * pad) / S.current.width, (r.height - 2 * pad) / S.current.height);
  S.vt.s = Math.max(0.01, s);
  S.vt.tx = (r.width - S.current.width * S.vt.s) / 2;
  S.vt.ty = (r.height - S.current.height * S.vt.s) / 2;
  applyTransform();
}

function zoomAt(factor, sx, sy) {
  const { s, tx, ty } = S.vt;
  const ns = Math.min(64, Math.max(0.02, s * factor));
  S.vt.tx = sx - (sx - tx) * (ns / s);
  S.vt.ty = sy - (sy - ty) * (ns / s);
  S.vt.s = ns;
  applyTransform();
}

/** Screen position → continuous image coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)). */
function toImage(ev) {
  const r = vp.getBoundingClientRect();
  return { cx: (ev.clientX - r.left - S.vt.tx) / S.vt.s, cy: (ev.clientY - r.top - S.vt.ty) / S.vt.s };
}

/** Continuous coordinates → the API's point convention (x names the column; its centre is x + 0.5). */
function toPoint(cx, cy) {
  const w = S.current.width, h = S.current.height;
  const x = Math.min(w - 0.01, Math.max(0, cx - 0.5));
  const y = Math.min(h - 0.01, Math.max(0, cy - 0.5));
  return [Math.round(x * 100) / 100, Math.round(y * 100) / 100];
}

function inside(cx, cy) {
  return S.current && cx >= 0 && cy >= 0 && cx < S.current.width && cy < S.current.height;
}

let drag = null;
let spaceDown = false;

vp.addEventListener("contextmenu", (ev) => ev.preventDefault());
vp.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const r = vp.getBoundingClientRect();
  const delta = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
  zoomAt(Math.exp(-delta * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
}, { passive: false });

vp.addEventListener("pointerdown", (ev) => {
  if (!S.current) return;
  vp.focus();
  vp.setPointerCapture(ev.pointerId);
  const { cx, cy } = toImage(ev);
  const pan = ev.button === 1 || ev.button === 2 || spaceDown;
  drag = { x0: ev.clientX, y0: ev.clientY, tx0: S.vt.tx, ty0: S.vt.ty, moved: false,
           mode: pan ? "pan" : S.tool };
  if (drag.mode === "pan") vp.classList.add("panning");
  if (drag.mode === "scribble" && inside(cx, cy)) S.stroke = [toPoint(cx, cy)];
  if (drag.mode === "eraser") { S.erasing = [toPoint(cx, cy)]; drawMarks(); }
});

vp.addEventListener("pointermove", (ev) => {
  S.cursor = toImage(ev);
  if (!drag) { if (S.tool !== "point") drawMarks(); return; }
  const dx = ev.clientX - drag.x0, dy = ev.clientY - drag.y0;
  if (Math.hypot(dx, dy) > 4) drag.moved = true;
  if (drag.mode === "pan" || (drag.mode === "point" && drag.moved)) {
    drag.mode = "pan";
    vp.classList.add("panning");
    S.vt.tx = drag.tx0 + dx;
    S.vt.ty = drag.ty0 + dy;
    applyTransform();
  } else if (drag.mode === "scribble" && S.stroke) {
    const { cx, cy } = S.cursor;
    const p = toPoint(cx, cy);
    const last = S.stroke[S.stroke.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) * S.vt.s >= 3) { S.stroke.push(p); drawMarks(); }
  } else if (drag.mode === "eraser" && S.erasing) {
    const { cx, cy } = S.cursor;
    S.erasing.push(toPoint(cx, cy));
    drawMarks();
  }
});

function endDrag(ev) {
  if (!drag) return;
  const d = drag;
  drag = null;
  vp.classList.remove("panning");
  if (d.mode === "point" && !d.moved) {
    const { cx, cy } = toImage(ev);
    if (inside(cx, cy)) {
      const [x, y] = toPoint(cx, cy);
      addAnnotation({ kind: "point", x, y });
    }
  } else if (d.mode === "scribble" && S.stroke) {
    const pts = S.stroke;
    S.stroke = null;
    addAnnotation({ kind: "scribble", width: S.brush, points: pts });
  } else if (d.mode === "eraser" && S.erasing) {
    const pts = S.erasing;
    S.erasing = null;
    erasePath(pts);
  }
}
vp.addEventListener("pointerup", endDrag);
vp.addEventListener("pointercancel", () => { drag = null; S.stroke = null; S.erasing = null; drawMarks(); });
vp.addEventListener("pointerleave", () => { S.cursor = null; drawMarks(); });

let rafPending = false;
function drawMarks() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(() => { rafPending = false; paint(); });
}

function classColor(id) {
  const c = S.classes.find((k) => k.id === id);
  return c ? c.color : "#ffffff";
}

function paint() {
  const dpr = window.devicePixelRatio || 1;
  const r = vp.getBoundingClientRect();
  if (canvas.width !== Math.round(r.width * dpr) || canvas.height !== Math.round(r.height * dpr)) {
    canvas.width = Math.round(r.width * dpr);
    canvas.height = Math.round(r.height * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, r.width, r.height);
  if (!S.current) return;
  const { s, tx, ty } = S.vt;
  const X = (x) => (x + 0.5) * s + tx, Y = (y) => (y + 0.5) * s + ty;
  const erased = S.erasing ? erasedIds(S.erasing, S.brush / 2) : new Set();
  const marks = S.annotations.filter((a) => !erased.has(a.id)).concat(S.pending.map((p) => ({ ...p, pending: true })));
  if (S.stroke) marks.push({ kind: "scribble", class_id: S.classId, width: S.brush, points: S.stroke, pending: true });
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const a of marks) {                 // scribbles under points
    if (a.kind !== "scribble") continue;
    const w = Math.max(2, a.width * s);
    ctx.globalAlpha = a.pending ? 0.6 : 0.9;
    ctx.beginPath();
    a.points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    if (a.points.length === 1) ctx.lineTo(X(a.points[0][0]) + 0.01, Y(a.points[0][1]));
    ctx.strokeStyle = "#0b0e13";
    ctx.lineWidth = w + 3;
    ctx.stroke();
    ctx.strokeStyle = classColor(a.class_id);
    ctx.lineWidth = w;
    ctx.stroke();
  }
  for (const a of marks) {
    if (a.kind !== "point") continue;
    ctx.globalAlpha = a.pending ? 0.6 : 1;
    ctx.beginPath();
    ctx.arc(X(a.x), Y(a.y), 5.5, 0, 2 * Math.PI);
    ctx.fillStyle = classColor(a.class_id);
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(X(a.x), Y(a.y), 7, 0, 2 * Math.PI);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#0b0e13";
    ctx.stroke();
  }
  ctx.globalAlpha = 1;
  S.suggestions.forEach((g, i) => {
    const cx = g.x * s + tx, cy = g.y * s + ty, rad = Math.max(12, g.radius * s);
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = "#ffffff";
    ctx.beginPath(); ctx.arc(cx, cy, rad, 0, 2 * Math.PI); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#ec008c";
    ctx.beginPath(); ctx.arc(cx + rad * 0.72, cy - rad * 0.72, 9, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.font = "bold 11px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(String(i + 1), cx + rad * 0.72, cy - rad * 0.72);
  });
  if (S.cursor && (S.tool === "scribble" || S.tool === "eraser")) {   // brush outline
    ctx.setLineDash(S.tool === "eraser" ? [3, 3] : []);
    ctx.lineWidth = 1.2;
    ctx.strokeStyle = S.tool === "eraser" ? "#ffffff" : classColor(S.classId);
    ctx.beginPath();
    ctx.arc(S.cursor.cx * s + tx, S.cursor.cy * s + ty, Math.max(2, (S.brush / 2) * s), 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);
  }
}

function segDist(px, py, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay, n = dx * dx + dy * dy;
  const t = n ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / n)) : 0;
  return Math.hypot(ax + t * dx - px, ay + t * dy - py);
}
function polyDist(p, poly) {
  if (poly.length === 1) return Math.hypot(p[0] - poly[0][0], p[1] - poly[0][1]);
  let d = Infinity;
  for (let i = 1; i < poly.length; i++) d = Math.min(d, segDist(p[0], p[1], ...poly[i - 1], ...poly[i]));
  return d;
}
/** The same hit test the server applies, for a live preview while the eraser is dragged. */
function erasedIds(path, radius) {
  const out = new Set();
  for (const a of S.annotations) {
    if (a.kind === "point") { if (polyDist([a.x, a.y], path) <= radius) out.add(a.id); continue; }
    let d = Math.min(...path.map((p) => polyDist(p, a.points)));
    if (path.length > 1) d = Math.min(d, ...a.points.map((p) => polyDist(p, path)));
    if (d <= radius + a.width / 2) out.add(a.id);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ rendering
function fmtPct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; }
function fmtMs(v) { return v === null || v === undefined ? "–" : `${Math.round(v)} ms`; }

function renderStatus() {
  const m = S.model;
  const dot = $("#status-dot"), text = $("#status-text");
  dot.className = "dot";
  if (S.training) {
    dot.classList.add("busy");
    text.textContent = "Training…";
    return;
  }
  if (!m || m.status !== "ok") {
    dot.classList.add(m && m.status === "error" ? "err" : "idle");
    text.textContent = m ? m.message : "";
    return;
  }
  dot.classList.add("ok");
  const r = m.report || {};
  const per = Object.entries(r.points_per_class || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
  const cv = r.cv_accuracy !== null && r.cv_accuracy !== undefined
    ? `CV <b>${fmtPct(r.cv_accuracy)}</b>` : (m.cv_done ? "CV n/a" : "CV …");
  const t = m.timings || {};
  const pred = S.timings ? ` · predict ${fmtMs(S.timings.predict_ms)}` : "";
  text.innerHTML = `Model r${m.rev} · on points <b>${fmtPct(r.point_accuracy)}</b> · ${cv} · ${esc(per)}` +
    ` · fit ${fmtMs(t.fit_ms)}${pred}`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function renderInfobar() {
  const bar = $("#infobar");
  bar.replaceChildren();
  if (!S.current) return;
  const t = S.timings || {};
  const add = (label, value) => bar.append(el("span", {}, `${label} `, el("b", {}, value)));
  add("", `${S.current.name}`);
  add("size", `${S.current.width}×${S.current.height}`);
  const nP = S.annotations.filter((a) => a.kind === "point").length;
  const nS = S.annotations.length - nP;
  add("marks", `${nP} points, ${nS} scribbles`);
  if (S.lastLatency !== null) add("click → overlay", fmtMs(S.lastLatency));
  if (t.fit_ms !== undefined) add("fit", fmtMs(t.fit_ms));
  if (t.predict_ms !== undefined) add("predict", fmtMs(t.predict_ms));
}

function renderHint() {
  const m = S.model;
  if (!S.current) return showHint(null);
  if (!S.classes.length) return showHint("Add classes in the right panel, then click points of each.");
  if (m && m.status !== "ok") return showHint(m.message);
  if (!S.featuresReady[S.currentId] && +$("#overlay-img").dataset.rev < 0) return showHint("Computing features for this image…");
  showHint(null);
}

let flashTimer = null;
function flashHint(text, ms = 4000) {
  showHint(text);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(renderHint, ms);
}

function showHint(text) {
  const h = $("#hint");
  h.hidden = !text;
  h.textContent = text || "";
}

function renderHistory() {
  $("#undo-btn").disabled = !S.history.can_undo;
  $("#redo-btn").disabled = !S.history.can_redo;
}

function imageVisible(img) {
  const q = $("#filter-text").value.trim().toLowerCase();
  if (q && !img.name.toLowerCase().includes(q)) return false;
  const n = img.n_points + img.n_scribbles;
  switch ($("#filter-kind").value) {
    case "annotated": return n > 0;
    case "todo": return n === 0;
    case "predicted": return !!img.prediction;
    case "findings": return findings(img) > 0;
    default: return true;
  }
}

function findings(img) {
  const st = img.prediction && img.prediction.stats;
  if (!st) return 0;
  return Object.entries(st).filter(([k]) => k.startsWith("regions_")).reduce((a, [, v]) => a + v, 0);
}

function renderImages() {
  const list = $("#image-list");
  const visible = S.images.filter(imageVisible);
  $("#image-count").textContent = S.images.length ? `${S.images.length}` : "";
  const nodes = visible.map((img) => {
    const n = img.n_points + img.n_scribbles;
    const badges = el("div", { class: "badges" });
    if (n) badges.append(el("span", { class: "badge pts" }, `${img.n_points} pts${img.n_scribbles ? ` · ${img.n_scribbles} scr` : ""}`));
    if (img.prediction) {
      const stale = S.model && img.prediction.rev < S.model.rev;
      badges.append(el("span", { class: `badge ${stale ? "stale" : "pred"}`, title: stale ? "predicted by an older model" : "predicted" },
        stale ? "predicted (old)" : "predicted"));
      const f = findings(img);
      if (f) badges.append(el("span", { class: "badge find" }, `${f} region${f > 1 ? "s" : ""}`));
    }
    if (!badges.childNodes.length) badges.append(el("span", { class: "badge" }, `${img.width}×${img.height}`));
    return el("li", { dataset: { id: img.id }, class: img.id === S.currentId ? "current" : "", title: img.name,
                      onclick: () => openImage(img.id).catch(fail) },
      el("img", { src: `/api/images/${img.id}/thumb`, loading: "lazy", alt: "" }),
      el("div", { class: "meta" }, el("span", { class: "name" }, img.name), badges),
      el("button", { class: "mini del img-del", title: "Remove from project", "aria-label": `Remove ${img.name}`,
                     onclick: (ev) => { ev.stopPropagation(); removeImage(img); } }, "✕"));
  });
  list.replaceChildren(...nodes);
  const pos = visible.findIndex((i) => i.id === S.currentId);
  $("#pager-pos").textContent = visible.length ? `${pos >= 0 ? pos + 1 : "–"} / ${visible.length}` : "";
}

function removeImage(img) {          // the file on disk stays; its annotations and predictions go
  const n = img.n_points + img.n_scribbles;
  if (!confirm(`Remove "${img.name}" from the project${n ? ` with its ${n} annotation${n > 1 ? "s" : ""}` : ""}? ` +
               "Your original file is not touched.")) return;
  api("DELETE", `/api/images/${img.id}`).then(() => Promise.all([loadImages(), loadClasses()])).catch(fail);
}

function step(delta) {
  const visible = S.images.filter(imageVisible);
  if (!visible.length) return;
  let k = visible.findIndex((i) => i.id === S.currentId);
  k = k < 0 ? 0 : Math.min(visible.length - 1, Math.max(0, k + delta));
  openImage(visible[k].id).catch(fail);
}

function renderClasses() {
  if (S.renaming) return;             // do not pull the text field from under the user; redrawn after
  const list = $("#class-list");
  const nodes = S.classes.map((c, i) => {
    const color = el("input", { type: "color", value: c.color, title: "Colour", "aria-label": `Colour of ${c.name}` });
    color.addEventListener("click", (ev) => ev.stopPropagation());
    color.addEventListener("change", () => api("PATCH", `/api/classes/${c.id}`, { color: color.value })
      .then(loadClasses).catch(fail));
    const name = el("span", { class: "cname", title: "Double-click to rename" }, c.name);
    name.addEventListener("dblclick", (ev) => { ev.stopPropagation(); rename(c, name); });
    const acts = el("span", { class: "acts" },
      el("button", { class: "mini", title: "Move up", "aria-label": `Move ${c.name} up`, onclick: (ev) => { ev.stopPropagation(); move(c.id, -1); } }, "▲"),
      el("button", { class: "mini", title: "Move down", "aria-label": `Move ${c.name} down`, onclick: (ev) => { ev.stopPropagation(); move(c.id, 1); } }, "▼"),
      el("button", { class: "mini", title: "Rename", "aria-label": `Rename ${c.name}`, onclick: (ev) => { ev.stopPropagation(); rename(c, name); } }, "✎"),
      el("button", { class: "mini del", title: "Delete", "aria-label": `Delete ${c.name}`, onclick: (ev) => { ev.stopPropagation(); removeClass(c); } }, "✕"));
    return el("li", { class: c.id === S.classId ? "current" : "", dataset: { id: c.id },
                      onclick: () => selectClass(c.id) },
      el("span", { class: "key" }, i < 9 ? String(i + 1) : ""), color, name,
      el("span", { class: "n", title: "annotations" }, String(c.n_annotations)), acts);
  });
  list.replaceChildren(...nodes);
  const used = new Set(S.classes.map((c) => c.color));
  const palette = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#7f7f7f"];
  $("#new-class-color").value = palette.find((p) => !used.has(p)) || "#8c564b";
  renderHint();
}

function selectClass(id) {            // without rebuilding the list, so a double-click still lands
  S.classId = id;
  document.querySelectorAll("#class-list li").forEach((li) => li.classList.toggle("current", +li.dataset.id === id));
  drawMarks();
}

function rename(c, node) {
  const input = el("input", { type: "text", value: c.name, maxlength: 80, "aria-label": "Class name" });
  node.replaceChildren(input);
  input.focus();
  input.select();
  S.renaming = c.id;
  let done = false;
  const commit = (save) => {
    if (done) return;
    done = true;
    S.renaming = null;
    const v = input.value.trim();
    if (save && v && v !== c.name) api("PATCH", `/api/classes/${c.id}`, { name: v }).then(loadClasses).catch((e) => { fail(e); loadClasses(); });
    else loadClasses().catch(fail);
  };
  input.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") commit(true);
    if (ev.key === "Escape") commit(false);
  });
  input.addEventListener("blur", () => commit(true));
  input.addEventListener("click", (ev) => ev.stopPropagation());
}

function move(id, delta) {
  const ids = S.classes.map((c) => c.id);
  const k = ids.indexOf(id), j = k + delta;
  if (j < 0 || j >= ids.length) return;
  [ids[k], ids[j]] = [ids[j], ids[k]];
  api("PUT", "/api/classes/order", { ids }).then(loadClasses).catch(fail);
}

function removeClass(c) {
  const n = c.n_annotations;
  if (!confirm(`Delete the class "${c.name}"${n ? ` and its ${n} annotation${n > 1 ? "s" : ""} on all images` : ""}? This cannot be undone.`)) return;
  api("DELETE", `/api/classes/${c.id}`).then(async () => { await loadClasses(); await reloadAnnotations(); loadImagesSoon(); }).catch(fail);
}

function renderViewOptions() {
  const sel = $("#view-select");
  const keep = S.view;
  const opts = [el("option", { value: "labels" }, "Labels")];
  S.classes.forEach((c, k) => opts.push(el("option", { value: `proba:${k}` }, `Probability: ${c.name}`)));
  opts.push(el("option", { value: "uncertainty" }, "Uncertainty"));
  sel.replaceChildren(...opts);
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "labels";
  S.view = sel.value;
}

function renderModelPanel() {
  const dl = $("#model-info");
  dl.replaceChildren();
  const m = S.model;
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  if (!m || m.status !== "ok") {
    row("status", !m || m.status !== "error" ? "not trained yet" : "error");
    return;
  }
  const r = m.report || {};
  row("revision", `r${m.rev}`);
  row("on marked points", fmtPct(r.point_accuracy));
  row("cross-validated", r.cv_accuracy !== null && r.cv_accuracy !== undefined ? fmtPct(r.cv_accuracy) : (m.cv_done ? "n/a" : "…"));
  if (r.cv_method) row("CV method", r.cv_method);
  const total = Math.max(1, ...Object.values(r.points_per_class || {}));
  for (const [name, n] of Object.entries(r.points_per_class || {})) {
    const c = S.classes.find((k) => k.name === name);
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.round((n / total) * 60)}px`;
    bar.style.background = c ? c.color : "#888";
    dl.append(el("dt", {}, `points: ${name}`), el("dd", {}, bar, String(n)));
  }
  row("images used", String(r.n_images ?? "–"));
  row("fit", fmtMs((m.timings || {}).fit_ms));
  if (S.timings) row("predict (this image)", fmtMs(S.timings.predict_ms));
  if (S.lastLatency !== null) row("click → overlay", fmtMs(S.lastLatency));
}

function renderImageInfo() {
  const dl = $("#image-info");
  dl.replaceChildren();
  if (!S.current) return;
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  row("size", `${S.current.width} × ${S.current.height}`);
  row("features", S.featuresReady[S.currentId] ? "ready" : "computing…");
  const st = S.imageStats;
  if (st && st.rev !== undefined) {
    for (const [k, v] of Object.entries(st)) {
      if (k.startsWith("fraction_")) row(`area: ${k.slice(9)}`, fmtPct(v));
      if (k.startsWith("regions_")) row(`regions: ${k.slice(8)}`, String(v));
    }
  }
  renderModelPanel();
}

function applyBatch(b) {
  // a fast run can finish (event stream) before the reply to its own start arrives: never step a run back
  const cur = S.batch;
  if (cur && cur.id === b.id && (!cur.running || cur.done > b.done)) return;
  S.batch = b;
  renderBatch();
}

function renderBatch() {
  const b = S.batch;
  const box = $("#batch");
  if (!b || (!b.running && !b.total)) { box.hidden = true; $("#predict-all").disabled = false; return; }
  box.hidden = false;
  $("#batch-bar").style.width = `${b.total ? (100 * b.done) / b.total : 0}%`;
  $("#batch-text").textContent = b.running ? `${b.done} / ${b.total}` :
    (b.cancelled ? `stopped at ${b.done} / ${b.total}` : `${b.done} / ${b.total} done in ${b.seconds}s`);
  $("#batch-cancel").hidden = !b.running;
  $("#predict-all").disabled = b.running;
}

// ------------------------------------------------------------------------------------------------ events
function connectEvents() {
  const es = new EventSource("/api/events" + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : ""));
  es.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    switch (ev.type) {
      case "hello":
        S.model = ev.model; S.training = ev.training; S.batch = ev.batch;
        renderStatus(); renderBatch();
        break;
      case "changed":
        S.rev = Math.max(S.rev, ev.rev);
        S.training = true;
        renderStatus();
        if (ev.what === "annotations" && ev.image_id === S.currentId && ev.rev > S.annRev) {
          if (own.revs.has(ev.rev)) break;                        // our own edit, already applied
          if (own.inflight) { own.deferred = Math.max(own.deferred, ev.rev); break; }
          reloadAnnotations().then(() => refreshOverlay(ev.rev)).catch(fail);
        } else if (ev.what === "classes") {
          loadClasses().then(() => refreshOverlay(ev.rev)).catch(fail);
        } else if (ev.what === "images") {
          loadImagesSoon();
        } else if (ev.what === "annotations") {
          loadImagesSoon();
          if (ev.rev > (S.overlay ? S.overlay.want : 0)) refreshOverlay(ev.rev);
        }
        break;
      case "model":
        S.model = ev;
        S.training = ev.rev < S.rev;
        renderStatus(); renderModelPanel(); renderHint();
        if (ev.status === "ok" && S.overlay && +$("#overlay-img").dataset.rev < 0) refreshOverlay(ev.rev);
        break;
      case "features":
        S.featuresReady[ev.image_id] = ev.status === "ready";
        if (ev.image_id === S.currentId) {
          if (ev.status === "error") toast(ev.message);
          renderHint(); renderImageInfo();
        }
        break;
      case "batch":
        applyBatch(ev);
        if (!ev.running || ev.done % 5 === 0) loadImagesSoon();
        break;
      default:
        break;
    }
  };
  let lost = false;
  es.onerror = () => {
    lost = true;
    $("#status-dot").className = "dot err";
    $("#status-text").textContent = "Connection to the server lost; reconnecting…";
  };
  es.onopen = () => {
    if (!lost) return;
    lost = false;               // back after a restart: take everything from the server again
    Promise.all([loadProject(), loadClasses(), loadImages(), reloadAnnotations()])
      .then(() => refreshOverlay(S.rev)).catch(fail);
  };
}

// ------------------------------------------------------------------------------------------------ controls
function setTool(tool) {
  S.tool = tool;
  document.querySelectorAll(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  vp.classList.toggle("tool-eraser", tool === "eraser");
  drawMarks();
}

function setBrush(v) {
  S.brush = Math.max(2, Math.min(80, v));
  $("#brush").value = S.brush;
  $("#brush-val").textContent = S.brush;
  drawMarks();
}

function setOpacity() {
  $("#overlay-img").style.opacity = S.overlayOn ? String(S.opacity) : "0";
}

async function uploadFiles(fileList) {
  const ok = /\.(png|jpe?g|bmp|tiff?)$/i;
  const files = [...fileList].filter((f) => ok.test(f.name));
  const skipped = fileList.length - files.length;
  if (!files.length) { toast("No PNG, JPEG, BMP or TIFF files in the selection."); return; }
  let added = 0;
  const note = el("div", { class: "toast info" }, `Uploading ${files.length} image(s)…`);
  $("#toasts").append(note);
  try {
    for (let i = 0; i < files.length; i += 8) {
      const form = new FormData();
      files.slice(i, i + 8).forEach((f) => form.append("files", f, f.name));
      try {
        const data = await api("POST", "/api/images", form);
        added += data.added.length;
      } catch (err) {
        added += (err.data && err.data.added ? err.data.added.length : 0);
        toast(err.message);
      }
      note.textContent = `Uploading… ${Math.min(files.length, i + 8)} / ${files.length}`;
    }
  } finally {
    note.remove();
  }
  toast(`${added} image(s) added${skipped ? `, ${skipped} other file(s) skipped` : ""}.`, "info", 3000);
  await loadImages();
}

function bindControls() {
  document.querySelectorAll(".tool").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("#brush").addEventListener("input", (ev) => setBrush(+ev.target.value));
  $("#opacity").addEventListener("input", (ev) => { S.opacity = +ev.target.value / 100; S.overlayOn = true; setOpacity(); });
  $("#view-select").addEventListener("change", (ev) => { S.view = ev.target.value; refreshOverlay(S.rev); });
  $("#undo-btn").addEventListener("click", () => undoRedo("undo"));
  $("#redo-btn").addEventListener("click", () => undoRedo("redo"));
  $("#fit-btn").addEventListener("click", fitView);
  $("#prev-btn").addEventListener("click", () => step(-1));
  $("#next-btn").addEventListener("click", () => step(1));
  $("#filter-text").addEventListener("input", renderImages);
  $("#filter-kind").addEventListener("change", renderImages);
  $("#suggest-btn").addEventListener("click", suggest);
  $("#help-btn").addEventListener("click", () => $("#help").showModal());
  $("#upload-btn").addEventListener("click", () => $("#upload-input").click());
  $("#folder-btn").addEventListener("click", () => $("#folder-input").click());
  $("#empty-upload").addEventListener("click", () => $("#upload-input").click());
  $("#empty-folder").addEventListener("click", () => $("#folder-input").click());
  $("#upload-input").addEventListener("change", (ev) => { uploadFiles(ev.target.files).catch(fail); ev.target.value = ""; });
  $("#folder-input").addEventListener("change", (ev) => { uploadFiles(ev.target.files).catch(fail); ev.target.value = ""; });
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => { ev.preventDefault(); if (ev.dataTransfer.files.length) uploadFiles(ev.dataTransfer.files).catch(fail); });
  $("#predict-all").addEventListener("click", () => api("POST", "/api/predict-all", {})
    .then(applyBatch).catch(fail));
  $("#batch-cancel").addEventListener("click", () => api("DELETE", "/api/predict-all").catch(fail));
  $("#export-btn").addEventListener("click", (ev) => { ev.stopPropagation(); $("#export-menu").hidden = !$("#export-menu").hidden; });
  document.addEventListener("click", () => { $("#export-menu").hidden = true; });
  document.querySelectorAll("[data-export]").forEach((a) => a.addEventListener("click", async (ev) => {
    // check first, so a missing model or prediction shows its one-line reason instead of a broken file
    ev.preventDefault();
    const href = a.getAttribute("href");
    try {
      const r = await fetch(href, { headers: headers() });
      if (!r.ok) throw new Error((await r.json()).detail);
      const blob = await r.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: href.split("/").pop().split("?")[0] });
      document.body.append(link); link.click(); link.remove();
    } catch (err) { fail(err); }
  }));
  $("#add-class-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("#new-class-name").value.trim();
    if (!name) { $("#new-class-name").focus(); return; }
    api("POST", "/api/classes", { name, color: $("#new-class-color").value })
      .then((c) => { $("#new-class-name").value = ""; S.classId = c.id; return loadClasses(); }).catch(fail);
  });
  window.addEventListener("resize", () => { drawMarks(); });
  window.addEventListener("keydown", onKey);
  window.addEventListener("keyup", (ev) => { if (ev.code === "Space") spaceDown = false; });
}

async function suggest() {
  if (S.currentId === null) return;
  try {
    const data = await api("GET", `/api/images/${S.currentId}/suggestions?n=5`);
    S.suggestions = data.suggestions;
    drawMarks();
    flashHint(data.suggestions.length ? `${data.suggestions.length} uncertain regions marked: a click in each helps most`
                                      : "The model is confident everywhere on this image");
  } catch (err) { fail(err); }
}

function onKey(ev) {
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea") return;
  const k = ev.key;
  const mod = ev.ctrlKey || ev.metaKey;
  if (mod && (k === "z" || k === "Z")) { ev.preventDefault(); undoRedo(ev.shiftKey ? "redo" : "undo"); return; }
  if (mod && (k === "y" || k === "Y")) { ev.preventDefault(); undoRedo("redo"); return; }
  if (mod) return;
  if (ev.code === "Space") { spaceDown = true; ev.preventDefault(); return; }
  if (/^[1-9]$/.test(k)) {
    const c = S.classes[+k - 1];
    if (c) selectClass(c.id);
    return;
  }
  switch (k.toLowerCase()) {
    case "p": setTool("point"); break;
    case "s": setTool("scribble"); break;
    case "e": setTool("eraser"); break;
    case "f": fitView(); break;
    case "g": suggest(); break;
    case "o": S.overlayOn = !S.overlayOn; setOpacity(); break;
    case "v": {
      const sel = $("#view-select");
      sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
      S.view = sel.value; refreshOverlay(S.rev); break;
    }
    case "[": setBrush(S.brush - 2); break;
    case "]": setBrush(S.brush + 2); break;
    case "arrowleft": step(-1); ev.preventDefault(); break;
    case "arrowright": step(1); ev.preventDefault(); break;
    case "?": $("#help").showModal(); break;
    default: break;
  }
}

// ------------------------------------------------------------------------------------------------ start
async function main() {
  bindControls();
  setBrush(S.brush);
  setOpacity();
  try {
    await loadProject();
    await loadClasses();
    await loadImages();
    renderModelPanel();
  } catch (err) {
    fail(err);
  }
  connectEvents();
}

main();
