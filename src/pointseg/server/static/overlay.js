/* The model's overlay of the current image: fetched for the newest revision, one request at a time. */
import { S } from "./state.js";
import { fetchOnline, api } from "./api.js";
import { $, toast, fail } from "./util.js";
import { drawMarks, drawView, renderLegend } from "./viewer.js";
import { renderHint, renderInfobar, renderImageInfo, showHint } from "./panels.js";

function overlayUrl(id, minRev) {
  let view = S.view, k = 0;
  if (view.startsWith("proba:")) { k = +view.split(":")[1]; view = "proba"; }
  return `/api/images/${id}/overlay.png?view=${view}&class_index=${k}&min_rev=${minRev}`;
}

/** Fetch the overlay for revision ``minRev`` (default: the project's) unless a newer one is on screen. */
export async function refreshOverlay(minRev) {
  const O = S.overlay;
  if (!O || S.currentId === null) return;
  O.want = Math.max(O.want, minRev ?? S.rev);
  if (O.inflight) return;      // the running loop picks the newer revision up when it finishes
  O.inflight = true;
  try {
    for (;;) {
      const target = O.want;
      const key = S.view;
      const r = await fetchOnline(overlayUrl(O.id, target));
      if (S.overlay !== O) return;                       // the user moved to another image
      if (r.status === 409) {                            // no usable model yet: say why
        const data = await r.json();
        $("#overlay-img").removeAttribute("src");
        $("#overlay-img").dataset.rev = "-1";
        drawView();
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
      const url = URL.createObjectURL(await r.blob());
      const tmp = new Image();
      tmp.src = url;
      try { await tmp.decode(); } catch (_) { /* shown anyway */ }
      if (S.overlay !== O) { URL.revokeObjectURL(url); return; }
      const ov = $("#overlay-img");
      const old = ov.src;
      ov.src = url;
      try { await ov.decode(); } catch (_) { /* drawn when loaded */ }
      ov.dataset.rev = String(rev);
      ov.dataset.view = key;
      if (old && old.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(old), 1000);
      S.timings = timings;
      if (S.clickT0 && rev >= S.clickT0.rev) {
        S.lastLatency = performance.now() - S.clickT0.t0;
        S.clickT0 = null;
      }
      renderHint();
      renderInfobar();
      renderLegend();
      drawView();
      drawMarks();
      scheduleImageStats();
      if (O.want <= rev && S.view === key) return;
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
