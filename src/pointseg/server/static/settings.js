/* The "Method" panel: the project's method settings (GET / PUT /api/settings), retrained on change.
 *
 * A value the server refuses (422) is shown in one line under the panel and nothing is changed.
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
  S.settings = await api("GET", "/api/settings");
  renderSettings();
}

function fieldValue(name, input) {
  const f = FIELDS[name];
  if (f.kind === "select") return input.value;
  if (input.value.trim() === "") return null;
  return name === "min_region" ? Math.round(+input.value) : +input.value;
}

const show = (v) => (v === null || v === undefined ? "" : String(v));

/** Put the stored settings on screen.  The form is built once; later calls (own answers, the event
 * stream) update the values in place and leave the field being typed in alone, unless ``force`` names it. */
export function renderSettings(force = null) {
  const form = $("#settings-form");
  if (!S.settings) return;
  const names = Object.keys(FIELDS).filter((n) => n in S.settings);
  if (form.dataset.fields !== names.join()) buildForm(form, names);
  for (const name of names) {
    const input = $(`#set-${name}`);
    if (input === document.activeElement && input !== force) continue;
    const v = S.settings[name];
    if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === v)) input.append(el("option", { value: v }, v));
    input.value = show(v);
  }
}

function buildForm(form, names) {
  form.onsubmit = (ev) => ev.preventDefault();     // Enter commits the field (change), never reloads
  const rows = names.map((name) => {
    const f = FIELDS[name];
    const input = f.kind === "select"
      ? el("select", { id: `set-${name}`, name }, ...f.options.map(([k, text]) => el("option", { value: k }, text)))
      : el("input", { id: `set-${name}`, name, type: "number", step: f.step, min: f.min, max: f.max, placeholder: f.placeholder });
    input.addEventListener("change", () => save(name, fieldValue(name, input), input));
    return el("label", { class: "set-row", title: f.help, for: `set-${name}` }, el("span", {}, f.label), input);
  });
  form.replaceChildren(...rows);
  form.dataset.fields = names.join();
}

async function save(name, value, input) {
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
  renderSettings(input);          // the stored value, also in the field just edited (a refused value goes)
}
