/**
 * The product build: `npm run build` (also run once by the test suite's global setup, test/build-dist.ts, and
 * before `npm run onprem`). Emits JavaScript and declarations for the product folders with
 * tsconfig.build.json into a fresh directory, then puts it in place of dist/: tsc never deletes outputs (a
 * module moved or deleted in the source must not stay importable from dist/), and a server already running
 * from dist/ (which forks workers from it on a restart) sees the old tree or the new one, not a half-written one.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(import.meta.dirname, '..');
export const DIST = join(ROOT, 'dist');

/** Rebuilds dist/; throws with tsc's output when the build fails. */
export function buildDist(): void {
  const next = `${DIST}.new-${process.pid}`;
  const old = `${DIST}.old-${process.pid}`;
  rmSync(next, { recursive: true, force: true });
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', next], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(next, { recursive: true, force: true });
    throw new Error(`build failed (tsc exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
  }
  // Two renames: a directory cannot replace a non-empty one in one step.
  if (existsSync(DIST)) renameSync(DIST, old);
  renameSync(next, DIST);
  rmSync(old, { recursive: true, force: true });
}

function isMain(): boolean {
  const arg = process.argv[1];
  return arg !== undefined && realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
}

if (isMain()) {
  try {
    buildDist();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
