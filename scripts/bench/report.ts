/**
 * What a bench run leaves behind: result.json (everything, including the merged HDR histograms), summary.md
 * (the tables docs/BENCHMARKS.md quotes) and the SVG plots.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mergeHists, percentileCurve } from './common.js';
import type { LoadResult, PhaseSummary } from './coordinator.js';
import { killLines } from './kill.js';
import { barChart, COLORS, document, type Chart, type Series } from './svg.js';

export interface RunRecord {
  label: string;
  role: 'sut' | 'baseline';
  target: string;
  workers: number;
  connections: number;
  server: { kind: string; command: string; workers: number };
  result: LoadResult;
}

export interface Comparison {
  sut: string;
  baseline: string;
  metric: string;
  sutValue: number;
  baselineValue: number;
  /** sut / baseline. */
  ratio: number;
}

export interface TargetCheck {
  what: string;
  target: string;
  value: string;
  met: boolean;
}

/** The phase a run is represented by: the fixed phase, or the highest passing step of a max search. */
export function headline(r: LoadResult): PhaseSummary | null {
  if (r.phases.length === 0) return null;
  if (r.max) return r.phases.find((p) => p.phase === r.max!.phase) ?? null;
  return r.mode === 'max' ? null : r.phases[0]!;
}

const round = (n: number, d = 3) => Math.round(n * 10 ** d) / 10 ** d;

export function compare(runs: RunRecord[]): Comparison[] {
  const out: Comparison[] = [];
  for (const s of runs.filter((r) => r.role === 'sut')) {
    const b = runs.find((r) => r.role === 'baseline' && r.connections === s.connections && r.workers === s.workers);
    if (!b) continue;
    const add = (metric: string, sv: number, bv: number) => {
      if (bv > 0) out.push({ sut: s.label, baseline: b.label, metric, sutValue: sv, baselineValue: bv, ratio: round(sv / bv) });
    };
    const sr = s.result;
    const br = b.result;
    if (sr.mode === 'memory' && sr.memory && br.memory) {
      add('KiB per idle connection', sr.memory.perConnectionKiB, br.memory.perConnectionKiB);
      add('connections held', sr.memory.connections, br.memory.connections);
      continue;
    }
    if (sr.max && br.max) {
      const cap = sr.max.capped || br.max.capped ? ' (a search hit --max-rate: ratio is a bound)' : '';
      add(`max sustained offered msg/s${cap}`, sr.max.rate, br.max.rate);
      add(`max sustained delivered msg/s${cap}`, sr.max.deliveredRate, br.max.deliveredRate);
    }
    // Latency ratios only at the same offered rate (fixed mode): in a max search each side is at its own maximum.
    const sh = sr.mode === 'fixed' ? headline(sr) : null;
    const bh = br.mode === 'fixed' ? headline(br) : null;
    if (sh && bh) {
      add('delivered msg/s', sh.deliveredRate, bh.deliveredRate);
      add('send->deliver p50 ms', sh.deliver.p50, bh.deliver.p50);
      add('send->deliver p99 ms', sh.deliver.p99, bh.deliver.p99);
      add('send->deliver p99.9 ms', sh.deliver.p999, bh.deliver.p999);
    }
  }
  // Scaling: the same target at several worker counts.
  const groups = new Map<string, RunRecord[]>();
  for (const r of runs) {
    if (!r.result.max) continue;
    const k = `${r.role}|${r.target}|${r.connections}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    const sorted = [...g].sort((a, b) => a.workers - b.workers);
    const first = sorted[0]!;
    for (const r of sorted.slice(1)) {
      out.push({
        sut: r.label,
        baseline: first.label,
        metric: `scaling ${first.workers} -> ${r.workers} workers (max delivered msg/s)`,
        sutValue: r.result.max!.deliveredRate,
        baselineValue: first.result.max!.deliveredRate,
        ratio: round(r.result.max!.deliveredRate / Math.max(1, first.result.max!.deliveredRate)),
      });
    }
  }
  return out;
}

/** The issue's targets, checked wherever this run measured the figure. */
export function checkTargets(runs: RunRecord[], comparisons: Comparison[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  for (const c of comparisons) {
    const sut = runs.find((r) => r.label === c.sut);
    const onprem = sut?.role === 'sut' && (sut.target === 'onprem' || sut.target === 'iris');
    if (c.metric.startsWith('max sustained delivered msg/s') && onprem && sut.result.pattern === 'pairs') {
      out.push({ what: `${c.sut}: durable 1:1 throughput / raw relay`, target: '>= 0.5x', value: `${c.ratio}x (${c.sutValue} vs ${c.baselineValue} msg/s)`, met: c.ratio >= 0.5 });
    }
    if (c.metric === 'KiB per idle connection' && onprem) {
      out.push({ what: `${c.sut}: KiB per idle connection`, target: '<= 8 KiB', value: `${c.sutValue} KiB`, met: c.sutValue <= 8 });
      out.push({ what: `${c.sut}: KiB per idle connection / bare ws relay`, target: '<= 1.2x', value: `${c.ratio}x`, met: c.ratio <= 1.2 });
    }
    if (c.metric.startsWith('scaling') && onprem) {
      out.push({ what: `${c.sut}: ${c.metric}`, target: '>= 1.7x', value: `${c.ratio}x`, met: c.ratio >= 1.7 });
    }
  }
  const maxSut = runs.filter((r) => r.role === 'sut' && r.target === 'onprem' && r.result.mode === 'max');
  if (new Set(maxSut.map((r) => r.workers)).size > 1) {
    for (const r of maxSut.filter((x) => !x.result.max)) {
      out.push({ what: `scaling (${r.label})`, target: '>= 1.7x', value: `not measured: ${r.label} had no passing step`, met: false });
    }
  }
  for (const r of runs) {
    if (r.role !== 'sut' || (r.target !== 'onprem' && r.target !== 'iris')) continue;
    // A worker-kill run's latency includes the outage on purpose: it is not a latency measurement.
    if (r.result.mode === 'fixed' && r.result.pattern === 'pairs' && (r.target === 'onprem' || r.target === 'iris') && (r.result.kill ?? null) === null) {
      const h = headline(r.result);
      if (h) {
        out.push({ what: `${r.label}: send->deliver p99 at ${h.rate} msg/s (target is for half the maximum)`, target: '<= 5 ms', value: `${h.deliver.p99} ms`, met: h.deliver.p99 <= 5 });
        out.push({ what: `${r.label}: send->deliver p99.9 at ${h.rate} msg/s (target is for half the maximum)`, target: '<= 20 ms', value: `${h.deliver.p999} ms`, met: h.deliver.p999 <= 20 });
      }
    }
    if (r.result.mode === 'memory' && r.result.memory && r.connections >= 100_000) {
      out.push({ what: `${r.label}: 100k connections held`, target: '100,000', value: String(r.result.memory.connections), met: r.result.memory.connections >= 100_000 });
    }
  }
  return out;
}

// ------------------------------------------------------------------ plots

function runColor(i: number): string {
  return COLORS[i % COLORS.length]!;
}

export function writePlots(dir: string, runs: RunRecord[], caption: string): string[] {
  const files: string[] = [];
  const write = (name: string, svg: string) => {
    writeFileSync(join(dir, name), svg);
    files.push(name);
  };
  const load = runs.filter((r) => r.result.mode !== 'memory');
  if (load.length > 0) {
    // Latency by percentile: the headline phase of each run.
    const lat: Series[] = [];
    load.forEach((r, i) => {
      const h = headline(r.result) ?? r.result.phases.at(-1);
      if (!h) return;
      lat.push({ name: `${r.label} deliver @${h.rate}/s`, color: runColor(i), points: percentileCurve(mergeHists([h.deliverHist])) });
      if (h.ackHist !== '') lat.push({ name: `${r.label} ack`, color: runColor(i), dash: true, points: percentileCurve(mergeHists([h.ackHist])) });
    });
    write('latency.svg', document([{ title: 'Latency by percentile (from the scheduled send time)', xLabel: 'percentile', yLabel: 'ms', series: lat, xAxis: 'nines' }], caption));
    // Throughput and p99 over time.
    const thr: Series[] = [];
    const p99: Series[] = [];
    load.forEach((r, i) => {
      thr.push({ name: `${r.label} delivered`, color: runColor(i), points: r.result.timeline.map((p) => [p.t, p.delivered]) });
      thr.push({ name: `${r.label} offered`, color: runColor(i), dash: true, points: r.result.timeline.map((p) => [p.t, p.offered]) });
      p99.push({ name: `${r.label} p99`, color: runColor(i), points: r.result.timeline.filter((p) => p.delivered > 0).map((p) => [p.t, p.p99]) });
    });
    write(
      'timeline.svg',
      document(
        [
          { title: 'Throughput over time', xLabel: 'seconds', yLabel: 'messages / s', series: thr },
          { title: 'send->deliver p99 over time (per second, by arrival)', xLabel: 'seconds', yLabel: 'ms', series: p99 },
        ],
        caption,
      ),
    );
    // Max mode: the steps.
    const maxRuns = load.filter((r) => r.result.mode === 'max');
    if (maxRuns.length > 0) {
      const del: Series[] = [];
      const lp: Series[] = [];
      maxRuns.forEach((r, i) => {
        const steps = [...r.result.phases].sort((a, b) => a.rate - b.rate);
        del.push({ name: r.label, color: runColor(i), markers: true, points: steps.map((s) => [s.offeredRate, s.deliveredRate]) });
        lp.push({ name: `${r.label} p99`, color: runColor(i), markers: true, points: steps.map((s) => [s.offeredRate, s.deliver.p99]) });
      });
      const charts: Chart[] = [
        { title: 'Find the maximum: delivered vs offered (dotted: delivered = offered)', xLabel: 'offered messages / s', yLabel: 'delivered messages / s', series: del, identity: true },
        { title: 'Find the maximum: send->deliver p99 per step', xLabel: 'offered messages / s', yLabel: 'ms', series: lp },
      ];
      write('steps.svg', document(charts, caption));
    }
  }
  const mem = runs.filter((r) => r.result.memory);
  if (mem.length > 0) {
    const conns = [...new Set(mem.map((r) => r.connections))].sort((a, b) => a - b);
    const names = [...new Set(mem.map((r) => `${r.role === 'sut' ? r.target : 'raw relay (bare ws)'}`))];
    const groups = conns.map((c) => ({
      label: `${c.toLocaleString('en-US')} connections`,
      bars: mem
        .filter((r) => r.connections === c)
        .map((r) => {
          const name = r.role === 'sut' ? r.target : 'raw relay (bare ws)';
          return { name, value: r.result.memory!.perConnectionKiB, color: runColor(names.indexOf(name)) };
        }),
    }));
    write('memory.svg', barChart('Server RSS per idle authenticated connection (all server processes)', 'KiB per connection', groups, caption));
  }
  return files;
}

// ------------------------------------------------------------------ summary

export function summaryMarkdown(runs: RunRecord[], comparisons: Comparison[], targets: TargetCheck[], header: string[]): string {
  const out = [...header, ''];
  const load = runs.filter((r) => r.result.mode !== 'memory');
  if (load.length > 0) {
    out.push('| run | workers | conns | offered/s | delivered/s | deliver p50 | p90 | p99 | p99.9 | max | ack p99 | refused | lost | dup | server cores |');
    out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of load) {
      const h = headline(r.result);
      const a = r.result.accounting;
      if (!h) {
        out.push(`| ${r.label} | ${r.workers} | ${r.connections} | no passing step | | | | | | | | | ${a?.lost ?? ''} | ${a?.duplicated ?? ''} | |`);
        continue;
      }
      out.push(
        `| ${r.label} | ${r.workers} | ${r.connections} | ${h.offeredRate} | ${h.deliveredRate} | ${h.deliver.p50} | ${h.deliver.p90} | ${h.deliver.p99} | ${h.deliver.p999} | ${h.deliver.max} | ${h.ack ? h.ack.p99 : 'n/a'} | ${h.errored} | ${a?.lost ?? ''} | ${a?.duplicated ?? ''} | ${h.cpu.serverCores ?? '?'} |`,
      );
    }
    out.push('', 'Latencies in ms, from the scheduled send time. Max-mode runs show their highest passing step.');
    const steps = load.filter((r) => r.result.mode === 'max');
    for (const r of steps) {
      out.push('', `Steps of ${r.label}:`, '', '| offered/s | delivered/s | p50 | p99 | p99.9 | ack p99 | errors | verdict |', '|---|---|---|---|---|---|---|---|');
      for (const s of r.result.phases) {
        const errs = Object.entries(s.errors).map(([k, v]) => `${k} ${v}`).join(', ') || '0';
        out.push(`| ${s.offeredRate} | ${s.deliveredRate} | ${s.deliver.p50} | ${s.deliver.p99} | ${s.deliver.p999} | ${s.ack ? s.ack.p99 : 'n/a'} | ${errs} | ${s.pass ? 'pass' : `fail: ${s.reasons.join('; ')}`} |`);
      }
    }
  }
  // `?? null`: result.json files written before the kill mode have no `kill` field (--render).
  for (const r of runs) {
    const k = r.result.kill ?? null;
    if (k === null) continue;
    out.push('', `Worker kill in ${r.label} (ms are after the kill):`, '');
    for (const line of killLines(r.label, k)) out.push(`- ${line.slice(`[${r.label}] kill: `.length)}`);
  }
  const mem = runs.filter((r) => r.result.memory);
  if (mem.length > 0) {
    out.push('', '| run | workers | connections held | server RSS before (MiB) | after (MiB) | KiB per connection |', '|---|---|---|---|---|---|');
    for (const r of mem) {
      const m = r.result.memory!;
      out.push(`| ${r.label} | ${r.workers} | ${m.connections} | ${(m.rssBeforeKiB / 1024).toFixed(1)} | ${(m.rssAfterKiB / 1024).toFixed(1)} | ${m.perConnectionKiB} |`);
    }
  }
  if (comparisons.length > 0) {
    out.push('', '| system under test | baseline | metric | value | baseline | ratio |', '|---|---|---|---|---|---|');
    for (const c of comparisons) out.push(`| ${c.sut} | ${c.baseline} | ${c.metric} | ${c.sutValue} | ${c.baselineValue} | ${c.ratio}x |`);
  }
  if (targets.length > 0) {
    out.push('', '| target | wanted | measured | met |', '|---|---|---|---|');
    for (const t of targets) out.push(`| ${t.what} | ${t.target} | ${t.value} | ${t.met ? 'yes' : 'NO'} |`);
  }
  return out.join('\n') + '\n';
}
