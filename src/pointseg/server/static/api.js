/* Talking to the server: the access token, JSON requests, and the offline state.
 *
 * When the server cannot be reached, requests do not fail one by one with raw "Failed to fetch" toasts:
 * the page switches to one "offline — reconnecting" state, edits (POST / PUT / PATCH / DELETE) wait in
 * order in a queue, reads wait for the connection, and everything is sent as soon as the server answers
 * again (it is probed every second).  Then ``onReconnect`` callbacks re-read the project.
 */
import { $ } from "./util.js";

export const TOKEN = (() => {
  const q = new URLSearchParams(location.search).get("token");
  if (q) {
    sessionStorage.setItem("pointseg-token", q);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  return sessionStorage.getItem("pointseg-token");
})();

export function headers(extra = {}) {
  return TOKEN ? { "X-Pointseg-Token": TOKEN, ...extra } : extra;
}

// ------------------------------------------------------------------------------------------ connection
export const net = { online: true, queue: [], waiting: [], probe: null, flushing: false, reconnect: [] };

class Offline extends Error {
  constructor() { super("the server is offline"); this.offline = true; }
}

function renderNet() {
  const box = $("#offline");
  if (!box) return;
  box.hidden = net.online;
  const n = net.queue.length;
  $("#offline-text").textContent = n
    ? `Server offline — reconnecting… ${n} edit${n > 1 ? "s" : ""} kept, sent when it is back.`
    : "Server offline — reconnecting… Edits you make are kept and sent when it is back.";
  document.body.classList.toggle("is-offline", !net.online);
}

/** The server stopped answering: show it once and probe until it is back. */
export function goOffline() {
  if (net.online) {
    net.online = false;
    renderNet();
    for (const f of net.reconnect) f(false);
  }
  if (!net.probe) net.probe = setInterval(probe, 1000);
}

async function probe() {
  try {
    const r = await fetch("/api/status", { headers: headers(), cache: "no-store" });
    if (r.status >= 500) return;
  } catch (_) { return; }
  clearInterval(net.probe);
  net.probe = null;
  await flush();
}

async function flush() {
  if (net.flushing) return;
  net.flushing = true;
  net.online = true;
  try {
    while (net.queue.length) {            // edits first, in the order they were made
      const job = net.queue[0];
      try {
        job.resolve(await send(job.method, job.url, job.body));
      } catch (err) {
        if (err.offline) return;          // gone again: keep the rest queued
        job.reject(err);
      }
      net.queue.shift();
      renderNet();
    }
    renderNet();
    const waiting = net.waiting.splice(0);
    waiting.forEach((f) => f());
    for (const f of net.reconnect) f(true);
  } finally {
    net.flushing = false;
  }
}

/** Call ``f(online)`` when the connection is lost (false) and when it is back (true). */
export function onReconnect(f) { net.reconnect.push(f); }

function whenOnline() {
  return net.online && !net.queue.length ? Promise.resolve() : new Promise((res) => net.waiting.push(res));
}

/** ``fetch`` that turns a network failure into the offline state (an error with ``offline: true``). */
export async function fetchOnline(url, opts = {}) {
  try {
    return await fetch(url, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    goOffline();
    throw new Offline();
  }
}

async function send(method, url, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const r = await fetchOnline(url, opts);
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (type.includes("application/json")) data = await r.json();
  if (!r.ok) {
    const err = new Error((data && data.detail) || `${r.status} ${r.statusText}`);
    err.status = r.status;
    err.data = data;
    throw err;
  }
  return data;
}

/** A JSON request.  Offline, an edit is queued (its promise settles once it has been sent) and a read
 * waits for the connection. */
export async function api(method, url, body) {
  const edit = method !== "GET" && method !== "HEAD";
  for (;;) {
    if (edit && (!net.online || net.queue.length)) {
      return new Promise((resolve, reject) => { net.queue.push({ method, url, body, resolve, reject }); renderNet(); });
    }
    if (!edit) await whenOnline();
    try {
      return await send(method, url, body);
    } catch (err) {
      if (!err.offline) throw err;
      // the request never got an answer: an edit joins the queue, a read is retried once back
    }
  }
}

/** The file name the server gives a download (Content-Disposition), else the last part of its URL. */
export function downloadName(response, url) {
  const cd = response.headers.get("content-disposition") || "";
  const star = /filename\*\s*=\s*(?:UTF-8'')?([^;]+)/i.exec(cd);
  if (star) {
    try { return decodeURIComponent(star[1].trim().replace(/^"|"$/g, "")); } catch (_) { /* fall through */ }
  }
  const plain = /filename\s*=\s*("([^"]*)"|[^;]+)/i.exec(cd);
  if (plain) return (plain[2] !== undefined ? plain[2] : plain[1]).trim();
  return url.split("?")[0].split("/").pop();
}
