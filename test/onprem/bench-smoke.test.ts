import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Accounting } from '../../scripts/bench/coordinator.js';

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

function bench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'iris-bench-smoke-'));
  dirs.push(dir);
  return new Promise((res) => {
    const child = spawn('sh', [join(ROOT, 'scripts/node.sh'), '--import', 'tsx', join(ROOT, 'scripts/bench/run.ts'), ...args, '--out', dir, '--quiet'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    // The harness bounds itself; this only guards against a hang. SIGINT makes it stop the servers it started.
    const guard = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(guard);
      res({ code, out, dir });
    });
  });
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
