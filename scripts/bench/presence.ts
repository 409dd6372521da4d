/**
 * The cost of presence subscriptions (issue 10): one subject with S online subscribers goes offline and online
 * C times, some of them flaps inside the hold. Every user is the real core (core/mailbox.ts, core/presence.ts)
 * over one node:sqlite database; a call between shards (Peers.watch / presenceChanged) is a counted function
 * call: on Cloudflare each is one Durable Object RPC, on-prem one link message when the two users live on
 * different workers (a local call otherwise). Sockets are counting stubs (frames are encoded, not sent).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/presence.ts [--subscribers 1000] [--cycles 20] [--flaps 20]
 *     [--hold-ms 5000] [--max-seconds 60] [--json out.json]
 *
 * Reports, per phase: calls between shards, presence frames written to sockets, SQL rows changed
 * (total_changes(): 0 expected for presence), and CPU (process.cpuUsage, all shards in this one process) per
 * subject change. Bounded: stops after --max-seconds whatever --cycles says, and reports what it did.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, type Config } from '../../core/config.js';
import { Mailbox } from '../../core/mailbox.js';
import type { Conn, ConnState, Peers } from '../../core/ports.js';
import { memoryStorage } from '../lib/memory-storage.js';
import { encodeBinary, type PresenceInfo } from '../../protocol/index.js';

const { values: opt } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    cycles: { type: 'string', default: '20' },
    flaps: { type: 'string', default: '20' },
    'hold-ms': { type: 'string', default: '5000' },
    'max-seconds': { type: 'string', default: '60' },
    json: { type: 'string' },
  },
});
const S = Number(opt.subscribers);
const CYCLES = Number(opt.cycles);
const FLAPS = Number(opt.flaps);
const HOLD = Number(opt['hold-ms']);
const DEADLINE = Date.now() + Number(opt['max-seconds']) * 1000;

const { storage, changes } = memoryStorage();

let now = 1_767_225_600_000;
const counts = { watch: 0, push: 0, frames: 0 };
const config: Config = { ...DEFAULT_CONFIG, presenceHoldMs: HOLD, ratePerSec: 1e6, rateBurst: 1e6 };

class StubConn implements Conn {
  state: ConnState | null = null;
  readonly queuedBytes = 0;
  constructor(readonly user: string) {}
  setState(s: ConnState): void {
    this.state = s;
  }
  send(): void {
    // Presence frames reach subscribers only; the subject's own welcome frames are not presence cost.
    if (this.user !== 'subject') counts.frames++;
  }
  close(): void {
    sockets.get(this.user)!.delete(this);
  }
}

const sockets = new Map<string, Set<StubConn>>();
const boxes = new Map<string, Mailbox>();
const wakes = new Map<string, number>();
const peers: Peers = {
  forward: () => Promise.reject(new Error('no messages in this benchmark')),
  presence: async (u, asker) => box(u).presence(asker),
  watch: async (subject, watcher, on) => {
    counts.watch++;
    return box(subject).watchPresence(watcher, on);
  },
  presenceChanged: async (watcher: string, info: PresenceInfo) => {
    counts.push++;
    return boxes.get(watcher)?.presenceChanged(info) ?? false;
  },
};

function box(user: string): Mailbox {
  let m = boxes.get(user);
  if (!m) {
    if (!sockets.has(user)) sockets.set(user, new Set());
    m = new Mailbox({
      user,
      storage,
      peers,
      config,
      sockets: { list: () => sockets.get(user)! },
      scheduler: { wakeAt: (ms) => wakes.set(user, Math.min(ms, wakes.get(user) ?? Infinity)) },
      clock: { now: () => now },
      log: { log: () => {} },
    });
    boxes.set(user, m);
  }
  return m;
}

async function connect(user: string, device: string): Promise<StubConn> {
  const c = new StubConn(user);
  box(user);
  sockets.get(user)!.add(c);
  await box(user).onMessage(c, encodeBinary({ t: 'hello', device, cursor: 0 }));
  return c;
}

async function disconnect(c: StubConn): Promise<void> {
  c.close();
  await box(c.user).onClose(c);
}

async function advance(ms: number): Promise<void> {
  now += ms;
  for (const [u, at] of [...wakes]) {
    if (at <= now) {
      wakes.delete(u);
      await box(u).onWake();
    }
  }
}

interface Phase {
  phase: string;
  changes: number;
  calls: number;
  frames: number;
  rows: number;
  cpuMs: number;
}
const phases: Phase[] = [];

async function measure(phase: string, n: number, run: () => Promise<void>): Promise<void> {
  const before = { ...counts, rows: changes() };
  const cpu = process.cpuUsage();
  await run();
  const used = process.cpuUsage(cpu);
  phases.push({
    phase,
    changes: n,
    calls: counts.watch + counts.push - before.watch - before.push,
    frames: counts.frames - before.frames,
    rows: changes() - before.rows,
    cpuMs: (used.user + used.system) / 1000,
  });
}

// Setup: S subscribers online (their hellos write their device rows: not counted below), then they subscribe.
const subs: StubConn[] = [];
for (let i = 0; i < S; i++) subs.push(await connect(`w${i}`, 'd1'));
let subject = await connect('subject', 'd1');
// Baseline: the same offline/online cycle with nobody watching. Its rows (the subject's own device cursor and
// last seen, written by hello and close) are what any connection costs; presence should add none to them.
let base = 0;
await measure('baseline: offline + online, no subscribers', 0, async () => {
  for (; base < CYCLES && Date.now() < DEADLINE; base++) {
    await disconnect(subject);
    await advance(HOLD);
    subject = await connect('subject', 'd1');
    await advance(1);
  }
});
phases.at(-1)!.changes = base * 2;
await measure('subscribe (S subscribers x 1 subject)', S, async () => {
  for (const c of subs) await box(c.user).onMessage(c, encodeBinary({ t: 'presence_subscribe', ref: 's', users: ['subject'] }));
});

let cycles = 0;
await measure('offline (announced after the hold) + online', 0, async () => {
  for (; cycles < CYCLES && Date.now() < DEADLINE; cycles++) {
    await disconnect(subject);
    await advance(HOLD);
    subject = await connect('subject', 'd1');
    await advance(1);
  }
});
phases.at(-1)!.changes = cycles * 2;

let flaps = 0;
await measure('flap inside the hold (offline + online)', 0, async () => {
  for (; flaps < FLAPS && Date.now() < DEADLINE; flaps++) {
    await disconnect(subject);
    await advance(Math.floor(HOLD / 4));
    subject = await connect('subject', 'd1');
    await advance(HOLD);
  }
});
phases.at(-1)!.changes = flaps * 2;

await measure('subscribers go offline (unwatch)', S, async () => {
  for (const c of subs) await disconnect(c);
});

const rows = phases.map((p) => ({
  ...p,
  cpuMs: Math.round(p.cpuMs),
  perChange: p.changes > 0 ? { calls: p.calls / p.changes, frames: p.frames / p.changes, rows: p.rows / p.changes, cpuMs: +(p.cpuMs / p.changes).toFixed(2) } : null,
}));
console.log(`presence: ${S} subscribers, ${cycles} offline/online cycles, ${flaps} flaps, hold ${HOLD} ms (subscribers' unwatch rows: their last-seen/device rows at close)`);
console.table(
  rows.map((r) => ({
    phase: r.phase,
    changes: r.changes,
    calls: r.calls,
    frames: r.frames,
    rows: r.rows,
    'cpu ms': r.cpuMs,
    'calls/change': r.perChange?.calls,
    'frames/change': r.perChange?.frames,
    'rows/change': r.perChange?.rows,
    'cpu ms/change': r.perChange?.cpuMs,
  })),
);
if (opt.json) writeFileSync(opt.json, JSON.stringify({ subscribers: S, cycles, flaps, holdMs: HOLD, phases: rows }, null, 2));
