/**
 * Group fan-out on a running on-prem server (issue 10): send -> delivered to every online member, end to end over
 * real WebSockets. Starts the built server (dist/, `npm run build`), connects --members clients (one device each,
 * all online), creates one group of them, then sends --messages group messages one at a time from rotating
 * senders, each after the previous reached every member; reports the latency percentiles of the last member's
 * receipt. The clients run in this one process, so their decoding is in the figures (an upper bound).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/groups-live.ts --members 256,1024 --messages 200 --workers 2
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { decodeFrame, encodeBinary, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import { freePort } from '../lib/net.js';
import { ROOT, serverNodeArgs } from '../lib/server.js';
import { mintToken } from '../token.js';

const { values } = parseArgs({
  options: {
    members: { type: 'string', default: '256' },
    messages: { type: 'string', default: '200' },
    workers: { type: 'string', default: '2' },
  },
});

interface Member {
  user: string;
  ws: WebSocket;
  /** Highest group seq received. */
  seq: number;
  waiters: (() => void)[];
  frames: ServerFrame[];
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function connect(url: string, user: string): Promise<Member> {
  const tok = await mintToken(user);
  const ws = new WebSocket(url, ['iris.v1'], { headers: { authorization: `Bearer ${tok}` }, perMessageDeflate: false });
  const m: Member = { user, ws, seq: 0, waiters: [], frames: [] };
  ws.on('message', (data: Buffer) => {
    const f = decodeFrame(new Uint8Array(data)) as ServerFrame;
    if (f.t === 'group_deliver' && f.entries.length > 0) {
      m.seq = Math.max(m.seq, f.entries.at(-1)!.seq);
      ws.send(encodeBinary({ t: 'group_ack', group: f.group, seq: f.entries.at(-1)!.seq }));
    } else m.frames.push(f);
    const w = m.waiters;
    m.waiters = [];
    for (const fn of w) fn();
  });
  await new Promise<void>((res, rej) => {
    ws.once('open', () => res());
    ws.once('error', rej);
  });
  send(m, { t: 'hello', device: 'bench', cursor: 0 });
  await until(m, () => m.frames.some((f) => f.t === 'welcome'));
  return m;
}

function send(m: Member, f: ClientFrame): void {
  m.ws.send(encodeBinary(f));
}

function until(m: Member, cond: () => boolean): Promise<void> {
  return new Promise((res) => {
    const check = () => (cond() ? res() : m.waiters.push(check));
    check();
  });
}

async function run(url: string, n: number, messages: number, run: string): Promise<void> {
  const members: Member[] = [];
  for (let i = 0; i < n; i += 64) members.push(...(await Promise.all(Array.from({ length: Math.min(64, n - i) }, (_, j) => connect(url, `${run}-u${i + j}`)))));
  const group = `${run}-g`;
  const owner = members[0]!;
  const others = members.slice(1).map((m) => m.user);
  const batches = [others.slice(0, 255), ...Array.from({ length: Math.ceil((others.length - 255) / 256) }, (_, i) => others.slice(255 + i * 256, 255 + (i + 1) * 256))].filter((b) => b.length > 0);
  send(owner, { t: 'group_create', id: 'create', group, name: 'bench', members: batches[0] ?? [] });
  await until(owner, () => owner.frames.some((f) => f.t === 'group_send_ack' && f.id === 'create'));
  let head = 0;
  for (let i = 1; i < batches.length; i++) {
    send(owner, { t: 'group_add', id: `add${i}`, group, members: batches[i]! });
    await until(owner, () => owner.frames.some((f) => f.t === 'group_send_ack' && f.id === `add${i}`));
  }
  const ack = owner.frames.filter((f): f is Extract<ServerFrame, { t: 'group_send_ack' }> => f.t === 'group_send_ack').at(-1)!;
  head = ack.seq;
  await Promise.all(members.map((m) => until(m, () => m.seq >= head)));
  const lat: number[] = [];
  const acked: number[] = [];
  for (let i = 0; i < messages; i++) {
    const sender = members[i % Math.min(members.length, 16)]!;
    const t0 = performance.now();
    send(sender, { t: 'group_send', id: `b${i}`, group, body: new TextEncoder().encode(`message ${i}`) });
    await until(sender, () => sender.frames.some((f) => f.t === 'group_send_ack' && f.id === `b${i}`));
    acked.push(performance.now() - t0);
    const seq = ++head;
    await Promise.all(members.map((m) => until(m, () => m.seq >= seq)));
    lat.push(performance.now() - t0);
  }
  lat.sort((a, b) => a - b);
  acked.sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(1);
  process.stdout.write(
    `| ${n} | ${messages} | ${f(pct(acked, 50))} | ${f(pct(acked, 99))} | ${f(pct(lat, 50))} | ${f(pct(lat, 99))} | ${f(lat.at(-1)!)} |\n`,
  );
  for (const m of members) m.ws.terminate();
}

const port = await freePort();
const dir = mkdtempSync(join(tmpdir(), 'iris-groups-live-'));
const server = spawn(process.execPath, [...serverNodeArgs(), '--dev-mode', '1', '--port', String(port), '--data-dir', join(dir, 'data'), '--workers', values.workers!], {
  cwd: ROOT,
  env: { ...process.env, IRIS_RATE_PER_SEC: '1000', IRIS_RATE_BURST: '1000', IRIS_CONNECT_RATE: '100000' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((res) => server.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && res()));
try {
  process.stdout.write(`workers ${values.workers}, Node ${process.version}\n\n| members | messages | ack p50 ms | ack p99 ms | all delivered p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|\n`);
  for (const n of values.members!.split(',').map(Number)) await run(`ws://127.0.0.1:${port}/v1/connect`, n, Number(values.messages), `b${Date.now().toString(36)}${n}`);
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
