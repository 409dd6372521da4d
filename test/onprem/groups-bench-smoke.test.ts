import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DESIGNS, parseOptions, type Report } from '../../scripts/bench/groups.js';
import { runScript } from './helpers.js';

/**
 * Smoke of scripts/bench/groups.ts at tiny counts: every design, one small group. Asserts the script's own
 * accounting against what the test works out from the parameters alone (every device of every member gets every
 * entry of its membership range, the offline members catch up on all of theirs) and the shape of the costs that
 * the design decision rests on (fan-out on write calls and writes per member, fan-out on read does not). Nothing
 * here is timed.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

it('groups benchmark: every design delivers each entry once per device and counts what it writes', { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'iris-groups-smoke-'));
  dirs.push(dir);
  const json = join(dir, 'groups.json');
  const M = 8;
  const N = 40;
  const DEVICES = 2;
  const r = await runScript('scripts/bench/groups.ts', ['--members', String(M), '--messages', String(N), '--devices', String(DEVICES), '--workers', '3', '--json', json], 80_000);
  expect(r.code, r.out).toBe(0);
  const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
  expect(report.failures, r.out).toEqual([]);
  expect(report.runs.map((x) => x.design).sort()).toEqual([...DESIGNS].sort());

  // The log holds N messages plus one removal and one joining (halfway). The removed member sees the log up to and
  // including its removal, the new one from its joining on; together they cover the log once, so every device
  // slot of the M initial places sees N + 2 entries.
  const expected = DEVICES * M * (N + 2);
  // Online: the first max(3, 25%) members; the rest are offline for the whole run and catch up at the end.
  const offline = M - Math.max(3, Math.round(M * 0.25));
  const byDesign = new Map(report.runs.map((x) => [x.design, x]));
  for (const run of report.runs) {
    expect(run.messages, run.design).toBe(N);
    expect(run.cut, run.design).toBe(false);
    expect(run.verify, run.design).toEqual({ devices: DEVICES * (M + 1), expected, delivered: expected, lost: 0, duplicated: 0, outside: 0, order: 0 });
    expect(run.catchup.members, run.design).toBe(offline);
    expect(run.catchup.entries, run.design).toBe(offline * DEVICES * (N + 2));
    // The group shard writes at least the entry and its dedup record per message, and deletes the entry again.
    expect(run.rowsGroup, run.design).toBeGreaterThanOrEqual(3);
  }
  const a = byDesign.get('A')!;
  const b = byDesign.get('B')!;
  const c = byDesign.get('C')!;
  const pull = byDesign.get('B-pull')!;
  // Fan-out on write: one call per member shard per message (burst 1), one inbox row in and out per member.
  expect(a.rpcCf).toBeGreaterThanOrEqual(M);
  expect(a.rowsMembers).toBeGreaterThanOrEqual(2 * (M - 1));
  expect(c.rowsMembers).toBe(a.rowsMembers); // a pointer is still a row
  // Fan-out on read: calls only to online members' shards, no row per member per message.
  expect(b.rpcCf).toBeLessThan(a.rpcCf);
  expect(b.rowsMembers).toBeLessThan(M);
  expect(pull.rpcCf).toBeGreaterThan(b.rpcCf); // the pull is a second call
  expect(b.dollarsPerM).toBeLessThan(a.dollarsPerM);
});

it('groups benchmark refuses unbounded or meaningless shapes', () => {
  expect(() => parseOptions(['--members', '3'])).toThrow(/members/);
  expect(() => parseOptions(['--messages', '1000000'])).toThrow(/messages/);
  expect(() => parseOptions(['--online', '0'])).toThrow(/online/);
  expect(() => parseOptions(['--designs', 'A,Z'])).toThrow(/unknown design Z/);
  expect(parseOptions([]).members).toEqual([16, 256, 1024]);
});
