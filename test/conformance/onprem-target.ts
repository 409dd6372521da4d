import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mintToken } from '../../scripts/token.js';
import { ADMIN_SECRET, waitHealthy } from './helpers.js';
import type { Target } from './suite.js';
import { freePort } from '../../scripts/lib/net.js';
import { SERVER_MAIN } from '../../scripts/lib/server.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SECRET = 'iris-conformance-onprem-secret';

export interface OnpremOptions {
  /** Worker processes (default 2, so users of one test land on different workers). */
  workers?: number;
  /** Extra IRIS_* settings. */
  env?: Record<string, string>;
}


/**
 * Starts the on-prem server (built, dist/onprem/main.js: the supervisor and its worker processes) on a free loopback port
 * with a temporary data directory and raised per-user limits. restart() drains it with SIGTERM and starts it
 * again on the same port and data; stop() stops it and deletes the data. Only the supervisor is signalled (by
 * pid): its workers drain and exit with it.
 */
export async function startOnprem(opts: OnpremOptions = {}): Promise<Target> {
  const dataDir = mkdtempSync(join(tmpdir(), 'iris-conformance-onprem-'));
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}/v1/connect`;
  const env: Record<string, string> = {
    IRIS_JWT_SECRET: SECRET,
    IRIS_DEV_MODE: '0',
    IRIS_RATE_PER_SEC: '5000',
    IRIS_RATE_BURST: '5000',
    IRIS_CONNECT_RATE: '100000',
    IRIS_RETRY_BASE_MS: '50',
    IRIS_RETRY_MAX_MS: '1000',
    IRIS_LOG: 'warn',
    // Presence: as in wrangler-target.ts.
    IRIS_PRESENCE_HOLD_MS: '1500',
    IRIS_PRESENCE_SUBSCRIPTIONS: '50',
    IRIS_HISTORY_DEPTH: '20',
    // The admin API (test/conformance/features/trust.ts), and a short expiry grace so the expiry close is seen soon.
    IRIS_ADMIN_SECRET: ADMIN_SECRET,
    IRIS_TOKEN_EXPIRY_GRACE_S: '1',
    // On-prem checks token expiry on the heartbeat pass: a short period bounds the expiry close for the test.
    IRIS_WS_PING_MS: '3000',
    ...opts.env,
  };
  let child: ChildProcess | null = null;
  let log = '';

  const start = async (): Promise<void> => {
    log = '';
    const c = spawn(
      process.execPath,
      [SERVER_MAIN, '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, '--workers', String(opts.workers ?? 2)],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
    );
    child = c;
    const keep = (b: Buffer) => {
      log = (log + b.toString()).slice(-20_000);
    };
    c.stdout?.on('data', keep);
    c.stderr?.on('data', keep);
    let exited: string | null = null;
    c.on('exit', (code, sig) => {
      exited = `iris-onprem exited early (${code ?? sig}):\n${log}`;
    });
    try {
      await waitHealthy(url, 60_000, () => exited);
      // /healthz answers as soon as one worker listens; the suite needs all of them.
      const ready = new URL(`http://127.0.0.1:${port}/readyz`);
      const end = Date.now() + 30_000;
      while (!(await fetch(ready).then((r) => r.ok, () => false))) {
        if (exited) throw new Error(exited);
        if (Date.now() > end) throw new Error('iris-onprem not ready after 30 s');
        await new Promise((r) => setTimeout(r, 50));
      }
    } catch (e) {
      await stopProcess();
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n--- iris-onprem output ---\n${log}`);
    }
  };

  const stopProcess = async (): Promise<void> => {
    const c = child;
    child = null;
    if (!c?.pid || c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    await done;
    clearTimeout(timer);
  };

  await start();
  return {
    url,
    presenceCap: Number(env['IRIS_PRESENCE_SUBSCRIPTIONS']),
    historyDepth: Number(env['IRIS_HISTORY_DEPTH']),
    adminToken: env['IRIS_ADMIN_SECRET'],
    tokenExpiryGraceS: Number(env['IRIS_TOKEN_EXPIRY_GRACE_S']),
    token: (user, o) => mintToken(user, { ...o, ttl: o?.expiresIn ?? '1h', secret: SECRET }),
    restart: async () => {
      await stopProcess();
      await start();
    },
    stop: async () => {
      await stopProcess();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
