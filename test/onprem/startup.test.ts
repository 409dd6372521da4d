import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, removeDir, runToExit, startServer, tempDir } from './helpers.js';
import { supervisorText } from './log-lines.js';

/** Start-up failures: a clear message on stderr, a non-zero exit, and nothing left running or listening. */

const dirs: string[] = [];
function dir(): string {
  const d = tempDir('iris-onprem-start-');
  dirs.push(d);
  return d;
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen({ host: '127.0.0.1', port, exclusive: true }, () => s.close(() => res(true)));
  });
}

function args(dataDir: string, port: number, ...more: string[]): string[] {
  return ['--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, '--workers', '2', ...more];
}

afterAll(() => {
  for (const d of dirs) removeDir(d);
});

describe('start-up errors', () => {
  it('refuses a data directory that cannot be created (its parent is a file)', async () => {
    const base = dir();
    writeFileSync(join(base, 'file'), 'not a directory');
    const port = await freePort();
    const r = await runToExit(args(join(base, 'file', 'data'), port));
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toMatch(/error: data directory .*file\/data cannot be created: ENOTDIR/);
    expect(r.stdout).not.toMatch(/listening/);
    expect(await portIsFree(port)).toBe(true);
  });

  it('refuses a data directory it may not write to', async () => {
    const base = dir();
    const d = join(base, 'data');
    mkdirSync(d);
    // The server runs as us, from wherever the checkout is. Root writes through any mode bits, so as root
    // the directory becomes a read-only bind mount of itself (binds root too); otherwise mode 0555 does it.
    const root = process.getuid?.() === 0;
    if (root) {
      execFileSync('mount', ['--bind', d, d]);
      execFileSync('mount', ['-o', 'remount,ro,bind', d]);
    } else chmodSync(d, 0o555);
    try {
      const port = await freePort();
      const r = await runToExit(args(d, port));
      expect(r.code).toBe(1);
      expect(supervisorText(r.stderr)).toMatch(/error: data directory .*\/data is not writable: (EACCES|EROFS)/);
      expect(r.stdout).not.toMatch(/listening/);
      expect(await portIsFree(port)).toBe(true);
    } finally {
      if (root) execFileSync('umount', [d]);
      else chmodSync(d, 0o755);
    }
  });

  it('refuses a data directory that is a file', async () => {
    const base = dir();
    const f = join(base, 'data');
    writeFileSync(f, 'x');
    const r = await runToExit(args(f, await freePort()));
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toMatch(/error: data directory .* (cannot be created|is not a directory)/);
  });

  it('stops everything when one worker cannot open its database', async () => {
    const d = dir();
    mkdirSync(join(d, 'worker-1.sqlite')); // a directory where the SQLite file should be
    const port = await freePort();
    const r = await runToExit(args(d, port));
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toMatch(/error: worker 1: cannot open .*worker-1\.sqlite/);
    expect(r.stdout).not.toMatch(/listening/);
    // Worker 0 had started: it was stopped, and nothing listens on the port.
    expect(await portIsFree(port)).toBe(true);
  });

  it('refuses a port that is in use', async () => {
    const port = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((res) => blocker.listen({ host: '127.0.0.1', port }, () => res()));
    try {
      const r = await runToExit(args(dir(), port));
      expect(r.code).toBe(1);
      expect(supervisorText(r.stderr)).toContain(`error: port ${port} on 127.0.0.1 is already in use`);
      expect(r.stdout).not.toMatch(/listening/);
    } finally {
      await new Promise((res) => blocker.close(res));
    }
  });

  it('refuses a port held by another Iris (SO_REUSEPORT would silently share it)', async () => {
    const first = await startServer({ dataDir: dir() });
    try {
      const r = await runToExit(args(dir(), first.port));
      expect(r.code).toBe(1);
      expect(supervisorText(r.stderr)).toContain(`port ${first.port} on 127.0.0.1 is already in use`);
    } finally {
      expect((await first.server.stop()).code).toBe(0);
    }
  });

  it('refuses a data directory another server is using, and a changed worker count', async () => {
    const d = dir();
    const first = await startServer({ dataDir: d });
    try {
      const r = await runToExit(args(d, await freePort()));
      expect(r.code).toBe(1);
      expect(supervisorText(r.stderr)).toMatch(new RegExp(`data directory .* is in use by another iris-onprem \\(pid ${first.server.pid}\\)`));
    } finally {
      expect((await first.server.stop()).code).toBe(0);
    }
    const r = await runToExit(['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', d, '--workers', '3']);
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toMatch(/was created with 2 workers; it cannot run with 3/);
  });

  it('refuses bad settings before starting anything', async () => {
    const d = dir();
    let r = await runToExit(args(d, await freePort(), '--no-such-option', '1'));
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toContain('unknown option --no-such-option');
    r = await runToExit(args(d, await freePort()), { IRIS_JWT_SECRET: '', IRIS_DEV_MODE: '0' });
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toContain('no JWT key configured');
    r = await runToExit(args(d, await freePort()), { IRIS_INBOX_CAP: '-5' });
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toContain('IRIS_INBOX_CAP must be an integer ≥ 1, got "-5"');
    r = await runToExit(args(d, await freePort(), '--tls-cert', join(d, 'missing.pem')));
    expect(r.code).toBe(1);
    expect(supervisorText(r.stderr)).toContain('TLS needs both');
  });
});
