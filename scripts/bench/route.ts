/**
 * How should a connection reach the worker that owns its user? Measures the real server both ways:
 *
 *   handoff  the accepting worker authenticates, then passes the TCP socket itself (SCM_RIGHTS) to the owner
 *            through the supervisor; afterwards the owner reads the client directly.
 *   pipe     the accepting worker keeps the socket and relays the bytes to the owner over a unix socket (a
 *            frame relay would cost at least this: it also has to parse and re-frame every message).
 *   local    one worker, no routing at all: the floor.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/route.ts [--conns 300] [--pairs 40] [--messages 20000]
 *
 * Per mode: connection set-up latency (TCP connect -> 101 -> hello -> welcome), split by whether the
 * connection was accepted by its owner or moved; then a messaging phase (pairs of users, 100-byte bodies,
 * a window of sends in flight per sender, cumulative delivery acks) reporting msg/s, send->deliver latency and
 * the CPU time all server processes spent per message (from /proc). Bounded: fixed counts, 90 s per phase.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { SUBPROTOCOL, decodeBinary, encodeBinary } from '../../protocol/index.js';
import { ownerOf } from '../../onprem/owner.js';
import { freePort } from '../lib/net.js';
import { parseServerFrom, serverNodeArgs } from '../lib/server.js';
import { mintToken } from '../token.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SECRET = 'route-bench-secret';
const { values } = parseArgs({
  options: {
    conns: { type: 'string', default: '300' },
    pairs: { type: 'string', default: '40' },
    messages: { type: 'string', default: '20000' },
    window: { type: 'string', default: '4' },
    pings: { type: 'string', default: '2500' },
    'ping-window': { type: 'string', default: '1' },
    'skip-messaging': { type: 'boolean', default: false },
    modes: { type: 'string', default: 'local,handoff,pipe' },
    server: { type: 'string', default: 'dist' },
  },
});
const CONNS = Number(values.conns);
const PAIRS = Number(values.pairs);
const MESSAGES = Number(values.messages);
const WINDOW = Number(values.window);
const PINGS = Number(values.pings);
const PING_WINDOW = Number(values['ping-window']);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuTicks(pid: number): number {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
  } catch {
    return 0;
  }
}

const TICK_MS = 10; // CLK_TCK = 100 on Linux

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

async function startServer(mode: string): Promise<{ url: string; port: number; pids: number[]; stop: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'iris-route-bench-'));
  const port = await freePort();
  const workers = mode === 'local' ? 1 : 2;
  const child = spawn(process.execPath, [...serverNodeArgs(parseServerFrom(values.server)), '--port', String(port), '--data-dir', dataDir, '--workers', String(workers)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      IRIS_JWT_SECRET: SECRET,
      IRIS_ROUTE: mode === 'pipe' ? 'pipe' : 'handoff',
      IRIS_RATE_PER_SEC: '100000',
      IRIS_RATE_BURST: '100000',
      IRIS_CONNECT_RATE: '1000000',
      IRIS_LOG: 'error',
    },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 30_000;
  let pids: number[] = [];
  for (;;) {
    const m = /pids ([\d,]+)/.exec(out);
    if (m) {
      pids = m[1]!.split(',').filter((x) => /^\d+$/.test(x)).map(Number);
      break;
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start:\n${out}`);
    await sleep(20);
  }
  return {
    url: `ws://127.0.0.1:${port}/v1/connect`,
    port,
    pids: [child.pid!, ...pids],
    stop: async () => {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([done, sleep(20_000)]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function movedCount(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    if (/^iris_connections_opened_total\{via="(handoff|pipe)"/.test(line)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

interface Client {
  user: string;
  ws: WebSocket;
  onDeliver?: (seq: number, bodies: Uint8Array[]) => void;
  onAck?: () => void;
  onPong?: () => void;
  moved?: boolean;
}

async function connect(url: string, user: string): Promise<Client> {
  const token = await mintToken(user, { secret: SECRET, ttl: '1h' });
  const ws = new WebSocket(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  const c: Client = { user, ws };
  await new Promise<void>((res, rej) => {
    ws.once('open', () => {
      ws.send(encodeBinary({ t: 'hello', device: 'd', cursor: 0 }));
    });
    ws.on('message', (data: Buffer) => {
      const f = decodeBinary(new Uint8Array(data));
      if (f.t === 'welcome') res();
      else if (f.t === 'deliver') c.onDeliver?.(f.entries[f.entries.length - 1]!.seq, f.entries.filter((e) => e.kind === 'message').map((e) => e.body));
      else if (f.t === 'send_ack') c.onAck?.();
      else if (f.t === 'pong') c.onPong?.();
      else if (f.t === 'error') rej(new Error(`${f.code}: ${f.message}`));
    });
    ws.once('error', rej);
  });
  return c;
}

async function bench(mode: string): Promise<void> {
  const srv = await startServer(mode);
  const clients: Client[] = [];
  try {
    // ---- phase 1: connection set-up
    const local: number[] = [];
    const moved: number[] = [];
    let before = await movedCount(srv.port);
    const phaseEnd = Date.now() + 90_000;
    for (let i = 0; i < CONNS && Date.now() < phaseEnd; i++) {
      const t0 = performance.now();
      clients.push(await connect(srv.url, `u${mode}${i}`));
      const ms = performance.now() - t0;
      const after = await movedCount(srv.port);
      clients[clients.length - 1]!.moved = after > before;
      (after > before ? moved : local).push(ms);
      before = after;
    }
    const f = (xs: number[]) => `n=${xs.length} p50 ${pct(xs, 0.5).toFixed(2)} ms p99 ${pct(xs, 0.99).toFixed(2)} ms`;
    console.log(`[${mode}] set-up, accepted by owner: ${f(local)}; moved to owner: ${f(moved)}`);

    // ---- phase 2: transport cost alone: ping -> pong (answered by the owner's mailbox, no storage).
    // One untimed warm-up round over every connection first (JIT), then each class alone.
    for (const cls of ['warm-up', 'owner-accepted', 'moved'] as const) {
      const group = cls === 'warm-up' ? clients.slice(0, 80) : clients.filter((c) => (c.moved ?? false) === (cls === 'moved')).slice(0, 40);
      if (group.length === 0) continue;
      const cpuA = srv.pids.reduce((a, p) => a + cpuTicks(p), 0);
      const tA = performance.now();
      let pongs = 0;
      await Promise.all(
        group.map(
          (c) =>
            new Promise<void>((resolve) => {
              let sent = 0;
              let got = 0;
              const ping = encodeBinary({ t: 'ping' });
              c.onPong = () => {
                got++;
                pongs++;
                if (got >= PINGS) return resolve();
                if (sent < PINGS) {
                  c.ws.send(ping);
                  sent++;
                }
              };
              for (; sent < Math.min(PING_WINDOW, PINGS); sent++) c.ws.send(ping);
            }),
        ),
      );
      const secsA = (performance.now() - tA) / 1000;
      const cpuMsA = (srv.pids.reduce((a, p) => a + cpuTicks(p), 0) - cpuA) * TICK_MS;
      if (cls === 'warm-up') continue;
      console.log(
        `[${mode}] ping/pong (window ${PING_WINDOW}) on ${group.length} ${cls} connections: ${pongs} round trips in ${secsA.toFixed(2)} s = ${Math.round(pongs / secsA)}/s; ` +
          `server CPU ${((cpuMsA * 1000) / pongs).toFixed(1)} us per round trip`,
      );
    }

    // ---- phase 3: messaging between pairs (the whole engine: storage, forwards, receipts)
    if (values['skip-messaging']) return;
    const pairs: [Client, Client][] = [];
    for (let i = 0; i + 1 < clients.length && pairs.length < PAIRS; i += 2) pairs.push([clients[i]!, clients[i + 1]!]);
    const perPair = Math.floor(MESSAGES / pairs.length);
    const lat: number[] = [];
    let delivered = 0;
    const cpu0 = srv.pids.reduce((a, p) => a + cpuTicks(p), 0);
    const t0 = performance.now();
    await Promise.all(
      pairs.map(([s, r]) => {
        return new Promise<void>((resolve) => {
          let sent = 0;
          let inflight = 0;
          let got = 0;
          r.onDeliver = (seq, bodies) => {
            const now = performance.now();
            for (const b of bodies) lat.push(now - new DataView(b.buffer, b.byteOffset, 8).getFloat64(0));
            got += bodies.length;
            delivered += bodies.length;
            r.ws.send(encodeBinary({ t: 'deliver_ack', seq }));
            if (got >= perPair) resolve();
          };
          const pump = () => {
            while (inflight < WINDOW && sent < perPair && Date.now() < phaseEnd + 90_000) {
              const body = new Uint8Array(100);
              new DataView(body.buffer).setFloat64(0, performance.now());
              s.ws.send(encodeBinary({ t: 'send', id: `m${sent++}`, to: r.user, body }));
              inflight++;
            }
          };
          s.onAck = () => {
            inflight--;
            pump();
          };
          pump();
        });
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    const cpuMs = (srv.pids.reduce((a, p) => a + cpuTicks(p), 0) - cpu0) * TICK_MS;
    const cross = pairs.filter(([s, r]) => ownerOf(s.user, 2) !== ownerOf(r.user, 2)).length;
    console.log(
      `[${mode}] messaging: ${delivered} msgs over ${pairs.length} pairs (${mode === 'local' ? 0 : cross} cross-worker) in ${secs.toFixed(2)} s = ` +
        `${Math.round(delivered / secs)} msg/s; send->deliver p50 ${pct(lat, 0.5).toFixed(1)} ms p99 ${pct(lat, 0.99).toFixed(1)} ms max ${pct(lat, 1).toFixed(0)} ms; ` +
        `server CPU ${((cpuMs * 1000) / delivered).toFixed(0)} us/msg`,
    );
  } finally {
    for (const c of clients) c.ws.terminate();
    await srv.stop();
  }
}

console.log(`route bench: ${CONNS} connections, ${PAIRS} pairs, ${MESSAGES} messages, window ${WINDOW}, node ${process.version}`);
for (const mode of values.modes.split(',')) await bench(mode);
