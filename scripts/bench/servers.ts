/**
 * Starting and stopping the servers a run drives (the on-prem Iris server, the raw relay, wrangler dev), and
 * reading their process trees' memory and CPU from /proc. Every server is spawned in its own process group;
 * it is stopped with SIGTERM to the pid we started, then SIGKILL to that process group if it does not exit:
 * nothing else is ever signalled.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { now, sleep } from './common.js';
export { freePort } from '../lib/net.js';
import { freePort } from '../lib/net.js';
import { serverNodeArgs } from '../lib/server.js';

export const ROOT = resolve(import.meta.dirname, '../..');
const NODE_SH = join(ROOT, 'scripts/node.sh');

export interface Server {
  kind: 'onprem' | 'relay' | 'cloudflare' | 'external';
  /** Base URL the clients use (meaning depends on the wire, see common.ts InitMsg.url). */
  url: string;
  /** Extra URL (cloudflare: the bare echo Durable Object route). */
  echoUrl?: string;
  /** Root of the server's process tree (null for an external server without --server-pid). */
  pid: number | null;
  workers: number;
  command: string;
  stop(): Promise<void>;
  output(): string;
  /** On-prem: the worker pids of the ready line, in worker order (the kill mode picks one of them). */
  workerPids?: number[];
  /** Complete output lines with the common-clock time they arrived (the kill mode reads the supervisor's). */
  lines?: () => { t: number; text: string }[];
}


interface Spawned {
  child: ChildProcess;
  out: { text: string };
  /** The last 5,000 complete lines, each stamped when it arrived. */
  lines: { t: number; text: string }[];
  exited: Promise<void>;
}

function start(args: string[], env: Record<string, string>): Spawned {
  const child = spawn('sh', [NODE_SH, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const out = { text: '' };
  const lines: { t: number; text: string }[] = [];
  const keep = (d: string) => {
    out.text += d;
    if (out.text.length > 200_000) out.text = out.text.slice(-100_000);
  };
  // Per stream, so a partial line of stdout is never glued to one of stderr.
  const splitter = () => {
    let partial = '';
    return (d: string) => {
      keep(d);
      const t = now();
      const parts = (partial + d).split('\n');
      partial = parts.pop()!;
      for (const text of parts) lines.push({ t, text });
      if (lines.length > 5000) lines.splice(0, lines.length - 5000);
    };
  };
  child.stdout!.setEncoding('utf8').on('data', splitter());
  child.stderr!.setEncoding('utf8').on('data', splitter());
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return { child, out, lines, exited };
}

async function stopSpawned(s: Spawned, graceMs: number): Promise<void> {
  const { child } = s;
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill('SIGTERM');
  } catch {
    // gone
  }
  const done = await Promise.race([s.exited.then(() => true), sleep(graceMs).then(() => false)]);
  // The group may still hold children (wrangler's workerd, a worker that missed the drain): end them too.
  try {
    if (child.pid) process.kill(-child.pid, done ? 'SIGTERM' : 'SIGKILL');
  } catch {
    // group already empty
  }
  if (!done) await Promise.race([s.exited, sleep(2000)]);
  // Return only once the group is empty: a workerd still shutting down holds its persisted state, and a
  // wrangler dev started at once on the same state dir fails ("Address already in use").
  if (child.pid) await groupGone(child.pid, 5000);
}

/** Waits (bounded) until no process is left in the process group `pgid`; then SIGKILLs whatever remains. */
async function groupGone(pgid: number, timeoutMs: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + timeoutMs;
  while (alive() && Date.now() < deadline) await sleep(50);
  if (alive()) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

async function waitOutput(s: Spawned, re: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = re.exec(s.out.text);
    if (m) return m;
    if (s.child.exitCode !== null || s.child.signalCode !== null) throw new Error(`${what} exited before it was ready:\n${s.out.text.slice(-4000)}`);
    await sleep(50);
  }
  await stopSpawned(s, 2000);
  throw new Error(`${what} not ready within ${timeoutMs} ms:\n${s.out.text.slice(-4000)}`);
}

/** node flags that make a server write CPU profiles (to dir) when its processes exit. */
export function profArgs(dir: string | null): string[] {
  return dir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', dir];
}

export interface OnpremOptions {
  profileDir: string | null;
  port: number;
  workers: number;
  dataDir: string;
  keepData: boolean;
  secret: string;
  /** Extra flags for the server (dist/onprem/main.js; they win over the bench defaults). */
  args: string[];
}

/** Bench defaults for the on-prem server: limits that would otherwise refuse the generator's own traffic. */
export const ONPREM_BENCH_FLAGS = ['--rate-per-sec', '1000000', '--rate-burst', '1000000', '--connect-rate', '100000000', '--log', 'warn'];

export async function startOnprem(o: OnpremOptions): Promise<Server> {
  mkdirSync(o.dataDir, { recursive: true });
  const runDir = mkdtempSync(join(tmpdir(), 'iris-bench-run-'));
  const args = [
    ...profArgs(o.profileDir),
    ...serverNodeArgs('dist'),
    '--host', '127.0.0.1', '--port', String(o.port), '--workers', String(o.workers), '--data-dir', o.dataDir, '--run-dir', runDir,
    ...ONPREM_BENCH_FLAGS, ...o.args,
  ];
  const s = start(args, { IRIS_JWT_SECRET: o.secret });
  const m = await waitOutput(s, /listening on wss?:\/\/[^\s]+:(\d+)\/v1\/connect \((\d+) workers, pids ([\d,]+)/, 60_000, 'on-prem server');
  return {
    kind: 'onprem',
    url: `ws://127.0.0.1:${m[1]}/v1/connect`,
    pid: s.child.pid!,
    workers: Number(m[2]),
    // The list is followed by a comma in the ready line ("pids 1,2, data ...").
    workerPids: m[3]!.split(',').filter((x) => x !== '').map(Number),
    lines: () => s.lines,
    command: `npm run onprem -- ${args.slice(args.indexOf('--host')).join(' ')}`,
    stop: async () => {
      await stopSpawned(s, 20_000);
      rmSync(runDir, { recursive: true, force: true });
      if (!o.keepData) rmSync(o.dataDir, { recursive: true, force: true });
    },
    output: () => s.out.text,
  };
}

export async function startRelay(port: number, workers: number, profileDir: string | null = null): Promise<Server> {
  const args = [...profArgs(profileDir), '--import', 'tsx', join(ROOT, 'scripts/bench/relay.ts'), '--host', '127.0.0.1', '--port', String(port), '--workers', String(workers)];
  const s = start(args, {});
  const m = await waitOutput(s, /relay listening on (ws:\/\/[^\s]+) \((\d+) workers/, 30_000, 'raw relay');
  return {
    kind: 'relay',
    url: m[1]!,
    pid: s.child.pid!,
    workers: Number(m[2]),
    command: `sh scripts/node.sh --import tsx scripts/bench/relay.ts --port ${port} --workers ${workers}`,
    stop: () => stopSpawned(s, 5000),
    output: () => s.out.text,
  };
}

/**
 * wrangler dev on the bench config: the Iris Worker + UserShard and the bare EchoShard, one local workerd.
 * `persistTo`: keep the Durable Objects' state in that directory and leave it there on stop, so a second
 * wrangler dev on the same directory finds every object's SQLite as the first left it (the recovery bench
 * uses that as a stand-in for an eviction). Default: a fresh temp dir, removed on stop.
 */
export async function startWrangler(port: number, secret: string, vars: Record<string, string> = {}, persistTo?: string): Promise<Server> {
  const persist = persistTo ?? mkdtempSync(join(tmpdir(), 'iris-bench-wrangler-'));
  const inspector = await freePort();
  const args = [
    join(ROOT, 'node_modules/wrangler/bin/wrangler.js'), 'dev',
    '-c', join(ROOT, 'scripts/bench/wrangler.bench.toml'),
    '--ip', '127.0.0.1', '--port', String(port),
    '--var', 'IRIS_DEV_MODE:1', '--var', `IRIS_JWT_SECRET:${secret}`,
    ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    '--persist-to', persist, '--inspector-port', String(inspector), '--show-interactive-dev-session=false', '--log-level', 'warn',
  ];
  const s = start(args, { WRANGLER_SEND_METRICS: 'false', CI: '1' });
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (s.child.exitCode !== null) throw new Error(`wrangler dev exited:\n${s.out.text.slice(-4000)}`);
    if (Date.now() > deadline) {
      await stopSpawned(s, 3000);
      throw new Error(`wrangler dev not ready within 90 s:\n${s.out.text.slice(-4000)}`);
    }
    await sleep(250);
  }
  return {
    kind: 'cloudflare',
    url: `ws://127.0.0.1:${port}/v1/connect`,
    echoUrl: `ws://127.0.0.1:${port}/bench/echo`,
    pid: s.child.pid!,
    workers: 1,
    command: `wrangler dev -c scripts/bench/wrangler.bench.toml --ip 127.0.0.1 --port ${port} --var IRIS_DEV_MODE:1${Object.entries(vars).map(([k, v]) => ` --var ${k}:${v}`).join('')}`,
    stop: async () => {
      await stopSpawned(s, 5000);
      if (persistTo === undefined) rmSync(persist, { recursive: true, force: true });
    },
    output: () => s.out.text,
  };
}

export function externalServer(url: string, pid: number | null): Server {
  return { kind: 'external', url, pid, workers: 0, command: `(external) ${url}`, stop: async () => undefined, output: () => '' };
}

// ------------------------------------------------------------------ /proc

/** The pid and all its descendants. */
export function processTree(root: number): number[] {
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let kids = '';
      try {
        kids = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      } catch {
        continue;
      }
      if (kids !== '') for (const k of kids.split(/\s+/)) walk(Number(k));
    }
  };
  walk(root);
  return out;
}

export interface ProcMem {
  pid: number;
  name: string;
  rssKiB: number;
}

export function rssOf(pids: number[]): ProcMem[] {
  const out: ProcMem[] = [];
  for (const pid of pids) {
    try {
      const st = readFileSync(`/proc/${pid}/status`, 'utf8');
      const rss = /^VmRSS:\s+(\d+) kB/m.exec(st);
      const name = /^Name:\s+(.*)$/m.exec(st);
      out.push({ pid, name: name?.[1] ?? '?', rssKiB: rss ? Number(rss[1]) : 0 });
    } catch {
      // exited
    }
  }
  return out;
}

/** Total RSS (KiB) of a process tree, skipping the `sh` wrapper that scripts/node.sh may leave. */
export function treeRss(root: number): { totalKiB: number; processes: ProcMem[] } {
  const processes = rssOf(processTree(root));
  return { totalKiB: processes.reduce((a, p) => a + p.rssKiB, 0), processes };
}

const CLK_TCK = 100;

/** CPU seconds (user + system) used so far by these processes. */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // exited
    }
  }
  return ticks / CLK_TCK;
}
