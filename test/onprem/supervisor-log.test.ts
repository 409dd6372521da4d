import { describe, expect, it } from 'vitest';
import { removeDir, runToExit, startServer, tempDir, waitFor } from './helpers.js';
import { strayLines, supervisorLine, workerLine } from './log-lines.js';

/**
 * Every line the supervisor writes to stderr is the workers' JSON shape (core/log-line.ts: ts, level, msg,
 * profile, then optional fields, in that order), without `worker`, which marks it as the supervisor's: a
 * worker's death and return, the drain and the stop, and a start-up error. Log shippers then parse one
 * format for the whole server.
 */

const ORDER = ['ts', 'level', 'msg', 'profile', 'worker', 'user', 'shard', 'trace', 'error'];

function checkShape(line: string): void {
  const o = JSON.parse(line) as Record<string, unknown>;
  const keys = Object.keys(o);
  // The fixed order of logLine, absent fields left out.
  expect(keys, line).toEqual(ORDER.filter((k) => keys.includes(k)));
  expect(new Date(o['ts'] as string).toISOString(), line).toBe(o['ts']);
  expect(['info', 'warn', 'error'], line).toContain(o['level']);
  expect(o['profile'], line).toBe('onprem');
}

describe('the supervisor logs JSON lines of the workers’ shape', () => {
  it('restart of a killed worker, drain and stop: every stderr line is JSON, the supervisor’s without `worker`', { timeout: 60_000 }, async () => {
    // IRIS_LOG=warn (the test default) would hide the workers' info lines, not the supervisor's: they are
    // always written (few, and scripts/bench/kill.ts reads them).
    const { server, dataDir } = await startServer({ workers: 2 });
    try {
      const victim = server.workerPids[1]!;
      expect(victim).toBeGreaterThan(1);
      process.kill(victim, 'SIGKILL');
      await waitFor('the worker to be back', () => /worker 1 is back/.test(server.stderr), 30_000, 25);
    } finally {
      const r = await server.stop();
      expect(r.code).toBe(0);
      removeDir(dataDir);
    }
    const lines = server.stderr.split('\n').filter((l) => l !== '');
    expect(strayLines(lines)).toEqual([]);
    for (const l of lines) checkShape(l);
    const sup = lines.map(supervisorLine).filter((o) => o !== null);
    const msgs = sup.map((o) => `${String(o['level'])} ${String(o['msg'])}`);
    expect(msgs).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^error worker 1 \\(pid ${server.workerPids[1]}\\) died \\(SIGKILL\\); restarting$`)),
        expect.stringMatching(/^info worker 1 started \(pid \d+\); waiting for every worker to route to it$/),
        expect.stringMatching(/^info worker 1 is back \(pid \d+\)$/),
        'info SIGTERM: draining',
        'info stopped',
      ]),
    );
    for (const o of sup) expect(o).not.toHaveProperty('worker');
    for (const l of lines.filter((x) => workerLine(x) !== null)) expect(typeof JSON.parse(l).worker).toBe('number');
  });

  it('a start-up error is one JSON error line (a sentence for the operator, no stack)', async () => {
    const d = tempDir('iris-onprem-suplog-');
    try {
      const r = await runToExit(['--host', '127.0.0.1', '--port', '0', '--data-dir', d, '--inbox-cap', '-5']);
      expect(r.code).not.toBe(0);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(strayLines(lines)).toEqual([]);
      expect(lines).toHaveLength(1);
      checkShape(lines[0]!);
      expect(supervisorLine(lines[0]!)).toMatchObject({ level: 'error', msg: expect.stringContaining('IRIS_INBOX_CAP must be an integer ≥ 1, got "-5"') });
    } finally {
      removeDir(d);
    }
  });

  it('the development-mode banner is JSON warn lines too', { timeout: 60_000 }, async () => {
    const { server, dataDir } = await startServer({ workers: 1, env: { IRIS_JWT_SECRET: '', IRIS_DEV_MODE: '1' } });
    try {
      await server.stop();
    } finally {
      removeDir(dataDir);
    }
    const lines = server.stderr.split('\n').filter((l) => l !== '');
    expect(strayLines(lines)).toEqual([]);
    const banner = lines.map(supervisorLine).filter((o) => o !== null && String(o['msg']).startsWith('***'));
    expect(banner.length).toBe(2);
    for (const o of banner) expect(o!['level']).toBe('warn');
  });
});
