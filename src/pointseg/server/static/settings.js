/* The "Method" panel: the project's method settings (GET / PUT /api/settings), retrained on change.
 *
 * Hidden when the server does not offer the settings.  A value the server refuses (422) is shown in one
 * line under the panel and nothing is changed.
 */
import { S } from "./state.js";
import { api } from "./api.js";
import { $, el } from "./util.js";

const FIELDS = {
  features: { label: "Features", kind: "select", options: [["hybrid", "hybrid"], ["deep", "deep"]],
              help: "hybrid: CNN features plus a full-resolution filter bank (sharper edges); deep: CNN only" },
  smoothing: { label: "Smoothing σ", kind: "number", step: "0.1", min: "0", help: "Gaussian smoothing of the scores, in pixels (0: none)" },
  C: { label: "C", kind: "number", step: "any", min: "0", placeholder: "auto",
       help: "Inverse regularisation of the logistic regression (empty: automatic)" },
  min_region: { label: "Min region px", kind: "number", step: "1", min: "0",
                help: "Predicted regions smaller than this many pixels take the class around them" },
  ng_area: { label: "NG above area", kind: "number", step: "0.001", min: "0", max: "1", placeholder: "off",
             help: "An image is NG when more than this fraction of it is not the background class (empty: off)" },
};

export async function loadSettings() {
  let data;
  try {
    data = await api("GET", "/api/settings");
  } catch (err) {
    if (err.status === 404 || err.status === 405) { $("#settings-section").hidden = true; return; }
    throw err;
  }
  S.settings = data;
  $("#settings-section").hidden = false;
  renderSettings();
}

function fieldValue(name, input) {
  const f = FIELDS[name];
  if (f.kind === "select") return input.value;
  if (input.value.trim() === "") return null;
  return name === "min_region" ? Math.round(+input.value) : +input.value;
}

export function renderSettings() {
  const form = $("#settings-form");
  form.onsubmit = (ev) => ev.preventDefault();     // Enter commits the field (change), never reloads
  if (!S.settings) return;
  const rows = [];
  for (const [name, f] of Object.entries(FIELDS)) {
    if (!(name in S.settings)) continue;
    const v = S.settings[name];
    let input;
    if (f.kind === "select") {
      input = el("select", { id: `set-${name}`, name });
      const opts = f.options.some(([k]) => k === v) || v === null ? f.options : f.options.concat([[v, v]]);
      opts.forEach(([k, text]) => input.append(el("option", { value: k }, text)));
      input.value = v;
    } else {
      input = el("input", { id: `set-${name}`, name, type: "number", step: f.step, min: f.min, max: f.max,
                            placeholder: f.placeholder, value: v === null || v === undefined ? "" : String(v) });
    }
    input.addEventListener("change", () => save(name, fieldValue(name, input)));
    rows.push(el("label", { class: "set-row", title: f.help, for: `set-${name}` }, el("span", {}, f.label), input));
  }
  form.replaceChildren(...rows);
}

async function save(name, value) {
  const note = $("#settings-note");
  note.className = "set-note";
  note.textContent = "Saving…";
  try {
    S.settings = await api("PUT", "/api/settings", { [name]: value });
    note.textContent = "Saved; retraining.";
  } catch (err) {
    if (err.offline) return;
    note.className = "set-note err";
    note.textContent = err.message;
  }
  renderSettings();
}
