/**
 * The cost of typing indicators (issue 10): P typers each type to their own peer, through the real core
 * (core/mailbox.ts, core/typing.ts) over one node:sqlite database. A call between shards (Peers.typing) is a
 * counted function call: on Cloudflare each is one Durable Object RPC, on-prem one link message when the two
 * users live on different workers (a local call otherwise). Sockets are counting stubs (frames are encoded,
 * not sent). Typing frames enter as binary WebSocket messages (Mailbox.onMessage: guard, decode, hub).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/typing.ts [--pairs 2000] [--repeat 5] [--json out.json]
 *
 * Phases (each typer sends one frame per step unless said): start (`on` to an online peer), renew inside the
 * window (10 `on`s 100 ms apart: coalesced), renew after half the TTL (pushed), stop (`off`), a peer that went
 * offline (first `on`: one call answered "not online"), typing on to that offline peer (on/off cycles past the
 * TTL: no call), a peer never loaded (one call, no shard created). Reports per phase: calls between shards per
 * typing frame, typing_state frames written, SQL rows changed (total_changes(): 0 expected) and CPU per typing
 * frame (process.cpuUsage, both ends in this one process), median of --repeat runs.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, type Config } from '../../core/config.js';
import { Mailbox } from '../../core/mailbox.js';
import type { Conn, ConnState, Peers } from '../../core/ports.js';
import { memoryStorage } from '../lib/memory-storage.js';
import { HELLO_FEATURES, encodeBinary } from '../../protocol/index.js';

const { values: opt } = parseArgs({
  options: {
    pairs: { type: 'string', default: '2000' },
    repeat: { type: 'string', default: '5' },
    json: { type: 'string' },
  },
});
const P = Number(opt.pairs);
const REPEAT = Number(opt.repeat);
const TTL = DEFAULT_CONFIG.typingTtlMs;

const { storage, changes } = memoryStorage();

let now = 1_767_225_600_000;
const counts = { calls: 0, frames: 0 };
const config: Config = { ...DEFAULT_CONFIG };

class StubConn implements Conn {
  state: ConnState | null = null;
  readonly queuedBytes = 0;
  counting = false;
  constructor(readonly user: string) {}
  setState(s: ConnState): void {
    this.state = s;
  }
  send(): void {
    if (this.counting) counts.frames++;
  }
  close(): void {
    sockets.get(this.user)!.delete(this);
  }
}

const sockets = new Map<string, Set<StubConn>>();
const boxes = new Map<string, Mailbox>();
const peers: Peers = {
  forward: () => Promise.reject(new Error('no messages in this benchmark')),
  presence: () => Promise.reject(new Error('no presence in this benchmark')),
  typing: async (to, from, conv, on) => {
    counts.calls++;
    // Like the on-prem router: a shard not in memory is not loaded for a push.
    return boxes.get(to)?.typingFrom(from, conv, on) ?? false;
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
      scheduler: { wakeAt: () => {} },
      clock: { now: () => now },
      log: { log: () => {} },
    });
    boxes.set(user, m);
  }
  return m;
}

async function connect(user: string): Promise<StubConn> {
  const c = new StubConn(user);
  box(user);
  sockets.get(user)!.add(c);
  // The SDK's hello: typing_state goes only to connections that name the typing feature.
  await box(user).onMessage(c, encodeBinary({ t: 'hello', device: 'd', cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.typing }));
  c.counting = true;
  return c;
}

interface Phase {
  phase: string;
  frames: number;
  calls: number;
  framesOut: number;
  rows: number;
  cpuUs: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function run(r: number): Promise<Phase[]> {
  const typers: StubConn[] = [];
  const peerIds: string[] = [];
  for (let i = 0; i < P; i++) {
    typers.push(await connect(`t${r}-${i}`));
    peerIds.push(`p${r}-${i}`);
    await connect(peerIds[i]!);
  }
  const out: Phase[] = [];
  const phase = async (name: string, steps: number, on: (i: number) => boolean, gapMs: number, targets = peerIds): Promise<void> => {
    const c0 = { ...counts };
    const rows0 = changes();
    const cpu0 = process.cpuUsage();
    for (let s = 0; s < steps; s++) {
      for (let i = 0; i < P; i++) await box(typers[i]!.user).onMessage(typers[i]!, encodeBinary({ t: 'typing', conv: targets[i]!, on: on(s) }));
      now += gapMs;
    }
    const cpu = process.cpuUsage(cpu0);
    const frames = steps * P;
    out.push({ phase: name, frames, calls: (counts.calls - c0.calls) / frames, framesOut: (counts.frames - c0.frames) / frames, rows: changes() - rows0, cpuUs: (cpu.user + cpu.system) / frames });
  };
  await phase('start: on to an online peer', 1, () => true, 100);
  await phase('renew inside TTL/2 (coalesced)', 10, () => true, 100);
  now += TTL / 2;
  await phase('renew after TTL/2 (pushed)', 1, () => true, 100);
  await phase('stop: off', 1, () => false, 100);
  // Every peer goes offline (its shard stays in memory, with no socket).
  for (const p of peerIds) for (const c of [...sockets.get(p)!]) {
    c.close();
    await box(p).onClose(c);
  }
  await phase('first on to an offline peer', 1, () => true, TTL);
  await phase('on/off to a known-offline peer for 50 s (one re-ask at 30 s)', 10, (s) => s % 2 === 0, TTL);
  await phase('peer never loaded', 1, () => true, 100, peerIds.map((p) => `${p}-x`));
  return out;
}

const runs: Phase[][] = [];
for (let r = 0; r < REPEAT; r++) runs.push(await run(r));
const table = runs[0]!.map((p, i) => ({
  phase: p.phase,
  frames: p.frames,
  calls: median(runs.map((x) => x[i]!.calls)),
  framesOut: median(runs.map((x) => x[i]!.framesOut)),
  rows: Math.max(...runs.map((x) => x[i]!.rows)),
  cpuUs: median(runs.map((x) => x[i]!.cpuUs)),
  cpuRange: [Math.min(...runs.map((x) => x[i]!.cpuUs)), Math.max(...runs.map((x) => x[i]!.cpuUs))],
}));
process.stdout.write(`typing: ${P} typer/peer pairs, TTL ${TTL} ms, median of ${REPEAT} runs; per typing frame:\n`);
process.stdout.write('| phase | frames | calls | typing_state frames | rows written | CPU µs [range] |\n|---|---:|---:|---:|---:|---:|\n');
for (const t of table) {
  process.stdout.write(`| ${t.phase} | ${t.frames} | ${t.calls.toFixed(2)} | ${t.framesOut.toFixed(2)} | ${t.rows} | ${t.cpuUs.toFixed(1)} [${t.cpuRange[0]!.toFixed(1)}-${t.cpuRange[1]!.toFixed(1)}] |\n`);
}
if (opt.json) writeFileSync(opt.json, JSON.stringify({ pairs: P, ttlMs: TTL, repeat: REPEAT, table }, null, 2));
