/**
 * What one 1:1 message costs on the Cloudflare profile, counted rather than timed: SQL rows written and read
 * (what Cloudflare bills), storage transactions, Durable Object requests (RPC calls, incoming WebSocket
 * messages, alarms) and outgoing frames, per delivered message INCLUDING its delivery receipt, and what that
 * comes to per million messages at list prices (issue 8).
 *
 *   npm run bench:cf-rows                         # starts wrangler dev (bench config) on a free port, ~1 min
 *   npm run bench:cf-rows -- --n 200 --paced 50 --sparse 0 --scenarios online,paced   # quicker
 *   npm run bench:cf-rows -- --url http://127.0.0.1:8787 --secret S   # a `wrangler dev -c scripts/bench/wrangler.bench.toml` you run
 *   npm run bench:cf-rows -- --json out.json       # also write every snapshot and the per-statement tally
 *   npm run bench:cf-rows -- --history-depth 100  # the server keeps history for new devices (IRIS_HISTORY_DEPTH)
 *   npm run bench:cf-rows -- --push               # push webhooks on (IRIS_PUSH_URL: a local receiver answering 204)
 *
 * Traffic is the real SDK (client/client.ts, defaults: one send in flight per recipient, cumulative acks every
 * 32 entries or 50 ms, heartbeat after 20 s without sending) through the real edge Worker and UserShard on
 * local workerd. The counters are the shards' own (durable-objects/stats.ts), read through the bench-only
 * route /bench/stats of scripts/bench/cf-bench.ts, before and after each scenario; the frames each client
 * wrote are counted in the client's socket. Scenarios, each with its own pair of fresh users:
 *
 *   online   bob online; alice queues N messages at once (the SDK writes them one at a time)
 *   paced    bob online; alice sends one message, waits for its delivery receipt, then the next (chat pace)
 *   offline  bob offline while alice sends N; then bob connects and catches up
 *   sparse   like paced, with --sparse-gap-ms between messages: what a message costs when nothing else is going
 *            on (the forward safety-net alarm fires 2 s after each send; it is billed as a request)
 *   reads    (not in the default list) alice's --paced messages are delivered and receipted BEFORE the first
 *            snapshot; then bob marks them read one at a time, each waiting for alice's read event: the figures
 *            are per READ MARK (PROTOCOL.md 9.8), not per message
 *   twodev   (not in the default list) like paced, with alice's second device d2 online too: what the sent
 *            entry of multi-device sync (PROTOCOL.md 9.9) adds for a user with two devices
 *   group    (not in the default list) a group message, summed over the GroupShard and every member's UserShard,
 *            for each size in --members (default 8,32,64), --online share of members connected (default 0.25),
 *            --group-n messages at chat pace (default 100; --group-gap-ms between them, default 0), then the
 *            offline members' catch-up:
 *            scripts/bench/cf-rows-groups.ts
 *
 * Before each scenario's first snapshot the pair exchanges one warm-up message (both shards exist, the peers
 * row is there, both devices are registered), so the figures are the steady state, not first contact. After the
 * last message the run waits for the counters to settle (acks flushed, the safety-net alarm fired).
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket as NodeWebSocket } from 'ws';
import { IrisClient } from '../../client/client.js';
import { MemoryStore } from '../../client/store.js';
import type { SocketEvent, SocketInit, WebSocketConstructor, WebSocketLike } from '../../client/socket.js';
import type { ShardStats } from '../../durable-objects/stats.js';
import type { StatementTally } from '../../durable-objects/storage.js';
import { decodeFrame } from '../../protocol/index.js';
import { mintToken } from '../token.js';
import { freePort, startWrangler, type Server } from './servers.js';
import { parseArgs } from 'node:util';
import { groupScenario, groupStatements, groupTable, type GroupOptions, type GroupResult } from './cf-rows-groups.js';

// ------------------------------------------------------------------ prices

/**
 * Workers Paid list prices used for the cost columns (Cloudflare docs, Durable Objects pricing, as stored in
 * 2026; see docs/BENCHMARKS.md for the sources). Marginal prices: the monthly included amounts are ignored.
 */
export const PRICES = {
  /** per million Durable Object requests (HTTP, RPC calls, alarm invocations; WebSocket messages in at 20:1) */
  doRequest: 0.15,
  /** incoming WebSocket messages billed as one request */
  wsPerRequest: 20,
  /** per million GB-s of duration, objects billed at 128 MB */
  durationGbS: 12.5,
  objectGb: 0.128,
  /** per million SQL rows written / read */
  rowWritten: 1.0,
  rowRead: 0.001,
};

// ------------------------------------------------------------------ options

interface Options {
  url: string | null;
  secret: string;
  n: number;
  paced: number;
  sparse: number;
  sparseGapMs: number;
  scenarios: string[];
  json: string | null;
  statements: boolean;
  /** IRIS_HISTORY_DEPTH of the server the bench starts (null: its default). */
  historyDepth: number | null;
  /** Push webhooks on: the bench runs a receiver on a loopback port and sets IRIS_PUSH_URL to it. */
  push: boolean;
  /** The group scenario's sizes, online share and message count. */
  group: GroupOptions;
}

const SCENARIOS = ['online', 'paced', 'offline', 'sparse'];
/** Scenarios run only when named in --scenarios. */
const EXTRA_SCENARIOS = ['reads', 'twodev', 'group'];

function parse(argv: string[]): Options {
  const o: Options = { url: null, secret: 'bench-cf-rows-secret', n: 1000, paced: 200, sparse: 4, sparseGapMs: 2500, scenarios: SCENARIOS, json: null, statements: true, historyDepth: null, push: false, group: { members: [8, 32, 64], online: 0.25, n: 100, gapMs: 0 } };
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      url: { type: 'string' },
      secret: { type: 'string' },
      n: { type: 'string' },
      paced: { type: 'string' },
      sparse: { type: 'string' },
      'sparse-gap-ms': { type: 'string' },
      scenarios: { type: 'string' },
      json: { type: 'string' },
      'no-statements': { type: 'boolean' },
      'history-depth': { type: 'string' },
      push: { type: 'boolean' },
      members: { type: 'string' },
      online: { type: 'string' },
      'group-n': { type: 'string' },
      'group-gap-ms': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (v.help) {
    console.log(`options: --url http://host:port --secret S --n 1000 --paced 200 --sparse 4 --sparse-gap-ms 2500 --scenarios ${SCENARIOS.join(',')} --json FILE --no-statements --history-depth N --push --members 8,32,64 --online 0.25 --group-n 100 --group-gap-ms 0`);
    process.exit(0);
  }
  if (v.url !== undefined) o.url = v.url.replace(/^ws/, 'http').replace(/\/v1\/connect$/, '').replace(/\/$/, '');
  if (v.secret !== undefined) o.secret = v.secret;
  if (v.n !== undefined) o.n = Number(v.n);
  if (v.paced !== undefined) o.paced = Number(v.paced);
  if (v.sparse !== undefined) o.sparse = Number(v.sparse);
  if (v['sparse-gap-ms'] !== undefined) o.sparseGapMs = Number(v['sparse-gap-ms']);
  if (v.scenarios !== undefined) o.scenarios = v.scenarios.split(',');
  if (v.json !== undefined) o.json = v.json;
  if (v['no-statements']) o.statements = false;
  if (v['history-depth'] !== undefined) o.historyDepth = Number(v['history-depth']);
  if (v.push) o.push = true;
  if (v.members !== undefined) o.group.members = v.members.split(',').map(Number);
  if (v.online !== undefined) o.group.online = Number(v.online);
  if (v['group-n'] !== undefined) o.group.n = Number(v['group-n']);
  if (v['group-gap-ms'] !== undefined) o.group.gapMs = Number(v['group-gap-ms']);
  if (!o.group.members.every((m) => Number.isInteger(m) && m >= 2 && m <= 1024)) throw new Error('--members must be sizes in [2, 1024]');
  if (!(o.group.online > 0 && o.group.online <= 1)) throw new Error('--online must be a share in (0, 1]');
  if (!(Number.isInteger(o.group.n) && o.group.n >= 1 && o.group.n <= 2_000)) throw new Error('--group-n must be an integer in [1, 2000]');
  for (const [k, x, max] of [['--n', o.n, 10_000], ['--paced', o.paced, 2_000], ['--sparse', o.sparse, 20]] as const) {
    if (!(Number.isInteger(x) && x >= 0 && x <= max)) throw new Error(`${k} must be an integer in [0, ${max}]`);
  }
  for (const sc of o.scenarios) if (!SCENARIOS.includes(sc) && !EXTRA_SCENARIOS.includes(sc)) throw new Error(`unknown scenario ${sc} (${SCENARIOS.join(', ')})`);
  return o;
}

// ------------------------------------------------------------------ counting clients

/** Frames one client wrote, by frame type, and frames it received. */
interface Wire {
  out: Record<string, number>;
  in: number;
}

function frameType(data: string | ArrayBuffer | ArrayBufferView): string {
  try {
    const bytes = typeof data === 'string' ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return decodeFrame(bytes).t;
  } catch {
    return 'undecodable';
  }
}

/** The SDK's socket, over `ws`, counting what goes through it. Billing counts messages, so this counts frames. */
function countingSocket(wire: Wire): WebSocketConstructor {
  return class CountingSocket implements WebSocketLike {
    private readonly ws: NodeWebSocket;
    constructor(url: string, init: SocketInit) {
      this.ws = new NodeWebSocket(url, Array.isArray(init) ? init : init.protocols, { perMessageDeflate: false });
      this.ws.addEventListener('message', () => {
        wire.in++;
      });
    }
    get readyState(): number {
      return this.ws.readyState;
    }
    get protocol(): string {
      return this.ws.protocol;
    }
    get binaryType(): string {
      return this.ws.binaryType;
    }
    set binaryType(v: string) {
      if (v === 'arraybuffer' || v === 'nodebuffer' || v === 'fragments') this.ws.binaryType = v;
    }
    send(data: string | ArrayBuffer | ArrayBufferView): void {
      const t = frameType(data);
      wire.out[t] = (wire.out[t] ?? 0) + 1;
      this.ws.send(data);
    }
    close(code?: number, reason?: string): void {
      this.ws.close(code, reason);
    }
    addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: SocketEvent) => void): void {
      // ws's event classes carry the fields SocketEvent reads (data, code, reason, message, error).
      this.ws.addEventListener(type, (ev) => listener(ev as SocketEvent));
    }
  };
}

/** The reference server's message ids are `<sender>:<outbox number>`. */
function outboxNumber(msg: string): number {
  return Number(msg.slice(msg.lastIndexOf(':') + 1));
}

class Party {
  readonly wire: Wire = { out: {}, in: 0 };
  readonly client: IrisClient;
  messages = 0;
  /** Messages this user sent from another device (multi-device sync: `sent` events). */
  sent = 0;
  receipts = 0;
  /** Receipts are cumulative (PROTOCOL.md 9.6): the highest outbox number of ours one of them named. */
  receiptedUpTo = 0;
  /** Read receipts (PROTOCOL.md 9.8): the highest outbox number of ours the peer read. */
  readUpTo = 0;
  private waiters: (() => void)[] = [];

  constructor(
    readonly user: string,
    base: string,
    secret: string,
    device = 'd1',
  ) {
    this.client = new IrisClient({
      url: `${base.replace(/^http/, 'ws')}/v1/connect`,
      token: () => mintToken(user, { secret }),
      device,
      store: new MemoryStore(),
      WebSocket: countingSocket(this.wire),
      probeRefusals: false,
    });
    this.client.on('message', () => {
      this.messages++;
      this.wake();
    });
    this.client.on('sent', () => {
      this.sent++;
      this.wake();
    });
    this.client.on('receipt', (r) => {
      this.receipts++;
      this.receiptedUpTo = Math.max(this.receiptedUpTo, outboxNumber(r.msg));
      this.wake();
    });
    this.client.on('read', (r) => {
      this.readUpTo = Math.max(this.readUpTo, outboxNumber(r.msg));
      this.wake();
    });
    this.client.on('error', (e) => console.error(`${user}: ${e.code}: ${e.message}`));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once cond() holds; rejects after timeoutMs (a bound on the run, not a measurement). */
  async until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.user}: timed out waiting for ${what} (messages ${this.messages}, receipts ${this.receipts})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

// ------------------------------------------------------------------ shard counters

async function stats(base: string, user: string): Promise<ShardStats> {
  const r = await fetch(`${base}/bench/stats?user=${encodeURIComponent(user)}`);
  if (!r.ok) throw new Error(`/bench/stats?user=${user}: ${r.status} ${await r.text()} (is this the bench config, scripts/bench/wrangler.bench.toml?)`);
  return (await r.json()) as ShardStats;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Counters that change while work is going on (not handlerMs, not databaseBytes). */
function activity(s: ShardStats): string {
  return JSON.stringify([s.instance, s.sql, s.rpcIn, s.rpcOut, s.wsIn, s.wsOut, s.upgrades, s.alarms]);
}

/**
 * Waits until the counters of these users have not moved for `quietMs`, after at least `minMs` (the SDK's
 * 50 ms ack timer, the shard's 2 s forward safety-net alarm). Bounded by `maxMs`.
 */
async function settle(base: string, users: string[], minMs: number, quietMs = 600, maxMs = 20_000): Promise<ShardStats[]> {
  const start = Date.now();
  await sleep(minMs);
  let last = '';
  let since = Date.now();
  for (;;) {
    const s = await Promise.all(users.map((u) => stats(base, u)));
    const key = s.map(activity).join('|');
    if (key !== last) {
      last = key;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return s;
    if (Date.now() - start > maxMs) throw new Error(`counters of ${users.join(', ')} still moving after ${maxMs} ms`);
    await sleep(150);
  }
}

// ------------------------------------------------------------------ scenarios

interface Delta {
  rowsWritten: number;
  rowsRead: number;
  statements: number;
  commits: number;
  rpc: number;
  wsIn: number;
  wsOut: number;
  alarms: number;
  upgrades: number;
  handlerMs: number;
  /** Growth of the SQLite database (ctx.storage.sql.databaseSize): what stays stored, for the GB-month item. */
  databaseBytes: number;
}

interface Result {
  scenario: string;
  messages: number;
  /** Receipt entries alice got for them (cumulative receipts: at most one per acknowledgement). */
  receipts: number;
  wallMs: number;
  /** Both shards together, and each. */
  total: Delta;
  alice: Delta;
  bob: Delta;
  /** Frames the two clients wrote, by type (what Cloudflare counts as incoming WebSocket messages). */
  clientOut: Record<string, number>;
  clientIn: number;
  /** Per statement text (both shards), when the shards tally. */
  statements: Record<string, StatementTally & { shard: string }> | null;
}

function delta(a: ShardStats, b: ShardStats, who: string): Delta {
  if (a.instance !== b.instance) throw new Error(`${who}'s shard restarted during the scenario (evicted?): its counters are incomplete`);
  return {
    rowsWritten: b.sql.rowsWritten - a.sql.rowsWritten,
    rowsRead: b.sql.rowsRead - a.sql.rowsRead,
    statements: b.sql.statements - a.sql.statements,
    commits: b.sql.commits - a.sql.commits,
    rpc: b.rpcIn.receive + b.rpcIn.presence - a.rpcIn.receive - a.rpcIn.presence,
    wsIn: b.wsIn - a.wsIn,
    wsOut: b.wsOut - a.wsOut,
    alarms: b.alarms - a.alarms,
    upgrades: b.upgrades - a.upgrades,
    handlerMs: b.handlerMs - a.handlerMs,
    databaseBytes: b.databaseBytes - a.databaseBytes,
  };
}

function add(a: Delta, b: Delta): Delta {
  const out = { ...a };
  for (const k of Object.keys(out) as (keyof Delta)[]) out[k] += b[k];
  return out;
}

function tallyDelta(before: ShardStats, after: ShardStats, shard: string, into: Record<string, StatementTally & { shard: string }>): void {
  for (const [q, t] of Object.entries(after.statements ?? {})) {
    const p = before.statements?.[q];
    const d = { calls: t.calls - (p?.calls ?? 0), rowsRead: t.rowsRead - (p?.rowsRead ?? 0), rowsWritten: t.rowsWritten - (p?.rowsWritten ?? 0) };
    if (d.calls > 0) into[`${shard}\u0000${q}`] = { ...d, shard };
  }
}

function wireTotal(parties: Party[], before: Wire[]): { out: Record<string, number>; in: number } {
  const out: Record<string, number> = {};
  let inn = 0;
  parties.forEach((p, i) => {
    for (const [t, n] of Object.entries(p.wire.out)) out[t] = (out[t] ?? 0) + n - (before[i]!.out[t] ?? 0);
    inn += p.wire.in - before[i]!.in;
  });
  for (const t of Object.keys(out)) if (out[t] === 0) delete out[t];
  return { out, in: inn };
}

const snapWire = (p: Party): Wire => ({ out: { ...p.wire.out }, in: p.wire.in });

async function scenario(o: Options, base: string, name: string, n: number): Promise<Result> {
  const tag = `${name}-${process.pid}-${Date.now().toString(36)}`;
  const alice = new Party(`alice-${tag}`, base, o.secret);
  const bob = new Party(`bob-${tag}`, base, o.secret);
  // twodev: alice's second device, on the same shard (its counters are alice's).
  const alice2 = name === 'twodev' ? new Party(alice.user, base, o.secret, 'd2') : null;
  const users = [alice.user, bob.user];
  try {
    // Warm-up: both shards and the peers row exist, both devices are registered.
    await Promise.all([alice.client.connect(), bob.client.connect(), alice2?.client.connect()]);
    const warm = await alice.client.send(bob.user, 'warm-up');
    await alice.until(() => alice.receiptedUpTo >= outboxNumber(warm.msg) && bob.messages >= 1, 'the warm-up receipt');
    if (name === 'offline') await bob.client.close();
    const marks: string[] = [];
    if (name === 'reads') {
      // The messages and their delivery receipts are not part of what is measured: only the read marks are.
      const acks = [];
      for (let i = 0; i < n; i++) acks.push(await alice.client.send(bob.user, `to be read ${i}`));
      marks.push(...acks.map((x) => x.msg));
      await bob.until(() => bob.messages >= n + 1, `${n} messages at bob`);
      await alice.until(() => alice.receiptedUpTo >= outboxNumber(marks.at(-1)!), 'their delivery receipts');
    }
    // Less the warm-up's receipt (and, reads, those of the messages read).
    const receiptsBefore = alice.receipts;
    const before = await settle(base, users, 2_500);
    const parties = alice2 ? [alice, bob, alice2] : [alice, bob];
    const wireBefore = parties.map(snapWire);
    const t0 = Date.now();
    let lastMsg = '';
    const body = (i: number) => `message ${i} of ${name}: about the size of a short chat line`;

    if (name === 'reads') {
      for (const msg of marks) {
        bob.client.markRead(alice.user, msg);
        await alice.until(() => alice.readUpTo >= outboxNumber(msg), `the read receipt of ${msg}`);
      }
      lastMsg = marks.at(-1)!;
    } else if (name === 'online' || name === 'offline') {
      const acks = Array.from({ length: n }, (_, i) => alice.client.send(bob.user, body(i)));
      lastMsg = (await Promise.all(acks)).at(-1)!.msg;
      if (name === 'offline') {
        // Everything is in bob's inbox (or on its way) before he comes back.
        await settle(base, users, 100, 400);
        await bob.client.connect();
      }
    } else {
      const gap = name === 'sparse' ? o.sparseGapMs : 0;
      for (let i = 0; i < n; i++) {
        lastMsg = (await alice.client.send(bob.user, body(i))).msg;
        await alice.until(() => alice.receiptedUpTo >= outboxNumber(lastMsg), `receipt ${i + 1}`);
        if (gap > 0) await sleep(gap);
      }
    }
    await bob.until(() => bob.messages >= n + 1, `${n} messages at bob`);
    await alice.until(() => alice.receiptedUpTo >= outboxNumber(lastMsg), `receipts covering all ${n} messages at alice`);
    const wallMs = Date.now() - t0;
    const receipts = alice.receipts - receiptsBefore;
    const after = await settle(base, users, 2_500);
    if (bob.messages !== n + 1) throw new Error(`expected ${n + 1} messages, got ${bob.messages}`);
    const a = delta(before[0]!, after[0]!, 'alice');
    const b = delta(before[1]!, after[1]!, 'bob');
    if (alice2 && alice2.sent < n + 1) throw new Error(`expected ${n + 1} sent entries at alice's d2, got ${alice2.sent}`);
    const wire = wireTotal(parties, wireBefore);
    let statements: Result['statements'] = null;
    if (after[0]!.statements) {
      statements = {};
      tallyDelta(before[0]!, after[0]!, 'alice', statements);
      tallyDelta(before[1]!, after[1]!, 'bob', statements);
    }
    return { scenario: name, messages: n, receipts, wallMs, total: add(a, b), alice: a, bob: b, clientOut: wire.out, clientIn: wire.in, statements };
  } finally {
    await Promise.all([alice.client.close().catch(() => {}), bob.client.close().catch(() => {}), alice2?.client.close().catch(() => {})]);
  }
}

// ------------------------------------------------------------------ report

const f = (x: number, d = 2) => x.toFixed(d);

/** Billed DO requests per message: RPC calls received + alarms + upgrades + incoming WS messages / 20. */
function requestsPerMsg(r: Result): number {
  const t = r.total;
  const wsIn = Object.values(r.clientOut).reduce((a, b) => a + b, 0);
  return (t.rpc + t.alarms + t.upgrades + wsIn / PRICES.wsPerRequest) / r.messages;
}

/** Dollars per million messages, by item. Duration from the handler wall time (a lower bound, see stats.ts). */
export function costPerMillion(r: Result): { requests: number; rowsWritten: number; rowsRead: number; duration: number; total: number } {
  const m = r.messages;
  const requests = requestsPerMsg(r) * PRICES.doRequest;
  const rowsWritten = (r.total.rowsWritten / m) * PRICES.rowWritten;
  const rowsRead = (r.total.rowsRead / m) * PRICES.rowRead;
  const duration = ((r.total.handlerMs / 1000 / m) * PRICES.objectGb) * PRICES.durationGbS;
  return { requests, rowsWritten, rowsRead, duration, total: requests + rowsWritten + rowsRead + duration };
}

function table(results: Result[]): string {
  const rows: [string, (r: Result) => string][] = [
    ['messages (N)', (r) => String(r.messages)],
    ['receipts (cumulative)', (r) => String(r.receipts)],
    ['wall time (ms)', (r) => String(r.wallMs)],
    ['SQL rows written / msg', (r) => f(r.total.rowsWritten / r.messages)],
    ['  alice (sender) / bob (recipient)', (r) => `${f(r.alice.rowsWritten / r.messages)} / ${f(r.bob.rowsWritten / r.messages)}`],
    ['SQL rows read / msg', (r) => f(r.total.rowsRead / r.messages)],
    ['SQL statements / msg', (r) => f(r.total.statements / r.messages)],
    ['storage transactions / msg', (r) => f(r.total.commits / r.messages)],
    ['DO RPC calls / msg', (r) => f(r.total.rpc / r.messages)],
    ['incoming WS messages / msg (client frames)', (r) => f(Object.values(r.clientOut).reduce((a, b) => a + b, 0) / r.messages)],
    ['  by type', (r) => Object.entries(r.clientOut).map(([t, x]) => `${t} ${f(x / r.messages)}`).join(', ')],
    ['  reaching the DO (not auto-answered)', (r) => f(r.total.wsIn / r.messages)],
    ['outgoing WS messages / msg', (r) => f(r.total.wsOut / r.messages)],
    ['alarms / msg', (r) => f(r.total.alarms / r.messages)],
    ['upgrades / msg', (r) => f(r.total.upgrades / r.messages, 3)],
    ['billed DO requests / msg (RPC + alarms + upgrades + WS in / 20)', (r) => f(requestsPerMsg(r), 3)],
    ['DO handler wall ms / msg (lower bound)', (r) => f(r.total.handlerMs / r.messages)],
    ['database growth, bytes / msg', (r) => f(r.total.databaseBytes / r.messages, 0)],
    ['$ per million msgs: requests', (r) => f(costPerMillion(r).requests, 3)],
    ['$ per million msgs: rows written', (r) => f(costPerMillion(r).rowsWritten, 3)],
    ['$ per million msgs: rows read', (r) => f(costPerMillion(r).rowsRead, 4)],
    ['$ per million msgs: duration (lower bound)', (r) => f(costPerMillion(r).duration, 4)],
    ['$ per million msgs: total', (r) => f(costPerMillion(r).total, 3)],
  ];
  const head = `| per delivered message, incl. its receipt | ${results.map((r) => r.scenario).join(' | ')} |`;
  const sep = `|---|${results.map(() => '---:').join('|')}|`;
  return [head, sep, ...rows.map(([label, get]) => `| ${label} | ${results.map(get).join(' | ')} |`)].join('\n');
}

function statementTable(r: Result): string {
  if (!r.statements) return '';
  const rows = Object.entries(r.statements)
    .map(([k, t]) => ({ q: k.split('\u0000')[1]!.replace(/\s+/g, ' ').trim(), ...t }))
    .sort((a, b) => b.rowsWritten - a.rowsWritten || b.rowsRead - a.rowsRead);
  const m = r.messages;
  const lines = rows.map((x) => `| ${x.shard} | \`${x.q.length > 110 ? `${x.q.slice(0, 107)}...` : x.q}\` | ${f(x.calls / m)} | ${f(x.rowsWritten / m)} | ${f(x.rowsRead / m)} |`);
  return [`\n${r.scenario}: rows by statement, per message`, '| shard | statement | calls | rows written | rows read |', '|---|---|---:|---:|---:|', ...lines].join('\n');
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  let server: Server | null = null;
  let base = o.url;
  let receiver: HttpServer | null = null;
  let pushCalls = 0;
  if (base === null) {
    const port = await freePort();
    if (o.push) {
      receiver = createServer((req, res) => {
        pushCalls++;
        req.resume();
        req.on('end', () => res.writeHead(204).end());
      });
      await new Promise<void>((r) => receiver!.listen(0, '127.0.0.1', r));
    }
    // IRIS_SQL_TALLY: the shards also count rows per statement text (a map lookup per statement).
    server = await startWrangler(port, o.secret, {
      ...(o.statements ? { IRIS_SQL_TALLY: '1' } : {}),
      ...(o.historyDepth !== null ? { IRIS_HISTORY_DEPTH: String(o.historyDepth) } : {}),
      ...(receiver ? { IRIS_PUSH_URL: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/push`, IRIS_PUSH_SECRET: 'bench' } : {}),
    });
    base = `http://127.0.0.1:${port}`;
  }
  const results: Result[] = [];
  const groups: GroupResult[] = [];
  try {
    const sizes: Record<string, number> = { online: o.n, offline: o.n, paced: o.paced, sparse: o.sparse, reads: o.paced, twodev: o.paced };
    for (const name of o.scenarios) {
      if (name === 'group') {
        for (const m of o.group.members) {
          process.stderr.write(`group: ${m} members, ${o.group.n} messages...\n`);
          groups.push(await groupScenario({ base, secret: o.secret, prices: PRICES, socket: countingSocket }, m, o.group));
        }
        continue;
      }
      if (sizes[name] === 0) continue;
      process.stderr.write(`${name}: ${sizes[name]} messages...\n`);
      results.push(await scenario(o, base, name, sizes[name]!));
    }
  } finally {
    await server?.stop();
    receiver?.closeAllConnections();
    receiver?.close();
  }
  if (receiver) console.log(`\npush webhook calls received: ${pushCalls}`);
  console.log(`\n\`${server?.command ?? base}\`\n`);
  if (results.length > 0) console.log(table(results));
  if (o.statements) for (const r of results) console.log(statementTable(r));
  if (groups.length > 0) console.log(`\n${groupTable(groups, PRICES)}`);
  if (o.statements) for (const g of groups) console.log(groupStatements(g));
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, prices: PRICES, results, groups }, null, 2));
}

await main();
