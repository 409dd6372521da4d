/**
 * The product build: `npm run build` (also run once by the test suite's global setup, test/build-dist.ts).
 * Emits JavaScript and declarations for the product folders with tsconfig.build.json into a fresh directory,
 * then puts it in place of dist/: tsc never deletes outputs (a module moved or deleted in the source must not
 * stay importable from dist/), and a server already running from dist/ (which forks workers from it on a
 * restart) sees the old tree or the new one, not a half-written one.
 *
 * `--if-stale` (npm run onprem, npm run bench) builds only when a product source, a tsconfig or a product folder
 * (a file added or removed) changed since the last build: the test suite starts `npm run onprem` while other
 * tests run servers from dist/, and replacing dist/ under them for nothing is a window where it does not exist.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isMain } from './lib/main.js';
import { buildWebchat } from './webchat-build.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const DIST = join(ROOT, 'dist');
/** What tsconfig.build.json compiles. */
const PRODUCT = ['protocol', 'core', 'auth', 'client', 'onprem', 'gateway', 'workers', 'durable-objects', 'cluster'];
/** Written last into a finished build: its mtime is when the build's sources were read (at the latest). */
const STAMP = '.built';

/** Rebuilds dist/; throws with tsc's output when the build fails. */
export function buildDist(): void {
  const next = `${DIST}.new-${process.pid}`;
  const old = `${DIST}.old-${process.pid}`;
  rmSync(next, { recursive: true, force: true });
  const started = new Date();
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', next], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(next, { recursive: true, force: true });
    throw new Error(`build failed (tsc exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
  }
  // Stamped with the start time: a source saved while tsc ran makes the next --if-stale build again.
  const stamp = join(next, STAMP);
  writeFileSync(stamp, `${started.toISOString()}\n`);
  utimesSync(stamp, started, started);
  // Two renames: a directory cannot replace a non-empty one in one step.
  if (existsSync(DIST)) renameSync(DIST, old);
  renameSync(next, DIST);
  rmSync(old, { recursive: true, force: true });
  // The web chat's bundle (public/chat.js), which the servers serve at / (README "Web chat").
  buildWebchat();
}

/** Newest mtime (ms) of the product sources, their folders and the tsconfigs. */
function newestSource(): number {
  let newest = 0;
  const see = (p: string) => {
    const st = statSync(p);
    newest = Math.max(newest, st.mtimeMs);
    if (st.isDirectory()) for (const e of readdirSync(p)) see(join(p, e));
  };
  for (const dir of PRODUCT) see(join(ROOT, dir));
  for (const f of ['tsconfig.json', 'tsconfig.build.json']) see(join(ROOT, f));
  return newest;
}

/** Whether dist/ is missing or older than a product source. */
export function distIsStale(): boolean {
  const stamp = join(DIST, STAMP);
  if (!existsSync(stamp)) return true;
  return newestSource() > statSync(stamp).mtimeMs;
}

if (isMain(import.meta.url)) {
  try {
    if (!process.argv.includes('--if-stale') || distIsStale()) buildDist();
    else buildWebchat();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
