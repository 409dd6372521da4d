/**
 * Memory per idle v1 connection (issue 14), against an idle connection of this Iris's own protocol in the same
 * server and the same run: the sibling of conns.ts (which measures only the own protocol, and the bare `ws` floor).
 * One server (the v1 ports on), then, in turn, --conns idle connections of each kind, every one authenticated and
 * answered (welcome / LOGIN_OK), distinct users, one mailbox each:
 *
 *   native  WebSocket of this Iris's protocol, hello'd         (what docs/BENCHMARKS.md "Idle memory" measured)
 *   v1-tcp  v1 over TCP, LOGIN user:jwt -> LOGIN_OK
 *   v1-ws   v1 over WebSocket, the same
 *
 * Each kind's cost is the growth of the server's RSS (every process, from /proc) while its connections opened,
 * read --settle seconds after the last one (the idle GC, IRIS_IDLE_GC_MS, has run by then), divided by --conns.
 * A warm-up of each kind comes first, so that no kind pays for the JIT or the first pages. --order changes which
 * kind goes first (the later ones open on a bigger heap).
 *
 *   npm run build && sh scripts/node.sh --import tsx scripts/bench/v1-conns.ts [--conns 4000] [--workers 1]
 *                                                    [--settle 8] [--order native,v1-tcp,v1-ws] [--rounds 1] [--heap]
 *
 * --heap  heap snapshots of worker 0 (a full GC first) around each kind: what its live JavaScript heap gained per
 *         connection, by constructor (the snapshot code of conns.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { SUBPROTOCOL, decodeBinary, encodeBinary } from '../../protocol/index.js';
import { ROOT, serverNodeArgs } from '../lib/server.js';
import { heapDiff, snapshot } from './heap.js';
import { mintToken } from '../token.js';

const { values } = parseArgs({
  options: {
    conns: { type: 'string', default: '4000' },
    workers: { type: 'string', default: '1' },
    settle: { type: 'string', default: '8' },
    order: { type: 'string', default: 'native,v1-tcp,v1-ws' },
    rounds: { type: 'string', default: '1' },
    port: { type: 'string', default: '18911' },
    heap: { type: 'boolean', default: false },
  },
});
const N = Number(values.conns);
const WARM = 200;
const SECRET = 'v1-conns-bench';
const PORT = Number(values.port);
const [V1_TCP, V1_WS] = [PORT + 1, PORT + 2];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type Kind = 'native' | 'v1-tcp' | 'v1-ws';
const LOGIN_OK = Buffer.from([0x03, ...Buffer.from('LOGIN_OK')]);

function rssKiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function start(dataDir: string): Promise<{ child: ChildProcess; pids: number[] }> {
  const heap = values.heap ? { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${SNAP_DIR}` } : {};
  const env = { ...process.env, ...heap, IRIS_JWT_SECRET: SECRET, IRIS_CONNECT_RATE: '10000000', IRIS_LOG: 'error', IRIS_V1_TCP_PORT: String(V1_TCP), IRIS_V1_WS_PORT: String(V1_WS) };
  const child = spawn(process.execPath, [...serverNodeArgs('dist'), '--host', '127.0.0.1', '--port', String(PORT), '--data-dir', dataDir, '--workers', values.workers!], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 600; i++) {
    const m = /pids ([\d,]+)/.exec(out);
    if (m) return { child, pids: [child.pid!, ...m[1]!.split(',').filter((x) => /^\d+$/.test(x)).map(Number)] };
    if (child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`server did not start: ${out}`);
}

type Held = { end: () => void };

/** One connection of `kind` for `user`, resolved once the server answered its hello / LOGIN. */
async function open(kind: Kind, user: string, localAddress: string): Promise<Held> {
  const token = await mintToken(user, { secret: SECRET, ttl: '1h', issuer: 'iris' });
  return new Promise<Held>((res, rej) => {
    if (kind === 'native') {
      const ws = new WebSocket(`ws://127.0.0.1:${PORT}/v1/connect`, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, localAddress });
      ws.once('open', () => ws.send(encodeBinary({ t: 'hello', device: 'd', cursor: 0 })));
      ws.on('message', (d: Buffer) => decodeBinary(new Uint8Array(d)).t === 'welcome' && res({ end: () => ws.terminate() }));
      ws.once('close', (code: number) => rej(new Error(`closed ${code}`)));
      ws.once('error', rej);
      return;
    }
    const login = Buffer.concat([Buffer.from([0x01]), Buffer.from(`${user}:${token}`)]);
    if (kind === 'v1-ws') {
      const ws = new WebSocket(`ws://127.0.0.1:${V1_WS}/`, { perMessageDeflate: false, localAddress });
      ws.once('open', () => ws.send(login, { binary: true }));
      ws.on('message', (d: Buffer) => Buffer.from(d).equals(LOGIN_OK) && res({ end: () => ws.terminate() }));
      ws.once('close', (code: number) => rej(new Error(`closed ${code}`)));
      ws.once('error', rej);
      return;
    }
    const s: Socket = connect({ host: '127.0.0.1', port: V1_TCP, localAddress, noDelay: true });
    let got = Buffer.alloc(0);
    s.once('connect', () => s.write(login));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.subarray(0, LOGIN_OK.length).equals(LOGIN_OK)) res({ end: () => s.destroy() });
    });
    s.once('close', () => rej(new Error('closed')));
    s.once('error', rej);
  });
}

async function openMany(kind: Kind, prefix: string, n: number, addr: string, held: Held[]): Promise<void> {
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, j) => `${prefix}${i + j}`);
    held.push(...(await Promise.all(batch.map((u) => open(kind, u, addr)))));
  }
}

const dataDir = mkdtempSync(join(tmpdir(), 'iris-v1-conns-'));
const SNAP_DIR = mkdtempSync(join(tmpdir(), 'iris-v1-conns-snap-'));
const held: Held[] = [];
const server = await start(dataDir);
const rss = () => server.pids.reduce((a, p) => a + rssKiB(p), 0);
try {
  const kinds = values.order!.split(',') as Kind[];
  // Each kind from its own source address: 3 x (warm-up + rounds x N) client ports stay within one address's range.
  const addr = (k: Kind) => `127.0.0.${2 + ['native', 'v1-tcp', 'v1-ws'].indexOf(k)}`;
  for (const k of kinds) await openMany(k, `warm-${k}-`, WARM, addr(k), held);
  await sleep(Number(values.settle) * 1000);
  console.log(`server: ${server.pids.length} processes (${values.workers} worker(s)), ${N} idle connections per kind, settle ${values.settle} s`);
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const k of kinds) {
      const snapA = values.heap ? await snapshot(server.pids[1]!, SNAP_DIR) : null;
      const before = rss();
      const t0 = Date.now();
      await openMany(k, `r${r}-${k}-`, N, addr(k), held);
      const secs = (Date.now() - t0) / 1000;
      await sleep(Number(values.settle) * 1000);
      const after = rss();
      console.log(`${k.padEnd(7)} RSS ${Math.round(before / 1024)} -> ${Math.round(after / 1024)} MiB: ${((after - before) / N).toFixed(2)} KiB per connection (opened in ${secs.toFixed(1)} s)`);
      if (snapA) console.log(heapDiff(snapA, await snapshot(server.pids[1]!, SNAP_DIR), N / Number(values.workers)));
    }
  }
} finally {
  for (const h of held) h.end();
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(SNAP_DIR, { recursive: true, force: true });
}
