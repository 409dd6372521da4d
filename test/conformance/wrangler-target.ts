import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEV_SECRET } from '../../auth/config.js';
import { mintToken } from '../../scripts/token.js';
import { ADMIN_SECRET, waitHealthy } from './helpers.js';
import type { Target } from './suite.js';
import { freePort } from '../../scripts/lib/net.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Top-level entries that are not part of the Worker's source. */
const NOT_SOURCE = new Set(['node_modules', '.git', '.wrangler', '.dev.vars', '.iris', 'test', 'docs', 'client', 'scripts', 'dist', 'coverage', 'bench-results', 'data', 'tmp']);

export interface WranglerOptions {
  /** Extra --var settings. The defaults raise the per-user send rate so the suite is not throttled. */
  vars?: Record<string, string>;
  /**
   * Run from a snapshot of the source taken at start (default true). `wrangler dev` rebuilds and restarts on
   * every change of a file it bundled, which drops every socket; a snapshot keeps a run stable while people
   * keep editing the checkout.
   */
  snapshot?: boolean;
}


function snapshotSource(into: string): string {
  const dir = join(into, 'src');
  mkdirSync(dir, { recursive: true });
  for (const e of readdirSync(ROOT)) {
    if (NOT_SOURCE.has(e) || e.startsWith('.iris')) continue;
    cpSync(join(ROOT, e), join(dir, e), { recursive: true });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `wrangler dev` on a free loopback port with fresh local state (a temp --persist-to dir), in its own
 * process group (wrangler spawns workerd children), and waits for /healthz. restart() stops the whole group
 * and starts again on the same port and state; stop() stops it and deletes the state.
 */
export async function startWrangler(opts: WranglerOptions = {}): Promise<Target> {
  const work = mkdtempSync(join(tmpdir(), 'iris-conformance-'));
  const persist = join(work, 'state');
  const cwd = opts.snapshot === false ? ROOT : snapshotSource(work);
  const port = await freePort();
  const vars: Record<string, string> = {
    IRIS_DEV_MODE: '1',
    IRIS_JWT_SECRET: DEV_SECRET,
    IRIS_RATE_PER_SEC: '5000',
    IRIS_RATE_BURST: '5000',
    // A local run: CF-Connecting-IP is whatever the client sent (workers/edge.ts connectKey).
    IRIS_TRUST_CF_CONNECTING_IP: '0',
    // Presence: a hold short enough for tests, long enough that a reconnect on loopback falls inside it; a cap
    // the suite can exceed cheaply.
    IRIS_PRESENCE_HOLD_MS: '1500',
    IRIS_PRESENCE_SUBSCRIPTIONS: '50',
    IRIS_HISTORY_DEPTH: '20',
    // The admin API (test/conformance/features/trust.ts), and a short expiry grace so the expiry close is seen soon.
    IRIS_ADMIN_SECRET: ADMIN_SECRET,
    IRIS_TOKEN_EXPIRY_GRACE_S: '1',
    ...opts.vars,
  };
  const url = `ws://127.0.0.1:${port}/v1/connect`;
  let child: ChildProcess | null = null;
  let cleanup: (() => void) | null = null;
  let log = '';

  const start = async (): Promise<void> => {
    const inspector = await freePort();
    const args = [
      join(ROOT, 'node_modules/wrangler/bin/wrangler.js'),
      'dev',
      '--ip', '127.0.0.1',
      '--port', String(port),
      '--inspector-port', String(inspector),
      '--persist-to', persist,
      '--show-interactive-dev-session=false',
      ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    ];
    log = '';
    const c = spawn(process.execPath, args, {
      cwd,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: 'false',
        // wrangler and workerd children find the same Node first.
        PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
        NO_COLOR: '1',
      },
    });
    child = c;
    // If this test process dies without stop(), take the server down with it.
    const pid = c.pid;
    if (pid !== undefined) {
      cleanup = () => {
        if (groupAlive(pid)) process.kill(-pid, 'SIGKILL');
      };
      process.once('exit', cleanup);
    }
    const keep = (b: Buffer) => {
      log = (log + b.toString()).slice(-20_000);
    };
    c.stdout?.on('data', keep);
    c.stderr?.on('data', keep);
    let exited: string | null = null;
    c.on('exit', (code, sig) => {
      exited = `wrangler dev exited early (${code ?? sig}):\n${log}`;
    });
    try {
      await waitHealthy(url, 60_000, () => exited);
    } catch (e) {
      await stopProcess();
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n--- wrangler output ---\n${log}`);
    }
  };

  const stopProcess = async (): Promise<void> => {
    const c = child;
    child = null;
    if (!c?.pid) return;
    const pid = c.pid;
    if (groupAlive(pid)) process.kill(-pid, 'SIGTERM');
    const end = Date.now() + 5_000;
    while (groupAlive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    if (groupAlive(pid)) {
      process.kill(-pid, 'SIGKILL');
      while (groupAlive(pid)) await new Promise((r) => setTimeout(r, 20));
    }
    if (cleanup) process.off('exit', cleanup);
    cleanup = null;
  };

  try {
    await start();
  } catch (e) {
    rmSync(work, { recursive: true, force: true });
    throw e;
  }
  return {
    url,
    presenceCap: Number(vars['IRIS_PRESENCE_SUBSCRIPTIONS']),
    historyDepth: Number(vars['IRIS_HISTORY_DEPTH']),
    adminToken: vars['IRIS_ADMIN_SECRET'],
    tokenExpiryGraceS: Number(vars['IRIS_TOKEN_EXPIRY_GRACE_S']),
    token: (user, o) => mintToken(user, { ...o, ttl: o?.expiresIn ?? '1h', secret: vars['IRIS_JWT_SECRET'] ?? DEV_SECRET }),
    restart: async () => {
      await stopProcess();
      await start();
    },
    stop: async () => {
      await stopProcess();
      rmSync(work, { recursive: true, force: true });
    },
  };
}
