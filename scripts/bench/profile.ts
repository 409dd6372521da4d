/**
 * Reads V8 .cpuprofile files (node --cpu-prof; `run.ts --profile DIR` collects them from the server and the
 * client processes), prints the functions with the most self time and writes a flame graph as SVG (no deps).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/profile.ts FILE.cpuprofile [--top 25] [--svg out.svg]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain } from '../lib/main.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  /** Wall time covered, ms; busy (non-idle) share of it. */
  durationMs: number;
  busyShare: number;
  top: { name: string; selfShare: number; selfMs: number }[];
}

function frameName(f: CallFrame): string {
  const fn = f.functionName || '(anonymous)';
  if (!f.url) return fn;
  const u = f.url.replace(/^file:\/\//, '');
  const short = u.includes('node_modules/') ? u.slice(u.lastIndexOf('node_modules/') + 13) : relative(process.cwd(), u) || basename(u);
  return `${fn} ${short}:${f.lineNumber + 1}`;
}

/** Self time per node id, in microseconds (from samples and time deltas, or hit counts). */
function selfTimes(p: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length) {
    for (let i = 0; i < p.samples.length; i++) {
      // A sample's time is the delta to the next sample.
      const dt = p.timeDeltas[i + 1] ?? 0;
      self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
    }
  } else {
    const total = p.endTime - p.startTime;
    const hits = p.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
    for (const n of p.nodes) self.set(n.id, ((n.hitCount ?? 0) / hits) * total);
  }
  return self;
}

const IDLE = new Set(['(idle)', '(program)', '(garbage collector)']);

export function summarizeProfile(file: string, topN = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const self = selfTimes(p);
  const byName = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const n of p.nodes) {
    const t = self.get(n.id) ?? 0;
    total += t;
    if (n.callFrame.functionName === '(idle)') idle += t;
    const name = frameName(n.callFrame);
    byName.set(name, (byName.get(name) ?? 0) + t);
  }
  const busy = total - idle;
  const top = [...byName.entries()]
    .filter(([name]) => name !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, topN)
    .map(([name, t]) => ({ name, selfShare: busy > 0 ? Math.round((t / busy) * 1000) / 10 : 0, selfMs: Math.round(t / 1000) }));
  return { file, durationMs: Math.round(total / 1000), busyShare: total > 0 ? Math.round((busy / total) * 1000) / 10 : 0, top };
}

/** Flame graph (root at the bottom) of one profile, idle time left out. */
export function flameSvg(file: string, title: string): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const self = selfTimes(p);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const totalOf = new Map<number, number>();
  const total = (id: number): number => {
    const cached = totalOf.get(id);
    if (cached !== undefined) return cached;
    const n = byId.get(id)!;
    if (IDLE.has(n.callFrame.functionName) && n.callFrame.functionName === '(idle)') {
      totalOf.set(id, 0);
      return 0;
    }
    let t = self.get(id) ?? 0;
    for (const c of n.children ?? []) t += total(c);
    totalOf.set(id, t);
    return t;
  };
  const root = p.nodes[0]!;
  const all = total(root.id);
  const W = 1200;
  const rowH = 16;
  const rects: { x: number; w: number; depth: number; name: string; share: number }[] = [];
  let maxDepth = 0;
  const walk = (id: number, x: number, depth: number) => {
    const t = totalOf.get(id) ?? 0;
    const w = all > 0 ? (t / all) * W : 0;
    if (w < 0.5) return;
    const n = byId.get(id)!;
    if (depth > 0) rects.push({ x, w, depth, name: frameName(n.callFrame), share: t / all });
    maxDepth = Math.max(maxDepth, depth);
    let cx = x;
    for (const c of n.children ?? []) {
      walk(c, cx, depth + 1);
      cx += all > 0 ? ((totalOf.get(c) ?? 0) / all) * W : 0;
    }
  };
  walk(root.id, 0, 0);
  const H = (maxDepth + 1) * rowH + 40;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const hue = (s: string) => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return h;
  };
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="monospace" font-size="10">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="4" y="14" font-size="13" font-family="Helvetica, Arial, sans-serif">${esc(title)} — busy time only, width = share of CPU samples</text>`,
  ];
  for (const r of rects) {
    const y = H - (r.depth + 1) * rowH;
    const h = hue(r.name);
    const color = `rgb(${200 + (h % 55)},${80 + ((h >> 8) % 120)},${40 + ((h >> 16) % 40)})`;
    const label = r.w > 40 ? esc(r.name.slice(0, Math.floor(r.w / 6))) : '';
    out.push(
      `<g><title>${esc(r.name)} (${(r.share * 100).toFixed(1)}%)</title><rect x="${r.x.toFixed(1)}" y="${y}" width="${Math.max(0.5, r.w - 0.5).toFixed(1)}" height="${rowH - 1}" fill="${color}"/>` +
        (label ? `<text x="${(r.x + 3).toFixed(1)}" y="${y + 11}">${label}</text>` : '') +
        '</g>',
    );
  }
  out.push('</svg>', '');
  return out.join('\n');
}

if (isMain(import.meta.url)) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, svg: { type: 'string' } } });
  if (positionals.length === 0) {
    process.stderr.write('usage: profile.ts FILE.cpuprofile... [--top 25] [--svg out.svg]\n');
    process.exit(2);
  }
  for (const f of positionals) {
    const s = summarizeProfile(f, Number(values.top));
    process.stdout.write(`\n${f}: ${s.durationMs} ms sampled, ${s.busyShare}% busy\n`);
    for (const t of s.top) process.stdout.write(`  ${String(t.selfShare).padStart(5)}%  ${String(t.selfMs).padStart(6)} ms  ${t.name}\n`);
  }
  if (values.svg !== undefined) {
    writeFileSync(values.svg, flameSvg(positionals[0]!, basename(positionals[0]!)));
    process.stdout.write(`\nflame graph: ${values.svg}\n`);
  }
}
