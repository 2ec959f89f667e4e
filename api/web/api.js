// The page's only way to the server: fetch() with the Bearer key, problem+json turned
// into readable errors, and server-sent events read from a fetch() stream (EventSource
// cannot send an Authorization header).

const KEY_STORAGE = "uarnvc.apiKey";

/** The API key for this browser tab (sessionStorage: gone when the tab closes). */
export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** An API error: `problem` is the RFC 9457 body (or a stand-in built from the response). */
export class ApiError extends Error {
  constructor(problem) {
    super(describeProblem(problem));
    this.name = "ApiError";
    this.problem = problem;
    this.status = problem.status || 0;
  }
}

/** One readable line from a problem+json body, including FastAPI's 422 field errors. */
export function describeProblem(p) {
  const head = `${p.title || "Error"}${p.status ? ` (${p.status})` : ""}`;
  let detail = p.detail;
  if (Array.isArray(p.errors) && p.errors.length) {
    const fields = p.errors.map((e) =>
      e.field ? `${e.field}: ${e.message ?? e.msg}` : `${e.message ?? e.msg}`,
    );
    detail = `${detail ? `${detail} — ` : ""}${fields.join("; ")}`;
  } else if (Array.isArray(detail)) {
    detail = detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  }
  let text = detail ? `${head}: ${detail}` : head;
  if (p.status === 401) text += " — enter a valid API key above.";
  return text;
}

async function problemOf(resp) {
  const type = resp.headers.get("content-type") || "";
  try {
    if (type.includes("json")) {
      const body = await resp.json();
      return { status: resp.status, title: resp.statusText, ...body };
    }
    const text = (await resp.text()).slice(0, 300);
    return { status: resp.status, title: resp.statusText || "HTTP error", detail: text };
  } catch {
    return { status: resp.status, title: resp.statusText || "HTTP error" };
  }
}

/** fetch() with auth; throws ApiError for any non-2xx answer and for network failures. */
export async function apiFetch(path, init = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...init, headers: authHeaders(init.headers || {}) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError({ title: "Network error", detail: `${e.message} (is the server up?)` });
  }
  if (!resp.ok) throw new ApiError(await problemOf(resp));
  return resp;
}

export async function getJson(path, init) {
  return (await apiFetch(path, init)).json();
}

const TUS = { "Tus-Resumable": "1.0.0" };
const CHUNK = 8 * 1024 * 1024; // bytes per PATCH: what a dropped connection can cost
const RETRIES = 5;

/** One PATCH of `blob` at `offset` with XMLHttpRequest (fetch has no upload progress). */
function patchChunk(url, offset, blob, onSent) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    const headers = authHeaders({
      ...TUS,
      "Upload-Offset": String(offset),
      "Content-Type": "application/offset+octet-stream",
    });
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => onSent?.(e.loaded);
    xhr.onerror = () => reject(new TypeError("connection lost"));
    xhr.onload = () => {
      if (xhr.status === 204) return resolve(Number(xhr.getResponseHeader("Upload-Offset")));
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = { detail: xhr.responseText.slice(0, 300) };
      }
      reject(new ApiError({ status: xhr.status, title: xhr.statusText, ...body }));
    };
    xhr.send(blob);
  });
}

async function serverOffset(url) {
  const resp = await apiFetch(url, { method: "HEAD", headers: TUS });
  return Number(resp.headers.get("Upload-Offset"));
}

/**
 * Send `file` with the tus protocol (/v1/uploads), resuming from the server's offset
 * after a dropped connection; resolves with the upload id.
 */
export async function uploadFile(file, onProgress) {
  const meta = `filename ${btoa(unescape(encodeURIComponent(file.name)))}`;
  const created = await apiFetch("/v1/uploads", {
    method: "POST",
    headers: { ...TUS, "Upload-Length": String(file.size), "Upload-Metadata": meta },
  });
  const url = new URL(created.headers.get("Location"), location.href).pathname;
  let offset = 0;
  let failures = 0;
  while (offset < file.size) {
    const blob = file.slice(offset, offset + CHUNK);
    const base = offset;
    try {
      offset = await patchChunk(url, base, blob, (n) => onProgress?.((base + n) / file.size));
      failures = 0;
    } catch (err) {
      if (err instanceof ApiError && err.status !== 409) throw err;
      if (++failures > RETRIES) {
        throw new ApiError({ title: "Network error", detail: "upload failed; try again" });
      }
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** failures)));
      offset = await serverOffset(url);
    }
    onProgress?.(offset / file.size);
  }
  return url.split("/").pop();
}

/**
 * Upload `file` resumably, then create the job from it with the encode `fields`.
 * Resolves with the job status (202), rejects with ApiError.
 */
export async function submitJob(file, fields, onProgress) {
  const uploadId = await uploadFile(file, onProgress);
  const resp = await apiFetch("/v1/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...fields, upload_id: uploadId }),
  });
  return resp.json();
}

/**
 * Read server-sent events from `path` with fetch(), calling onEvent({event, data, id}).
 * Reconnects with Last-Event-ID after a dropped connection until `isDone()` or abort.
 */
export async function readEvents(path, onEvent, { signal, isDone = () => false } = {}) {
  let lastId = null;
  let failures = 0;
  while (!signal?.aborted && !isDone()) {
    try {
      const headers = lastId !== null ? { "Last-Event-ID": lastId } : {};
      const resp = await apiFetch(path, { headers, signal });
      failures = 0;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (!ev) continue;
          if (ev.id !== undefined) lastId = ev.id;
          onEvent(ev);
        }
      }
    } catch (e) {
      if (e.name === "AbortError" || signal?.aborted) return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
      failures += 1;
      if (failures > 5) throw e;
    }
    if (!isDone()) await new Promise((r) => setTimeout(r, 1000 * Math.min(failures + 1, 5)));
  }
}

function parseEvent(block) {
  const ev = { event: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") ev.id = value;
  }
  if (!data.length) return null;
  ev.data = data.join("\n");
  return ev;
}

/**
 * Save an authenticated download: a plain link cannot send the Bearer header, so fetch
 * the bytes and hand them to the browser as a blob with the server's file name.
 */
export async function download(path, fallbackName) {
  const resp = await apiFetch(path);
  const cd = resp.headers.get("content-disposition") || "";
  const m = /filename="?([^";]+)"?/.exec(cd);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = m ? m[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
