/**
 * Hand-written SVG plots (no dependencies): line charts with linear or percentile ("nines") x axes, stacked
 * into one document, and a grouped bar chart.
 */

export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export interface Series {
  name: string;
  color: string;
  dash?: boolean;
  points: [number, number][];
  /** Draw markers at the points (steps). */
  markers?: boolean;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** 'nines': x values are percentiles (0..100), drawn on a log10(1/(1-p)) axis. */
  xAxis?: 'linear' | 'nines';
  /** Include y = 0 (default true). */
  yZero?: boolean;
  /** A dotted reference line y = x (offered vs delivered). */
  identity?: boolean;
}

const W = 860;
const H = 340;
const M = { l: 78, r: 180, t: 34, b: 48 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceStep(range: number, target = 6): number {
  if (!(range > 0)) return 1;
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

function label(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return String(Math.round(v));
  if (a >= 1) return String(+v.toFixed(2));
  return String(+v.toPrecision(2));
}

const ninesX = (p: number) => Math.log10(1 / Math.max(1e-7, 1 - Math.min(p, 99.99999) / 100));

/** One chart as an SVG group at vertical offset `top`. */
export function chart(c: Chart, top = 0): string {
  const nines = c.xAxis === 'nines';
  const pts = c.series.flatMap((s) => s.points.map(([x, y]) => [nines ? ninesX(x) : x, y] as [number, number]));
  const out: string[] = [`<g transform="translate(0,${top})">`];
  out.push(`<text x="${M.l}" y="20" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  if (pts.length === 0) {
    out.push(`<text x="${M.l + pw / 2}" y="${M.t + ph / 2}" text-anchor="middle" fill="#888">no data</text></g>`);
    return out.join('\n');
  }
  let x0 = Math.min(...pts.map((p) => p[0]));
  let x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = c.yZero === false ? Math.min(...pts.map((p) => p[1])) : 0;
  let y1 = Math.max(...pts.map((p) => p[1]));
  if (c.identity) {
    x0 = Math.min(x0, y0);
    y1 = Math.max(y1, x1);
    x1 = y1;
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const ys = niceStep(y1 - y0);
  y1 = Math.ceil(y1 / ys) * ys;
  y0 = Math.floor(y0 / ys) * ys;
  if (nines) {
    x0 = 0;
    x1 = Math.max(1, Math.ceil(x1 - 1e-9));
  }
  const X = (x: number) => M.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number) => M.t + ph - ((y - y0) / (y1 - y0)) * ph;
  // grid + axes
  out.push(`<rect x="${M.l}" y="${M.t}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  for (let y = y0; y <= y1 + ys / 2; y += ys) {
    out.push(`<line x1="${M.l}" x2="${M.l + pw}" y1="${Y(y)}" y2="${Y(y)}" stroke="#eee"/>`);
    out.push(`<text x="${M.l - 6}" y="${Y(y) + 4}" font-size="11" text-anchor="end">${label(y)}</text>`);
  }
  if (nines) {
    for (let k = 0; k <= x1; k++) {
      const text = k === 0 ? '0%' : `${(100 - 100 / 10 ** k).toFixed(Math.max(0, k - 2))}%`;
      out.push(`<line x1="${X(k)}" x2="${X(k)}" y1="${M.t}" y2="${M.t + ph}" stroke="#eee"/>`);
      out.push(`<text x="${X(k)}" y="${M.t + ph + 16}" font-size="11" text-anchor="middle">${text}</text>`);
    }
  } else {
    const xs = niceStep(x1 - x0, 8);
    for (let x = Math.ceil(x0 / xs) * xs; x <= x1 + 1e-9; x += xs) {
      out.push(`<line x1="${X(x)}" x2="${X(x)}" y1="${M.t}" y2="${M.t + ph}" stroke="#eee"/>`);
      out.push(`<text x="${X(x)}" y="${M.t + ph + 16}" font-size="11" text-anchor="middle">${label(x)}</text>`);
    }
  }
  out.push(`<text x="${M.l + pw / 2}" y="${H - 10}" font-size="12" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(16,${M.t + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">${esc(c.yLabel)}</text>`);
  if (c.identity) out.push(`<line x1="${X(x0)}" y1="${Y(x0)}" x2="${X(x1)}" y2="${Y(Math.min(x1, y1))}" stroke="#aaa" stroke-dasharray="2,4"/>`);
  // series
  c.series.forEach((s, i) => {
    const p = s.points.map(([x, y]) => [X(nines ? ninesX(x) : x), Y(y)] as [number, number]);
    if (p.length > 0) {
      const d = p.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ' stroke-dasharray="6,4"' : ''}/>`);
      if (s.markers) for (const [x, y] of p) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3" fill="${s.color}"/>`);
    }
    const ly = M.t + 10 + i * 18;
    out.push(`<line x1="${W - M.r + 12}" x2="${W - M.r + 36}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dash ? ' stroke-dasharray="6,4"' : ''}/>`);
    out.push(`<text x="${W - M.r + 42}" y="${ly + 4}" font-size="11">${esc(s.name)}</text>`);
  });
  out.push('</g>');
  return out.join('\n');
}

export function document(charts: Chart[], caption: string): string {
  const height = charts.length * H + 26;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...charts.map((c, i) => chart(c, i * H)),
    `<text x="8" y="${height - 8}" font-size="10" fill="#666">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

export interface BarGroup {
  label: string;
  bars: { name: string; value: number; color: string }[];
}

export function barChart(title: string, yLabel: string, groups: BarGroup[], caption: string): string {
  const out: string[] = [];
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const ys = niceStep(max);
  const y1 = Math.ceil(max / ys) * ys;
  const Y = (y: number) => M.t + ph - (y / y1) * ph;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + 26}" viewBox="0 0 ${W} ${H + 26}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="${M.l}" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`);
  out.push(`<rect x="${M.l}" y="${M.t}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  for (let y = 0; y <= y1 + ys / 2; y += ys) {
    out.push(`<line x1="${M.l}" x2="${M.l + pw}" y1="${Y(y)}" y2="${Y(y)}" stroke="#eee"/>`);
    out.push(`<text x="${M.l - 6}" y="${Y(y) + 4}" font-size="11" text-anchor="end">${label(y)}</text>`);
  }
  out.push(`<text transform="translate(16,${M.t + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">${esc(yLabel)}</text>`);
  const gw = pw / Math.max(1, groups.length);
  const legend = new Map<string, string>();
  groups.forEach((g, i) => {
    const n = g.bars.length;
    const bw = Math.min(60, (gw * 0.7) / Math.max(1, n));
    const gx = M.l + i * gw + (gw - bw * n) / 2;
    g.bars.forEach((b, j) => {
      legend.set(b.name, b.color);
      const x = gx + j * bw;
      out.push(`<rect x="${x.toFixed(1)}" y="${Y(b.value).toFixed(1)}" width="${(bw - 4).toFixed(1)}" height="${(Y(0) - Y(b.value)).toFixed(1)}" fill="${b.color}"/>`);
      out.push(`<text x="${(x + bw / 2 - 2).toFixed(1)}" y="${(Y(b.value) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${label(b.value)}</text>`);
    });
    out.push(`<text x="${(M.l + i * gw + gw / 2).toFixed(1)}" y="${M.t + ph + 16}" font-size="11" text-anchor="middle">${esc(g.label)}</text>`);
  });
  [...legend].forEach(([name, color], i) => {
    const ly = M.t + 10 + i * 18;
    out.push(`<rect x="${W - M.r + 12}" y="${ly - 6}" width="24" height="10" fill="${color}"/>`);
    out.push(`<text x="${W - M.r + 42}" y="${ly + 4}" font-size="11">${esc(name)}</text>`);
  });
  out.push(`<text x="8" y="${H + 18}" font-size="10" fill="#666">${esc(caption)}</text>`);
  out.push('</svg>', '');
  return out.join('\n');
}
