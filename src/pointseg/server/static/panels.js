/* Read-only panels: the status line, the info bar, the hint, the model and image panels, predict-all. */
import { S, currentOk } from "./state.js";
import { net } from "./api.js";
import { $, el, esc, fmtPct, fmtMs, plural } from "./util.js";

export function renderStatus() {
  const m = S.model;
  const dot = $("#status-dot"), text = $("#status-text");
  dot.className = "dot";
  if (!net.online) {
    dot.classList.add("err");
    text.textContent = "Offline — reconnecting…";
    return;
  }
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
  text.title = text.textContent;
}

export function renderInfobar() {
  const bar = $("#infobar");
  bar.replaceChildren();
  if (!S.current) return;
  const t = S.timings || {};
  const add = (label, value, cls = "") => bar.append(el("span", { class: cls, title: `${label} ${value}`.trim() },
    label ? `${label} ` : "", el("b", {}, value)));
  add("", `${S.current.name}`, "iname");
  add("size", `${S.current.width}×${S.current.height}`);
  const nP = S.annotations.filter((a) => a.kind === "point").length;
  const nS = S.annotations.length - nP;
  add("marks", `${nP} points, ${nS} scribbles`);
  if (currentOk()) add("", "OK (defect-free)", "okmark");
  // timings are in the model panel too: they give way first when the bar is narrow
  if (S.lastLatency !== null) add("click → overlay", fmtMs(S.lastLatency), "opt");
  if (t.fit_ms !== undefined) add("fit", fmtMs(t.fit_ms), "opt");
  if (t.predict_ms !== undefined) add("predict", fmtMs(t.predict_ms), "opt");
}

// ------------------------------------------------------------------------------------------ hint
let progressTimer = null;

/** Progress of the current image's features: the server's own fraction when it sends one, else the time
 * spent against an estimate from this server's measured speed on earlier images. */
function featureProgress() {
  const id = S.currentId;
  const t0 = S.featureStart[id] ?? performance.now();
  S.featureStart[id] = t0;
  const secs = (performance.now() - t0) / 1000;
  let frac = S.featureFraction && S.featureFraction.id === id ? S.featureFraction.value : null;
  let eta = null;
  if (frac === null && S.msPerPixel && S.current) {
    eta = (S.msPerPixel * S.current.width * S.current.height) / 1000;
    frac = Math.min(0.95, secs / Math.max(0.1, eta));
  }
  const tiles = S.featureFraction && S.featureFraction.id === id && S.featureFraction.total
    ? ` · ${S.featureFraction.done} / ${S.featureFraction.total} tiles` : "";
  const coarse = S.overlay && S.overlay.id === id && S.overlay.coarse ? " · coarse preview shown" : "";
  const text = `Computing features for this image… ${secs.toFixed(1)} s` +
    (eta ? ` of about ${eta.toFixed(1)} s` : "") + tiles + coarse;
  return { frac, text };
}

export function renderHint() {
  const m = S.model;
  clearInterval(progressTimer);
  progressTimer = null;
  if (!S.current) return showHint(null);
  if (!S.classes.length) return showHint("Add classes in the right panel, then click points of each.");
  if (!S.featuresReady[S.currentId] && +$("#overlay-img").dataset.rev < 0) {
    const tick = () => {
      const { frac, text } = featureProgress();
      showHint(text, frac === null ? "indeterminate" : frac);
    };
    tick();
    progressTimer = setInterval(tick, 250);
    return;
  }
  if (m && m.status !== "ok") return showHint(m.message);
  showHint(null);
}

let flashTimer = null;
export function flashHint(text, ms = 4000) {
  showHint(text);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(renderHint, ms);
}

/** ``progress``: null (no bar), "indeterminate", or a fraction in [0, 1]. */
export function showHint(text, progress = null) {
  const h = $("#hint");
  h.hidden = !text;
  $("#hint-text").textContent = text || "";
  const bar = $("#hint-progress");
  bar.hidden = progress === null;
  bar.classList.toggle("indeterminate", progress === "indeterminate");
  if (typeof progress === "number") $("#hint-bar").style.width = `${Math.round(progress * 100)}%`;
}

export function renderHistory() {
  $("#undo-btn").disabled = !S.history.can_undo;
  $("#redo-btn").disabled = !S.history.can_redo;
}

// ------------------------------------------------------------------------------------------ right panel
export function renderModelPanel() {
  const dl = $("#model-info");
  dl.replaceChildren();
  const m = S.model;
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  const bg = S.classes.find((c) => c.background) || S.classes[0];
  if (!m || m.status !== "ok") {
    row("status", !m || m.status !== "error" ? "not trained yet" : "error");
    if (bg) row("background", bg.name);
    return;
  }
  const r = m.report || {};
  row("revision", `r${m.rev}`);
  if (bg) row("background", bg.name);
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
  // learned between clicks from the images marked OK (K), as `pointseg train` does
  if (r.ng_rule) row("NG rule", `${r.ng_rule.score} > ${+r.ng_rule.threshold.toFixed(3)} (${plural(r.ng_rule.n_ok, "OK image")}, ${r.ng_rule.n_ng} NG)`);
  const pc = r.part_confusion;
  if (pc) row("per part (left out)", `${pc.false_alarms} of ${pc.ok_images} OK called NG, ${pc.misses} of ${pc.ng_images} NG missed`);
  row("fit", fmtMs((m.timings || {}).fit_ms));
  if (S.timings) row("predict (this image)", fmtMs(S.timings.predict_ms));
  if (S.lastLatency !== null) row("click → overlay", fmtMs(S.lastLatency));
}

export function renderImageInfo() {
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

// ------------------------------------------------------------------------------------------ predict all
/** A batch update from the start reply or the event stream.  A fast run can finish (event stream) before
 * the reply to its own start arrives: never step a run back; a resumed run (same or new id) goes on. */
export function applyBatch(b) {
  const cur = S.batch;
  if (cur && cur.id === b.id && b.done < cur.done) return;
  // the same run seen ended (finished or stopped): a late "running" answer about it changes nothing;
  // a resumed run comes with a new id
  if (cur && cur.id === b.id && !cur.running && b.running && b.done <= cur.done) return;
  S.batch = b;
  renderBatch();
}

export function renderBatch() {
  const b = S.batch;
  const box = $("#batch");
  if (!b || (!b.running && !b.total)) { box.hidden = true; $("#predict-all").disabled = false; return; }
  box.hidden = false;
  $("#batch-bar").style.width = `${b.total ? (100 * b.done) / b.total : 0}%`;
  $("#batch .progress").hidden = !b.running;         // a finished run keeps only its one-line result
  // a run after Stop skips the images already predicted by this model: say so, so 0 → k is not a redo
  const kept = b.skipped || 0;
  const upToDate = kept ? ` · ${kept} already up to date` : "";
  const failed = b.failed ? ` · ${b.failed} failed` : "";
  let text;
  if (b.running && b.waiting) text = `waiting for the model… ${b.done} / ${b.total}`;
  else if (b.running) text = `${b.done} / ${b.total}${upToDate}${failed}`;
  else if (b.cancelled) text = `stopped at ${b.done} / ${b.total}`;
  else text = `${b.done} / ${b.total} done in ${b.seconds}s${upToDate}${failed}`;
  $("#batch-text").textContent = text;
  $("#batch-text").title = b.message ? `${text} — ${b.message}` : text;
  $("#batch-cancel").hidden = !b.running;
  $("#predict-all").disabled = b.running;
  $("#predict-all").textContent = !b.running && b.cancelled && b.done < b.total ? "Resume" : "Predict all";
  $("#predict-all").title = $("#predict-all").textContent === "Resume"
    ? `Go on predicting the ${plural(b.total - b.done, "image")} left` : "Label every image with the current model";
}
