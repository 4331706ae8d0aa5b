/* Edits of the current image: points, scribbles, the eraser, undo and redo.
 *
 * Each edit is drawn at once (pending, half transparent) and goes to the server, which commits it; its
 * answer replaces the pending mark.  While the server is offline the edit waits in the api queue and its
 * mark stays on screen as pending.
 */
import { S, currentOk } from "./state.js";
import { api } from "./api.js";
import { toast, fail } from "./util.js";
import { drawMarks } from "./viewer.js";
import { refreshOverlay } from "./overlay.js";
import { loadImagesSoon, renderImages } from "./images.js";
import { renderHistory, renderInfobar } from "./panels.js";

// Edits of this tab: their event-stream echoes need no reload (the POST answer carries the data).
export const own = { inflight: 0, revs: new Set(), deferred: 0 };

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
  renderHistory();
  renderInfobar();
  drawMarks();
  refreshOverlay(rev);
  loadImagesSoon();
}

export async function reloadAnnotations() {
  const id = S.currentId;
  if (id === null) return;
  const data = await api("GET", `/api/images/${id}/annotations`);
  if (S.currentId !== id) return;
  S.annotations = data.annotations;
  S.history = data.history;
  S.annRev = data.rev;
  renderHistory();
  renderInfobar();
  drawMarks();
}

export async function addAnnotation(item) {
  if (S.currentId === null) return;
  if (S.classId === null) { toast("Add a class first (right panel), then click.", "info"); return; }
  const id = S.currentId;
  const mark = { ...item, class_id: S.classId };
  S.pending.push(mark);
  drawMarks();
  S.clickT0Pending = performance.now();
  const unpend = () => { S.pending = S.pending.filter((p) => p !== mark); };
  try {
    const data = await ownEdit(() => api("POST", `/api/images/${id}/annotations`, { items: [mark] }));
    unpend();
    if (S.currentId !== id) return;
    S.annotations = S.annotations.concat(data.annotations);
    S.history = data.history;
    editDone(data.rev);
  } catch (err) {
    unpend();
    drawMarks();
    fail(err);
  }
}

export async function erasePath(points) {
  const id = S.currentId;
  try {
    S.clickT0Pending = performance.now();
    const data = await ownEdit(() => api("POST", `/api/images/${id}/erase`, { points, radius: Math.max(1, S.brush / 2) }));
    if (!data.removed.length || S.currentId !== id) return;
    S.annotations = S.annotations.filter((a) => !data.removed.includes(a.id));
    S.history = data.history;
    editDone(data.rev);
  } catch (err) { fail(err); } finally { drawMarks(); }
}

export async function undoRedo(which) {
  const id = S.currentId;
  if (id === null) return;
  try {
    S.clickT0Pending = performance.now();
    // (the server drops edits whose marks went with a deleted class, so each step changes something)
    const data = await ownEdit(() => api("POST", `/api/images/${id}/${which}`));
    if (S.currentId !== id) return;
    if (!data.edit) { toast(`Nothing to ${which} on this image.`, "info", 1800); return; }
    if (data.edit.kind === "ok" || data.edit.kind === "unok") setOk(id, (data.edit.kind === "ok") !== (which === "undo"));
    S.annotations = data.annotations;
    S.history = data.history;
    editDone(data.rev);
  } catch (err) { fail(err); }
}

function setOk(id, ok) {
  if (S.current && S.current.id === id) S.current = { ...S.current, ok };
  const row = S.images.find((i) => i.id === id);
  if (row) row.ok = ok;
  renderImages();
}

/** K: mark the current image OK (defect-free: every pixel is background, so the model learns from it without
 * a click) or unmark it — one undoable edit. The server refuses an image with defect marks, saying which. */
export async function toggleOk() {
  const id = S.currentId;
  if (id === null || !S.current) return;
  const ok = !currentOk();
  try {
    S.clickT0Pending = performance.now();
    const data = await ownEdit(() => api("PUT", `/api/images/${id}/ok`, { ok }));
    if (S.currentId !== id) return;
    setOk(id, data.image.ok);
    S.history = data.history;
    toast(ok ? "Marked OK (defect-free): every pixel is background. K again to unmark."
             : "Unmarked: no longer OK.", "info", 2200);
    editDone(data.rev);
  } catch (err) { fail(err); }
}
