/**
 * Storage-path benchmark of one worker: the real core Mailbox over the real GroupCommitStorage on a real file,
 * with in-memory sockets (no network), so the number is what one worker process can commit per second.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/engine.ts [--messages 20000] [--users 1000] [--inflight 256] [--no-one-hop] [--sync commit|async] [--hot]
 *
 * --hot: every other user sends to u0 (one hot inbox) instead of random pairs.
 *
 * Runs the same workload under several group-commit settings and prints one line per setting: messages/s
 * (accepted, delivered and acked, receipts included), COMMITs, operations per COMMIT, and COMMIT (fsync) time.
 * Bounded: a fixed message count, and each run stops after 60 s.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG } from '../../core/config.js';
import { Mailbox } from '../../core/mailbox.js';
import type { Conn, ConnState, ForwardBatch, ForwardResult, Peers } from '../../core/ports.js';
import { decodeBinary, encodeBinary } from '../../protocol/index.js';
import { GroupCommitStorage } from '../../onprem/storage.js';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '20000' },
    users: { type: 'string', default: '1000' },
    inflight: { type: 'string', default: '256' },
    only: { type: 'string' },
    'no-one-hop': { type: 'boolean', default: false },
    sync: { type: 'string', default: 'commit' },
    hot: { type: 'boolean', default: false },
  },
});
/** Sender and recipient in one storage commit together (Peers.local), as in an on-prem worker. */
const ONE_HOP = !values['no-one-hop'];

interface Box {
  mb: Mailbox;
  conns: Set<BenchConn>;
  busy: number;
  wake: number | null;
}
const MESSAGES = Number(values.messages);
const USERS = Number(values.users);
const INFLIGHT = Number(values.inflight);

interface Setting {
  name: string;
  windowMs: number;
  maxBatch: number;
}

const SETTINGS: Setting[] = [
  { name: 'no batching (maxBatch=1: one fsync per operation)', windowMs: 0, maxBatch: 1 },
  { name: 'group commit, end of event-loop turn (default)', windowMs: 0, maxBatch: 1024 },
  { name: 'group commit, 1 ms window', windowMs: 1, maxBatch: 1024 },
  { name: 'group commit, 5 ms window', windowMs: 5, maxBatch: 4096 },
];

class BenchConn implements Conn {
  state: ConnState | null = null;
  readonly queuedBytes = 0;
  constructor(private readonly onFrame: (c: BenchConn, data: Uint8Array) => void) {}
  setState(s: ConnState): void {
    this.state = s;
  }
  send(data: string | Uint8Array): void {
    if (typeof data !== 'string') this.onFrame(this, data);
  }
  close(): void {}
}

async function run(s: Setting): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iris-bench-engine-'));
  let commits = 0;
  let fns = 0;
  let commitSec = 0;
  const lat: number[] = [];
  const storage = new GroupCommitStorage(join(dir, 'w.sqlite'), {
    windowMs: s.windowMs,
    maxBatch: s.maxBatch,
    sync: values.sync === 'commit' ? 'commit' : 'async',
    observer: {
      committed: (n, _rows, sec) => {
        commits++;
        fns += n;
        commitSec += sec;
        lat.push(sec);
      },
    },
  });
  // No refusals in a CPU measurement: no rate limit, and (for --hot, 1,024 sends in flight into one inbox) caps
  // above what can be in flight. Any error frame ends the run loudly rather than leaving a send unanswered.
  const config = { ...DEFAULT_CONFIG, ratePerSec: 1e9, rateBurst: 1e9, inboxCap: 1_000_000, outboxCap: 1_000_000 };
  const boxes = new Map<string, Box>();
  let delivered = 0;
  let deliverFrames = 0;
  let receipts = 0;
  let acked = 0;
  const pending = new Map<string, () => void>();
  const peers: Peers = {
    forward: (to: string, batch: ForwardBatch): Promise<ForwardResult> => box(to).mb.receive(batch),
    presence: async (u) => box(u).mb.presence(),
  };
  // One worker: every recipient shares the storage, as onprem/worker/router.ts's Router.local (--no-one-hop: forward()).
  if (ONE_HOP) {
    peers.local = (to: string) => {
      const b = box(to);
      return {
        handOver: (batch: ForwardBatch) => {
          const h = b.mb.handOver(batch);
          return { ...h, deliver: () => track(b, h.deliver()).then(() => undefined) };
        },
      };
    };
  }
  let acksInFlight = 0;
  /** Receipts are cumulative: per sender>recipient, the outbox numbers acked and not yet covered by one. */
  const unreceipted = new Map<string, number[]>();
  const toOf = new Map<string, string>();
  let covered = 0;
  const onFrame = (user: string) => (c: BenchConn, data: Uint8Array) => {
    const f = decodeBinary(data);
    if (f.t === 'send_ack') {
      acked++;
      const to = toOf.get(f.id);
      toOf.delete(f.id);
      if (to !== undefined && !f.dup) {
        const key = `${user}>${to}`;
        const list = unreceipted.get(key) ?? [];
        list.push(Number(f.msg.slice(f.msg.lastIndexOf(':') + 1)));
        unreceipted.set(key, list);
      }
      pending.get(f.id)?.();
      pending.delete(f.id);
    } else if (f.t === 'error') {
      console.error(`engine bench: ${user} got an error frame: ${f.code} ${f.message}`);
      process.exit(1);
    } else if (f.t === 'receipts') {
      for (const e of f.items) {
        // Cumulative state (PROTOCOL.md 9.6): covers every acked message of ours to e.peer up to e.msg.
        receipts++;
        const list = unreceipted.get(`${user}>${e.peer}`) ?? [];
        const n = Number(e.msg.slice(e.msg.lastIndexOf(':') + 1));
        while (list.length > 0 && list[0]! <= n) {
          list.shift();
          covered++;
        }
      }
    } else if (f.t === 'deliver') {
      deliverFrames++;
      delivered += f.entries.filter((e) => e.kind === 'message').length;
      const seq = f.entries[f.entries.length - 1]!.seq;
      // The device acks what it got, as the SDK does (cumulative). Counted, so the run closes the storage only
      // after the last ack was applied.
      acksInFlight++;
      setImmediate(() => void send(user, c, encodeBinary({ t: 'deliver_ack', seq })).finally(() => acksInFlight--));
    }
  };
  // The worker's shard bookkeeping (onprem/worker/shards.ts): timers for wakeAt, calls in flight (Shards.track).
  const timers: ReturnType<typeof setTimeout>[] = [];
  function box(user: string) {
    let b = boxes.get(user);
    if (!b) {
      const conns = new Set<BenchConn>();
      const bb: Box = { mb: null as unknown as Mailbox, conns, busy: 0, wake: null };
      bb.mb = new Mailbox({
        user,
        storage,
        peers,
        sockets: { list: () => conns },
        scheduler: {
          wakeAt: (ms) => {
            if (bb.wake !== null && bb.wake <= ms) return;
            bb.wake = ms;
            timers.push(setTimeout(() => {
              bb.wake = null;
              void track(bb, bb.mb.onWake());
            }, Math.max(0, ms - Date.now())));
          },
        },
        clock: { now: () => Date.now() },
        log: { log: (level, message, error) => console.error(`${level}: ${message}`, error ?? '') },
        config,
      });
      b = bb;
      boxes.set(user, b);
    }
    return b;
  }
  function track(b: Box, p: Promise<unknown>): Promise<unknown> {
    b.busy++;
    const done = () => {
      b.busy--;
    };
    p.then(done, done);
    return p;
  }
  const send = (user: string, c: BenchConn, data: Uint8Array) => track(box(user), box(user).mb.onMessage(c, data));
  const users = Array.from({ length: USERS }, (_, i) => `u${i}`);
  const conns = new Map<string, BenchConn>();
  for (const u of users) {
    const c = new BenchConn(onFrame(u));
    box(u).conns.add(c);
    conns.set(u, c);
    await send(u, c, encodeBinary({ t: 'hello', device: 'd', cursor: 0 }));
  }
  commits = fns = commitSec = 0;
  lat.length = 0;
  const body = new Uint8Array(100).fill(7);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const deadline = Date.now() + 60_000;
  let sent = 0;
  let rnd = 12345;
  const next = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) % USERS;
  await new Promise<void>((resolve) => {
    let inflight = 0;
    const pump = () => {
      while (inflight < INFLIGHT && sent < MESSAGES && Date.now() < deadline) {
        let from = users[next()]!;
        let to = users[next()]!;
        if (values.hot) {
          if (from === users[0]) from = users[1]!;
          to = users[0]!;
        } else if (to === from) to = users[(Number(from.slice(1)) + 1) % USERS]!;
        const id = `m${sent++}`;
        toOf.set(id, to);
        inflight++;
        pending.set(id, () => {
          inflight--;
          pump();
        });
        void send(from, conns.get(from)!, encodeBinary({ t: 'send', id, to, body }));
      }
      if ((sent >= MESSAGES || Date.now() >= deadline) && inflight === 0) resolve();
    };
    pump();
  });
  const tAck = performance.now();
  while ((delivered < sent || covered < sent || acksInFlight > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  for (const t of timers) clearTimeout(t);
  storage.close();
  rmSync(dir, { recursive: true, force: true });
  lat.sort((a, b) => a - b);
  const q = (p: number) => ((lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0) * 1e3).toFixed(2);
  const secs = (t1 - t0) / 1000;
  console.log(
    `${s.name}\n  ${sent} msgs acked in ${((tAck - t0) / 1000).toFixed(2)} s, all delivered, acked and receipted in ${secs.toFixed(2)} s: ` +
      `${Math.round(sent / secs)} msg/s end to end, CPU ${((cpu.user + cpu.system) / sent).toFixed(0)} us/msg (user+system, receipt included); ${commits} COMMITs (${(commits / sent).toFixed(2)}/msg), ` +
      `${(fns / Math.max(1, commits)).toFixed(1)} ops/COMMIT, COMMIT p50 ${q(0.5)} ms p99 ${q(0.99)} ms, ` +
      `${((commitSec / secs) * 100).toFixed(0)}% of wall time in COMMIT; delivered ${delivered} in ${deliverFrames} deliver frames, receipts ${receipts} (covering ${covered}), acks ${acked}`,
  );
}

console.log(`engine bench: ${MESSAGES} messages, ${USERS} users${values.hot ? ' all sending to u0 (hot inbox)' : ''}, ${INFLIGHT} sends in flight, 100-byte bodies, node ${process.version}`);
for (const s of SETTINGS) {
  if (values.only && !s.name.includes(values.only)) continue;
  await run(s);
}
