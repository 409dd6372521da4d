import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { expect, it } from 'vitest';

/**
 * Smoke of scripts/bench/storage-engines.ts at tiny counts: it exits 0, every engine reports all rows present
 * after its writes, reads and trim, and every engine passes one SIGKILL crash check. Nothing here is timed.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const ENGINES = ['sqlite-core', 'sqlite-log', 'lmdb', 'lmdb-overlap', 'lmdb-sync', 'level'];

it('storage engine benchmark: every engine writes, verifies and survives a kill', async () => {
  const args = ['--import', 'tsx', join(ROOT, 'scripts/bench/storage-engines.ts'), '--messages', '2000', '--batch', '100', '--crash-iterations', '1'];
  const { code, out } = await new Promise<{ code: number | null; out: string }>((res) => {
    const child = spawn('sh', [join(ROOT, 'scripts/node.sh'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const guard = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.once('exit', (c) => {
      clearTimeout(guard);
      res({ code: c, out });
    });
  });
  expect(code, out).toBe(0);
  for (const engine of ENGINES) {
    expect(out, engine).toMatch(new RegExp(`^\\| ${engine} \\| 100 \\| .*\\| yes \\|$`, 'm'));
    expect(out, engine).toMatch(new RegExp(`^  ${engine} +ok `, 'm'));
  }
}, 60_000);
