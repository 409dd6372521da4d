import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Accounting } from '../../scripts/bench/coordinator.js';
import { runBench } from './helpers.js';
import { judgeKill, killWorker, parseDuration, supervisorTimes, type KillResult } from '../../scripts/bench/kill.js';

/**
 * The benchmark's worker-kill mode (scripts/bench/kill.ts): a seconds-long run with tiny counts that SIGKILLs
 * worker 0 of the on-prem server mid-window. It checks the accounting (every acked message delivered exactly
 * once, nothing unanswered, exit 0) and that something was really killed: the pid the harness reports was a
 * worker the server printed, its connections dropped, and the supervisor logged its death and return. No
 * assertion is about how fast anything was.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const dirs: string[] = [];

interface BenchJson {
  runs: { label: string; role: string; result: { accounting: Accounting | null; kill: KillResult | null } }[];
}

async function bench(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; dir: string }> {
  const r = await runBench(args, timeoutMs, 'iris-bench-kill-');
  dirs.push(r.dir);
  return r;
}

function accounting(over: Partial<Accounting> = {}): Accounting {
  return { sent: 10, acked: 10, errored: 0, unanswered: 0, delivered: 10, lost: 0, duplicated: 0, deliveredNotAcked: 0, receipts: 10, closedConnections: 0, ...over };
}

describe('bench worker-kill mode', () => {
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('kills a worker mid-run and accounts for every acked message exactly once', { timeout: 90_000 }, async () => {
    const r = await bench(
      ['--target', 'onprem', '--workers', '2', '--connections', '20', '--rate', '200', '--warmup', '0.5', '--duration', '3', '--kill-worker-at', '1s', '--drain', '15'],
      80_000,
    );
    expect(r.code, r.out).toBe(0);
    const json = JSON.parse(readFileSync(join(r.dir, 'result.json'), 'utf8')) as BenchJson;
    expect(json.runs).toHaveLength(1); // no baseline in kill mode unless asked
    const { accounting: a, kill: k } = json.runs[0]!.result;
    expect(a).not.toBeNull();
    expect(k, r.out).not.toBeNull();
    expect(a!.sent).toBeGreaterThan(0);
    expect(a!).toMatchObject({ acked: a!.sent, delivered: a!.sent, errored: 0, unanswered: 0, lost: 0, duplicated: 0, deliveredNotAcked: 0 });
    expect(k!.pass, k!.failures.join('; ')).toBe(true);

    // Something was really killed: the reported pid was one of the worker pids the server printed...
    const log = readFileSync(join(r.dir, 'server-0.log'), 'utf8');
    const pids = /\(2 workers, pids ([\d,]+)/.exec(log)?.[1]?.split(',').filter((x) => x !== '').map(Number);
    expect(pids, log).toContain(k!.pid);
    expect(k!.slot).toBe(0);
    expect(k!.pid).toBe(pids![0]);
    expect(k!.checked).toContain('(the supervisor)');
    // ...the supervisor saw exactly that pid die of SIGKILL and brought a new worker back...
    expect(k!.supervisor, log).not.toBeNull();
    expect(k!.supervisor!.diedMs, log).not.toBeNull();
    expect(k!.supervisor!.backMs, log).not.toBeNull();
    expect(k!.supervisor!.newPid).not.toBe(k!.pid);
    expect(log).toContain(`worker 0 (pid ${k!.pid}) died (SIGKILL)`);
    // ...and the killed worker's users lost their connections and got them back.
    expect(k!.ownedConnections).toBeGreaterThan(0);
    expect(k!.droppedOwned).toBe(k!.ownedConnections);
    expect(k!.reconnected).toBeGreaterThanOrEqual(k!.droppedOwned);
    expect(k!.stillDown).toBe(0);
    expect(k!.recovery.firstWelcomeMs).not.toBeNull();
    expect(existsSync(join(r.dir, 'summary.md'))).toBe(true);
  });

  it('refuses to signal a pid that is not a child of the supervisor', () => {
    // This test process is not a child of pid 1: refused, and nothing is signalled.
    expect(() => killWorker(1, [process.pid], 0)).toThrow(/not a child of the supervisor/);
    expect(() => killWorker(process.pid, [], 0)).toThrow(/no worker 0/);
  });

  it('reads the supervisor lines of the killed worker only', () => {
    const fired = { slot: 1, pid: 100, at: 1000, checked: '' };
    const t = supervisorTimes(
      [
        { t: 900, text: 'iris-onprem: worker 1 (pid 100) died (SIGKILL); restarting' }, // before the kill: ignored
        { t: 1010, text: 'iris-onprem: worker 0 (pid 99) died (SIGKILL); restarting' }, // another worker
        { t: 1020, text: 'iris-onprem: worker 1 (pid 100) died (SIGKILL); restarting' },
        { t: 1500, text: 'iris-onprem: worker 1 started (pid 200); waiting for every worker to route to it' },
        { t: 1510, text: 'iris-onprem: worker 1 is back (pid 200)' },
      ],
      fired,
    );
    expect(t).toMatchObject({ diedMs: 20, startedMs: 500, backMs: 510, newPid: 200 });
  });

  it('fails a run where nothing dropped, something was lost or duplicated, or the worker never came back', () => {
    const base = (): KillResult => ({
      slot: 0, pid: 1, checked: '', atMs: 0, actualAtMs: 0, killedAt: '', killedAtMs: 0, ownedConnections: 4, unaffectedSenders: 0,
      droppedOwned: 4, droppedOther: 0, reconnected: 4, stillDown: 0,
      atKill: { skewMs: 0, sent: 0, acked: 0, inFlight: 0, ackedNotDelivered: 0, delivered: 0 },
      recovery: { firstDropMs: 0, firstWelcomeMs: 0, allWelcomedMs: 0, firstDeliverMs: 0, firstAckMs: 0, resent: 0, queued: 0, failedAttempts: {}, staleEntries: 0 },
      supervisor: { diedMs: 1, startedMs: 2, backMs: 3, newPid: 2, lines: [] },
      throughput: { deliveredBefore: 0, ackedBefore: 0, deliveredAfter: 0, ackedAfter: 0, deliveredMin: 0, unaffectedBefore: 0, unaffectedMin: 0, unaffectedAfter: 0, secondsBefore: 0, secondsAfter: 0 },
      pass: false,
      failures: [],
    });
    const ok = base();
    judgeKill(ok, accounting());
    expect(ok.failures).toEqual([]);
    expect(ok.pass).toBe(true);
    const cases: [Partial<KillResult>, Partial<Accounting>, RegExp][] = [
      [{ droppedOwned: 0 }, {}, /was anything killed/],
      [{}, { lost: 1 }, /LOST/],
      [{}, { duplicated: 1 }, /more than once/],
      [{}, { unanswered: 2 }, /never answered/],
      [{ stillDown: 1 }, {}, /still down/],
      [{ supervisor: { diedMs: 1, startedMs: null, backMs: null, newPid: null, lines: [] } }, {}, /never logged worker 0 back/],
    ];
    for (const [k, a, re] of cases) {
      const r = { ...base(), ...k };
      judgeKill(r, accounting(a));
      expect(r.pass).toBe(false);
      expect(r.failures.join('; ')).toMatch(re);
    }
  });

  it('parses the kill time', () => {
    expect(parseDuration('x', '10s')).toBe(10_000);
    expect(parseDuration('x', '2.5')).toBe(2500);
    expect(parseDuration('x', '500ms')).toBe(500);
    expect(() => parseDuration('x', 'soon')).toThrow(/10s/);
  });
});
