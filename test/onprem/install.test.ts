import { execFile } from 'node:child_process';
import { cpSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NPM_CLEAN, ROOT, TEST_ENV, freePort, packInto, removeDir, tempDir, waitFor } from './helpers.js';
import { spawn } from 'node:child_process';

/**
 * The install commands the docs give (OPERATIONS.md: `npm ci` on a fresh copy of the repository, and
 * `npm ci --omit=dev` on the shipped package for production) work, and the production install runs the on-prem
 * server from the built JavaScript, without tsx or TypeScript installed. It uses the npm cache, so it costs
 * seconds; it needs the registry only for what the cache lacks.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

/** Top-level entries that are not part of a fresh clone. */
const NOT_CHECKOUT = new Set(['node_modules', '.git', '.wrangler', '.iris', 'data', 'dist', 'coverage', 'bench-results', 'tmp']);

function run(cwd: string, cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? ((e as { code: number }).code) : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

function freshCopy(): string {
  const work = tempDir('iris-install-');
  dirs.push(work);
  const dest = join(work, 'iris');
  cpSync(ROOT, dest, {
    recursive: true,
    filter: (src) => {
      const top = relative(ROOT, src).split('/')[0] ?? '';
      return !NOT_CHECKOUT.has(top);
    },
  });
  return dest;
}

describe('documented install commands', () => {
  it('npm ci accepts the lock file (every platform of every optional dependency is in it)', async () => {
    const dir = freshCopy();
    const r = await run(dir, 'npm', ['ci', '--dry-run', '--prefer-offline'], NPM_CLEAN);
    expect(r.out).not.toMatch(/npm error/);
    expect(r.code).toBe(0);
  }, 180_000);

  it('the shipped package, installed with npm ci --omit=dev, runs the on-prem server without TypeScript tools', async () => {
    // What an operator gets: the packed package (built JavaScript, bin/, the Node launcher) plus the lock file.
    const work = tempDir('iris-install-');
    dirs.push(work);
    const dir = join(work, 'iris');
    await packInto(dir);
    cpSync(join(ROOT, 'package-lock.json'), join(dir, 'package-lock.json'));
    expect(existsSync(join(dir, 'onprem'))).toBe(false); // no TypeScript source shipped
    const r = await run(dir, 'npm', ['ci', '--omit=dev', '--prefer-offline'], NPM_CLEAN);
    expect(r.out).not.toMatch(/npm error/);
    expect(r.code).toBe(0);
    // Really the production set: neither the dev tools nor a TypeScript loader.
    for (const dev of ['wrangler', 'tsx', 'typescript']) expect(existsSync(join(dir, 'node_modules', dev))).toBe(false);
    const data = tempDir('iris-install-data-');
    dirs.push(data);
    const port = await freePort();
    let out = '';
    const server = spawn(join(dir, 'bin/iris-onprem'), ['--host', '127.0.0.1', '--port', String(port), '--data-dir', data, '--workers', '1'], {
      cwd: data,
      env: { ...process.env, ...NPM_CLEAN, ...TEST_ENV },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    server.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => server.once('exit', (code) => r(code)));
    try {
      await waitFor('the server from the production install to be ready', () => /ready: listening on/.test(out) || server.exitCode !== null, 60_000, 50);
      expect(out).toMatch(/ready: listening on/);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    } finally {
      server.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  }, 180_000);
});
