// Plays `/v1/jobs/{id}/decode?format=mp4` (fragmented MP4, H.264) in a <video> through
// Media Source Extensions while the job is still encoding: the response is read with
// fetch() (so the Bearer key goes along) and each piece is appended as it arrives.
// The exact codec string is read from the init segment's avcC box, so the page and the
// server never have to agree on an H.264 profile by hand.

import { apiFetch } from "./api.js";

const MAX_BACK_BUFFER = 60; // seconds kept behind the playhead (long jobs: bounded memory)

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function findBox(bytes, fourcc) {
  const c = [...fourcc].map((ch) => ch.charCodeAt(0));
  for (let i = 0; i + 4 <= bytes.length; i++) {
    if (bytes[i] === c[0] && bytes[i + 1] === c[1] && bytes[i + 2] === c[2] && bytes[i + 3] === c[3])
      return i;
  }
  return -1;
}

/** `video/mp4; codecs="avc1.PPCCLL"` from the avcC box, or null if not there yet. */
export function mimeFromInit(bytes) {
  const i = findBox(bytes, "avcC");
  if (i < 0 || i + 8 > bytes.length) return null;
  const hex = (v) => v.toString(16).padStart(2, "0");
  return `video/mp4; codecs="avc1.${hex(bytes[i + 5])}${hex(bytes[i + 6])}${hex(bytes[i + 7])}"`;
}

/** Whether this browser can play the stream at all (checked before any download). */
export function canPlay() {
  return (
    typeof MediaSource !== "undefined" &&
    MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"')
  );
}

/**
 * Stream the decoded video of `jobId` into `video`. Resolves when the stream ends;
 * rejects with ApiError / Error (the caller shows it). `signal` stops it.
 * `onState(text)` reports progress in words for the page.
 */
export async function playJob(video, jobId, { signal, onState = () => {} } = {}) {
  if (!canPlay()) {
    throw new Error(
      "this browser cannot play H.264 through Media Source Extensions; " +
        "download the .uarv or the chunks below instead",
    );
  }
  const ms = new MediaSource();
  const objectUrl = URL.createObjectURL(ms);
  video.src = objectUrl;
  await new Promise((resolve) => ms.addEventListener("sourceopen", resolve, { once: true }));
  onState("waiting for the first clip…");

  const resp = await apiFetch(`/v1/jobs/${jobId}/decode?format=mp4`, { signal });
  const reader = resp.body.getReader();
  let sb = null;
  let head = new Uint8Array(0);
  const queue = [];
  let appending = false;
  let ended = false;
  let started = false;

  const pump = () => {
    if (!sb || sb.updating || appending) return;
    if (!queue.length) {
      if (ended && ms.readyState === "open") ms.endOfStream();
      return;
    }
    // Keep memory bounded on long videos: drop what is far behind the playhead.
    const b = sb.buffered;
    if (b.length && video.currentTime - b.start(0) > MAX_BACK_BUFFER * 1.5) {
      appending = true;
      sb.remove(b.start(0), video.currentTime - MAX_BACK_BUFFER);
      return;
    }
    appending = true;
    sb.appendBuffer(queue.shift());
  };

  const onUpdateEnd = () => {
    appending = false;
    if (!started && sb.buffered.length) {
      started = true;
      onState("playing while later clips encode");
      video.play().catch(() => onState("press play (the browser blocked autoplay)"));
    }
    pump();
  };

  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!sb) {
        head = concat(head, value);
        const mime = mimeFromInit(head);
        if (!mime) continue;
        if (!MediaSource.isTypeSupported(mime)) {
          throw new Error(`this browser cannot play ${mime}; download the .uarv instead`);
        }
        sb = ms.addSourceBuffer(mime);
        sb.addEventListener("updateend", onUpdateEnd);
        sb.addEventListener("error", () => onState("the browser refused a video segment"));
        queue.push(head);
        head = null;
      } else {
        queue.push(value);
      }
      pump();
    }
    ended = true;
    if (!sb) {
      onState("no video: the job stopped before its first clip");
      return;
    }
    pump();
    onState("the whole video is here");
  } catch (e) {
    if (e.name === "AbortError") return;
    throw e;
  }
}
