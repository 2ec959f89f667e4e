// A hand-drawn canvas chart of per-clip PSNR (line, left axis) and bpp (bars, right
// axis): no charting library, nothing fetched from elsewhere.

const PSNR_COLOR = "#1f6feb";
const BPP_COLOR = "#d29922";

function niceRange(values, pad, floor = -Infinity) {
  if (!values.length) return [0, 1];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) {
    lo -= pad;
    hi += pad;
  }
  const span = hi - lo;
  return [Math.max(floor, lo - span * 0.1), hi + span * 0.1];
}

/**
 * Draw clips [{index, psnr, bpp}] (missing values skipped) for `total` clips on `canvas`.
 * Redrawn whole on each new clip: a few hundred points cost nothing.
 */
export function drawChart(canvas, clips, total) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 600;
  const cssH = canvas.clientHeight || 220;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  ctx.font = "11px system-ui, sans-serif";

  const m = { l: 48, r: 56, t: 18, b: 28 };
  const w = cssW - m.l - m.r;
  const h = cssH - m.t - m.b;
  const n = Math.max(total || 0, clips.length, 1);
  const psnr = clips.filter((c) => Number.isFinite(c.psnr));
  const bpp = clips.filter((c) => Number.isFinite(c.bpp));
  const [p0, p1] = niceRange(psnr.map((c) => c.psnr), 1);
  const [, b1] = niceRange(bpp.map((c) => c.bpp), 0.01, 0);
  const x = (i) => m.l + ((i + 0.5) / n) * w;
  const yp = (v) => m.t + h - ((v - p0) / (p1 - p0)) * h;
  const yb = (v) => m.t + h - (v / b1) * h;

  // Axes and grid.
  ctx.strokeStyle = "#d0d7de";
  ctx.fillStyle = "#57606a";
  ctx.lineWidth = 1;
  for (let g = 0; g <= 4; g++) {
    const y = m.t + (h * g) / 4;
    ctx.beginPath();
    ctx.moveTo(m.l, y);
    ctx.lineTo(m.l + w, y);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText((p1 - ((p1 - p0) * g) / 4).toFixed(1), m.l - 6, y + 4);
    ctx.textAlign = "left";
    ctx.fillText((b1 - (b1 * g) / 4).toFixed(3), m.l + w + 6, y + 4);
  }
  ctx.textAlign = "center";
  const step = Math.max(1, Math.ceil(n / 12));
  for (let i = 0; i < n; i += step) ctx.fillText(String(i), x(i), m.t + h + 16);
  ctx.fillStyle = PSNR_COLOR;
  ctx.textAlign = "left";
  ctx.fillText("PSNR dB", 4, 12);
  ctx.fillStyle = BPP_COLOR;
  ctx.textAlign = "right";
  ctx.fillText("bpp", cssW - 4, 12);
  ctx.fillStyle = "#57606a";
  ctx.textAlign = "center";
  ctx.fillText("clip", m.l + w / 2, cssH - 2);

  // bpp bars.
  const bw = Math.max(2, (w / n) * 0.5);
  ctx.fillStyle = `${BPP_COLOR}99`;
  for (const c of bpp) ctx.fillRect(x(c.index) - bw / 2, yb(c.bpp), bw, m.t + h - yb(c.bpp));

  // PSNR line + points.
  ctx.strokeStyle = PSNR_COLOR;
  ctx.fillStyle = PSNR_COLOR;
  ctx.lineWidth = 2;
  ctx.beginPath();
  psnr.forEach((c, i) => (i ? ctx.lineTo(x(c.index), yp(c.psnr)) : ctx.moveTo(x(c.index), yp(c.psnr))));
  ctx.stroke();
  for (const c of psnr) {
    ctx.beginPath();
    ctx.arc(x(c.index), yp(c.psnr), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  if (!clips.length) {
    ctx.fillStyle = "#8c959f";
    ctx.textAlign = "center";
    ctx.fillText("waiting for the first clip…", m.l + w / 2, m.t + h / 2);
  }
}
