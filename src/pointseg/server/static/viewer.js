/* The image viewer: pan and zoom, the image and overlay drawn on one canvas, and the marks.
 *
 * The image and the overlay are drawn with one drawImage call each onto a canvas the size of the viewer,
 * from the same source rectangle, so they stay aligned at any zoom, are shown nearest-neighbour (crisp
 * pixels) from 200 % on, have no seams between compositor tiles, and take the brightness/contrast filter.
 * The hidden <img> elements under #stage hold the decoded image and, for the overlay, the revision shown
 * (overlay.js keeps the overlay itself on a canvas in image coordinates, filled region by region).
 */
import { S, savePrefs } from "./state.js";
import { $ } from "./util.js";
import { addAnnotation, erasePath } from "./edits.js";

export const vp = $("#viewport");
const stage = $("#stage");
const view = $("#view");
const vctx = view.getContext("2d");
const canvas = $("#marks");
const ctx = canvas.getContext("2d");
/** From this zoom on, image and overlay pixels are drawn as crisp squares. */
export const PIXELATED_FROM = 2;

export function applyTransform() {
  const { s, tx, ty } = S.vt;
  stage.style.transform = `translate(${tx}px, ${ty}px) scale(${s})`;
  $("#zoom-label").textContent = S.current ? `${Math.round(s * 100)}%` : "";
  drawView();
  drawMarks();
  vp.dispatchEvent(new Event("viewchange"));    // overlay.js asks for what is newly visible
}

export function fitView() {
  if (!S.current) return;
  const r = vp.getBoundingClientRect();
  const pad = 16;
  const s = Math.min((r.width - 2 * pad) / S.current.width, (r.height - 2 * pad) / S.current.height);
  S.vt.s = Math.max(0.01, s);
  S.vt.tx = (r.width - S.current.width * S.vt.s) / 2;
  S.vt.ty = (r.height - S.current.height * S.vt.s) / 2;
  applyTransform();
}

export function zoomAt(factor, sx, sy) {
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

// ------------------------------------------------------------------------------------------ pointer
let drag = null;
export const keys = { space: false };

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
  const pan = ev.button === 1 || ev.button === 2 || keys.space;
  drag = { x0: ev.clientX, y0: ev.clientY, tx0: S.vt.tx, ty0: S.vt.ty, moved: false, mode: pan ? "pan" : S.tool };
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
    const p = toPoint(S.cursor.cx, S.cursor.cy);
    const last = S.stroke[S.stroke.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) * S.vt.s >= 3) { S.stroke.push(p); drawMarks(); }
  } else if (drag.mode === "eraser" && S.erasing) {
    S.erasing.push(toPoint(S.cursor.cx, S.cursor.cy));
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

// ------------------------------------------------------------------------------------------ image + overlay
let viewPending = false;
export function drawView() {
  if (viewPending) return;
  viewPending = true;
  requestAnimationFrame(() => { viewPending = false; paintView(); });
}

function fitCanvas(c, g) {
  const dpr = window.devicePixelRatio || 1;
  const r = vp.getBoundingClientRect();
  if (c.width !== Math.round(r.width * dpr) || c.height !== Math.round(r.height * dpr)) {
    c.width = Math.round(r.width * dpr);
    c.height = Math.round(r.height * dpr);
  }
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, r.width, r.height);
  return r;
}

/** The overlay as drawn: the overlay canvas overlay.js fills (image coordinates), minus the colours of
 * hidden classes (labels view). The filtered copy is kept and updated only where patches landed since. */
let layerCache = { comp: null, gen: -1, key: null, layer: null };
function overlayLayer() {
  const O = S.overlay;
  if (!O || !O.comp || !O.drawn || !S.current || O.id !== S.current.id) return null;
  const hide = S.view === "labels" ? S.classes.filter((c) => S.hidden.includes(c.name)).map((c) => c.color) : [];
  if (!hide.length) { O.dirty = []; return O.comp; }
  const key = hide.join();
  const rgb = hide.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
  let rects = O.dirty;
  if (layerCache.comp !== O.comp || layerCache.gen !== O.gen || layerCache.key !== key) {
    const c = document.createElement("canvas");
    c.width = O.comp.width;
    c.height = O.comp.height;
    layerCache = { comp: O.comp, gen: O.gen, key, layer: c };
    rects = [[0, 0, c.width, c.height]];
  }
  const g = layerCache.layer.getContext("2d", { willReadFrequently: true });
  for (const r of rects) hideColours(O.comp, g, r, rgb);
  O.dirty = [];
  return layerCache.layer;
}

/** Copy rectangle ``r`` of ``src`` into ``g``'s canvas with the pixels of colours ``rgb`` transparent. */
function hideColours(src, g, r, rgb) {
  const x = Math.max(0, Math.floor(r[0])), y = Math.max(0, Math.floor(r[1]));
  const w = Math.min(src.width, Math.ceil(r[0] + r[2])) - x, h = Math.min(src.height, Math.ceil(r[1] + r[3])) - y;
  if (w <= 0 || h <= 0) return;
  const data = src.getContext("2d").getImageData(x, y, w, h);
  const d = data.data;
  for (let p = 0; p < d.length; p += 4) {
    for (const [rr, gg, b] of rgb) if (d[p] === rr && d[p + 1] === gg && d[p + 2] === b) { d[p + 3] = 0; break; }
  }
  g.putImageData(data, x, y);
}

function paintView() {
  const r = fitCanvas(view, vctx);
  const base = $("#base-img");
  if (!S.current || !base.complete || !base.naturalWidth) return;
  const { s, tx, ty } = S.vt;
  const W = S.current.width, H = S.current.height;
  // the visible part of the image, in whole source pixels, so both layers map the same pixels
  const x0 = Math.max(0, Math.floor(-tx / s)), y0 = Math.max(0, Math.floor(-ty / s));
  const x1 = Math.min(W, Math.ceil((r.width - tx) / s)), y1 = Math.min(H, Math.ceil((r.height - ty) / s));
  if (x1 <= x0 || y1 <= y0) return;
  const dest = [x0 * s + tx, y0 * s + ty, (x1 - x0) * s, (y1 - y0) * s];
  const crisp = s >= PIXELATED_FROM;
  vctx.imageSmoothingEnabled = !crisp;
  vctx.imageSmoothingQuality = "high";
  vctx.filter = S.brightness !== 1 || S.contrast !== 1 ? `brightness(${S.brightness}) contrast(${S.contrast})` : "none";
  const bx = base.naturalWidth / W, by = base.naturalHeight / H;
  vctx.drawImage(base, x0 * bx, y0 * by, (x1 - x0) * bx, (y1 - y0) * by, ...dest);
  vctx.filter = "none";
  const layer = S.overlayOn && S.opacity > 0 ? overlayLayer() : null;
  if (layer) {
    const ox = layer.width / W, oy = layer.height / H;
    vctx.globalAlpha = S.opacity;
    vctx.imageSmoothingEnabled = !crisp;
    vctx.drawImage(layer, x0 * ox, y0 * oy, (x1 - x0) * ox, (y1 - y0) * oy, ...dest);
    vctx.globalAlpha = 1;
  }
}

/** The legend of the probability and uncertainty views (colour ramp with its meaning). */
export function renderLegend() {
  const box = $("#legend");
  let color = null, title = "", lo = "0", hi = "1";
  if (S.view.startsWith("proba:")) {
    const c = S.classes[+S.view.split(":")[1]];
    if (c) { color = c.color; title = `P(${c.name})`; }
  } else if (S.view === "uncertainty") {
    color = "#ec008c"; title = "uncertainty (1 − top probability)"; lo = "certain"; hi = "most uncertain";
  }
  box.hidden = !color || !S.current;
  if (!color) return;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  $("#legend-title").textContent = title;
  $("#legend-ramp").style.background =
    `linear-gradient(to right, rgba(${r},${g},${b},0), rgba(${r},${g},${b},${(0.92 * S.opacity).toFixed(2)}))`;
  $("#legend-lo").textContent = lo;
  $("#legend-hi").textContent = hi;
}

// ------------------------------------------------------------------------------------------ marks
let rafPending = false;
export function drawMarks() {
  if (rafPending) return;
  rafPending = true;
  requestAnimationFrame(() => { rafPending = false; paintMarks(); });
}

function classColor(id) {
  const c = S.classes.find((k) => k.id === id);
  return c ? c.color : "#ffffff";
}

function paintMarks() {
  fitCanvas(canvas, ctx);
  if (!S.current) return;
  const { s, tx, ty } = S.vt;
  const X = (x) => (x + 0.5) * s + tx, Y = (y) => (y + 0.5) * s + ty;
  const erased = S.erasing ? erasedIds(S.erasing, S.brush / 2) : new Set();
  const saved = S.showMarks ? S.annotations.filter((a) => !erased.has(a.id)) : [];
  const marks = saved.concat(S.pending.map((p) => ({ ...p, pending: true })));
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

// ------------------------------------------------------------------------------------------ controls
export function setTool(tool) {
  S.tool = ["point", "scribble", "eraser"].includes(tool) ? tool : "point";
  document.querySelectorAll(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === S.tool));
  vp.classList.toggle("tool-eraser", S.tool === "eraser");
  savePrefs();
  drawMarks();
}

export function setBrush(v) {
  S.brush = Math.max(2, Math.min(80, Math.round(v) || 12));
  $("#brush").value = S.brush;
  $("#brush-val").textContent = S.brush;
  savePrefs();
  drawMarks();
}

export function setOpacity(v) {
  if (v !== undefined) { S.opacity = Math.max(0, Math.min(1, v)); S.overlayOn = true; savePrefs(); }
  $("#opacity").value = Math.round(S.opacity * 100);
  $("#overlay-img").dataset.opacity = String(S.overlayOn ? S.opacity : 0);
  renderLegend();
  drawView();
}

export function setShowMarks(on) {
  S.showMarks = on;
  $("#marks-toggle").classList.toggle("off", !on);
  $("#marks-toggle").setAttribute("aria-pressed", String(on));
  savePrefs();
  drawMarks();
}

export function setAdjust(brightness, contrast) {
  S.brightness = Math.max(0.2, Math.min(3, brightness));
  S.contrast = Math.max(0.2, Math.min(3, contrast));
  $("#brightness").value = Math.round(S.brightness * 100);
  $("#contrast").value = Math.round(S.contrast * 100);
  savePrefs();
  drawView();
}

window.addEventListener("resize", () => { drawView(); drawMarks(); });
