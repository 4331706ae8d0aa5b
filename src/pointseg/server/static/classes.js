/* The class list: pick, add, rename, recolour, reorder, delete, the background class, overlay visibility. */
import { S, savePrefs } from "./state.js";
import { api } from "./api.js";
import { $, el, fail, plural, toast } from "./util.js";
import { vp, drawMarks, drawView, renderLegend } from "./viewer.js";
import { reloadAnnotations } from "./edits.js";
import { loadImagesSoon } from "./images.js";
import { renderHint, renderModelPanel } from "./panels.js";

const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442", "#7f7f7f"];

export async function loadClasses() {
  const data = await api("GET", "/api/classes");
  S.classes = data.classes;
  if (!S.classes.some((c) => c.id === S.classId)) S.classId = S.classes.length ? S.classes[0].id : null;
  renderClasses();
  renderViewOptions();
  renderModelPanel();
  drawMarks();
  drawView();
}

/** The background / OK class (the server keeps exactly one). */
export function backgroundClass() {
  return S.classes.find((c) => c.background === true) || null;
}

/** Give keyboard focus back to the viewer, so 1–9, P/S/E and the arrows act on the image again. */
export function focusViewer() {
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  vp.focus({ preventScroll: true });
}

export function renderClasses() {
  if (S.renaming) return;             // do not pull the text field from under the user; redrawn after
  const list = $("#class-list");
  const bg = backgroundClass();
  const nodes = S.classes.map((c, i) => {
    const color = el("input", { type: "color", value: c.color, title: "Colour", "aria-label": `Colour of ${c.name}` });
    color.addEventListener("click", (ev) => ev.stopPropagation());
    color.addEventListener("change", () => api("PATCH", `/api/classes/${c.id}`, { color: color.value })
      .then(loadClasses).catch(fail));
    const name = el("span", { class: "cname", title: "Double-click to rename" }, c.name);
    name.addEventListener("dblclick", (ev) => { ev.stopPropagation(); rename(c, name); });
    const isBg = bg && bg.id === c.id;
    const bgBtn = el("button", { class: `bg-flag${isBg ? " on" : ""}`, role: "radio", "aria-checked": String(!!isBg),
                                 title: isBg ? "Background / OK class: everything else counts as a finding"
                                             : "Make this the background / OK class",
                                 "aria-label": `${c.name} is the background class`,
                                 onclick: (ev) => { ev.stopPropagation(); if (!isBg) setBackground(c); } }, "BG");
    const shown = !S.hidden.includes(c.name);
    const eye = el("button", { class: `mini eye${shown ? "" : " off"}`, "aria-pressed": String(shown),
                               title: shown ? "Hide this class in the overlay" : "Show this class in the overlay",
                               "aria-label": `Show ${c.name} in the overlay`,
                               onclick: (ev) => { ev.stopPropagation(); toggleShown(c); } }, shown ? "◉" : "○");
    const acts = el("span", { class: "acts" },
      el("button", { class: "mini", title: "Move up", "aria-label": `Move ${c.name} up`, onclick: (ev) => { ev.stopPropagation(); move(c.id, -1); } }, "▲"),
      el("button", { class: "mini", title: "Move down", "aria-label": `Move ${c.name} down`, onclick: (ev) => { ev.stopPropagation(); move(c.id, 1); } }, "▼"),
      el("button", { class: "mini", title: "Rename", "aria-label": `Rename ${c.name}`, onclick: (ev) => { ev.stopPropagation(); rename(c, name); } }, "✎"),
      el("button", { class: "mini del", title: "Delete", "aria-label": `Delete ${c.name}`, onclick: (ev) => { ev.stopPropagation(); removeClass(c); } }, "✕"));
    return el("li", { class: c.id === S.classId ? "current" : "", dataset: { id: c.id },
                      onclick: () => selectClass(c.id) },
      el("span", { class: "key" }, i < 9 ? String(i + 1) : ""), eye, color, name, bgBtn,
      el("span", { class: "n", title: "annotations" }, String(c.n_annotations)), acts);
  });
  list.replaceChildren(...nodes);
  list.setAttribute("aria-label", "Classes");
  const used = new Set(S.classes.map((c) => c.color));
  $("#new-class-color").value = PALETTE.find((p) => !used.has(p)) || "#8c564b";
  renderHint();
}

export function selectClass(id) {            // without rebuilding the list, so a double-click still lands
  S.classId = id;
  document.querySelectorAll("#class-list li").forEach((li) => li.classList.toggle("current", +li.dataset.id === id));
  drawMarks();
}

function toggleShown(c) {
  S.hidden = S.hidden.includes(c.name) ? S.hidden.filter((n) => n !== c.name) : S.hidden.concat([c.name]);
  savePrefs();
  renderClasses();
  drawView();
}

function setBackground(c) {
  api("PATCH", `/api/classes/${c.id}`, { background: true }).then(loadClasses).catch(fail);
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
    focusViewer();
    if (save && v && v !== c.name) {
      if (S.hidden.includes(c.name)) { S.hidden = S.hidden.map((n) => (n === c.name ? v : n)); savePrefs(); }
      api("PATCH", `/api/classes/${c.id}`, { name: v }).then(loadClasses).catch((e) => { fail(e); loadClasses(); });
    } else loadClasses().catch(fail);
  };
  input.addEventListener("keydown", (ev) => {
    ev.stopPropagation();
    if (ev.key === "Enter") { ev.preventDefault(); commit(true); }
    if (ev.key === "Escape") commit(false);
  });
  input.addEventListener("blur", () => commit(true));
  input.addEventListener("click", (ev) => ev.stopPropagation());
}

/** The add-class form: on Enter the viewer gets the keyboard back at once (before the server answers),
 * so a following "1" picks a class instead of landing in the field. */
export function bindAddClass() {
  $("#add-class-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const field = $("#new-class-name");
    const name = field.value.trim();
    if (!name) { field.focus(); return; }
    field.value = "";
    focusViewer();
    api("POST", "/api/classes", { name, color: $("#new-class-color").value })
      .then((c) => { S.classId = c.id; return loadClasses(); })
      .catch((err) => { field.value = name; field.focus(); fail(err); });
  });
}

function move(id, delta) {
  const ids = S.classes.map((c) => c.id);
  const k = ids.indexOf(id), j = k + delta;
  if (j < 0 || j >= ids.length) return;
  [ids[k], ids[j]] = [ids[j], ids[k]];
  api("PUT", "/api/classes/order", { ids }).then(loadClasses).catch(fail);
}

/** What deleting a class takes with it, in words ("12 points and 3 scribbles"). */
export function marksOfClass(c) {
  return [c.n_points && plural(c.n_points, "point"), c.n_scribbles && plural(c.n_scribbles, "scribble")]
    .filter(Boolean).join(" and ");
}

function removeClass(c) {
  const marks = marksOfClass(c);
  const msg = marks ? `Delete class "${c.name}" and its ${marks} on all images? They cannot be restored with undo.`
                    : `Delete class "${c.name}"? It has no annotations.`;
  if (!confirm(msg)) return;
  api("DELETE", `/api/classes/${c.id}`)
    .then(async () => { await loadClasses(); await reloadAnnotations(); loadImagesSoon(); })
    .then(() => toast(`Class "${c.name}" deleted${marks ? ` with its ${marks}` : ""}.`, "info", 3000))
    .catch(fail);
}

export function renderViewOptions() {
  const sel = $("#view-select");
  const keep = S.view;
  const opts = [el("option", { value: "labels" }, "Labels")];
  S.classes.forEach((c, k) => opts.push(el("option", { value: `proba:${k}` }, `Probability: ${c.name}`)));
  opts.push(el("option", { value: "uncertainty" }, "Uncertainty"));
  sel.replaceChildren(...opts);
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "labels";
  if (S.classes.length) S.view = sel.value;     // keep a remembered view until the classes are known
  renderLegend();
}
