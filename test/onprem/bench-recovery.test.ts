import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Device, FNV0, foldId, parseOptions, type OnpremRecovery } from '../../scripts/bench/recovery.js';
import type { Entry } from '../../protocol/index.js';
import { runScript } from './helpers.js';

/**
 * The recovery benchmark (scripts/bench/recovery.ts) with tiny counts: 2,000 undelivered messages seeded into a
 * 2-worker data dir, the real server started on it, worker 0 SIGKILLed while its users hold connections, then
 * every recipient drained. Asserts the accounting (every seeded message and both fresh sends delivered exactly
 * once, in order) and that something really was killed and came back. No assertion is about how fast.
 */

const dirs: string[] = [];

async function runRecovery(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string; json: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'iris-bench-recovery-'));
  dirs.push(dir);
  const json = join(dir, 'result.json');
  return { ...(await runScript('scripts/bench/recovery.ts', [...args, '--json', json], timeoutMs)), json };
}

/** An on-prem run that must pass: the script exited 0 and its own accounting found nothing wrong. */
async function onpremRun(args: string[]): Promise<{ r: { out: string }; res: OnpremRecovery }> {
  const r = await runRecovery(args, 110_000);
  expect(r.code, r.out).toBe(0);
  const res = (JSON.parse(readFileSync(r.json, 'utf8')) as { onprem: OnpremRecovery }).onprem;
  expect(res.pass, res.failures.join('; ')).toBe(true);
  return { r, res };
}

function entry(seq: number, msg: string, kind: Entry['kind'] = 'message'): Entry {
  return { seq, kind, msg, peer: msg.split(':')[0]!, ts: 0, body: new Uint8Array(0) };
}

describe('bench recovery', () => {
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('kills a worker over a seeded backlog and delivers every message exactly once afterwards', { timeout: 120_000 }, async () => {
    const { r, res } = await onpremRun(
      ['--target', 'onprem', '--messages', '2000', '--recipients', '4', '--senders', '10', '--conversations', '3', '--connect', '2', '--timeout-s', '90', '--quiet'],
    );
    expect(res.seed.messages).toBe(2000);
    // u0 and u2 hash to worker 0 of 2, u1 and u3 to worker 1: the kill hits half the store.
    expect(res.seed.perWorkerMessages).toEqual([1000, 1000]);
    expect(res.verify).toMatchObject({ recipients: 4, expected: 2000, delivered: 2000, fresh: 2, freshExpected: 2, lost: 0, duplicated: 0, gaps: 0, fifoViolations: 0, hashMismatches: 0 });
    // Something was killed and came back: its users were refused while it was down and welcomed again.
    expect(res.kill.supervisor.diedMs, r.out).not.toBeNull();
    expect(res.kill.supervisor.backMs, r.out).not.toBeNull();
    expect(res.kill.supervisor.newPid).not.toBe(res.kill.pid);
    expect(res.kill.checked).toContain('(the supervisor)');
    expect(res.kill.connected).toBe(2);
    expect(res.kill.firstWelcomeMs).not.toBeNull();
    expect(res.kill.allWelcomedMs).not.toBeNull();
    expect(res.kill.freshAckAffectedMs).not.toBeNull();
    expect(res.kill.freshAckSurvivorMs).not.toBeNull();
  });

  it('with IRIS_STANDBY_WORKER=1 the loaded spare replaces the killed worker, and nothing is lost', { timeout: 120_000 }, async () => {
    const { r, res } = await onpremRun(
      ['--target', 'onprem', '--messages', '2000', '--recipients', '4', '--senders', '10', '--connect', '2', '--standby', '--timeout-s', '90', '--quiet'],
    );
    expect(res.verify).toMatchObject({ expected: 2000, delivered: 2000, fresh: 2, lost: 0, duplicated: 0, gaps: 0, fifoViolations: 0, hashMismatches: 0 });
    // The replacement is the process that was waiting before the kill, not a new fork.
    expect(res.kill.standbyPid).not.toBeNull();
    expect(res.kill.supervisor.newPid).toBe(res.kill.standbyPid);
    expect(res.kill.supervisor.backMs, r.out).not.toBeNull();
  });

  it('forwards a backlog left in the senders\' outboxes at start, each message exactly once', { timeout: 120_000 }, async () => {
    const { res } = await onpremRun(
      ['--target', 'onprem', '--messages', '2000', '--recipients', '4', '--senders', '10', '--connect', '2', '--pending', '1200', '--timeout-s', '90', '--quiet'],
    );
    expect(res.seed.pending).toBe(1200);
    expect(res.cold.pendingLandedMs).not.toBeNull();
    // 800 in the inboxes, 1,200 forwarded at start plus the two fresh sends.
    expect(res.verify).toMatchObject({ expected: 800, delivered: 800, fresh: 1202, freshExpected: 1202, lost: 0, duplicated: 0, gaps: 0, fifoViolations: 0, hashMismatches: 0 });
    expect(res.kill.heldOpen).toEqual([]);
  });

  it('the device check counts gaps, repeats, order violations and a wrong fingerprint', () => {
    const ok = new Device('u', 3, 'token');
    let h = FNV0;
    for (const m of ['a:1', 'b:1', 'a:2']) h = foldId(h, m);
    ok.take(entry(1, 'a:1'));
    ok.take(entry(2, 'b:1'));
    ok.take(entry(2, 'b:1')); // a resumed stream may repeat: dropped by the cursor
    ok.take(entry(3, 'a:2'));
    ok.take(entry(4, 'a:1', 'delivered'));
    ok.take(entry(5, 'c:9'));
    expect({ messages: ok.messages, repeated: ok.repeated, gaps: ok.gaps, fifo: ok.fifo, receipts: ok.receipts, fresh: ok.fresh }).toEqual({
      messages: 4, repeated: 1, gaps: 0, fifo: 0, receipts: 1, fresh: ['c:9'],
    });
    expect(ok.hash).toBe(h);

    const bad = new Device('u', 3, 'token');
    bad.take(entry(1, 'a:2'));
    bad.take(entry(3, 'a:1')); // seq 2 missing, and a's numbers went backwards
    expect(bad.gaps).toBe(1);
    expect(bad.fifo).toBe(1);
    expect(bad.hash).not.toBe(h);
  });

  it('refuses a shape whose inboxes would be over the cap', () => {
    expect(() => parseOptions(['--messages', '100000', '--recipients', '10'])).toThrow(/inbox cap/);
    expect(parseOptions(['--messages', '100000', '--recipients', '10', '--inbox-cap', '20000']).inboxCap).toBe(20000);
  });
});
