import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { IrisClient } from '../../client/index.js';
import { ownerOf } from '../../onprem/owner.js';
import { SUBPROTOCOL, decodeFrame, encodeFrame, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import { freePort } from '../../scripts/lib/net.js';
import { SERVER_MAIN } from '../../scripts/lib/server.js';

/**
 * Test harness for the on-prem server: starts the real CLI as production runs it, built (dist/onprem/main.js,
 * which the suite's global setup test/build-dist.ts builds), with its worker processes, on a free loopback port
 * with a temporary data directory, and stops exactly the processes it started, by pid.
 */

export { freePort, SERVER_MAIN };

export const ROOT = resolve(import.meta.dirname, '../..');
export const SECRET = 'onprem-test-secret';


export function tempDir(prefix = 'iris-onprem-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface RunOptions {
  args?: string[];
  env?: Record<string, string>;
  /** How long to wait for the listening line (or an exit). */
  timeoutMs?: number;
}

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Default engine settings for tests: fast retries, generous limits. */
export const TEST_ENV: Record<string, string> = {
  IRIS_JWT_SECRET: SECRET,
  IRIS_RETRY_BASE_MS: '50',
  IRIS_RETRY_MAX_MS: '500',
  IRIS_RATE_PER_SEC: '5000',
  IRIS_RATE_BURST: '5000',
  IRIS_CONNECT_RATE: '100000',
  IRIS_MAX_DEVICES: '64',
  IRIS_LOG: 'warn',
};

export class ServerProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  port = 0;
  workerPids: number[] = [];
  readonly exited: Promise<Exited>;

  constructor(args: string[], env: Record<string, string>, as: { uid?: number; gid?: number } = {}) {
    this.child = spawn('sh', [join(ROOT, 'scripts/node.sh'), SERVER_MAIN, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...as,
    });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((res) => {
      this.child.once('exit', (code, signal) => res({ code, signal, stdout: this.stdout, stderr: this.stderr }));
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Resolves when the server prints its listening line; rejects with its output if it exits first. */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = /listening on wss?:\/\/[^:]+:(\d+)\/v1\/connect \((\d+) workers, pids ([\d,]+)/.exec(this.stdout);
      if (m) {
        this.port = Number(m[1]);
        this.workerPids = m[3]!.split(',').filter((x) => /^\d+$/.test(x)).map(Number).filter((x) => x > 1);
        return;
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`server exited before listening (code ${this.child.exitCode}):\n${this.stderr}\n${this.stdout}`);
      }
      await sleep(25);
    }
    throw new Error(`server did not start within ${timeoutMs} ms:\n${this.stderr}`);
  }

  /** SIGTERM and wait for the exit (bounded); SIGKILL if it does not come. */
  async stop(timeoutMs = 20_000): Promise<Exited> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const r = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (r) return r;
    this.kill();
    return this.exited;
  }

  /** SIGKILL of the supervisor and of the workers it reported (only the pids this server printed). */
  kill(): void {
    for (const pid of [this.pid, ...this.workerPids]) {
      // Only real pids of processes this server reported: never 0 or -1 (a whole process group).
      if (!Number.isInteger(pid) || pid <= 1) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }

  /** The worker pids as they are now (after restarts), read from the supervisor's children. */
  async currentWorkerPids(): Promise<number[]> {
    const { readFileSync } = await import('node:fs');
    try {
      const kids = readFileSync(`/proc/${this.pid}/task/${this.pid}/children`, 'utf8').trim();
      return kids === '' ? [] : kids.split(/\s+/).map(Number);
    } catch {
      return [];
    }
  }
}

export async function startServer(opts: RunOptions & { dataDir?: string; port?: number; workers?: number } = {}): Promise<{ server: ServerProcess; dataDir: string; url: string; port: number }> {
  const dataDir = opts.dataDir ?? tempDir();
  const port = opts.port ?? (await freePort());
  const args = ['--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, '--workers', String(opts.workers ?? 2), ...(opts.args ?? [])];
  const server = new ServerProcess(args, { ...TEST_ENV, ...opts.env });
  await server.ready(opts.timeoutMs);
  return { server, dataDir, port, url: `ws://127.0.0.1:${port}/v1/connect` };
}

/** Runs the CLI expecting it to exit by itself (start-up errors); bounded. */
export async function runToExit(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000, as: { uid?: number; gid?: number } = {}): Promise<Exited> {
  const p = new ServerProcess(args, { ...TEST_ENV, ...env }, as);
  const r = await Promise.race([p.exited, sleep(timeoutMs).then(() => null)]);
  if (r) return r;
  p.kill();
  throw new Error(`expected the server to exit, it kept running:\n${p.stderr}`);
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function token(user: string, opts: { secret?: string; expiresIn?: string | number } = {}): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '1h')
    .sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

/** The first n user ids with the given prefix that the server places on `worker` of `workers`. */
export function usersOn(worker: number, workers: number, prefix: string, n = 1): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n && i < 100_000; i++) {
    const u = `${prefix}${i}`;
    if (ownerOf(u, workers) === worker) out.push(u);
  }
  return out;
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Parses Prometheus text into `name{labels}` -> value. */
export async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

export function sdkClient(url: string, user: string, device = 'd1', extra: Partial<ConstructorParameters<typeof IrisClient>[0]> = {}): IrisClient {
  return new IrisClient({
    url,
    token: () => token(user),
    device,
    reconnect: { baseMs: 50, maxMs: 500 },
    ack: { every: 8, delayMs: 10 },
    ...extra,
  });
}

/**
 * A raw protocol client over `ws`, for what the SDK hides on purpose: HTTP statuses, close codes, frames as
 * they arrive.
 */
export class RawClient {
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.frames.push(decodeFrame(isBinary ? new Uint8Array(data) : data.toString('utf8')) as ServerFrame);
      this.poke();
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString() };
      this.poke();
    });
    ws.on('error', () => undefined);
  }

  private poke(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static open(url: string, tok: string | null, opts: { protocols?: string[]; headers?: Record<string, string>; ca?: string } = {}): Promise<RawClient> {
    return new Promise((res, rej) => {
      const headers: Record<string, string> = { ...opts.headers };
      if (tok !== null) headers['authorization'] = `Bearer ${tok}`;
      const ws = new WebSocket(url, opts.protocols ?? [SUBPROTOCOL], { headers, perMessageDeflate: false, ...(opts.ca ? { ca: opts.ca } : {}) });
      const c = new RawClient(ws);
      ws.once('open', () => res(c));
      ws.once('unexpected-response', (_req, resp) => {
        let body = '';
        resp.setEncoding('utf8');
        resp.on('data', (d: string) => (body += d));
        resp.on('end', () => rej(Object.assign(new Error(`HTTP ${resp.statusCode}: ${body}`), { status: resp.statusCode, body })));
      });
      ws.once('error', (e) => rej(e));
    });
  }

  send(f: ClientFrame, enc: 'binary' | 'json' = 'binary'): void {
    this.ws.send(encodeFrame(f, enc));
  }

  async next<T extends ServerFrame['t']>(t: T, timeoutMs = 10_000, pred: (f: Extract<ServerFrame, { t: T }>) => boolean = () => true): Promise<Extract<ServerFrame, { t: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.find((x): x is Extract<ServerFrame, { t: T }> => x.t === t && pred(x as Extract<ServerFrame, { t: T }>));
      if (f) return f;
      if (this.closed) throw new Error(`closed (${this.closed.code}) before a ${t} frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${t} frame within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  async waitClose(timeoutMs = 15_000): Promise<{ code: number; reason: string }> {
    await waitFor('close', () => this.closed !== null, timeoutMs, 10);
    return this.closed!;
  }

  close(): void {
    this.ws.terminate();
  }
}

/**
 * Runs the load harness (scripts/bench/run.ts) with `args` into a fresh temp dir, collecting its output. The
 * harness bounds itself; `timeoutMs` only guards against a hang (SIGINT makes it stop the servers it started).
 */
export async function runBench(args: string[], timeoutMs: number, prefix = 'iris-bench-'): Promise<{ code: number | null; out: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const r = await runScript('scripts/bench/run.ts', [...args, '--out', dir, '--quiet'], timeoutMs);
  return { ...r, dir };
}

/**
 * Runs a TypeScript script of the repository (through scripts/node.sh and tsx), collecting stdout and stderr.
 * `timeoutMs` only guards against a hang: SIGINT makes the bench scripts stop the servers they started.
 */
export function runScript(script: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((res) => {
    const child = spawn('sh', [join(ROOT, 'scripts/node.sh'), '--import', 'tsx', join(ROOT, script), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const guard = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(guard);
      res({ code, out });
    });
  });
}

/** npm's own environment from an outer `npm test` would point an inner npm at the outer project: drop it. */
export const NPM_CLEAN: Record<string, string> = { npm_config_prefix: '', npm_config_global: '', NO_UPDATE_NOTIFIER: '1', npm_config_audit: 'false', npm_config_fund: 'false' };

/**
 * The package as it ships: `npm pack` of the repository (package.json "files": dist/, bin/, scripts/node.sh;
 * dist/ built by the global setup) unpacked into `dest`. What an app or an operator gets, and nothing else:
 * no TypeScript source, no tools, no tests.
 */
export async function packInto(dest: string): Promise<void> {
  const work = tempDir('iris-pack-');
  try {
    const packed = await new Promise<string>((res, rej) => {
      const child = spawn('npm', ['pack', '--silent', '--pack-destination', work], { cwd: ROOT, env: { ...process.env, ...NPM_CLEAN }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.once('exit', (code) => (code === 0 ? res(out.trim().split('\n').pop()!) : rej(new Error(`npm pack failed (${code}):\n${out}`))));
    });
    mkdirSync(dest, { recursive: true });
    await new Promise<void>((res, rej) => {
      const tar = spawn('tar', ['-xzf', join(work, packed), '-C', dest, '--strip-components=1'], { stdio: 'inherit' });
      tar.once('exit', (code) => (code === 0 ? res() : rej(new Error(`tar exited ${code}`))));
    });
  } finally {
    removeDir(work);
  }
}
