import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeHist, newHist, recordUs, type LatencySummary } from '../../scripts/bench/common.js';
import { htmlReport, inlineSvg, markdownToHtml, writeHtmlReport } from '../../scripts/bench/html.js';
import { checkTargets, compare, summaryMarkdown, writePlots, type RunRecord } from '../../scripts/bench/report.js';
import type { LoadResult, PhaseSummary } from '../../scripts/bench/results.js';

/**
 * report.html (issue 12) from a small fixed result: no server, no load. The report must be one file with the
 * plots inline, the numbers of summary.md's tables and the per-step latency/CPU table, and nothing fetched.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const lat = (p50: number, p99: number): LatencySummary => ({ count: 1000, p50, p90: p50 * 2, p99, p999: Math.round(p99 * 150) / 100, max: p99 * 2, mean: p50 });

function hist(ms: number[]): string {
  const h = newHist();
  for (const v of ms) recordUs(h, v);
  return encodeHist(h);
}

function phase(n: number, rate: number, delivered: number, p99: number, pass: boolean, serverCores: number): PhaseSummary {
  return {
    phase: n,
    rate,
    offeredRate: rate,
    sentRate: rate,
    deliveredRate: delivered,
    scheduled: rate * 2,
    sent: rate * 2,
    acked: rate * 2,
    delivered: delivered * 2,
    errored: 0,
    completion: 1,
    ack: lat(0.8, p99 / 2),
    deliver: lat(1.25, p99),
    lag: lat(0.1, 0.35),
    errors: {},
    overloaded: false,
    drained: true,
    drainMs: 12,
    cpu: { serverCores, clientCores: 0.42 },
    pass,
    reasons: pass ? [] : [`p99 ${p99} ms > 50 ms`],
    deliverHist: hist([1, 1.25, 2, 3, p99]),
    ackHist: hist([0.5, 0.8, 1, p99 / 2]),
  };
}

function run(label: string, role: 'sut' | 'baseline', target: string, phases: PhaseSummary[], maxPhase: number): RunRecord {
  const best = phases[maxPhase]!;
  const result: LoadResult = {
    label,
    wire: role === 'sut' ? 'iris' : 'relay',
    mode: 'max',
    pattern: 'pairs',
    connections: 20,
    processes: 1,
    sourceAddresses: [],
    opened: { ok: 20, failed: 0, errors: {}, retried: {}, ms: 40 },
    phases,
    max: { rate: best.rate, deliveredRate: best.deliveredRate, phase: best.phase, capped: false },
    timeline: [0, 1, 2, 3].map((t) => ({ t, phase: 0, offered: 400, sent: 400, acked: 400, delivered: 399, deliveredUnaffected: 0, errors: 0, p50: 1.2, p99: 4.5 })),
    accounting: { sent: 800, acked: 800, errored: 0, unanswered: 0, delivered: 800, lost: 0, duplicated: 0, deliveredNotAcked: 0, receipts: 0, closedConnections: 0 },
    memory: null,
    kill: null,
    errors: {},
  };
  return { label, role, target, workers: 2, connections: 20, server: { kind: target, command: 'x', workers: 2 }, result };
}

function fixture(): RunRecord[] {
  return [
    run('relay w2 c20', 'baseline', 'relay', [phase(0, 400, 400, 2.5, true, 0.31), phase(1, 800, 799, 3.5, true, 0.62), phase(2, 1600, 1200, 77.7, false, 1.01)], 1),
    run('onprem w2 c20', 'sut', 'onprem', [phase(0, 400, 401, 6.25, true, 0.93), phase(1, 800, 640, 123.4, false, 1.87)], 0),
  ];
}

describe('bench HTML report', () => {
  it('is one self-contained file with the plots inline, the tables and no external resource', () => {
    const dir = mkdtempSync(join(tmpdir(), 'iris-bench-html-'));
    dirs.push(dir);
    const runs = fixture();
    const comparisons = compare(runs);
    const targets = checkTargets(runs, comparisons);
    const plots = writePlots(dir, runs, 'fixture caption');
    expect(plots).toEqual(['latency.svg', 'timeline.svg', 'steps.svg']);
    const summary = summaryMarkdown(runs, comparisons, targets, ['# Bench result: fixture', '', '- command: `npm run bench -- --preset fixture`']);
    const name = writeHtmlReport(dir, 'Bench result: fixture', summary, runs, plots);
    expect(name).toBe('report.html');
    const html = readFileSync(join(dir, name), 'utf8');

    // One document, and every plot's SVG inside it (not referenced).
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    expect(html.match(/<svg /g)).toHaveLength(plots.length);
    for (const p of plots) expect(html).toContain(inlineSvg(readFileSync(join(dir, p), 'utf8')).slice(0, 200));
    expect(html).toContain('<style>');

    // Nothing fetched: no scripts, stylesheets, images, frames, CSS imports or absolute URLs; only #anchors.
    expect(html).not.toMatch(/<(script|link|img|iframe|object|embed)\b/i);
    expect(html).not.toMatch(/@import|url\(/i);
    expect(html).not.toMatch(/(https?|ftp):\/\/|\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);
    for (const m of html.matchAll(/\b(?:href|src)="([^"]*)"/g)) expect(m[1]!.startsWith('#'), m[0]).toBe(true);

    // The tables' numbers: runs, steps (with the verdicts), ratio to the baseline, targets, per-step CPU.
    expect(html).toContain('<h3>Runs (max mode: the highest passing step)</h3>');
    expect(html).toContain('<h3>Steps of onprem w2 c20</h3>');
    expect(html).toContain('<h3>Ratio to the baseline</h3>');
    expect(html).toContain('<h3>Targets</h3>');
    expect(html).toContain('<td class="bad">fail: p99 123.4 ms &gt; 50 ms</td>');
    const ratio = comparisons.find((c) => c.metric.startsWith('max sustained delivered'))!;
    expect(ratio.ratio).toBe(0.502);
    expect(html).toContain(`<td class="n">${ratio.ratio}x</td>`);
    for (const n of ['6.25', '123.4', '77.7', '0.93', '1.87', '0.62', '0.42', '185.1']) expect(html).toContain(`<td class="n">${n}</td>`);
    expect(html).toContain('<code>npm run bench -- --preset fixture</code>');
    // The per-step table has every phase of every run.
    const phases = html.slice(html.indexOf('<section id="phases">'));
    expect(phases.match(/<tr><td>(relay|onprem) w2 c20<\/td>/g)).toHaveLength(5);

    // Only the files the run wrote: the report adds one, and needs none next to it.
    expect(readdirSync(dir).sort()).toEqual(['latency.svg', 'report.html', 'steps.svg', 'timeline.svg']);
  });

  it('escapes what it quotes and keeps literal bars in cells', () => {
    const html = markdownToHtml('| a | b |\n|---|---|\n| `x\\|y` | <script> |\n');
    expect(html).toContain('<td><code>x|y</code></td>');
    expect(html).toContain('<td>&lt;script&gt;</td>');
    expect(htmlReport({ title: '<t>', summaryMd: '', runs: [], plots: [] })).toContain('<title>&lt;t&gt;</title>');
  });

  it('inlines an SVG file without its XML declaration and namespace URLs', () => {
    expect(inlineSvg('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="1"></svg>\n')).toBe('<svg width="1"></svg>');
  });
});
