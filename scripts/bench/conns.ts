/**
 * Memory per idle connection: opens --conns authenticated, hello'd WebSockets (distinct users, one mailbox each)
 * to a real server and reports the server's RSS growth per connection (from /proc; every server process
 * summed: supervisor and workers), which sizes a box (docs/OPERATIONS.md).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/conns.ts [--conns 5000] [--workers 1] [--route handoff|pipe]
 *                                                          [--bare [--bare-semi-space-mb 16]] [--heap] [--settle 3]
 *                                                          [--server dist|source]
 *
 * --bare   also measures a bare `ws` server (WebSocketServer on node:http, one message answered per socket)
 *          with the same client in the same run: the floor this is compared with. It runs with V8's default
 *          young generation (like the bench's raw relay) unless --bare-semi-space-mb N gives it the cap Iris
 *          workers have (IRIS_SEMI_SPACE_MB, 16 by default): like for like.
 * --detail splits each process's RSS growth per connection (from /proc/<pid>/smaps and, for the workers, V8's
 *          heap spaces and external memory from /metrics): V8 heap by space, malloc's main heap, other anonymous
 *          memory (malloc arenas of other threads, mmapped buffers), file-backed pages (code, SQLite's -shm).
 * --server dist (default) runs the built server (npm run build); source runs onprem/main.ts through tsx, to
 *          compare the two (docs/BENCHMARKS.md "Built JavaScript against tsx").
 * --heap   takes a heap snapshot of worker 0 (a full GC first) before and after, and prints what the live
 *          JavaScript heap gained per connection, by constructor: where the bytes go.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { SUBPROTOCOL, decodeBinary, encodeBinary } from '../../protocol/index.js';
import { heapDiff, snapshot } from './heap.js';
import { parseServerFrom, serverNodeArgs } from '../lib/server.js';
import { mintToken } from '../token.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    conns: { type: 'string', default: '5000' },
    port: { type: 'string', default: '18899' },
    workers: { type: 'string', default: '1' },
    route: { type: 'string', default: 'handoff' },
    bare: { type: 'boolean', default: false },
    heap: { type: 'boolean', default: false },
    settle: { type: 'string', default: '3' },
    'bare-semi-space-mb': { type: 'string', default: '0' },
    detail: { type: 'boolean', default: false },
    server: { type: 'string', default: 'dist' },
  },
});
const N = Math.min(15_000, Number(values.conns));
const WORKERS = Number(values.workers);
const WARM = 200;
const SECRET = 'conns-bench';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const sum = (pids: number[]) => pids.reduce((a, p) => a + rssKiB(p), 0);

/** process.memoryUsage() and V8 heap spaces, KiB. */
type Memory = Record<'rss' | 'heapTotal' | 'heapUsed' | 'external' | 'newSpace' | 'oldSpace' | 'oldUsed', number>;

interface Server {
  child: ChildProcess;
  /** The server's own view of its memory (Iris: every worker's /metrics, summed), KiB. */
  memory: () => Promise<Memory>;
  /** Every process of the server (supervisor first). */
  pids: number[];
  /** The process whose heap --heap inspects. */
  heapPid: number;
  url: string;
  welcome: (d: Buffer) => boolean;
}

async function waitLine(child: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 600; i++) {
    const m = re.exec(out);
    if (m) return m;
    if (child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`server did not start: ${out}`);
}

async function startIris(dataDir: string, snapDir: string): Promise<Server> {
  const env: NodeJS.ProcessEnv = { ...process.env, IRIS_JWT_SECRET: SECRET, IRIS_CONNECT_RATE: '10000000', IRIS_LOG: 'error', IRIS_ROUTE: values.route };
  if (values.heap) env['NODE_OPTIONS'] = `${process.env['NODE_OPTIONS'] ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapDir}`.trim();
  const child = spawn(process.execPath, [...serverNodeArgs(parseServerFrom(values.server)), '--host', '127.0.0.1', '--port', values.port!, '--data-dir', dataDir, '--workers', String(WORKERS)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env,
  });
  const m = await waitLine(child, /pids ([\d,]+)/);
  const workers = m[1]!.split(',').filter((x) => /^\d+$/.test(x)).map(Number);
  return {
    child,
    pids: [child.pid!, ...workers],
    heapPid: workers[0]!,
    url: `ws://127.0.0.1:${values.port}/v1/connect`,
    welcome: (d) => decodeBinary(new Uint8Array(d)).t === 'welcome',
    memory: async () => {
      const text = await (await fetch(`http://127.0.0.1:${values.port}/metrics`)).text();
      const get = (name: string) => {
        let v = 0;
        for (const m of text.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'gm'))) v += Number(m[1]);
        return v / 1024;
      };
      const space = (name: string, sp: string) => {
        let v = 0;
        for (const m of text.matchAll(new RegExp(`^${name}\\{space="${sp}",[^}]*\\} (\\S+)$`, 'gm'))) v += Number(m[1]);
        return v / 1024;
      };
      return {
        rss: get('iris_process_resident_memory_bytes'),
        heapTotal: get('iris_nodejs_heap_size_total_bytes'),
        heapUsed: get('iris_nodejs_heap_size_used_bytes'),
        external: get('iris_nodejs_external_memory_bytes'),
        newSpace: space('iris_nodejs_heap_space_size_total_bytes', 'new'),
        oldSpace: space('iris_nodejs_heap_space_size_total_bytes', 'old'),
        oldUsed: space('iris_nodejs_heap_space_size_used_bytes', 'old'),
      };
    },
  };
}

/** The floor: a bare ws server, the same handshake (subprotocol) and one message answered per socket. */
const BARE = `
import { createServer } from 'node:http';
import { getHeapSpaceStatistics } from 'node:v8';
import { WebSocketServer } from 'ws';
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false, handleProtocols: (p) => p.values().next().value });
const server = createServer((_q, r) => {
  const m = process.memoryUsage();
  const sp = Object.fromEntries(getHeapSpaceStatistics().map((x) => [x.space_name, x]));
  const k = (b) => b / 1024;
  r.end(JSON.stringify({ rss: k(m.rss), heapTotal: k(m.heapTotal), heapUsed: k(m.heapUsed), external: k(m.external),
    newSpace: k(sp.new_space.space_size), oldSpace: k(sp.old_space.space_size), oldUsed: k(sp.old_space.space_used_size) }));
});
server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (d) => ws.send(d))));
server.listen(Number(process.argv[1]), '127.0.0.1', () => console.log('bare listening pids ' + process.pid));
`;

async function startBare(snapDir: string): Promise<Server> {
  const flags = values.heap ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapDir}`] : [];
  const semi = Number(values['bare-semi-space-mb']);
  if (semi > 0) flags.push(`--max-semi-space-size=${semi}`);
  const child = spawn(process.execPath, [...flags, '--input-type=module', '-e', BARE, values.port!], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  await waitLine(child, /bare listening pids (\d+)/);
  return {
    child,
    pids: [child.pid!],
    heapPid: child.pid!,
    url: `ws://127.0.0.1:${values.port}/v1/connect`,
    welcome: () => true,
    memory: async () => (await (await fetch(`http://127.0.0.1:${values.port}/mem`)).json()) as Memory,
  };
}

async function stop(s: Server): Promise<void> {
  if (s.child.exitCode !== null) return;
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000)]);
  if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
}

/** One process's resident memory by kind of mapping, KiB: malloc's main heap (brk), other anonymous, file-backed. */
type Maps = Record<'rss' | 'brk' | 'anon' | 'file', number>;

function maps(pid: number): Maps {
  const out: Maps = { rss: 0, brk: 0, anon: 0, file: 0 };
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return out;
  }
  let kind: 'brk' | 'anon' | 'file' = 'anon';
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      kind = head[2] === '[heap]' ? 'brk' : head[1] !== '0' ? 'file' : 'anon';
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) {
      out[kind] += Number(m[1]);
      out.rss += Number(m[1]);
    }
  }
  return out;
}

/** V8's view of every worker, summed, KiB: committed size of each heap space, and external memory. */
async function v8Spaces(port: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^iris_nodejs_heap_space_size_total_bytes\{space="(\w+)",[^}]*\} (\S+)$/gm)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]) / 1024;
  for (const m of text.matchAll(/^iris_nodejs_external_memory_bytes\{[^}]*\} (\S+)$/gm)) out['external'] = (out['external'] ?? 0) + Number(m[1]) / 1024;
  for (const m of text.matchAll(/^iris_idle_gc_(total|seconds_total)\{[^}]*\} (\S+)$/gm)) out[`idle_gc_${m[1]}`] = (out[`idle_gc_${m[1]}`] ?? 0) + Number(m[2]);
  return out;
}

interface Detail {
  maps: Maps[];
  v8: Record<string, number>;
}

function printDetail(server: Server, a: { conns: number; detail: Detail }, b: { conns: number; detail: Detail }, what: string): void {
  const n = b.conns - a.conns;
  const per = (x: number) => (x / n).toFixed(2);
  const group = (idx: number[]) => {
    const sumOf = (d: Detail, k: keyof Maps) => idx.reduce((s, i) => s + d.maps[i]![k], 0);
    return (k: keyof Maps) => sumOf(b.detail, k) - sumOf(a.detail, k);
  };
  const sup = group([0]);
  const wk = group(server.pids.length > 1 ? server.pids.slice(1).map((_, i) => i + 1) : [0]);
  const v = (k: string) => (b.detail.v8[k] ?? 0) - (a.detail.v8[k] ?? 0);
  const isSpace = (k: string) => k !== 'external' && !k.startsWith('idle_gc_');
  const heap = Object.keys(b.detail.v8).filter(isSpace).reduce((s, k) => s + v(k), 0);
  const spaces = Object.keys(b.detail.v8)
    .filter((k) => isSpace(k) && Math.abs(v(k)) / n >= 0.05)
    .map((k) => `${k} ${per(v(k))}`)
    .join(', ');
  console.log(`  ${what} (${a.conns} -> ${b.conns}), KiB per connection:`);
  if (server.pids.length > 1) console.log(`    supervisor: RSS ${per(sup('rss'))} = malloc heap ${per(sup('brk'))} + other anonymous ${per(sup('anon'))} + file ${per(sup('file'))}`);
  console.log(
    `    workers:    RSS ${per(wk('rss'))} = V8 heap ${per(heap)} (${spaces}) + external ${per(v('external'))}` +
      ` + other native ${per(wk('brk') + wk('anon') - heap - v('external'))} (malloc heap ${per(wk('brk'))}, other anonymous ${per(wk('anon'))}, both less V8 and external) + file ${per(wk('file'))}`,
  );
  if (v('idle_gc_total') > 0) console.log(`    idle GCs in the workers (IRIS_IDLE_GC_MS): ${v('idle_gc_total')}, ${(v('idle_gc_seconds_total') * 1000).toFixed(0)} ms in all`);
}

interface Point {
  conns: number;
  rss: number;
  each: number[];
  mem: Memory;
  detail: Detail;
}

/**
 * Opens the connections in three steps and reads the memory after each (after --settle seconds). Two numbers
 * come out: the average (RSS growth / connections, what the bench's memory mode reports) and the marginal cost
 * (growth from the first step to the last / connections added), which leaves out what a process grows once
 * whatever the connection count: above all V8's young generation, which grows under any sustained
 * allocation (a burst of connects, or messaging) to its cap and stays there.
 */
async function measure(label: string, server: Server, snapDir: string, localAddress: string): Promise<{ avg: number; marginal: number }> {
  const sockets: WebSocket[] = [];
  try {
    // A connection closed before its welcome (e.g. 4000, hello timeout) is retried, at most twice, and counted.
    let retried = 0;
    const attempt = (token: string) =>
      new Promise<WebSocket>((res, rej) => {
        const ws = new WebSocket(server.url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, localAddress });
        ws.once('open', () => ws.send(encodeBinary({ t: 'hello', device: 'd', cursor: 0 })));
        ws.on('message', (d: Buffer) => server.welcome(d) && res(ws));
        ws.once('close', (code: number) => rej(new Error(`closed ${code} before the welcome`)));
        ws.once('error', rej);
      });
    const open = async (i: number) => {
      const token = await mintToken(`c${i}`, { secret: SECRET, ttl: '1h' });
      for (let a = 0; ; a++) {
        try {
          sockets.push(await attempt(token));
          return;
        } catch (e) {
          if (a >= 2) throw e;
          retried++;
        }
      }
    };
    const point = async (conns: number): Promise<Point> => ({
      conns,
      rss: sum(server.pids),
      each: server.pids.map(rssKiB),
      mem: await server.memory(),
      detail: { maps: values.detail ? server.pids.map(maps) : [], v8: values.detail && server.pids.length > 1 ? await v8Spaces(values.port!) : {} },
    });
    // Warm up (JIT, pools) with a few connections, then measure.
    for (let i = 0; i < WARM; i++) await open(i);
    await sleep(1000);
    const snapA = values.heap ? await snapshot(server.heapPid, snapDir) : null;
    if (snapA) await sleep(1000);
    const points = [await point(0)];
    const t0 = Date.now();
    let opened = 0;
    for (const target of [Math.round(N / 3), N]) {
      for (; opened < target; opened += 50) {
        const k = Math.min(50, target - opened);
        await Promise.all(Array.from({ length: k }, (_, j) => open(WARM + opened + j)));
      }
      opened = target;
      await sleep(Number(values.settle) * 1000);
      points.push(await point(target));
    }
    const secs = (Date.now() - t0) / 1000;
    const [p0, p1, p2] = points as [Point, Point, Point];
    const avg = (p2.rss - p0.rss) / N;
    const marginal = (p2.rss - p1.rss) / (p2.conns - p1.conns);
    const procs = `${server.pids.length} process${server.pids.length > 1 ? 'es' : ''}`;
    console.log(`${label}: ${N} idle connections (${secs.toFixed(1)} s${retried > 0 ? `; ${retried} closed before their welcome and retried` : ''})`);
    console.log(`  server RSS (${procs}) ${Math.round(p0.rss / 1024)} -> ${Math.round(p1.rss / 1024)} (${p1.conns}) -> ${Math.round(p2.rss / 1024)} MiB (${p2.conns})`);
    if (server.pids.length > 1) {
      const names = server.pids.map((_, i) => (i === 0 ? 'supervisor' : `worker ${i - 1}`));
      console.log(`  per process: ${names.map((n, i) => `${n} ${points.map((p) => Math.round(p.each[i]! / 1024)).join(' -> ')} MiB`).join('; ')}`);
    }
    console.log(`  average  ${avg.toFixed(1)} KiB per connection (RSS growth / ${N})`);
    console.log(`  marginal ${marginal.toFixed(1)} KiB per connection (RSS growth from ${p1.conns} to ${p2.conns} connections)`);
    const d = (k: keyof Memory, a: Point, b: Point) => ((b.mem[k] - a.mem[k]) / (b.conns - a.conns)).toFixed(1);
    console.log(
      `  marginal, as the server sees it: RSS ${d('rss', p1, p2)}, V8 old space ${d('oldSpace', p1, p2)} (used ${d('oldUsed', p1, p2)}), ` +
        `young generation ${d('newSpace', p1, p2)}, external ${d('external', p1, p2)} KiB per connection`,
    );
    if (values.detail) {
      printDetail(server, p0, p2, 'average');
      printDetail(server, p1, p2, 'marginal');
    }
    console.log(`  V8 young generation ${points.map((p) => Math.round(p.mem.newSpace / 1024)).join(' -> ')} MiB (one per process: it grows with the allocation rate, not the connection count)`);
    if (snapA) {
      const snapB = await snapshot(server.heapPid, snapDir);
      // Only the inspected worker's share of the connections is in its heap.
      console.log(heapDiff(snapA, snapB, WORKERS === 1 || label === 'bare ws' ? N : N / WORKERS));
    }
    return { avg, marginal };
  } finally {
    for (const s of sockets) s.terminate();
  }
}

const dataDir = mkdtempSync(join(tmpdir(), 'iris-conns-bench-'));
const snapDir = mkdtempSync(join(tmpdir(), 'iris-conns-snap-'));
try {
  const iris = await startIris(dataDir, snapDir);
  let perIris: { avg: number; marginal: number };
  try {
    perIris = await measure(`iris (${WORKERS} worker${WORKERS > 1 ? 's' : ''}, authenticated, hello'd, one mailbox each)`, iris, snapDir, '127.0.0.1');
  } finally {
    await stop(iris);
  }
  if (values.bare) {
    const bare = await startBare(snapDir);
    let perBare: { avg: number; marginal: number };
    try {
      // Another source address: the first run's client ports may still be in TIME_WAIT.
      perBare = await measure('bare ws', bare, snapDir, '127.0.0.2');
    } finally {
      await stop(bare);
    }
    console.log(`ratio iris / bare ws: average ${(perIris.avg / perBare.avg).toFixed(2)}, marginal ${(perIris.marginal / perBare.marginal).toFixed(2)}`);
  }
} finally {
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(snapDir, { recursive: true, force: true });
}
