/* The page's state: what is on screen, plus the viewer preferences remembered per project.
 *
 * The page keeps no project state of its own beyond what is on screen: every edit goes to the server
 * (which commits it at once), and the server's answers and its event stream drive the view.
 */

export const S = {
  project: null,
  images: [],          // [{id, name, width, height, n_points, n_scribbles, ok, prediction, prediction_stale, status, error}]
  classes: [],         // [{id, name, color, index, background, n_annotations, n_points, n_scribbles}]
  classId: null,       // selected class
  currentId: null,
  current: null,       // image detail
  annotations: [],
  history: { can_undo: 0, can_redo: 0 },
  annRev: -1,
  rev: 0,
  model: null,
  training: false,
  // viewer preferences (remembered per project, see PREFS)
  tool: "point",
  brush: 12,
  view: "labels",
  opacity: 0.45,
  hidden: [],          // names of classes whose overlay colour is not shown
  showMarks: true,
  brightness: 1,
  contrast: 1,
  overlayOn: true,
  vt: { s: 1, tx: 0, ty: 0 },
  suggestions: [],
  pending: [],         // optimistic marks not yet confirmed by the server
  erasing: null,       // eraser path in progress
  stroke: null,        // scribble in progress
  overlay: null,       // {id, want, inflight}
  clickT0: null,       // {rev, t0} of the last edit, for the click → overlay latency
  lastLatency: null,
  featuresReady: {},
  featureStart: {},    // image id → performance.now() when its features were first awaited
  msPerPixel: null,    // measured feature throughput of this server, for the progress estimate
  batch: null,
  settings: null,
  timings: null,
  imageStats: null,
};
window.S = S;          // for the browser console and the end-to-end tests

const PREFS = ["tool", "brush", "view", "opacity", "hidden", "showMarks", "brightness", "contrast"];

function prefsKey() {
  return `pointseg-prefs:${(S.project && (S.project.id || S.project.name)) || ""}`;
}

/** Take the remembered viewer preferences of this project (tool, brush, opacity, view, …). */
/** Whether the current image is marked OK (defect-free): the list's entry (refreshed by every change, from
 * any tab) when there is one, else the opened image's own answer. */
export function currentOk() {
  const row = S.images.find((i) => i.id === S.currentId);
  return !!(row ? row.ok : S.current && S.current.ok);
}

export function loadPrefs() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(prefsKey()) || "{}"); } catch (_) { /* ignore */ }
  for (const k of PREFS) if (saved[k] !== undefined && typeof saved[k] === typeof S[k]) S[k] = saved[k];
}

export function savePrefs() {
  if (!S.project) return;
  const out = {};
  for (const k of PREFS) out[k] = S[k];
  try { localStorage.setItem(prefsKey(), JSON.stringify(out)); } catch (_) { /* private mode: not kept */ }
}
