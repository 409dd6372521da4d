/**
 * The product build: `npm run build` (also run once by the test suite's global setup, test/build-dist.ts, and
 * before `npm run onprem`). Emits JavaScript and declarations for the product folders into dist/ with
 * tsconfig.build.json, after removing the old dist/: tsc never deletes outputs, and a module that was moved or
 * deleted in the source must not stay importable from dist/.
 */
import { spawnSync } from 'node:child_process';
import { realpathSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(import.meta.dirname, '..');
export const DIST = join(ROOT, 'dist');

/** Rebuilds dist/; throws with tsc's output when the build fails. */
export function buildDist(): void {
  rmSync(DIST, { recursive: true, force: true });
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`build failed (tsc exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
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
