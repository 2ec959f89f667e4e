// The page: API key, upload form, job list and a live job view (per-clip progress from
// SSE, PSNR/bpp chart, the reconstruction playing while later clips encode, downloads).
// Plain ES modules, no framework and no build step; everything comes from this server.

import { ApiError, download, getJson, apiFetch, getKey, readEvents, setKey, submitJob } from "./api.js";
import { drawChart } from "./chart.js";
import { playJob } from "./player.js";

const $ = (sel) => document.querySelector(sel);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const fmt = {
  psnr: (v) => (Number.isFinite(v) ? `${v.toFixed(2)} dB` : "–"),
  bpp: (v) => (Number.isFinite(v) ? v.toFixed(4) : "–"),
  bytes: (v) => (v == null ? "–" : v < 10_000 ? `${v} B` : `${(v / 1024).toFixed(1)} KiB`),
  time: (iso) => new Date(iso).toLocaleString(),
  // Seconds as 45s, 4m05s, 2h03m; null (not estimable yet) as a dash.
  eta: (s) => {
    if (!Number.isFinite(s)) return "–";
    if (s < 60) return `${Math.round(s)}s`;
    const m = Math.floor(s / 60);
    if (s < 3600) return `${m}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
    return `${Math.floor(s / 3600)}h${String(m % 60).padStart(2, "0")}m`;
  },
};

// ------------------------------------------------------------------------- errors

function showError(err) {
  if (err?.name === "AbortError") return;
  const text = err instanceof ApiError ? err.message : `${err?.message || err}`;
  $("#error-text").textContent = text;
  $("#error").hidden = false;
  if (err instanceof ApiError && err.status === 401) $("#api-key").focus();
  console.error(err);
}

function clearError() {
  $("#error").hidden = true;
}

// ---------------------------------------------------------------------------- key

function renderKeyState() {
  $("#key-state").textContent = getKey() ? "key set for this tab" : "no key";
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setKey($("#api-key").value.trim());
  $("#api-key").value = "";
  renderKeyState();
  clearError();
  refreshJobs();
  if (view.jobId) openJob(view.jobId);
});
$("#forget-key").addEventListener("click", () => {
  setKey("");
  renderKeyState();
});
$("#error-close").addEventListener("click", clearError);

// ------------------------------------------------------------------------- upload

$("#upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  clearError();
  const file = $("#file").files[0];
  if (!file) return showError(new Error("choose a video file first"));
  const fields = {};
  for (const el of e.target.querySelectorAll("fieldset [name]")) {
    if (el.value !== "") fields[el.name] = el.value;
  }
  const bar = $("#upload-progress");
  bar.hidden = false;
  bar.value = 0;
  $("#submit").disabled = true;
  $("#upload-state").textContent = "uploading…";
  try {
    const job = await submitJob(file, fields, (f) => {
      bar.value = f;
      if (f >= 1) $("#upload-state").textContent = "probing the video…";
    });
    $("#upload-state").textContent = `job ${job.id.slice(0, 8)} accepted`;
    await refreshJobs();
    location.hash = `job=${job.id}`;
  } catch (err) {
    $("#upload-state").textContent = "";
    showError(err);
  } finally {
    bar.hidden = true;
    $("#submit").disabled = false;
  }
});

// ----------------------------------------------------------------------- job list

let listTimer = null;

async function refreshJobs() {
  clearTimeout(listTimer);
  let jobs = [];
  try {
    let url = "/v1/jobs?limit=100";
    for (let page = 0; url && page < 10; page++) {
      const body = await getJson(url);
      jobs = jobs.concat(body.jobs);
      url = body.links?.next || null;
    }
  } catch (err) {
    showError(err);
    return;
  }
  jobs.reverse(); // newest first
  const rows = $("#job-rows");
  rows.replaceChildren(
    ...jobs.map((j) => {
      const tr = document.createElement("tr");
      tr.dataset.job = j.id;
      if (j.id === view.jobId) tr.classList.add("selected");
      const cells = [
        j.id.slice(0, 8),
        j.filename || "",
        j.status,
        `${j.clips_done}/${j.clips_total} (${Math.round(j.progress)}%)`,
        TERMINAL.has(j.status) ? "" : fmt.eta(j.eta_seconds),
        fmt.psnr(j.psnr),
        fmt.bpp(j.bpp),
        fmt.time(j.created_at),
      ];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      tr.addEventListener("click", () => (location.hash = `job=${j.id}`));
      return tr;
    }),
  );
  $("#no-jobs").hidden = jobs.length > 0;
  if (jobs.some((j) => !TERMINAL.has(j.status))) {
    listTimer = setTimeout(() => !document.hidden && refreshJobs(), 5000);
  }
}
$("#refresh-jobs").addEventListener("click", refreshJobs);

// ----------------------------------------------------------------------- job view

const view = { jobId: null, abort: null, status: null, clips: [] };

function renderStatus(st) {
  view.status = st;
  $("#job-id").textContent = st.id;
  const badge = $("#job-status");
  badge.textContent = st.status;
  badge.className = `badge ${st.status}`;
  $("#job-progress").value = st.progress;
  const inp = st.input;
  const err = st.error ? ` — error ${st.error.code}: ${st.error.detail}` : "";
  $("#job-summary").textContent =
    `${st.filename || "upload"}: ${inp.width}×${inp.height} @ ${inp.fps.toFixed(2)} fps, ` +
    `${st.clips_done}/${st.clips_total} clips, ${fmt.psnr(st.psnr)}, ${fmt.bpp(st.bpp)} bpp, ` +
    `${fmt.bytes(st.bytes)}${err}`;
  const started = st.started_at ? `started ${fmt.time(st.started_at)}` : "not started yet";
  const estimate = Number.isFinite(st.estimate_seconds)
    ? `, estimated ${fmt.eta(st.estimate_seconds)} in all`
    : "";
  $("#job-eta").textContent = TERMINAL.has(st.status)
    ? started
    : `ETA ${fmt.eta(st.eta_seconds)} (${started}${estimate})`;
  for (const c of st.clips) mergeClip(c);
  renderClips();
}

function mergeClip(c) {
  view.clips[c.index] = { ...(view.clips[c.index] || {}), ...c };
}

function renderClips() {
  const ol = $("#clips");
  const items = view.clips.map((c) => {
    const li = document.createElement("li");
    li.className = c.status;
    li.dataset.index = c.index;
    const name = document.createElement("span");
    name.textContent = `clip ${c.index}${c.key ? " (I)" : ""}`;
    const state = document.createElement("span");
    state.className = "state";
    const bar = document.createElement("progress");
    bar.max = 1;
    if (c.status === "done") {
      bar.value = 1;
      state.textContent = `${fmt.psnr(c.psnr)} · ${fmt.bpp(c.bpp)} bpp`;
      state.title = `${fmt.bytes(c.bytes)}, ${c.seconds?.toFixed?.(1) ?? "?"} s`;
    } else if (c.status === "running") {
      bar.value = c.progress || 0;
      state.textContent = `training ${Math.round((c.progress || 0) * 100)}%`;
    } else {
      bar.value = 0;
      state.textContent = "pending";
    }
    li.append(name, state, bar);
    return li;
  });
  ol.replaceChildren(...items);
  drawChart(
    $("#chart"),
    view.clips.filter((c) => c.status === "done"),
    view.status?.clips_total || view.clips.length,
  );
  renderDownloads();
}

function renderDownloads() {
  const ul = $("#downloads");
  const id = view.jobId;
  const links = [[`/v1/jobs/${id}/bitstream`, `${id}.uarv`, "bitstream (.uarv)"]];
  links.push([`/v1/jobs/${id}/decode?format=mkv`, `${id}.mkv`, "decoded video (.mkv, exact)"]);
  for (const c of view.clips) {
    if (c.status === "done") links.push([c.links.chunk, `${id}-${c.index}.uarc`, `clip ${c.index} (.uarc)`]);
  }
  ul.replaceChildren(
    ...links.map(([href, name, label]) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = href;
      a.download = name;
      a.textContent = label;
      a.addEventListener("click", (e) => {
        if (!getKey()) return; // no auth: the browser downloads it natively
        e.preventDefault();
        download(href, name).catch(showError);
      });
      li.append(a);
      return li;
    }),
  );
}

async function openJob(id) {
  view.abort?.abort();
  const abort = new AbortController();
  Object.assign(view, { jobId: id, abort, status: null, clips: [] });
  $("#job-view").hidden = false;
  for (const tr of document.querySelectorAll("#job-rows tr"))
    tr.classList.toggle("selected", tr.dataset.job === id);
  const video = $("#video");
  video.removeAttribute("src");
  $("#video-state").textContent = "";
  let st;
  try {
    st = await getJson(`/v1/jobs/${id}`, { signal: abort.signal });
  } catch (err) {
    showError(err);
    $("#job-view").hidden = true;
    return;
  }
  renderStatus(st);
  if (st.status !== "failed" && st.status !== "cancelled") {
    playJob(video, id, {
      signal: abort.signal,
      onState: (t) => !abort.signal.aborted && ($("#video-state").textContent = t),
    }).catch((err) => {
      $("#video-state").textContent = err.message;
      if (err instanceof ApiError) showError(err);
    });
  }
  if (TERMINAL.has(st.status)) return;
  const refresh = async () => {
    try {
      renderStatus(await getJson(`/v1/jobs/${id}`, { signal: abort.signal }));
    } catch (err) {
      showError(err);
    }
  };
  readEvents(
    `/v1/jobs/${id}/events`,
    (ev) => {
      if (abort.signal.aborted) return;
      const data = JSON.parse(ev.data);
      if (ev.event === "clip_progress") {
        mergeClip({ index: data.index, status: "running", progress: data.progress });
        renderClips();
      } else if (ev.event === "clip_done") {
        mergeClip(data);
        renderClips();
        refresh(); // totals and the next clip's state
      } else if (ev.event.startsWith("job_")) {
        refresh();
        refreshJobs();
      }
    },
    { signal: abort.signal, isDone: () => TERMINAL.has(view.status?.status) },
  ).catch(showError);
}

$("#delete-job").addEventListener("click", async () => {
  if (!view.jobId || !confirm("Cancel this job and delete its data?")) return;
  try {
    await apiFetch(`/v1/jobs/${view.jobId}`, { method: "DELETE" });
    view.abort?.abort();
    location.hash = "";
    $("#job-view").hidden = true;
    refreshJobs();
  } catch (err) {
    showError(err);
  }
});

function route() {
  const m = /job=([0-9a-f]{32})/.exec(location.hash);
  if (m && m[1] !== view.jobId) openJob(m[1]);
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", () => view.jobId && renderClips());
document.addEventListener("visibilitychange", () => !document.hidden && refreshJobs());
renderKeyState();
refreshJobs();
route();
