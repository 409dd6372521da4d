import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, TEST_ENV, freePort, removeDir, tempDir, waitFor } from './helpers.js';
import { supervisorText } from './log-lines.js';

/**
 * `kill <npm pid>` (TERM, INT or HUP) of `npm run onprem` and `npm start` stops everything below npm: the
 * processes are spawned as a user would (npm run ...), their descendants recorded from /proc before the
 * signal, and after it every one of them must be gone and the port free.
 */

const dirs: string[] = [];
const leftovers = new Set<number>();
afterAll(() => {
  for (const p of leftovers) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  for (const d of dirs) removeDir(d);
});

function children(): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const s = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      const list = out.get(ppid) ?? [];
      list.push(Number(e));
      out.set(ppid, list);
    } catch {
      // Exited while we looked.
    }
  }
  return out;
}

function descendants(pid: number): number[] {
  const kids = children();
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of kids.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** Alive = exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen({ host: '127.0.0.1', port, exclusive: true }, () => s.close(() => res(true)));
  });
}

function npm(cwd: string, args: string[], env: Record<string, string>, ownGroup = false): { child: ChildProcess; out: () => string; exited: Promise<void> } {
  let out = '';
  // ownGroup: npm leads a process group of its own, like a job in a terminal.
  const child = spawn('npm', args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: ownGroup });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, out: () => out, exited };
}

async function stopsEverything(run: ReturnType<typeof npm>, port: number, sig: NodeJS.Signals): Promise<void> {
  const below = descendants(run.child.pid!);
  for (const p of below) leftovers.add(p);
  expect(below.length).toBeGreaterThanOrEqual(3); // at least: launcher, the program, one process of its own
  run.child.kill(sig);
  await run.exited;
  await waitFor(`every process below npm to exit after ${sig}`, () => below.every((p) => !alive(p)), 30_000, 50);
  for (const p of below) leftovers.delete(p);
  expect(await portFree(port)).toBe(true);
}

const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

describe('signals to npm reach everything below it', () => {
  for (const sig of SIGNALS) {
    it(`npm run onprem, ${sig}`, async () => {
      const data = tempDir('iris-onprem-sig-');
      dirs.push(data);
      const port = await freePort();
      const run = npm(ROOT, ['run', 'onprem', '--', '--host', '127.0.0.1', '--port', String(port), '--data-dir', data, '--workers', '2'], TEST_ENV);
      try {
        await waitFor('the server to be ready', () => /listening on/.test(run.out()), 60_000, 50);
        await stopsEverything(run, port, sig);
      } finally {
        run.child.kill('SIGKILL');
      }
    });
  }

  it('npm run onprem, Ctrl-C at a terminal (SIGINT to npm and everything in its process group): one clean drain', async () => {
    const data = tempDir('iris-onprem-sig-');
    dirs.push(data);
    const port = await freePort();
    const run = npm(ROOT, ['run', 'onprem', '--', '--host', '127.0.0.1', '--port', String(port), '--data-dir', data, '--workers', '2'], TEST_ENV, true);
    try {
      await waitFor('the server to be ready', () => /listening on/.test(run.out()), 60_000, 50);
      const below = descendants(run.child.pid!);
      for (const p of below) leftovers.add(p);
      // What a terminal does: the signal to the foreground process group (npm and the launcher; npm also
      // forwards it to the launcher).
      process.kill(-run.child.pid!, 'SIGINT');
      await run.exited;
      await waitFor('every process below npm to exit', () => below.every((p) => !alive(p)), 30_000, 50);
      for (const p of below) leftovers.delete(p);
      expect(run.out()).toMatch(/SIGINT: draining/);
      expect(run.out()).not.toMatch(/again: killing/);
      expect(supervisorText(run.out())).toMatch(/^info: stopped$/m);
      expect(await portFree(port)).toBe(true);
    } finally {
      run.child.kill('SIGKILL');
    }
  });

  for (const sig of SIGNALS) {
    it(`npm start (wrangler dev, workerd), ${sig}`, async () => {
      // The package's own start script, run by npm, with only the port moved to a free one (and a fresh
      // state dir): a copy of package.json next to links to everything else.
      const work = tempDir('iris-start-sig-');
      dirs.push(work);
      const cwd = join(work, 'app');
      mkdirSync(cwd);
      for (const e of readdirSync(ROOT)) if (e !== 'package.json' && e !== '.wrangler' && e !== '.git') symlinkSync(join(ROOT, e), join(cwd, e));
      const port = await freePort();
      const inspector = await freePort();
      const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
      const start = pkg.scripts['start']!;
      expect(start).toContain('--port 8787');
      pkg.scripts['start'] = `${start.replace('--port 8787', `--port ${port}`)} --inspector-port ${inspector} --persist-to ${join(work, 'state')}`;
      writeFileSync(join(cwd, 'package.json'), JSON.stringify(pkg, null, 2));
      const run = npm(cwd, ['start'], { WRANGLER_SEND_METRICS: 'false', CI: 'true' });
      try {
        await waitFor(
          'wrangler dev to answer',
          async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)),
          90_000,
          100,
        );
        await stopsEverything(run, port, sig);
      } finally {
        run.child.kill('SIGKILL');
      }
    });
  }
});
