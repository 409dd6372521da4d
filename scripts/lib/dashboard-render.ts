import type { Panel } from './dashboard.js';

/**
 * Draws Grafana dashboard panels (timeseries and stat) as one self-contained HTML page of hand-written SVG,
 * laid out on Grafana's 24-column grid from each panel's gridPos, in Grafana's dark colours. It is a preview
 * of what the dashboard JSON shows on real data (scripts/dashboard-preview.ts), not Grafana: no tooltips,
 * overrides or field options beyond the unit, decimals and thresholds.
 */

export interface DrawnSeries {
  name: string;
  /** [seconds since the epoch, value]; NaN values are gaps. */
  points: [number, number][];
}

export interface DrawnPanel {
  panel: Panel;
  series: DrawnSeries[];
}

export interface Page {
  title: string;
  subtitle: string;
  caption: string;
  from: number;
  to: number;
  panels: DrawnPanel[];
}

const PALETTE = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#5794f2', '#b877d9', '#fade2a', '#37872d', '#ff9830', '#c4162a', '#1f60c4'];
const ROW_PX = 30;
const GAP_PX = 8;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function trim(v: number, decimals?: number): string {
  if (decimals !== undefined) return v.toFixed(decimals);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? String(+v.toFixed(1)) : String(+v.toFixed(2));
}

function scaled(v: number, base: number, names: string[], decimals?: number): string {
  let i = 0;
  while (Math.abs(v) >= base && i < names.length - 1) {
    v /= base;
    i++;
  }
  return `${trim(v, decimals)}${names[i]}`;
}

/** A value in a Grafana unit (the few this dashboard uses). */
export function formatUnit(v: number, unit = 'short', decimals?: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'NaN' : String(v);
  switch (unit) {
    case 's': {
      const a = Math.abs(v);
      if (a === 0) return '0 s';
      if (a < 1e-3) return `${trim(v * 1e6, decimals)} µs`;
      if (a < 1) return `${trim(v * 1e3, decimals)} ms`;
      return `${trim(v, decimals)} s`;
    }
    case 'bytes':
      return scaled(v, 1024, [' B', ' KiB', ' MiB', ' GiB', ' TiB'], decimals);
    case 'percentunit':
      return `${trim(v * 100, decimals)}%`;
    case 'ops':
      return `${scaled(v, 1000, ['', ' K', ' Mil', ' Bil'], decimals)} ops/s`;
    default:
      return scaled(v, 1000, ['', ' K', ' Mil', ' Bil'], decimals);
  }
}

function niceStep(range: number, target: number): number {
  if (!(range > 0)) return 1;
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

function hms(t: number): string {
  return new Date(t * 1000).toISOString().slice(11, 19);
}

function finite(s: DrawnSeries[]): number[] {
  return s.flatMap((x) => x.points.map((p) => p[1]).filter(Number.isFinite));
}

/** SVG path of a series with gaps at NaN. */
function path(points: [number, number][], x: (t: number) => number, y: (v: number) => number): string {
  let d = '';
  let pen = false;
  for (const [t, v] of points) {
    if (!Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  }
  return d;
}

function timeseries(p: DrawnPanel, w: number, h: number, from: number, to: number): string {
  const unit = p.panel.fieldConfig?.defaults?.unit;
  const vals = finite(p.series);
  if (vals.length === 0) return `<div class="nodata">No data</div>`;
  const m = { l: 64, r: 10, t: 8, b: 22 };
  let lo = Math.min(0, ...vals);
  let hi = Math.max(...vals);
  if (hi === lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo));
  const step = niceStep(hi - lo, Math.max(2, Math.floor(h / 45)));
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const x = (t: number) => m.l + ((t - from) / Math.max(1, to - from)) * (w - m.l - m.r);
  const y = (v: number) => h - m.b - ((v - lo) / (hi - lo)) * (h - m.t - m.b);
  const out: string[] = [];
  for (let v = lo; v <= hi + step / 2; v += step) {
    out.push(`<line x1="${m.l}" x2="${w - m.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" class="grid"/>`);
    out.push(`<text x="${m.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${esc(formatUnit(v, unit))}</text>`);
  }
  const tStep = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].find((s) => (to - from) / s <= Math.max(2, Math.floor(w / 90))) ?? 3600;
  for (let t = Math.ceil(from / tStep) * tStep; t <= to; t += tStep) {
    out.push(`<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${m.t}" y2="${h - m.b}" class="grid"/>`);
    out.push(`<text x="${x(t).toFixed(1)}" y="${h - 6}" text-anchor="middle">${hms(t)}</text>`);
  }
  p.series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length]!;
    const d = path(s.points, x, y);
    if (d) out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.5"/>`);
  });
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${out.join('')}</svg>`;
}

interface Step {
  color: string;
  value: number | null;
}

/** The threshold colour of a value: the last step whose value it reaches. */
function thresholdColor(v: number, steps: Step[] | undefined): string {
  const named: Record<string, string> = { green: '#73bf69', orange: '#ff9830', red: '#f2495c', yellow: '#fade2a', blue: '#5794f2' };
  let c = 'green';
  for (const s of steps ?? []) if (s.value === null || v >= s.value) c = s.color;
  return named[c] ?? c;
}

function stat(p: DrawnPanel, w: number, h: number, from: number, to: number): string {
  const d = p.panel.fieldConfig?.defaults as { unit?: string; decimals?: number; thresholds?: { steps?: Step[] } } | undefined;
  const s = p.series[0];
  const last = s ? [...s.points].reverse().find(([, v]) => Number.isFinite(v)) : undefined;
  if (!s || !last) return `<div class="nodata">No data</div>`;
  const color = thresholdColor(last[1], d?.thresholds?.steps);
  const vals = s.points.map((q) => q[1]).filter(Number.isFinite);
  const lo = Math.min(0, ...vals);
  const hi = Math.max(...vals) === lo ? lo + 1 : Math.max(...vals);
  const x = (t: number) => ((t - from) / Math.max(1, to - from)) * w;
  const y = (v: number) => h - ((v - lo) / (hi - lo)) * (h * 0.45);
  const line = path(s.points, x, y);
  const area = line ? `<path d="${line}L${w},${h}L0,${h}Z" fill="${color}" opacity="0.18"/><path d="${line}" fill="none" stroke="${color}" stroke-width="1.5"/>` : '';
  const size = Math.min(44, h * 0.42, (w / Math.max(4, formatUnit(last[1], d?.unit, d?.decimals).length)) * 1.6);
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">${area}<text x="${w / 2}" y="${(h * 0.48).toFixed(1)}" text-anchor="middle" class="big" style="font-size:${size.toFixed(0)}px" fill="${color}">${esc(formatUnit(last[1], d?.unit, d?.decimals))}</text></svg>`;
}

function legend(p: DrawnPanel): string {
  const unit = p.panel.fieldConfig?.defaults?.unit;
  const items = p.series.map((s, i) => {
    const last = [...s.points].reverse().find(([, v]) => Number.isFinite(v));
    const value = last ? formatUnit(last[1], unit) : '–';
    return `<span class="li"><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(s.name)} <b>${esc(value)}</b></span>`;
  });
  return `<div class="legend">${items.join('')}</div>`;
}

/** The whole page: a header, the panels on the grid, the caption. `width` in CSS pixels. */
export function renderPage(pg: Page, width = 1600): string {
  const pad = 16;
  const colW = (width - 2 * pad - 23 * GAP_PX) / 24;
  const cells: string[] = [];
  for (const dp of pg.panels) {
    const g = dp.panel.gridPos;
    const style = `grid-column:${g.x + 1} / span ${g.w};grid-row:${g.y + 1} / span ${g.h}`;
    if (dp.panel.type === 'row') {
      cells.push(`<div class="row" style="${style}">${esc(dp.panel.title)}</div>`);
      continue;
    }
    const pw = Math.floor(g.w * colW + (g.w - 1) * GAP_PX) - 16;
    const ph = g.h * ROW_PX + (g.h - 1) * GAP_PX - 36;
    const isStat = dp.panel.type === 'stat';
    const legendH = isStat ? 0 : Math.min(70, 20 * Math.ceil(dp.series.length / Math.max(1, Math.floor(pw / 230))));
    const body = isStat ? stat(dp, pw, ph, pg.from, pg.to) : timeseries(dp, pw, ph - legendH, pg.from, pg.to);
    cells.push(`<div class="panel" style="${style}"><div class="title">${esc(dp.panel.title)}</div>${body}${isStat ? '' : legend(dp)}</div>`);
  }
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(pg.title)}</title><style>
body{margin:0;background:#111217;color:#ccccdc;font:13px/1.35 Inter,"Helvetica Neue",Arial,sans-serif;width:${width}px}
header{padding:${pad}px ${pad}px 4px}h1{font-size:20px;font-weight:500;margin:0 0 4px;color:#fff}.sub{color:#8e8e9e}
.grid{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:${ROW_PX}px;gap:${GAP_PX}px;padding:${pad}px}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:2px;padding:6px 8px;overflow:hidden}
.title{font-weight:500;color:#fff;height:22px;white-space:nowrap;overflow:hidden}
.row{font-size:15px;font-weight:500;color:#fff;align-self:end}
svg text{fill:#8e8e9e;font-size:11px}svg text.big{font-weight:500}svg line.grid{stroke:#2c3235;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:2px 14px;max-height:70px;overflow:hidden;font-size:12px}
.li i{display:inline-block;width:14px;height:4px;margin:0 6px 3px 0;vertical-align:middle;border-radius:2px}.li b{font-weight:400;color:#8e8e9e}
.nodata{color:#8e8e9e;text-align:center;padding-top:60px}
footer{padding:0 ${pad}px ${pad}px;color:#8e8e9e}
</style></head><body><header><h1>${esc(pg.title)}</h1><div class="sub">${esc(pg.subtitle)}</div></header>
<div class="grid">${cells.join('\n')}</div><footer>${esc(pg.caption)}</footer></body></html>`;
}
