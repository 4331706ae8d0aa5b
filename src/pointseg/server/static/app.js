/* pointseg serve — the page's entry module: loading, the event stream, the controls and the keys.
 *
 * Plain ES modules, no build step:
 *   state.js     S (what is on screen) and the viewer preferences remembered per project
 *   api.js       requests, the access token, the offline state and its queue of edits
 *   viewer.js    pan/zoom, the image + overlay canvas, the marks, tool / brush / opacity / display controls
 *   overlay.js   fetching the model's overlay of the current image
 *   edits.js     points, scribbles, eraser, undo / redo
 *   images.js    the image list, opening and uploading images
 *   classes.js   the class list (background class, overlay visibility, rename, delete)
 *   panels.js    status line, info bar, hint, model and image panels, predict-all progress
 *   settings.js  the project's method settings
 */
import { S, loadPrefs, savePrefs } from "./state.js";
import { TOKEN, api, fetchOnline, downloadName, onReconnect } from "./api.js";
import { $, el, fail, toast } from "./util.js";
import { keys, fitView, setTool, setBrush, setOpacity, setShowMarks, setAdjust, drawView, drawMarks,
         renderLegend } from "./viewer.js";
import { refreshOverlay } from "./overlay.js";
import { own, reloadAnnotations, toggleOk, undoRedo } from "./edits.js";
import { loadImages, loadImagesSoon, step, uploadFiles, renderImages, openNextToAnnotate, setSort,
         restoreSort } from "./images.js";
import { loadClasses, bindAddClass, selectClass, focusViewer } from "./classes.js";
import { applyBatch, flashHint, renderBatch, renderHint, renderImageInfo, renderModelPanel,
         renderStatus } from "./panels.js";
import { loadSettings, renderSettings } from "./settings.js";

async function loadProject() {
  const first = S.project === null;
  S.project = await api("GET", "/api/project");
  S.rev = S.project.rev;
  S.model = S.project.model;
  S.training = S.project.training;
  S.batch = S.project.batch;
  $("#project-name").textContent = S.project.name;
  $("#project-name").title = S.project.name;
  document.title = `${S.project.name} — pointseg`;
  if (first) applyPrefs();
  renderStatus();
  renderBatch();
}

/** Put the remembered tool, brush, opacity, view and display settings of this project on screen. */
function applyPrefs() {
  loadPrefs();
  setTool(S.tool);
  setBrush(S.brush);
  setOpacity();
  setShowMarks(S.showMarks);
  setAdjust(S.brightness, S.contrast);
}

async function syncAll() {
  await Promise.all([loadProject(), loadClasses(), loadImages(), reloadAnnotations(), loadSettings()]);
  await refreshOverlay(S.rev);
}

// ------------------------------------------------------------------------------------------ events
function onEvent(ev) {
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
        loadImagesSoon();
      } else if (ev.what === "images") {
        loadImagesSoon();
      } else if (ev.what === "settings") {
        loadSettings().catch(fail);
      } else if (ev.what === "annotations") {
        loadImagesSoon();
        if (ev.rev > (S.overlay ? S.overlay.want : 0)) refreshOverlay(ev.rev);
      }
      break;
    case "model":
      S.model = ev;
      S.training = ev.rev < S.rev;
      renderStatus(); renderModelPanel(); renderHint();
      loadImagesSoon();                                         // badges: stale or not, as the server says
      if (ev.status === "ok" && S.overlay && +$("#overlay-img").dataset.rev < 0) refreshOverlay(ev.rev);
      break;
    case "settings":
      if (ev.settings) { S.settings = ev.settings; renderSettings(); } else loadSettings().catch(fail);
      break;
    case "features": {
      const img = S.images.find((i) => i.id === ev.image_id);
      if (ev.status === "ready" && ev.ms && img && S.featureStart[ev.image_id] !== undefined) {
        S.msPerPixel = ev.ms / (img.width * img.height);
      }
      // real progress: the backbone's tiles done / total (an image of one tile keeps the time estimate)
      if (ev.status === "running" && ev.total > 1) S.featureFraction = { id: ev.image_id, value: ev.done / ev.total, done: ev.done, total: ev.total };
      if (ev.status === "ready" || ev.status === "error") S.featuresReady[ev.image_id] = ev.status === "ready";
      if (ev.image_id === S.currentId) {
        if (ev.status === "error") toast(ev.message);
        if (ev.status === "ready" || ev.status === "error") { renderHint(); renderImageInfo(); }
        if (ev.status === "ready" && S.overlay && +$("#overlay-img").dataset.rev < 0) refreshOverlay();
      }
      break;
    }
    case "batch":
      applyBatch(ev);
      if (!ev.running || ev.done % 5 === 0) loadImagesSoon();
      break;
    default:
      break;
  }
}

function connectEvents() {
  const es = new EventSource("/api/events" + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : ""));
  es.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  // the stream breaks at once when the server goes: check whether it is really gone (the api module
  // probes and shows the offline state), and take everything from the server again once it is back
  es.onerror = () => { fetchOnline("/api/status", { cache: "no-store" }).catch(() => {}); };
}

onReconnect((online) => {
  renderStatus();
  if (online) syncAll().catch(fail);
});

// ------------------------------------------------------------------------------------------ controls
async function download(a) {
  // check first, so a missing model or prediction shows its one-line reason instead of a broken file
  const href = a.getAttribute("href");
  a.classList.add("busy");
  try {
    const r = await fetchOnline(href);
    if (!r.ok) throw new Error((await r.json()).detail);
    const blob = await r.blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: downloadName(r, href) });
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (err) { fail(err); } finally { a.classList.remove("busy"); }
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

function setView(v) {
  S.view = v;
  $("#view-select").value = v;
  savePrefs();
  renderLegend();
  drawView();
  refreshOverlay(S.rev);
}

function bindControls() {
  document.querySelectorAll(".tool").forEach((b) => b.addEventListener("click", () => { setTool(b.dataset.tool); focusViewer(); }));
  $("#brush").addEventListener("input", (ev) => setBrush(+ev.target.value));
  $("#opacity").addEventListener("input", (ev) => setOpacity(+ev.target.value / 100));
  $("#brightness").addEventListener("input", (ev) => setAdjust(+ev.target.value / 100, S.contrast));
  $("#contrast").addEventListener("input", (ev) => setAdjust(S.brightness, +ev.target.value / 100));
  $("#adjust-reset").addEventListener("click", () => setAdjust(1, 1));
  $("#marks-toggle").addEventListener("click", () => setShowMarks(!S.showMarks));
  $("#view-select").addEventListener("change", (ev) => { setView(ev.target.value); focusViewer(); });
  $("#undo-btn").addEventListener("click", () => undoRedo("undo"));
  $("#redo-btn").addEventListener("click", () => undoRedo("redo"));
  $("#fit-btn").addEventListener("click", fitView);
  $("#prev-btn").addEventListener("click", () => step(-1));
  $("#next-btn").addEventListener("click", () => step(1));
  $("#filter-text").addEventListener("input", renderImages);
  $("#filter-kind").addEventListener("change", renderImages);
  $("#sort-kind").addEventListener("change", (ev) => setSort(ev.target.value));
  $("#next-todo-btn").addEventListener("click", () => openNextToAnnotate().catch(fail));
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
  $("#predict-all").addEventListener("click", () => api("POST", "/api/predict-all", {}).then(applyBatch).catch(fail));
  $("#batch-cancel").addEventListener("click", () => api("DELETE", "/api/predict-all").catch(fail));
  $("#export-btn").addEventListener("click", (ev) => { ev.stopPropagation(); $("#export-menu").hidden = !$("#export-menu").hidden; });
  document.addEventListener("click", () => { $("#export-menu").hidden = true; });
  document.querySelectorAll("[data-export]").forEach((a) => a.addEventListener("click", (ev) => { ev.preventDefault(); download(a); }));
  bindAddClass();
  window.addEventListener("keydown", onKey);
  window.addEventListener("keyup", (ev) => { if (ev.code === "Space") keys.space = false; });
}

function onKey(ev) {
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea") return;
  const k = ev.key;
  const mod = ev.ctrlKey || ev.metaKey;
  if (mod && (k === "z" || k === "Z")) { ev.preventDefault(); undoRedo(ev.shiftKey ? "redo" : "undo"); return; }
  if (mod && (k === "y" || k === "Y")) { ev.preventDefault(); undoRedo("redo"); return; }
  if (mod || ev.altKey) return;
  if (ev.code === "Space") { keys.space = true; ev.preventDefault(); return; }
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
    case "k": toggleOk(); break;
    case "n": openNextToAnnotate().catch(fail); break;
    case "m": setShowMarks(!S.showMarks); break;
    case "o": S.overlayOn = !S.overlayOn; setOpacity(); break;
    case "v": {
      const sel = $("#view-select");
      setView(sel.options[(sel.selectedIndex + 1) % sel.options.length].value);
      break;
    }
    case "[": setBrush(S.brush - 2); break;
    case "]": setBrush(S.brush + 2); break;
    case "arrowleft": step(-1); ev.preventDefault(); break;
    case "arrowright": step(1); ev.preventDefault(); break;
    case "?": $("#help").showModal(); break;
    default: break;
  }
}

// ------------------------------------------------------------------------------------------ start
async function main() {
  bindControls();
  restoreSort();
  setBrush(S.brush);
  setOpacity();
  try {
    await loadProject();
    await loadClasses();
    await loadImages();
    renderModelPanel();
    await loadSettings();
  } catch (err) {
    fail(err);
  }
  connectEvents();
}

main();
