import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Accounting } from '../../scripts/bench/coordinator.js';
import { runBench } from './helpers.js';

/**
 * CI smoke of the benchmark harness (scripts/bench): a seconds-long run, first against the raw relay alone,
 * then the `smoke` preset (raw relay baseline + the on-prem server). It checks that the harness works and
 * that every message is accounted for — never how fast anything was: there are no timed assertions.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const dirs: string[] = [];


interface BenchJson {
  runs: { label: string; role: string; result: { accounting: Accounting | null; opened: { ok: number; failed: number }; phases: unknown[] } }[];
  files: string[];
}

async function bench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; dir: string }> {
  const r = await runBench(args, timeoutMs, 'iris-bench-smoke-');
  dirs.push(r.dir);
  return r;
}

function checkResult(dir: string, out: string, expectedRuns: number): BenchJson {
  const file = join(dir, 'result.json');
  expect(existsSync(file), out).toBe(true);
  const json = JSON.parse(readFileSync(file, 'utf8')) as BenchJson;
  expect(json.runs).toHaveLength(expectedRuns);
  for (const run of json.runs) {
    const a = run.result.accounting;
    expect(a, run.label).not.toBeNull();
    expect(run.result.opened.failed, `${run.label}: connections that never opened`).toBe(0);
    expect(a!.sent, run.label).toBeGreaterThan(0);
    // Every message is accounted for: sent = acked = delivered, nothing lost, duplicated or left unanswered.
    expect({ label: run.label, ...a! }).toMatchObject({
      label: run.label,
      acked: a!.sent,
      delivered: a!.sent,
      errored: 0,
      unanswered: 0,
      lost: 0,
      duplicated: 0,
      deliveredNotAcked: 0,
    });
  }
  for (const svg of ['latency.svg', 'timeline.svg']) {
    expect(json.files).toContain(svg);
    const text = readFileSync(join(dir, svg), 'utf8');
    expect(text.startsWith('<svg ')).toBe(true);
    expect(text.trimEnd().endsWith('</svg>')).toBe(true);
    expect(text).toContain('<path ');
  }
  expect(existsSync(join(dir, 'summary.md'))).toBe(true);
  // The browser report (issue 12): one file, the plots inline.
  expect(json.files).toContain('report.html');
  const html = readFileSync(join(dir, 'report.html'), 'utf8');
  expect(html.match(/<svg /g)?.length).toBe(json.files.filter((f) => f.endsWith('.svg')).length);
  return json;
}

describe('bench harness smoke', () => {
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('drives the raw relay and accounts for every message', { timeout: 120_000 }, async () => {
    const r = await bench(['--target', 'relay', '--workers', '2', '--connections', '20', '--rate', '400', '--warmup', '1', '--duration', '2'], 100_000);
    expect(r.code, r.out).toBe(0);
    checkResult(r.dir, r.out, 1);
  });

  it('drives the on-prem server with the relay baseline in the same run (preset smoke)', { timeout: 180_000 }, async () => {
    const r = await bench(['--preset', 'smoke'], 160_000);
    expect(r.code, r.out).toBe(0);
    const json = checkResult(r.dir, r.out, 2);
    expect(json.runs.map((x) => x.role)).toEqual(['baseline', 'sut']);
  });
});
