/* The image list (thumbnails with their predictions, badges, filters), opening and uploading images. */
import { S } from "./state.js";
import { api } from "./api.js";
import { $, el, toast, fail, plural } from "./util.js";
import { fitView, drawMarks, drawView, renderLegend } from "./viewer.js";
import { refreshOverlay } from "./overlay.js";
import { loadClasses } from "./classes.js";
import { renderHint, renderHistory, renderImageInfo, renderInfobar } from "./panels.js";

export async function loadImages() {
  const data = await api("GET", "/api/images");
  S.images = data.images;
  renderImages();
  renderInfobar();
  if (sortByNext()) loadRanking(1).catch(() => {});  // a model may not exist yet: the list keeps its order
  if (S.currentId === null && S.images.length) {
    const want = +sessionStorage.getItem("pointseg-image");
    const first = S.images.find((i) => i.id === want) || S.images[0];
    await openImage(first.id);
  } else if (S.currentId !== null && !S.images.some((i) => i.id === S.currentId)) {
    S.currentId = null;
    S.current = null;
    if (S.images.length) await openImage(S.images[0].id);
  }
  $("#empty").hidden = S.images.length > 0;
}

let imagesTimer = null;
/** Badges and per-class counts, a moment after edits settle. */
export function loadImagesSoon() {
  clearTimeout(imagesTimer);
  imagesTimer = setTimeout(() => Promise.all([loadImages(), loadClasses()]).catch(fail), 400);
}

export async function openImage(id) {
  if (id === S.currentId && S.current) return;
  S.currentId = id;
  sessionStorage.setItem("pointseg-image", id);
  S.suggestions = [];
  S.pending = [];
  S.imageStats = null;
  S.overlay = { id, want: -1, inflight: false };
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
  if (!detail.features_ready && S.featureStart[id] === undefined) S.featureStart[id] = performance.now();
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
  renderInfobar();
  renderHint();
  renderLegend();
  drawView();
  drawMarks();
  document.querySelector(`#image-list li[data-id="${id}"]`)?.scrollIntoView({ block: "nearest" });
}

/** Stale: made by another model than the current annotations and settings give — the server decides
 * (from the model's signature, so it holds while the model retrains, e.g. right after a restart). */
export function predictionStale(img) {
  return !!(img.prediction && img.prediction_stale);
}

function imageVisible(img) {
  const q = $("#filter-text").value.trim().toLowerCase();
  if (q && !img.name.toLowerCase().includes(q)) return false;
  switch ($("#filter-kind").value) {
    case "annotated": return annotated(img);
    case "todo": return !annotated(img);
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

function badgesOf(img) {
  const out = [];
  const failed = img.status === "failed" || (img.prediction && img.prediction.status !== "ok");
  if (img.status === "failed") out.push(["badge fail", "unreadable", img.error || "the file cannot be read"]);
  if (img.ok) out.push(["badge okb", "OK", "marked OK (defect-free): every pixel is background (K toggles)"]);
  const n = img.n_points + img.n_scribbles;
  if (n) out.push(["badge pts", `${img.n_points}${img.n_scribbles ? `+${img.n_scribbles}` : ""}`,
                   `${plural(img.n_points, "point")}, ${plural(img.n_scribbles, "scribble")}`]);
  if (img.prediction && !failed) {
    const stale = predictionStale(img);
    out.push([`badge ${stale ? "stale" : "pred"}`, stale ? "old" : "✓",
              stale ? "predicted by an older model: run Predict all again" : `predicted by model r${img.prediction.rev}`]);
    const f = findings(img);
    if (f) out.push(["badge find", `${f}▲`, `${plural(f, "region")} found`]);
  } else if (img.prediction && img.status !== "failed") {
    out.push(["badge fail", "error", (img.prediction.stats && img.prediction.stats.error) || "prediction failed"]);
  }
  return out;
}

function rowOf(img) {
  const badges = badgesOf(img);
  const pred = img.prediction && img.prediction.status === "ok" && img.status !== "failed";
  const thumb = el("span", { class: "thumb" },
    el("img", { src: `/api/images/${img.id}/thumb`, loading: "lazy", alt: "" }),
    pred ? el("img", { class: "pred-thumb", src: `/api/images/${img.id}/prediction.png?rev=${img.prediction.rev}`,
                       loading: "lazy", alt: "", title: "prediction" }) : null);
  return el("li", { dataset: { id: img.id }, class: img.id === S.currentId ? "current" : "",
                    title: [img.name, ...badges.map((b) => b[2])].join(" · "),
                    onclick: () => openImage(img.id).catch(fail) },
    thumb,
    el("span", { class: "name" }, img.name),
    el("span", { class: "badges" }, ...badges.map(([cls, text, title]) => el("span", { class: cls, title }, text))),
    el("button", { class: "mini del img-del", title: "Remove from project", "aria-label": `Remove ${img.name}`,
                   onclick: (ev) => { ev.stopPropagation(); removeImage(img); } }, "✕"));
}

// ------------------------------------------------------------------------------- next image to annotate
/* The server ranks the unannotated images by how much annotating them should help (GET /api/images/ranking:
 * pointseg.decision's default ranking, chosen with BENCHMARKS.md's folder protocol).
 * "N" opens the top one; the sort order "Next to annotate" lists them in that order. */
let ranking = null;
let rankingTimer = null;

function sortByNext() {
  return $("#sort-kind").value === "next";
}

/** Fetch the ranking (waiting up to ``wait`` s for scores); while some images are still being scored and
 * the list is sorted by it, ask again in a moment. */
export async function loadRanking(wait = 2) {
  const data = await api("GET", `/api/images/ranking?wait=${wait}`);
  ranking = data;
  if (sortByNext()) renderImages();
  clearTimeout(rankingTimer);
  if (!data.complete && sortByNext()) rankingTimer = setTimeout(() => loadRanking(1).catch(() => {}), 2000);
  return data;
}

function annotated(img) {
  return img.n_points + img.n_scribbles > 0 || !!img.ok;
}

/** The list in the chosen order: as the server lists them (by name), or ranked unannotated images first,
 * then unannotated ones not scored yet, then the annotated ones. */
function ordered(list) {
  if (!sortByNext() || !ranking) return list;
  const pos = new Map(ranking.ranked.map((r, k) => [r.id, k]));
  const tier = (img) => (annotated(img) ? 2 : pos.has(img.id) ? 0 : 1);
  return [...list].sort((a, b) => tier(a) - tier(b) || (pos.get(a.id) ?? 0) - (pos.get(b.id) ?? 0));
}

/** Open the unannotated image the model would learn most from (other than the one shown). */
export async function openNextToAnnotate() {
  const data = await loadRanking(5);
  const top = data.ranked.find((r) => r.id !== S.currentId);
  const id = top ? top.id : data.pending.find((i) => i !== S.currentId);
  if (id === undefined) { toast("Every image is annotated.", "info", 3000); return; }
  if (!top) toast("Not ranked yet (features are computed while you pause): opening the next unannotated image.",
                  "info", 3000);
  await openImage(id);
}

export function setSort(value) {
  $("#sort-kind").value = value;
  sessionStorage.setItem("pointseg-sort", value);
  renderImages();
  if (value === "next") loadRanking(2).catch(fail);
}

export function restoreSort() {
  const want = sessionStorage.getItem("pointseg-sort");
  if (want) $("#sort-kind").value = want;
}

/** Rows are kept while what they show is unchanged, so thumbnails are not fetched again on every edit. */
export function renderImages() {
  const list = $("#image-list");
  const visible = ordered(S.images.filter(imageVisible));
  $("#image-count").textContent = S.images.length ? `${S.images.length}` : "";
  const old = new Map([...list.children].map((li) => [li.dataset.key, li]));
  const nodes = visible.map((img) => {
    const key = JSON.stringify([img.id, img.name, img.n_points, img.n_scribbles, !!img.ok, img.status, img.prediction,
                                predictionStale(img)]);
    const li = old.get(key) || rowOf(img);
    li.dataset.key = key;
    li.classList.toggle("current", img.id === S.currentId);
    return li;
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

export function step(delta) {
  const visible = ordered(S.images.filter(imageVisible));
  if (!visible.length) return;
  let k = visible.findIndex((i) => i.id === S.currentId);
  k = k < 0 ? 0 : Math.min(visible.length - 1, Math.max(0, k + delta));
  openImage(visible[k].id).catch(fail);
}

export async function uploadFiles(fileList) {
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
        fail(err);
      }
      note.textContent = `Uploading… ${Math.min(files.length, i + 8)} / ${files.length}`;
    }
  } finally {
    note.remove();
  }
  toast(`${added} image(s) added${skipped ? `, ${skipped} other file(s) skipped` : ""}.`, "info", 3000);
  await loadImages();
}
