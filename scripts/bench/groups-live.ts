/**
 * Group fan-out on a running on-prem server (issue 10): send -> delivered to every online member, end to end over
 * real WebSockets. Starts the built server (dist/, `npm run build`), connects --members clients (one device each,
 * all online), creates one group of them, then sends --messages group messages one at a time from rotating
 * senders, each after the previous reached every member; reports the latency percentiles of the last member's
 * receipt. The clients run in this one process, so their decoding is in the figures (an upper bound).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/groups-live.ts --members 256,1024 --messages 200 --workers 2
 *
 * With --sustain S it measures instead the group messages/s one group sustains: 16 senders keep up to --window
 * sends each unanswered for S seconds; the rate counts messages that reached EVERY member (the clock stops when the
 * last member has the last one). Both modes report the server's CPU (its processes' user + system time, from /proc)
 * per group message.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { HELLO_FEATURES, decodeFrame, encodeBinary, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import { freePort } from '../lib/net.js';
import { ROOT, serverNodeArgs } from '../lib/server.js';
import { mintToken } from '../token.js';

const { values } = parseArgs({
  options: {
    members: { type: 'string', default: '256' },
    messages: { type: 'string', default: '200' },
    workers: { type: 'string', default: '2' },
    sustain: { type: 'string', default: '0' },
    window: { type: 'string', default: '8' },
  },
});

/** CPU seconds (user + system) of the server and every process under it (its workers), from /proc. */
function serverCpu(root: number): number {
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, s] of stats) if (!tree.has(pid) && tree.has(s.ppid)) grew = tree.add(pid) !== undefined;
  }
  let ticks = 0;
  for (const pid of tree) ticks += stats.get(pid)?.ticks ?? 0;
  return ticks / 100; // USER_HZ
}

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
  // Group deliveries go only to connections that name the groups feature (PROTOCOL.md 7.1).
  send(m, { t: 'hello', device: 'bench', cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.groups });
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
  if (sustainS > 0) return sustain(members, group, head, n);
  const lat: number[] = [];
  const acked: number[] = [];
  const cpu0 = serverCpu(server.pid!);
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
  const cpuMs = ((serverCpu(server.pid!) - cpu0) * 1000) / messages;
  process.stdout.write(
    `| ${n} | ${messages} | ${f(pct(acked, 50))} | ${f(pct(acked, 99))} | ${f(pct(lat, 50))} | ${f(pct(lat, 99))} | ${f(lat.at(-1)!)} | ${cpuMs.toFixed(2)} |\n`,
  );
  for (const m of members) m.ws.terminate();
}

/** Sustained rate: 16 senders with up to `window` unanswered sends each, for sustainS seconds. */
async function sustain(members: Member[], group: string, head: number, n: number): Promise<void> {
  const senders = members.slice(0, Math.min(16, members.length));
  const window = Number(values.window);
  const cpu0 = serverCpu(server.pid!);
  const t0 = performance.now();
  const stopAt = t0 + sustainS * 1000;
  let sent = 0;
  let acked = 0;
  await Promise.all(
    senders.map(async (s, k) => {
      let mine = 0;
      let done = 0;
      const acks = () => s.frames.filter((f) => f.t === 'group_send_ack').length;
      const base = acks();
      while (performance.now() < stopAt) {
        while (mine - done < window && performance.now() < stopAt) {
          send(s, { t: 'group_send', id: `s${k}-${mine++}`, group, body: new TextEncoder().encode(`sustained ${k} ${mine}`) });
          sent++;
        }
        await until(s, () => acks() - base > done);
        const now = acks() - base;
        acked += now - done;
        done = now;
      }
      await until(s, () => acks() - base >= mine);
      acked += acks() - base - done;
    }),
  );
  const last = head + sent;
  await Promise.all(members.map((m) => until(m, () => m.seq >= last)));
  const secs = (performance.now() - t0) / 1000;
  const cpu = serverCpu(server.pid!) - cpu0;
  process.stdout.write(`| ${n} | ${sent} | ${secs.toFixed(1)} | **${(sent / secs).toFixed(0)}** | ${((sent * n) / secs).toFixed(0)} | ${((cpu * 1000) / sent).toFixed(2)} | ${(cpu / secs).toFixed(2)} |\n`);
  for (const m of members) m.ws.terminate();
}

const sustainS = Number(values.sustain);
const port = await freePort();
const dir = mkdtempSync(join(tmpdir(), 'iris-groups-live-'));
const server = spawn(process.execPath, [...serverNodeArgs(), '--dev-mode', '1', '--port', String(port), '--data-dir', join(dir, 'data'), '--workers', values.workers!], {
  cwd: ROOT,
  env: { ...process.env, IRIS_RATE_PER_SEC: '1000', IRIS_RATE_BURST: '1000', IRIS_CONNECT_RATE: '100000' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((res) => server.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && res()));
try {
  process.stdout.write(
    sustainS > 0
      ? `workers ${values.workers}, Node ${process.version}, ${sustainS} s, window ${values.window} x 16 senders\n\n| members | messages | s | **group msgs/s** (to all) | deliveries/s | server CPU ms / msg | server cores busy |\n|---:|---:|---:|---:|---:|---:|---:|\n`
      : `workers ${values.workers}, Node ${process.version}\n\n| members | messages | ack p50 ms | ack p99 ms | all delivered p50 ms | p99 ms | max ms | server CPU ms / msg |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n`,
  );
  for (const n of values.members!.split(',').map(Number)) await run(`ws://127.0.0.1:${port}/v1/connect`, n, Number(values.messages), `b${Date.now().toString(36)}${n}`);
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
