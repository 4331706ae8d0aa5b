/* The model's overlay of the current image: what the viewer shows first, the rest streamed in tiles.
 *
 * The overlay lives on one canvas in image coordinates (``O.comp``; viewer.js draws its visible part). After
 * every click (and on pan / zoom) the page asks the server for the region on screen at screen resolution
 * (``overlay.png?box=x0,y0,x1,y1&scale=s``: tens of milliseconds whatever the image size), draws it in place
 * over the previous overlay, and then fetches full-resolution tiles of the rest, nearest the view first, one
 * at a time, so a new click overtakes them at once. An image up to SMALL pixels comes whole in one request
 * (the same one: its box is the image). A new image whose features are not there yet first gets a coarse
 * overlay (``first-view.png``: the model on a 512-px downscale), while ``features`` events report the
 * backbone's tiles done / total.
 *
 * ``#overlay-img`` carries what is shown: ``dataset.rev`` / ``dataset.view`` of the visible region, and the
 * whole overlay as a picture whenever it came in one piece.
 */
import { S } from "./state.js";
import { fetchOnline, api } from "./api.js";
import { $, toast, fail } from "./util.js";
import { drawMarks, drawView, renderLegend } from "./viewer.js";
import { renderHint, renderInfobar, renderImageInfo, showHint } from "./panels.js";

// viewer.js imports this module (through edits.js) before it has run: take the element, not its export
const vp = $("#viewport");

/** Images up to this many pixels come whole in one request (as fast as a region there: measured). */
export const SMALL = 2_000_000;
/** Side of the full-resolution tiles of the background refinement, in image pixels. */
export const TILE = 512;
/** Pixels of the overlay canvas at most (beyond, it holds the overlay at a lower resolution). */
const MAX_COMPOSITE = 64_000_000;
/** Automatic stats (the image panel) only up to this size: a whole-image prediction, seconds beyond. */
const STATS_UP_TO = 4_000_000;

function viewParams() {
  let view = S.view, k = 0;
  if (view.startsWith("proba:")) { k = +view.split(":")[1]; view = "proba"; }
  return `view=${view}&class_index=${k}`;
}

/** The overlay state of the current image, made on first use (S.overlay is replaced per image). */
function state() {
  const O = S.overlay;
  if (!O || !S.current || S.current.id !== O.id) return null;
  if (!O.comp) {
    const W = S.current.width, H = S.current.height;
    O.k = Math.min(1, Math.sqrt(MAX_COMPOSITE / (W * H)));
    O.comp = document.createElement("canvas");
    O.comp.width = Math.max(1, Math.round(W * O.k));
    O.comp.height = Math.max(1, Math.round(H * O.k));
    O.ctx = O.comp.getContext("2d");
    O.cov = { rev: -1, view: null, full: new Set(), boxes: [] };
    O.dirty = [];
    O.gen = (O.gen || 0) + 1;
    O.drawn = false;
  }
  return O;
}

/** The overlay canvas viewer.js draws, or null before anything arrived. */
export function overlayCanvas() {
  const O = state();
  return O && O.drawn ? O : null;
}

// ------------------------------------------------------------------------------------------ geometry
/** The image box on screen (whole pixels, clamped) and the scale to ask for (1 = full resolution). */
export function visibleBox() {
  const W = S.current.width, H = S.current.height;
  if (W * H <= SMALL) return { x0: 0, y0: 0, x1: W, y1: H, scale: 1 };
  const r = vp.getBoundingClientRect();
  const { s, tx, ty } = S.vt;
  const x0 = Math.max(0, Math.floor(-tx / s)), y0 = Math.max(0, Math.floor(-ty / s));
  const x1 = Math.min(W, Math.ceil((r.width - tx) / s)), y1 = Math.min(H, Math.ceil((r.height - ty) / s));
  if (x1 <= x0 || y1 <= y0) return null;
  // screen resolution, rounded up to a quarter octave (at most 19 % more pixels) so small zooms reuse it
  const want = s * (window.devicePixelRatio || 1);
  const scale = want >= 0.75 ? 1 : Math.min(1, Math.ceil(2 ** (Math.ceil(4 * Math.log2(want)) / 4) * 1e6) / 1e6);
  return { x0, y0, x1, y1, scale };
}

function tilesOf(b) {
  const out = [];
  for (let ty = Math.floor(b.y0 / TILE); ty < Math.ceil(b.y1 / TILE); ty++)
    for (let tx = Math.floor(b.x0 / TILE); tx < Math.ceil(b.x1 / TILE); tx++) out.push(`${tx},${ty}`);
  return out;
}

function tileBox(key) {
  const [tx, ty] = key.split(",").map(Number);
  return { x0: tx * TILE, y0: ty * TILE, x1: Math.min(S.current.width, (tx + 1) * TILE),
           y1: Math.min(S.current.height, (ty + 1) * TILE), scale: 1 };
}

/** Is box ``b`` shown at revision ``rev`` in this view at least at its scale? */
function covered(O, b, rev, view) {
  const c = O.cov;
  if (c.rev < rev || c.view !== view) return false;
  if (b.scale === 1 && tilesOf(b).every((t) => c.full.has(t))) return true;
  return c.boxes.some((p) => p.scale >= b.scale && p.x0 <= b.x0 && p.y0 <= b.y0 && p.x1 >= b.x1 && p.y1 >= b.y1);
}

/** The tiles of the image not yet at full resolution, nearest the centre of box ``b`` first. */
function tilesToRefine(O, b) {
  const W = S.current.width, H = S.current.height;
  const cx = (b.x0 + b.x1) / 2 / TILE, cy = (b.y0 + b.y1) / 2 / TILE;
  const out = tilesOf({ x0: 0, y0: 0, x1: W, y1: H }).filter((t) => !O.cov.full.has(t));
  const dist = (t) => { const [x, y] = t.split(",").map(Number); return Math.hypot(x + 0.5 - cx, y + 0.5 - cy); };
  return out.sort((a, b2) => dist(a) - dist(b2));
}

// ------------------------------------------------------------------------------------------ drawing
/** Draw a decoded patch covering image box ``b`` (at ``b.scale``) in place of what was there. */
function drawPatch(O, picture, b) {
  const k = O.k, g = O.ctx;
  const rect = [b.x0 * k, b.y0 * k, (b.x1 - b.x0) * k, (b.y1 - b.y0) * k];
  g.save();
  g.beginPath();
  g.rect(...rect);
  g.clip();
  g.clearRect(...rect);
  g.imageSmoothingEnabled = false;          // each output pixel is the class of the pixel under its centre
  g.drawImage(picture, b.x0 * k, b.y0 * k, (picture.width / b.scale) * k, (picture.height / b.scale) * k);
  g.restore();
  O.dirty.push(rect);
  O.drawn = true;
}

/** Record that revision ``rev`` of ``view`` now shows box ``b``. */
function cover(O, b, rev, view) {
  if (O.cov.rev !== rev || O.cov.view !== view) O.cov = { rev, view, full: new Set(), boxes: [] };
  O.cov.boxes = O.cov.boxes.filter((p) => !(p.x0 >= b.x0 && p.y0 >= b.y0 && p.x1 <= b.x1 && p.y1 <= b.y1));
  O.cov.boxes.push(b);
  if (b.scale === 1) {
    for (const t of tilesOf(b)) {
      const tb = tileBox(t);
      if (tb.x0 >= b.x0 && tb.y0 >= b.y0 && tb.x1 <= b.x1 && tb.y1 <= b.y1) O.cov.full.add(t);
    }
  }
}

// ------------------------------------------------------------------------------------------ fetching
class Stop extends Error {}

/** Fetch one overlay PNG; returns {picture, rev, box, timings} or null (409: no model; 504: not yet). */
async function fetchPatch(O, url) {
  const r = await fetchOnline(url);
  if (S.overlay !== O) throw new Stop();                 // the user moved to another image
  if (r.status === 409) {                                // no usable model yet: say why
    const data = await r.json();
    O.drawn = false;                                     // nothing of an older model stays around
    O.ctx.clearRect(0, 0, O.comp.width, O.comp.height);
    O.gen++;
    O.cov = { rev: -1, view: null, full: new Set(), boxes: [] };
    $("#overlay-img").removeAttribute("src");
    $("#overlay-img").dataset.rev = "-1";
    drawView();
    showHint(data.detail);
    return null;
  }
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).detail; } catch (_) { /* not JSON */ }
    if (r.status !== 504) toast(msg);
    throw new Stop();
  }
  const blob = await r.blob();
  const picture = await createImageBitmap(blob);
  if (S.overlay !== O) throw new Stop();
  const [x0, y0, x1, y1] = (r.headers.get("X-Box") || "").split(",").map(Number);
  return { picture, blob, rev: +r.headers.get("X-Model-Rev"), box: { x0, y0, x1, y1, scale: +r.headers.get("X-Scale") },
           timings: JSON.parse(r.headers.get("X-Timings") || "{}") };
}

function regionUrl(id, b, rev, timeout = 60) {
  return `/api/images/${id}/overlay.png?${viewParams()}&min_rev=${rev}&box=${b.x0},${b.y0},${b.x1},${b.y1}` +
         `&scale=${b.scale}&timeout=${timeout}`;
}

/** The visible region for revision ``target``: drawn, and on record as what the page shows. */
async function showVisible(O, target, key) {
  const b = visibleBox();
  if (!b || covered(O, b, target, key)) return true;
  const got = await fetchPatch(O, regionUrl(O.id, b, target, 300));
  if (!got) return false;
  if (O.cov.view !== null && key !== O.cov.view) { O.ctx.clearRect(0, 0, O.comp.width, O.comp.height); O.dirty = []; O.gen++; }
  drawPatch(O, got.picture, got.box);
  cover(O, got.box, got.rev, key);
  const ov = $("#overlay-img");
  const W = S.current.width, H = S.current.height;
  if (got.box.scale === 1 && got.box.x1 - got.box.x0 === W && got.box.y1 - got.box.y0 === H) {
    const old = ov.src;                                  // the whole overlay came in one piece: keep it as a picture
    ov.src = URL.createObjectURL(got.blob);
    if (old && old.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(old), 1000);
  } else if (ov.src) {
    const old = ov.src;
    ov.removeAttribute("src");
    if (old.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(old), 1000);
  }
  ov.dataset.rev = String(got.rev);
  ov.dataset.view = key;
  O.coarse = false;
  S.timings = got.timings;
  if (S.clickT0 && got.rev >= S.clickT0.rev) {
    S.lastLatency = performance.now() - S.clickT0.t0;
    S.clickT0 = null;
  }
  renderHint();
  renderInfobar();
  renderLegend();
  drawView();
  drawMarks();
  return true;
}

/** A new image without features: its coarse overlay first (a fraction of a second). */
async function showCoarse(O, target, key) {
  if (S.featuresReady[O.id] || O.coarseTried) return;
  O.coarseTried = true;
  const got = await fetchPatch(O, `/api/images/${O.id}/first-view.png?${viewParams()}&min_rev=${target}`);
  if (!got || O.cov.rev >= 0) return;                    // no model, or the exact overlay came first
  drawPatch(O, got.picture, got.box);
  O.coarse = true;
  O.coarseRev = got.rev;
  renderHint();
  drawView();
}

/** Full-resolution tiles of the rest, nearest the view first, until all are there or something newer is
 * wanted (a click, a pan, another view): one request at a time, so a click's region is never queued behind
 * a burst of tiles. */
async function refineTiles(O, key) {
  const rev = O.cov.rev;
  const around = visibleBox() || { x0: 0, y0: 0, x1: S.current.width, y1: S.current.height };
  for (const t of tilesToRefine(O, around)) {
    if (O.wake || S.overlay !== O || O.cov.rev !== rev || S.view !== key) return false;
    if (O.cov.full.has(t)) continue;
    const got = await fetchPatch(O, regionUrl(O.id, tileBox(t), rev));
    if (!got || O.wake || S.view !== key) return false;
    if (got.rev !== O.cov.rev) { O.want = Math.max(O.want, got.rev); O.wake = true; return false; }
    drawPatch(O, got.picture, got.box);
    cover(O, got.box, got.rev, key);
    O.tilesDrawn = (O.tilesDrawn || 0) + 1;
    drawView();
  }
  return true;
}

/** Show the overlay for revision ``minRev`` (default: the project's) unless a newer one is on screen: the
 * visible region first, then the rest in tiles. Calls while one runs only raise what it aims for. */
export async function refreshOverlay(minRev) {
  const O = state();
  if (!O) return;
  O.want = Math.max(O.want, minRev ?? S.rev);
  O.wake = true;
  if (O.inflight) return;      // the running loop picks the newer revision (or view) up
  O.inflight = true;
  try {
    while (O.wake) {
      O.wake = false;
      const target = O.want, key = S.view;
      await showCoarse(O, target, key);
      if (!(await showVisible(O, target, key))) {
        if (O.wake) continue;
        return;                                          // no model: a model event calls again
      }
      if (O.wake) continue;
      if (await refineTiles(O, key)) scheduleImageStats();
    }
  } catch (err) {
    if (!(err instanceof Stop)) fail(err);
  } finally {
    O.inflight = false;
  }
}

// pan and zoom: ask for what is newly visible once the view rests a moment
let viewTimer = null;
vp.addEventListener("viewchange", () => {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const O = state();
    if (O && O.cov.rev >= 0) refreshOverlay(O.cov.rev);
  }, 120);
});

let statsTimer = null;
function scheduleImageStats() {
  clearTimeout(statsTimer);
  if (!S.current || S.current.width * S.current.height > STATS_UP_TO) return;
  statsTimer = setTimeout(async () => {
    const id = S.currentId;
    try {
      const st = await api("GET", `/api/images/${id}/stats`);
      if (S.currentId === id) { S.imageStats = st; renderImageInfo(); }
    } catch (_) { /* no model: nothing to show */ }
  }, 700);
}
