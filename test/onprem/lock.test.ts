import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, removeDir, runToExit, startServer, tempDir, TEST_ENV, waitFor, freePort, SERVER_MAIN } from './helpers.js';
import { supervisorText } from './log-lines.js';

/**
 * The data-directory lock is a kernel lock released at process death, not a guess from a pid: a pid that now
 * belongs to another process, or to a killed supervisor nobody has reaped yet, must not block a restart.
 */

const dirs: string[] = [];
const pids: number[] = [];
afterAll(() => {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  for (const d of dirs) removeDir(d);
});

function dir(): string {
  const d = tempDir('iris-onprem-lock-');
  dirs.push(d);
  return d;
}

function state(pid: number): string | null {
  try {
    // "pid (comm) S ...": the state letter follows the last ')'.
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

describe('data directory lock', () => {
  it('starts when the lock file names the pid of an unrelated live process', async () => {
    const d = dir();
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    pids.push(sleeper.pid!);
    writeFileSync(join(d, 'iris-onprem.lock'), `${sleeper.pid}\n`);
    const s = await startServer({ dataDir: d });
    try {
      expect(readFileSync(join(d, 'iris-onprem.lock'), 'utf8').trim()).toBe(String(s.server.pid));
    } finally {
      expect((await s.server.stop()).code).toBe(0);
    }
    sleeper.kill('SIGKILL');
  });

  it('starts at once after the previous supervisor was SIGKILLed and is still an unreaped zombie', async () => {
    const d = dir();
    const port = await freePort();
    const args = ['--host', '127.0.0.1', '--port', String(port), '--data-dir', d, '--workers', '2'];
    // The supervisor runs in the background of a shell that then becomes `sleep`, which never reaps it: after
    // SIGKILL it stays a zombie (its pid "alive" for kill(pid, 0)) for as long as the sleep lives.
    const parent = spawn('sh', ['-c', `sh "${join(ROOT, 'scripts/node.sh')}" "${SERVER_MAIN}" "$@" & exec sleep 60`, 'sh', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...TEST_ENV },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    pids.push(parent.pid!);
    let out = '';
    parent.stdout!.setEncoding('utf8').on('data', (x: string) => (out += x));
    parent.stderr!.setEncoding('utf8').on('data', (x: string) => (out += x));
    await waitFor('the first server to listen', () => /listening on/.test(out), 30_000);
    // Only real pids: an empty field would be 0, and kill(0) signals our whole process group.
    const workers = /pids ([\d,]+)/.exec(out)![1]!.split(',').filter((x) => /^\d+$/.test(x)).map(Number).filter((x) => x > 1);
    const supervisor = Number(readFileSync(join(d, 'iris-onprem.lock'), 'utf8').trim());
    expect(supervisor).toBeGreaterThan(1);
    for (const p of [supervisor, ...workers]) process.kill(p, 'SIGKILL');
    await waitFor('the supervisor to be a zombie', () => state(supervisor) === 'Z', 10_000, 10);

    const second = await startServer({ dataDir: d });
    try {
      expect(state(supervisor)).toBe('Z'); // still unreaped: the restart did not wait for it
      expect(readFileSync(join(d, 'iris-onprem.lock'), 'utf8').trim()).toBe(String(second.server.pid));
    } finally {
      expect((await second.server.stop()).code).toBe(0);
    }
    parent.kill('SIGKILL');
  });

  it('refuses a second server on the same directory with exit 1 and the holder pid', async () => {
    const d = dir();
    const first = await startServer({ dataDir: d });
    try {
      const r = await runToExit(['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', d, '--workers', '2']);
      expect(r.code).toBe(1);
      expect(supervisorText(r.stderr)).toMatch(new RegExp(`error: data directory .* is in use by another iris-onprem \\(pid ${first.server.pid}\\)`));
      // The refused server did not take the pid file over.
      expect(readFileSync(join(d, 'iris-onprem.lock'), 'utf8').trim()).toBe(String(first.server.pid));
    } finally {
      expect((await first.server.stop()).code).toBe(0);
    }
  });
});
