/* Small DOM and formatting helpers shared by every module of the page. */

export const $ = (sel) => document.querySelector(sel);

/** ``el("div", {class: "x", onclick: f}, child, …)``: a DOM node with attributes, listeners and children. */
export function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
}

export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

export function fmtPct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; }
export function fmtMs(v) { return v === null || v === undefined ? "–" : `${Math.round(v)} ms`; }
export function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

export function toast(message, kind = "error", ms = 5000) {
  const t = el("div", { class: `toast ${kind}` }, message);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), ms);
}

/** Report a failed action in one line; losing the connection is shown once, by the offline banner. */
export function fail(err) {
  if (err && err.offline) return;
  console.error(err);
  toast((err && err.message) || String(err));
}
