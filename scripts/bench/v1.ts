/**
 * The cost of the v1 gateway (gateway/v1/, docs/IRIS-V1.md "Measured"): the same 1:1 traffic through the on-prem
 * server twice, once from v1 clients over TCP (LOGIN, SEND, RELIABLE_MSG, ACK per message) and once from clients of
 * this Iris's own protocol over WebSocket (hello, send, deliver, deliver_ack per message, binary encoding), so the
 * difference is the gateway's translation and its transport. P pairs, sender and recipient on different workers;
 * each sender keeps W messages in flight (counted by what its recipient acked) until it sent N. Reports messages/s,
 * the median and p99 latency from send to arrival, and the server's CPU (every worker and the supervisor, from
 * /proc) per message.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/v1.ts [--pairs 50] [--messages 400] [--window 16] [--workers 2]
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { ownerOf } from '../../onprem/owner.js';
import { SUBPROTOCOL, decodeBinary, encodeBinary, type ClientFrame } from '../../protocol/index.js';
import { freePort, startOnprem } from './servers.js';

const { values: opt } = parseArgs({ options: { pairs: { type: 'string', default: '50' }, messages: { type: 'string', default: '400' }, window: { type: 'string', default: '16' }, workers: { type: 'string', default: '2' } } });
const PAIRS = Number(opt.pairs);
const N = Number(opt.messages);
const W = Number(opt.window);
const WORKERS = Number(opt.workers);
const SECRET = 'v1-bench-secret';

const token = (user: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuer('iris').setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(SECRET));

function usersOn(worker: number, prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (ownerOf(`${prefix}${i}`, WORKERS) === worker) out.push(`${prefix}${i}`);
  return out;
}

/** Clock ticks of a process and its threads (utime + stime). */
function ticks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

interface Pair {
  /** Sends one message carrying its send time; returns nothing (flow control counts arrivals). */
  send(i: number): void;
  onArrive(cb: (sentAt: number) => void): void;
  close(): void;
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);

async function v1Pair(port: number, from: string, to: string): Promise<Pair> {
  const open = async (user: string) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(Buffer.concat([Buffer.from([1]), Buffer.from(`${user}:${await token(user)}`)]));
    await new Promise<void>((r) => s.once('data', () => r()));
    return s;
  };
  const a = await open(from);
  const b = await open(to);
  let buf = Buffer.alloc(0);
  let cb: (t: number) => void = () => undefined;
  b.on('data', (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (buf.length >= 3 && buf[0] === 0x10) {
      const il = buf.readUInt16BE(1);
      if (buf.length < 7 + il) break;
      const ml = buf.readUInt32BE(3 + il);
      if (buf.length < 7 + il + ml) break;
      const id = buf.subarray(3, 3 + il);
      const sentAt = Number(buf.subarray(7 + il, 7 + il + ml).toString());
      buf = buf.subarray(7 + il + ml);
      b.write(Buffer.concat([Buffer.from([3]), id]));
      cb(sentAt);
    }
  });
  const tb = Buffer.from(to);
  return {
    send: () => {
      const body = Buffer.from(String(performance.now()));
      a.write(Buffer.concat([Buffer.from([2]), u16(tb.length), tb, u16(body.length), body]));
    },
    onArrive: (f) => (cb = f),
    close: () => (a.destroy(), b.destroy()),
  };
}

async function nativePair(url: string, from: string, to: string): Promise<Pair> {
  const open = async (user: string) => {
    const ws = new WebSocket(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${await token(user)}` } });
    await new Promise<void>((r, j) => (ws.once('open', () => r()), ws.once('error', j)));
    const f: ClientFrame = { t: 'hello', device: 'd', cursor: 0 };
    ws.send(encodeBinary(f));
    await new Promise<void>((r) => ws.once('message', () => r()));
    return ws;
  };
  const a = await open(from);
  const b = await open(to);
  let cb: (t: number) => void = () => undefined;
  b.on('message', (d: Buffer) => {
    const f = decodeBinary(new Uint8Array(d));
    if (f.t !== 'deliver') return;
    for (const e of f.entries) cb(Number(Buffer.from(e.body).toString()));
    b.send(encodeBinary({ t: 'deliver_ack', seq: f.entries.at(-1)!.seq }));
  });
  let n = 0;
  return {
    send: () => a.send(encodeBinary({ t: 'send', id: `m${n++}`, to, body: Buffer.from(String(performance.now())) })),
    onArrive: (f) => (cb = f),
    close: () => (a.terminate(), b.terminate()),
  };
}

async function run(kind: 'v1' | 'native', pairs: Pair[], pids: number[]): Promise<void> {
  const lat: number[] = [];
  const t0 = performance.now();
  const c0 = pids.reduce((s, p) => s + ticks(p), 0);
  await Promise.all(
    pairs.map(
      (p) =>
        new Promise<void>((done) => {
          let sent = 0;
          let got = 0;
          p.onArrive((at) => {
            lat.push(performance.now() - at);
            got++;
            if (sent < N) p.send(sent++);
            if (got === N) done();
          });
          while (sent < Math.min(W, N)) p.send(sent++);
        }),
    ),
  );
  const secs = (performance.now() - t0) / 1000;
  const cpu = (pids.reduce((s, p) => s + ticks(p), 0) - c0) / 100;
  lat.sort((x, y) => x - y);
  const total = PAIRS * N;
  console.log(`${kind.padEnd(6)} ${total} msgs in ${secs.toFixed(2)} s: ${Math.round(total / secs)} msg/s, latency p50 ${lat[Math.floor(lat.length / 2)]!.toFixed(2)} ms p99 ${lat[Math.floor(lat.length * 0.99)]!.toFixed(2)} ms, server CPU ${((cpu / total) * 1e6).toFixed(1)} µs/msg`);
  for (const p of pairs) p.close();
}

const port = await freePort();
const v1Port = await freePort();
const server = await startOnprem({ profileDir: null, port, workers: WORKERS, dataDir: join(tmpdir(), `iris-v1-bench-${process.pid}`), keepData: false, secret: SECRET, args: ['--v1-tcp-port', String(v1Port)] });
try {
  const pids = [server.pid!, ...(server.workerPids ?? [])];
  console.log(`on-prem, ${WORKERS} workers; ${PAIRS} pairs (sender and recipient on different workers), ${N} messages each, window ${W}`);
  // Alternated, the first round a warm-up (JIT, SQLite caches): compare the later rounds.
  for (const kind of ['native', 'v1', 'native', 'v1', 'native', 'v1'] as const) {
    const tag = `${kind}${Math.random().toString(36).slice(2, 6)}`;
    const senders = usersOn(0, `${tag}-s`, PAIRS);
    const receivers = usersOn(WORKERS - 1, `${tag}-r`, PAIRS);
    const pairs = await Promise.all(senders.map((s, i) => (kind === 'v1' ? v1Pair(v1Port, s, receivers[i]!) : nativePair(server.url, s, receivers[i]!))));
    await run(kind, pairs, pids);
  }
} finally {
  await server.stop();
}
