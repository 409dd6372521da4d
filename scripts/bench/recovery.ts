/**
 * Recovery with a large undelivered backlog (issue 8, "Recovery"): how long until a killed on-prem worker, or an
 * evicted Durable Object, serves its users again when the store holds a million undelivered messages.
 *
 *   npm run bench:recovery                                   # 1,000,000 on-prem + one full object on workerd
 *   npm run bench:recovery -- --messages 2000 --recipients 20 --senders 10 --target onprem   # a quick check
 *   npm run bench:recovery -- --target cloudflare --cf-entries 10000 --json out.json
 *
 * On-prem:
 *  1. Seed. The store is filled OFFLINE, not through the network (which takes ~3k msg/s, minutes for a
 *     million): each worker's SQLite file is opened with the adapter's own storage class (onprem/storage.ts:
 *     same pragmas, schema migrations from core/schema.ts) and written with the core's MailboxStore
 *     (core/store.ts): every recipient gets its entries with inboxAppend (the rows a forward from the sender
 *     writes), a device `d1` registered at cursor 0 (offline since), and every sender its outbox-number floor
 *     (users.next_n), so a number is never handed out twice. Each user goes into the file of the worker that
 *     owns it (onprem/owner.ts) and the data dir records the worker count, as the supervisor would. What is
 *     NOT there: the senders' dedup records and outbox rows (already forwarded and trimmed in this shape).
 *     Rows are appended in rounds (every recipient gets a chunk per round), so each user's rows are spread
 *     over the file as they would be after interleaved traffic.
 *  2. Cold start: the real server (supervisor + workers) starts on that data dir; spawn -> ready line, then
 *     `--connect` users of the worker to be killed connect: first `welcome`, first `deliver`.
 *  3. Kill: SIGKILL of that worker, by the pid the server printed and checked in /proc as a child of the
 *     supervisor this run started (scripts/bench/kill.ts). The connected users retry every 20 ms. Times after
 *     the kill: the supervisor's died / started / is-back lines, the first and last `welcome` again, the first
 *     `deliver` again, the `send_ack` of a fresh send by an affected user to another affected user, and of a
 *     send by a user of the surviving worker to an affected user made right after the kill.
 *  4. Verify: every recipient (or `--verify N` of them) connects, acks everything and drains its inbox; every
 *     seeded entry must arrive once, in order (seq contiguous, each sender's outbox numbers increasing, a
 *     rolling hash of the message ids equal to the seed's), plus the fresh sends, each exactly once.
 *
 * Cloudflare (local workerd): one Durable Object holds one user, so the shape is one object whose inbox holds
 * `--cf-entries` (default: inboxCap) undelivered entries, filled through the real path (a sender's socket,
 * DO(A) -> RPC -> DO(B)) with the recipient offline. Then wrangler dev is stopped and started again on the
 * same persisted state: a new workerd process, every object constructed from its SQLite on disk. That is a
 * stand-in for an eviction (the object's memory is gone, its storage is not), which local workerd cannot be
 * told to do from outside. Measured: restart -> /healthz, connect -> welcome, -> first deliver, -> full drain.
 *
 * Every run is loopback only, bounded in count and time, and stops the processes it started by pid.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { DEFAULT_CONFIG } from '../../core/config.js';
import { MailboxStore } from '../../core/store.js';
import { ownerOf } from '../../onprem/owner.js';
import { GroupCommitStorage } from '../../onprem/storage.js';
import { ENTRY_KINDS, SUBPROTOCOL, decodeFrame, encodeFrame, type ClientFrame, type Entry, type ServerFrame } from '../../protocol/index.js';
import { mintToken } from '../token.js';
import { now, sleep } from './common.js';
import { killWorker, supervisorTimes, type SupervisorTimes } from './kill.js';
import { freePort, startOnprem, startWrangler, type Server } from './servers.js';

// ------------------------------------------------------------------ options

export interface Options {
  target: 'onprem' | 'cloudflare' | 'both';
  messages: number;
  recipients: number;
  senders: number;
  /** Senders per recipient (its conversations); each recipient's messages take turns among them. */
  conversations: number;
  workers: number;
  /** Which worker is killed (its users are the ones measured). */
  kill: number;
  /** spread: recipients are u0, u1, ... wherever they hash; victim: only users of the killed worker. */
  placement: 'spread' | 'victim';
  bodyBytes: number;
  connect: number;
  /**
   * Of `messages`, how many are still in their senders' outboxes (accepted and acked, the forward to the
   * recipient not done yet) instead of in the recipients' inboxes. The workers forward them at start.
   */
  pending: number;
  /** Recipients drained in the verify step; null = all. */
  verify: number | null;
  inboxCap: number;
  /** Start the server with IRIS_STANDBY_WORKER=1 and kill only once the spare is loaded. */
  standby: boolean;
  cfEntries: number;
  json: string | null;
  keepData: boolean;
  /** Upper bound of the whole run; past it the run stops its servers and fails. */
  timeoutS: number;
  quiet: boolean;
}

const SECRET = 'bench-recovery-secret';
const DEVICE = 'd1';

export function parseOptions(argv: string[]): Options {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      target: { type: 'string' },
      messages: { type: 'string' },
      recipients: { type: 'string' },
      senders: { type: 'string' },
      conversations: { type: 'string' },
      workers: { type: 'string' },
      kill: { type: 'string' },
      placement: { type: 'string' },
      'body-bytes': { type: 'string' },
      connect: { type: 'string' },
      verify: { type: 'string' },
      pending: { type: 'string' },
      'inbox-cap': { type: 'string' },
      standby: { type: 'boolean' },
      'cf-entries': { type: 'string' },
      json: { type: 'string' },
      'keep-data': { type: 'boolean' },
      'timeout-s': { type: 'string' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    console.log(
      'npm run bench:recovery -- [--target onprem|cloudflare|both] [--messages 1000000] [--recipients 200] [--senders 1000]\n' +
        '  [--conversations 20] [--workers 2] [--kill 0] [--placement spread|victim] [--body-bytes 64] [--connect 20] [--verify all|N] [--pending N]\n' +
        '  [--inbox-cap N] [--standby] [--cf-entries N] [--json FILE] [--keep-data] [--timeout-s 1800] [--quiet]',
    );
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, def: number, min: number, max: number): number => {
    if (raw === undefined) return def;
    const n = Number(raw.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in [${min}, ${max}], got "${raw}"`);
    return n;
  };
  const target = v.target ?? 'both';
  if (target !== 'onprem' && target !== 'cloudflare' && target !== 'both') throw new Error(`--target must be onprem, cloudflare or both`);
  const placement = v.placement ?? 'spread';
  if (placement !== 'spread' && placement !== 'victim') throw new Error(`--placement must be spread or victim`);
  const o: Options = {
    target,
    messages: int('messages', v.messages, 1_000_000, 1, 5_000_000),
    recipients: int('recipients', v.recipients, 200, 2, 100_000),
    senders: int('senders', v.senders, 1000, 1, 100_000),
    conversations: 0,
    workers: int('workers', v.workers, 2, 1, 64),
    kill: int('kill', v.kill, 0, 0, 63),
    placement,
    bodyBytes: int('body-bytes', v['body-bytes'], 64, 1, 16_384),
    connect: int('connect', v.connect, 20, 2, 1000),
    pending: 0,
    verify: v.verify === undefined || v.verify === 'all' ? null : int('verify', v.verify, 0, 0, 100_000),
    inboxCap: int('inbox-cap', v['inbox-cap'], DEFAULT_CONFIG.inboxCap, 1, 10_000_000),
    standby: v.standby ?? false,
    cfEntries: int('cf-entries', v['cf-entries'], DEFAULT_CONFIG.inboxCap, 1, 100_000),
    json: v.json ?? null,
    keepData: v['keep-data'] ?? false,
    timeoutS: int('timeout-s', v['timeout-s'], 1800, 10, 7200),
    quiet: v.quiet ?? false,
  };
  o.pending = int('pending', v.pending, 0, 0, o.messages);
  // Default: 20 conversations per recipient, or every sender when there are fewer.
  o.conversations = int('conversations', v.conversations, Math.min(20, o.senders), 1, 100_000);
  if (o.conversations > o.senders) throw new Error(`--conversations ${o.conversations} is more than --senders ${o.senders}`);
  if (o.kill >= o.workers) throw new Error(`--kill ${o.kill}: there are only ${o.workers} worker(s)`);
  // Two slack entries per recipient: the fresh sends of the kill step land in an inbox that must not be full.
  const per = Math.ceil(o.messages / o.recipients);
  if (per + 2 > o.inboxCap) {
    throw new Error(`${per} messages per recipient (+2 fresh) exceed the inbox cap ${o.inboxCap}: raise --recipients or --inbox-cap`);
  }
  return o;
}

let quiet = false;
/** Servers this run started and has not stopped yet: the timeout guard stops them before exiting. */
const live = new Set<Server>();
async function started(p: Promise<Server>): Promise<Server> {
  const s = await p;
  live.add(s);
  return s;
}
async function stopped(s: Server): Promise<void> {
  await s.stop();
  live.delete(s);
}
/** Temp dirs this run made and removes at its end; a signal or the timeout guard removes them too. */
const scratch = new Set<string>();
function scratchDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.add(d);
  return d;
}
function removeScratch(d: string): void {
  rmSync(d, { recursive: true, force: true });
  scratch.delete(d);
}
/** Stops every server still up, removes the scratch dirs (unless kept), exits. */
function abort(code: number, keep: boolean): void {
  void Promise.allSettled([...live].map((s) => s.stop())).then(() => {
    if (!keep) for (const d of scratch) rmSync(d, { recursive: true, force: true });
    process.exit(code);
  });
}
function say(msg: string): void {
  if (!quiet) process.stderr.write(`[recovery] ${msg}\n`);
}

const round1 = (x: number) => Math.round(x * 10) / 10;

// ------------------------------------------------------------------ message ids and their check

/** 32-bit FNV-1a over `msg` folded into h: the order-sensitive fingerprint of a recipient's message ids. */
export function foldId(h: number, msg: string): number {
  for (let i = 0; i < msg.length; i++) h = Math.imul(h ^ msg.charCodeAt(i), 0x01000193);
  return Math.imul(h ^ 10, 0x01000193) >>> 0;
}
export const FNV0 = 0x811c9dc5;

/** What a recipient must receive: the seeded messages (count and fingerprint, in seq order) and the fresh ones. */
export interface Expected {
  user: string;
  /** Messages in its inbox, and their fingerprint in seq order. */
  seeded: number;
  hash: number;
  /** Messages that land after those, in any order: pending forwards (--pending) and the kill step's sends. */
  fresh: Set<string>;
}

// ------------------------------------------------------------------ seeding (on-prem)

export interface SeedResult {
  dataDir: string;
  messages: number;
  /** Of them, left in the senders' outboxes (see Options.pending). */
  pending: number;
  recipients: Expected[];
  perWorkerMessages: number[];
  seconds: number;
  bytes: number;
}

/** The first `n` ids `${prefix}${i}`, optionally only those the worker `only` owns. */
function ids(prefix: string, n: number, workers: number, only: number | null): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const u = `${prefix}${i}`;
    if (only === null || ownerOf(u, workers) === only) out.push(u);
  }
  return out;
}

export async function seedOnprem(o: Options, dataDir: string): Promise<SeedResult> {
  const t0 = now();
  // The supervisor's record of the worker count (onprem/supervisor.ts workerCount): the files below are only
  // right for this count.
  writeFileSync(join(dataDir, 'iris-onprem.json'), JSON.stringify({ format: 1, workers: o.workers, created: new Date().toISOString() }, null, 2) + '\n');
  const storages: GroupCommitStorage[] = [];
  for (let w = 0; w < o.workers; w++) {
    storages.push(new GroupCommitStorage(join(dataDir, `worker-${w}.sqlite`), { windowMs: 0, maxBatch: Number.MAX_SAFE_INTEGER }));
  }
  const users = ids('u', o.recipients, o.workers, o.placement === 'victim' ? o.kill : null);
  const senders = ids('s', o.senders, o.workers, null);
  const nextN = new Array<number>(senders.length).fill(1);
  const perWorker = new Array<number>(o.workers).fill(0);
  const stores = users.map((u) => new MailboxStore(storages[ownerOf(u, o.workers)]!.sql, u));
  const share = (total: number, i: number) => Math.floor(total / users.length) + (i < total % users.length ? 1 : 0);
  // `seeded` is the part in the recipient's inbox; its pending part is added to `fresh` once it has ids.
  const pendingOf = users.map((_, i) => share(o.pending, i));
  const expected: Expected[] = users.map((u, i) => ({
    user: u,
    seeded: share(o.messages, i) - pendingOf[i]!,
    hash: FNV0,
    fresh: new Set(),
  }));
  const body = new Uint8Array(o.bodyBytes);
  for (let i = 0; i < body.length; i++) body[i] = (i * 131 + 7) & 0xff;
  const ts0 = Date.now() - 3_600_000;
  const offline = ts0 - 60_000;
  // The recipients' devices went offline before any of this arrived.
  for (let w = 0; w < o.workers; w++) {
    await storages[w]!.commit(() => {
      users.forEach((u, i) => {
        if (ownerOf(u, o.workers) !== w) return;
        stores[i]!.upsertDevice(DEVICE, 0, offline);
        stores[i]!.setLastSeen(offline);
      });
    });
  }
  const CHUNK = 250;
  const written = new Array<number>(users.length).fill(0);
  let total = 0;
  let lastSay = now();
  const inboxTotal = o.messages - o.pending;
  while (total < inboxTotal) {
    for (let w = 0; w < o.workers; w++) {
      await storages[w]!.commit(() => {
        for (let i = 0; i < users.length; i++) {
          if (ownerOf(users[i]!, o.workers) !== w) continue;
          const e = expected[i]!;
          const take = Math.min(CHUNK, e.seeded - written[i]!);
          if (take <= 0) continue;
          const entries: (Omit<Entry, 'seq'> & { n: number })[] = [];
          for (let j = 0; j < take; j++) {
            // The recipient's conversations take turns; senders are shared between recipients (so each one's
            // outbox numbers interleave across recipients, as they would), and each one's numbers rise.
            const s = (i * o.conversations + ((written[i]! + j) % o.conversations)) % senders.length;
            const n = nextN[s]!++;
            const msg = `${senders[s]}:${n}`;
            entries.push({ kind: 'message', msg, peer: senders[s]!, ts: ts0 + total + j, body, n });
            e.hash = foldId(e.hash, msg);
          }
          stores[i]!.inboxAppend(written[i]! + 1, entries);
          written[i]! += take;
          total += take;
          perWorker[w]! += take;
        }
      });
    }
    if (now() - lastSay > 5000) {
      lastSay = now();
      say(`seeding: ${total.toLocaleString('en-US')} / ${inboxTotal.toLocaleString('en-US')} into inboxes`);
    }
  }
  // Each sender's outbox numbers were handed out and its outbox rows forwarded and deleted: the stored floor
  // (users.next_n) is what keeps a restarted sender from reusing one, as MailboxStore.outboxDelete writes it.
  for (let w = 0; w < o.workers; w++) {
    await storages[w]!.commit(() => {
      senders.forEach((s, i) => {
        if (ownerOf(s, o.workers) !== w || nextN[i] === 1) return;
        const st = new MailboxStore(storages[w]!.sql, s);
        st.ensureUser();
        storages[w]!.sql.all(`UPDATE users SET next_n = ? WHERE user = ?`, nextN[i]!, s);
      });
    });
  }
  // The pending part: accepted by the sender (outbox row + dedup record, as onSend writes them) and not yet
  // handed to the recipient. Each recipient's conversations keep taking turns, so each sender's numbers still
  // rise per recipient after the ones already in the inbox.
  if (o.pending > 0) {
    const senderStores = new Map<string, MailboxStore>();
    for (let w = 0; w < o.workers; w++) {
      await storages[w]!.commit(() => {
        senders.forEach((s) => {
          if (ownerOf(s, o.workers) === w) senderStores.set(s, new MailboxStore(storages[w]!.sql, s));
        });
      });
    }
    for (let w = 0; w < o.workers; w++) {
      await storages[w]!.commit(() => {
        for (let i = 0; i < users.length; i++) {
          const e = expected[i]!;
          for (let j = 0; j < pendingOf[i]!; j++) {
            const s = senders[(i * o.conversations + ((e.seeded + j) % o.conversations)) % senders.length]!;
            if (ownerOf(s, o.workers) !== w) continue;
            const n = senderStores.get(s)!.outboxAppend(users[i]!, 'message', null, ts0 + inboxTotal + i, body, `p-${users[i]}-${j}`);
            e.fresh.add(`${s}:${n}`);
            total++;
          }
        }
      });
    }
    for (const [s, st] of senderStores) {
      if (st.outboxCount() > DEFAULT_CONFIG.outboxCap) throw new Error(`sender ${s} has ${st.outboxCount()} pending, over the outbox cap: raise --senders`);
    }
  }
  let bytes = 0;
  for (const st of storages) {
    const r = st.sql.all<{ b: number }>(`SELECT page_count * page_size AS b FROM pragma_page_count(), pragma_page_size()`)[0];
    bytes += r?.b ?? 0;
    st.close();
  }
  return { dataDir, messages: total, pending: o.pending, recipients: expected, perWorkerMessages: perWorker, seconds: (now() - t0) / 1000, bytes };
}

// ------------------------------------------------------------------ a device

type Frame = ServerFrame;

/** Why a connection attempt failed: the HTTP status of a refused upgrade, or a socket error. */
class Refused extends Error {
  constructor(
    readonly status: number | null,
    message: string,
    readonly kind: 'http' | 'socket' | 'timeout' = status === null ? 'socket' : 'http',
  ) {
    super(message);
  }
}

/**
 * One device of one user speaking the wire directly (binary frames). It keeps its cursor (the highest seq it
 * processed) across connections, drops entries at or below it (what a resumed stream may repeat: PROTOCOL.md
 * section 8), and checks what it gets against what the seed put there.
 */
export class Device {
  ws: WebSocket | null = null;
  cursor = 0;
  head = 0;
  /** Ack every deliver frame (cumulative). Off: the device reads one window and stalls, like a slow reader. */
  acking = false;
  messages = 0;
  receipts = 0;
  /** Entries at or below the cursor on a resumed stream: dropped, not processed twice. */
  repeated = 0;
  gaps = 0;
  fifo = 0;
  hash = FNV0;
  readonly fresh: string[] = [];
  readonly lastN = new Map<string, number>();
  welcomes: number[] = [];
  /** Time of the first deliver frame after each welcome. */
  firstDelivers: number[] = [];
  /** When a welcomed connection closed (refused attempts are not counted here, but in `refused`). */
  closes: number[] = [];
  refused: Record<string, number> = {};
  /** Client id -> when its send_ack arrived, and the server message id it named. */
  readonly acks = new Map<string, number>();
  readonly ackMsgs = new Map<string, string>();
  readonly errors: string[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    readonly user: string,
    readonly seeded: number,
    private readonly token: string,
  ) {}

  static async make(user: string, seeded: number, secret: string): Promise<Device> {
    return new Device(user, seeded, await mintToken(user, { secret, ttl: '2h' }));
  }

  /**
   * Opens a socket and sends hello; resolves on `welcome`, rejects on a refused upgrade, a close first, or no
   * welcome within `timeoutMs` (then the socket is dropped: an upgrade nobody answers must not hang the run).
   */
  connect(url: string, timeoutMs = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${this.token}` }, perMessageDeflate: false });
      this.ws = ws;
      let welcomed = false;
      let settled = false;
      const timer = setTimeout(() => {
        fail(new Refused(null, `no welcome within ${timeoutMs} ms`, 'timeout'));
        ws.terminate();
      }, timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        reject(e);
      };
      ws.binaryType = 'nodebuffer';
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        fail(new Refused(res.statusCode ?? null, `HTTP ${res.statusCode}`));
        ws.terminate();
      });
      ws.once('error', (e) => fail(new Refused(null, e.message)));
      ws.once('open', () => ws.send(encodeFrame({ t: 'hello', device: DEVICE, cursor: this.cursor }, 'binary')));
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        const f = decodeFrame(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8')) as Frame;
        if (f.t === 'welcome' && !welcomed) {
          welcomed = true;
          this.head = f.head;
          this.welcomes.push(now());
          this.firstDelivers.push(NaN);
          clearTimeout(timer);
          if (!settled) {
            settled = true;
            resolve();
          }
        } else this.onFrame(f);
        this.poke();
      });
      ws.once('close', () => {
        if (welcomed) this.closes.push(now());
        if (this.ws === ws) this.ws = null;
        fail(new Refused(null, 'closed before welcome'));
        this.poke();
      });
    });
  }

  /** Connects until a welcome, every `everyMs`, for at most `timeoutMs`; counts the refusals by status. */
  async reconnect(url: string, everyMs: number, timeoutMs: number): Promise<void> {
    const deadline = now() + timeoutMs;
    for (;;) {
      try {
        await this.connect(url);
        return;
      } catch (e) {
        const key = e instanceof Refused ? (e.status !== null ? String(e.status) : e.kind) : 'socket';
        this.refused[key] = (this.refused[key] ?? 0) + 1;
        if (now() > deadline) throw new Error(`${this.user}: no welcome within ${timeoutMs} ms (${(e as Error).message})`);
        await sleep(everyMs);
      }
    }
  }

  private onFrame(f: Frame): void {
    if (f.t === 'deliver') {
      const i = this.firstDelivers.length - 1;
      if (i >= 0 && Number.isNaN(this.firstDelivers[i]!)) this.firstDelivers[i] = now();
      for (const e of f.entries) this.take(e);
      if (this.acking && this.ws) this.write({ t: 'deliver_ack', seq: this.cursor });
    } else if (f.t === 'send_ack') {
      if (!this.acks.has(f.id)) this.acks.set(f.id, now());
      this.ackMsgs.set(f.id, f.msg);
    } else if (f.t === 'error') {
      this.errors.push(`${f.code}: ${f.message}`);
    }
  }

  /** Processes one delivered entry as an app would: once, in order, checked against the seed. */
  take(e: Entry): void {
    if (e.seq <= this.cursor) {
      this.repeated++;
      return;
    }
    if (e.seq !== this.cursor + 1) this.gaps++;
    this.cursor = e.seq;
    if (e.kind !== 'message') {
      this.receipts++;
      return;
    }
    this.messages++;
    const m = /:(\d+)$/.exec(e.msg);
    const n = m ? Number(m[1]) : NaN;
    const last = this.lastN.get(e.peer) ?? 0;
    if (!(n > last)) this.fifo++;
    this.lastN.set(e.peer, n);
    if (e.seq <= this.seeded) this.hash = foldId(this.hash, e.msg);
    else this.fresh.push(e.msg);
  }

  write(f: ClientFrame): void {
    this.ws?.send(encodeFrame(f, 'binary'));
  }

  send(id: string, to: string, body: Uint8Array): number {
    const t = now();
    this.write({ t: 'send', id, to, body });
    return t;
  }

  /** Starts acking: acks what it processed so far, so the server's window opens again. */
  startAcking(): void {
    this.acking = true;
    if (this.ws && this.cursor > 0) this.write({ t: 'deliver_ack', seq: this.cursor });
  }

  private poke(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when cond() holds (checked after every frame and close), rejects after timeoutMs. */
  until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.user}: ${what} not within ${timeoutMs} ms`)), timeoutMs);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  close(): void {
    const ws = this.ws;
    this.ws = null;
    ws?.terminate();
  }
}

// ------------------------------------------------------------------ on-prem run

export interface OnpremRecovery {
  command: string;
  seed: Omit<SeedResult, 'recipients' | 'dataDir'> & { recipients: number; senders: number; conversations: number; perRecipient: number; placement: string; bodyBytes: number };
  workers: number;
  /** Cold start of the server on the seeded store, ms after spawn / after ready. */
  cold: {
    readyMs: number;
    firstWelcomeMs: number;
    allWelcomedMs: number;
    firstDeliverMs: number;
    connected: number;
    /** --pending: ms after ready when no pending message was left in any outbox. */
    pendingLandedMs: number | null;
  };
  kill: {
    slot: number;
    pid: number;
    checked: string;
    /** With --standby: the spare's pid before the kill (the replacement should be it). */
    standbyPid: number | null;
    messagesInItsFile: number;
    supervisor: SupervisorTimes;
    /** Ms after the kill. */
    firstCloseMs: number | null;
    firstWelcomeMs: number | null;
    allWelcomedMs: number | null;
    firstDeliverMs: number | null;
    freshAckAffectedMs: number | null;
    freshAckSurvivorMs: number | null;
    refusedAttempts: Record<string, number>;
    connected: number;
    /** Users whose connection to the killed worker did not close within 10 s of the kill (held open elsewhere). */
    heldOpen: string[];
  };
  verify: {
    recipients: number;
    expected: number;
    delivered: number;
    fresh: number;
    freshExpected: number;
    lost: number;
    duplicated: number;
    gaps: number;
    fifoViolations: number;
    hashMismatches: number;
    repeatedDropped: number;
    receipts: number;
    seconds: number;
    perSecond: number;
  };
  pass: boolean;
  failures: string[];
}

function cpuTicks(pid: number): number | null {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

/**
 * The supervisor's child that is not one of its workers (the IRIS_STANDBY_WORKER spare), once it has finished
 * loading: its CPU time has stopped growing for 500 ms (it then only waits for an init). Bounded.
 */
async function standbyLoaded(supervisor: number, workers: readonly number[], timeoutMs: number): Promise<number> {
  const deadline = now() + Math.min(timeoutMs, 60_000);
  let pid: number | null = null;
  let ticks: number | null = null;
  let stableSince = 0;
  while (now() < deadline) {
    let kids: number[] = [];
    try {
      kids = readFileSync(`/proc/${supervisor}/task/${supervisor}/children`, 'utf8').trim().split(/\s+/).filter((x) => x !== '').map(Number);
    } catch {
      // not there yet
    }
    const spare = kids.find((k) => !workers.includes(k)) ?? null;
    if (spare !== pid) {
      pid = spare;
      ticks = null;
    }
    if (pid !== null) {
      const t = cpuTicks(pid);
      if (t !== null && t === ticks) {
        if (now() - stableSince >= 500) return pid;
      } else {
        ticks = t;
        stableSince = now();
      }
    }
    await sleep(100);
  }
  throw new Error('no loaded standby worker within the time limit (is IRIS_STANDBY_WORKER supported by this server?)');
}

/**
 * Polls the workers' files (read-only) until no message row is left in any outbox; resolves with that time.
 * Only "is there any", never a count: counting a million rows in this process would delay the clients being
 * timed and take CPU from the server on a 2-core box.
 */
async function pendingLanded(dataDir: string, workers: number, timeoutMs: number): Promise<number> {
  const deadline = now() + timeoutMs;
  const dbs: DatabaseSync[] = [];
  try {
    for (let w = 0; w < workers; w++) dbs.push(new DatabaseSync(join(dataDir, `worker-${w}.sqlite`), { readOnly: true }));
    const any = dbs.map((db) => db.prepare(`SELECT 1 AS x FROM outbox WHERE kind = ? LIMIT 1`));
    for (;;) {
      const at = now();
      if (any.every((q) => q.get(ENTRY_KINDS.message) === undefined)) return at;
      if (now() > deadline) throw new Error('messages still in outboxes at the time limit');
      await sleep(100);
    }
  } finally {
    for (const db of dbs) db.close();
  }
}

async function pool<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const run = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, run));
}

export async function runOnprem(o: Options, deadline: number): Promise<OnpremRecovery> {
  const dataDir = scratchDir('iris-recovery-');
  let server: Server | null = null;
  const devices: Device[] = [];
  try {
    say(`seeding ${o.messages.toLocaleString('en-US')} undelivered messages for ${o.recipients} recipients from ${o.senders} senders into ${dataDir} (${o.workers} workers, offline: core MailboxStore over node:sqlite)`);
    const seed = await seedOnprem(o, dataDir);
    say(`seeded in ${seed.seconds.toFixed(1)} s: ${seed.perWorkerMessages.map((n, w) => `worker ${w}: ${n.toLocaleString('en-US')}`).join(', ')}; ${(seed.bytes / 1048576).toFixed(0)} MiB of SQLite`);
    const left = () => Math.max(1000, deadline - now());

    // ---- cold start
    const port = await freePort();
    const capArgs = [...(o.inboxCap !== DEFAULT_CONFIG.inboxCap ? ['--inbox-cap', String(o.inboxCap)] : []), ...(o.standby ? ['--standby-worker', '1'] : [])];
    const spawnAt = now();
    server = await started(startOnprem({ profileDir: null, port, workers: o.workers, dataDir, keepData: true, secret: SECRET, args: capArgs }));
    const readyLine = server.lines!().find((l) => /listening on wss?:\/\//.test(l.text));
    const readyAt = readyLine?.t ?? now();
    // Forwards pending in the senders' outboxes go out as each worker starts (recover()); the files are read
    // from here (WAL: a reader never blocks the worker) until no message is left in any outbox.
    const landed = seed.pending > 0 ? pendingLanded(dataDir, o.workers, left()) : Promise.resolve(null);
    const byUser = new Map(seed.recipients.map((e) => [e.user, e]));
    const victims = seed.recipients.filter((e) => ownerOf(e.user, o.workers) === o.kill).slice(0, o.connect);
    if (victims.length < 2) throw new Error(`fewer than 2 recipients belong to worker ${o.kill}: raise --recipients`);
    for (const e of victims) devices.push(await Device.make(e.user, e.seeded, SECRET));
    const survivorUser = o.workers > 1 ? ids('z', 1, o.workers, (o.kill + 1) % o.workers)[0]! : null;
    const survivor = survivorUser === null ? null : await Device.make(survivorUser, 0, SECRET);
    const connectAt = now();
    await Promise.all(devices.map((d) => d.connect(server!.url)));
    await Promise.all(devices.map((d) => d.until('first deliver', () => !Number.isNaN(d.firstDelivers[0]!), left())));
    const cold = {
      readyMs: round1(readyAt - spawnAt),
      firstWelcomeMs: round1(Math.min(...devices.map((d) => d.welcomes[0]!)) - readyAt),
      allWelcomedMs: round1(Math.max(...devices.map((d) => d.welcomes[0]!)) - readyAt),
      firstDeliverMs: round1(Math.min(...devices.map((d) => d.firstDelivers[0]!)) - readyAt),
      connected: devices.length,
      pendingLandedMs: null as number | null,
    };
    const doneAt = await landed;
    if (doneAt !== null) {
      cold.pendingLandedMs = round1(doneAt - readyAt);
      say(`cold start: ${seed.pending.toLocaleString('en-US')} pending forwards: none left in any outbox at +${cold.pendingLandedMs} ms after ready`);
    }
    say(`cold start: ready ${cold.readyMs} ms after spawn; connect started ${round1(connectAt - readyAt)} ms after ready; first welcome +${cold.firstWelcomeMs} ms, all ${devices.length} +${cold.allWelcomedMs} ms, first deliver +${cold.firstDeliverMs} ms after ready`);
    if (survivor) await survivor.connect(server.url);
    // Each device holds one window (sendWindow entries) unacked: the server must resume after the device's own
    // cursor on reconnect, not redeliver from its stored one.
    await Promise.all(devices.map((d) => d.until('a full window', () => d.cursor >= Math.min(d.seeded, DEFAULT_CONFIG.sendWindow), left())));

    // ---- kill
    const standbyPid = o.standby ? await standbyLoaded(server.pid!, server.workerPids!, left()) : null;
    if (standbyPid !== null) say(`standby worker pid ${standbyPid} is loaded (idle)`);
    const fired = killWorker(server.pid!, server.workerPids!, o.kill);
    say(`killed worker ${o.kill} (pid ${fired.pid}; ${fired.checked})`);
    const [x, y] = [devices[0]!, devices[1]!];
    const body = new Uint8Array(32).fill(42);
    let survivorSentAt = 0;
    if (survivor) {
      // Right after the kill: the survivor's own worker acks it (durable in its outbox); the forward to the
      // killed worker's user waits for that worker to come back.
      survivorSentAt = survivor.send('fresh-z', y.user, body);
    }
    // The killed worker's sockets close with it, unless another process still holds a copy of one (the
    // supervisor passes each handed-over socket on and must close its own). A device whose socket is still
    // open after 10 s is counted, dropped from this side and reconnected like the others.
    const heldOpen: string[] = [];
    await Promise.all(
      devices.map((d) =>
        d.until('the close', () => d.ws === null, 10_000).catch(() => {
          heldOpen.push(d.user);
          d.close();
        }),
      ),
    );
    if (heldOpen.length > 0) say(`${heldOpen.length} connection(s) of the killed worker still open 10 s after the kill: ${heldOpen.join(', ')}`);
    let affectedSentAt = 0;
    await Promise.all(
      devices.map(async (d) => {
        await d.reconnect(server!.url, 20, left());
        if (d === x) affectedSentAt = x.send('fresh-x', y.user, body);
      }),
    );
    // Only a device with entries left after its first window gets a deliver on the new connection without
    // acking (tiny runs may have read everything before the kill).
    const backlog = devices.filter((d) => d.cursor < d.seeded + (byUser.get(d.user)?.fresh.size ?? 0));
    await Promise.all(backlog.map((d) => d.until('first deliver after the reconnect', () => d.firstDelivers.length > 1 && !Number.isNaN(d.firstDelivers[1]!), left())));
    await x.until('ack of the fresh send', () => x.acks.has('fresh-x') || x.errors.length > 0, left());
    if (survivor) await survivor.until('ack of the fresh send', () => survivor.acks.has('fresh-z') || survivor.errors.length > 0, left());
    // The supervisor's "is back" line follows the workers' ready_seen: give it a moment to arrive.
    const lines = () => supervisorTimes(server!.lines!(), fired);
    for (let i = 0; i < 100 && lines().backMs === null; i++) await sleep(50);
    const rel = (t: number | null | undefined) => (t === null || t === undefined || Number.isNaN(t) ? null : round1(t - fired.at));
    const minOf = (xs: number[]) => (xs.length === 0 ? null : Math.min(...xs));
    const refused: Record<string, number> = {};
    for (const d of devices) for (const [k, n] of Object.entries(d.refused)) refused[k] = (refused[k] ?? 0) + n;
    const kill = {
      slot: o.kill,
      pid: fired.pid,
      checked: fired.checked,
      standbyPid,
      messagesInItsFile: seed.perWorkerMessages[o.kill]!,
      supervisor: lines(),
      firstCloseMs: rel(minOf(devices.flatMap((d) => d.closes.filter((t) => t >= fired.at)))),
      firstWelcomeMs: rel(minOf(devices.map((d) => d.welcomes[1]!))),
      allWelcomedMs: rel(Math.max(...devices.map((d) => d.welcomes[1]!))),
      firstDeliverMs: rel(minOf(backlog.map((d) => d.firstDelivers[1]!))),
      freshAckAffectedMs: rel(x.acks.get('fresh-x')),
      freshAckSurvivorMs: survivor ? rel(survivor.acks.get('fresh-z')) : null,
      refusedAttempts: refused,
      connected: devices.length,
      heldOpen,
    };
    const s = kill.supervisor;
    say(
      `after the kill: supervisor died +${s.diedMs} ms, started +${s.startedMs} ms, back +${s.backMs} ms; first welcome +${kill.firstWelcomeMs} ms, ` +
        `all ${devices.length} +${kill.allWelcomedMs} ms, first deliver +${kill.firstDeliverMs} ms; fresh send acked: affected +${kill.freshAckAffectedMs} ms ` +
        `(sent +${round1(affectedSentAt - fired.at)}), survivor +${kill.freshAckSurvivorMs} ms (sent +${round1(survivorSentAt - fired.at)}); refused attempts ${JSON.stringify(refused)}`,
    );
    const yExp = byUser.get(y.user)!;
    let freshAcked = 0;
    for (const [d, id] of [[x, 'fresh-x'], [survivor, 'fresh-z']] as const) {
      const msg = d?.ackMsgs.get(id);
      if (msg === undefined) continue;
      yExp.fresh.add(msg);
      freshAcked++;
    }

    // ---- verify: drain every recipient (or a sample that always includes the connected ones)
    const chosen = o.verify === null ? seed.recipients : [...victims, ...seed.recipients.filter((e) => !victims.includes(e)).slice(0, Math.max(0, o.verify - victims.length))];
    const freshExpected = chosen.reduce((a, e) => a + e.fresh.size, 0);
    say(`verify: draining ${chosen.length} recipient(s) (${chosen.reduce((a, e) => a + e.seeded, 0).toLocaleString('en-US')} messages in inboxes + ${freshExpected.toLocaleString('en-US')} pending or fresh)`);
    const v0 = now();
    const byDevice = new Map(devices.map((d) => [d.user, d]));
    const done = (d: Device, e: Expected) => d.messages >= e.seeded + e.fresh.size && d.cursor >= d.head;
    const results: { d: Device; e: Expected }[] = [];
    await pool(chosen, 50, async (e) => {
      let d = byDevice.get(e.user);
      if (d) d.startAcking();
      else {
        d = await Device.make(e.user, e.seeded, SECRET);
        d.acking = true;
        await d.connect(server!.url);
      }
      const dev = d;
      await dev.until('the whole inbox', () => done(dev, e) || dev.ws === null, left());
      if (!done(dev, e)) throw new Error(`${e.user}: connection closed while draining (${dev.messages} of ${e.seeded + e.fresh.size})`);
      results.push({ d: dev, e });
      // Let the last cumulative ack reach the server before the socket goes.
      if (!devices.includes(dev)) {
        await sleep(0);
        dev.close();
      }
    });
    const vs = (now() - v0) / 1000;
    const failures: string[] = [];
    let expected = 0;
    let delivered = 0;
    let fresh = 0;
    let lost = 0;
    let duplicated = 0;
    let gaps = 0;
    let fifo = 0;
    let hashBad = 0;
    let repeated = 0;
    let receipts = 0;
    for (const { d, e } of results) {
      expected += e.seeded;
      const seededGot = d.messages - d.fresh.length;
      delivered += seededGot;
      fresh += d.fresh.length;
      if (seededGot < e.seeded) lost += e.seeded - seededGot;
      if (seededGot > e.seeded) duplicated += seededGot - e.seeded;
      const freshSet = new Set(d.fresh);
      duplicated += d.fresh.length - freshSet.size;
      for (const m of e.fresh) if (!freshSet.has(m)) lost++;
      for (const m of freshSet) if (!e.fresh.has(m)) failures.push(`${e.user}: unexpected message ${m}`);
      gaps += d.gaps;
      fifo += d.fifo;
      repeated += d.repeated;
      receipts += d.receipts;
      if (d.hash !== e.hash) hashBad++;
    }
    if (results.length !== chosen.length) failures.push(`${chosen.length - results.length} recipient(s) not drained`);
    if (lost > 0) failures.push(`${lost} message(s) LOST`);
    if (duplicated > 0) failures.push(`${duplicated} message(s) duplicated`);
    if (gaps > 0) failures.push(`${gaps} gap(s) in seq`);
    if (fifo > 0) failures.push(`${fifo} per-sender order violation(s)`);
    if (hashBad > 0) failures.push(`${hashBad} recipient(s) whose message ids differ from the seed`);
    if (freshAcked !== (survivor ? 2 : 1)) failures.push(`only ${freshAcked} fresh send(s) were acked`);
    for (const d of [...devices, ...(survivor ? [survivor] : [])]) for (const err of d.errors) failures.push(`${d.user}: error frame ${err}`);
    if (heldOpen.length > 0) failures.push(`${heldOpen.length} connection(s) of the killed worker stayed open after it died`);
    if (kill.supervisor.backMs === null) failures.push(`the supervisor never logged worker ${o.kill} back`);
    if (standbyPid !== null && kill.supervisor.newPid !== standbyPid) failures.push(`the replacement (pid ${kill.supervisor.newPid}) was not the standby (pid ${standbyPid})`);
    const verify = {
      recipients: results.length,
      expected,
      delivered,
      fresh,
      freshExpected,
      lost,
      duplicated,
      gaps,
      fifoViolations: fifo,
      hashMismatches: hashBad,
      repeatedDropped: repeated,
      receipts,
      seconds: round1(vs),
      perSecond: Math.round((delivered + fresh) / vs),
    };
    say(`verify: ${delivered.toLocaleString('en-US')} of ${expected.toLocaleString('en-US')} in inboxes + ${fresh.toLocaleString('en-US')} of ${freshExpected.toLocaleString('en-US')} pending or fresh delivered in ${verify.seconds} s (${verify.perSecond.toLocaleString('en-US')}/s); lost ${lost}, duplicated ${duplicated}, gaps ${gaps}, order ${fifo}, fingerprint mismatches ${hashBad}; ${failures.length === 0 ? 'PASS' : `FAIL (${failures.join('; ')})`}`);
    const { recipients: _r, dataDir: _d, ...seedFigures } = seed;
    return {
      command: `npm run bench:recovery -- --target onprem --messages ${o.messages} --recipients ${o.recipients} --senders ${o.senders} --conversations ${o.conversations} --workers ${o.workers} --placement ${o.placement}${o.pending > 0 ? ` --pending ${o.pending}` : ''}${o.standby ? ' --standby' : ''}`,
      seed: { ...seedFigures, recipients: o.recipients, senders: o.senders, conversations: o.conversations, perRecipient: Math.ceil(o.messages / o.recipients), placement: o.placement, bodyBytes: o.bodyBytes },
      workers: server.workers,
      cold,
      kill,
      verify,
      pass: failures.length === 0,
      failures,
    };
  } finally {
    for (const d of devices) d.close();
    if (server) await stopped(server);
    if (o.keepData) say(`data kept in ${dataDir}`);
    else removeScratch(dataDir);
  }
}

// ------------------------------------------------------------------ Cloudflare run

export interface CloudflareRecovery {
  command: string;
  entries: number;
  fill: { seconds: number; perSecond: number };
  restart: { healthzMs: number };
  /** Ms after the connect attempt that follows /healthz. */
  cold: { welcomeMs: number; firstDeliverMs: number; drainMs: number; head: number };
  verify: { delivered: number; lost: number; duplicated: number; gaps: number; fifoViolations: number; repeatedDropped: number };
  pass: boolean;
  failures: string[];
}

export async function runCloudflare(o: Options, deadline: number): Promise<CloudflareRecovery> {
  const persist = scratchDir('iris-recovery-wrangler-');
  let server: Server | null = null;
  const left = () => Math.max(1000, deadline - now());
  const n = o.cfEntries;
  const capVars: Record<string, string> = n > DEFAULT_CONFIG.inboxCap ? { IRIS_INBOX_CAP: String(n), IRIS_OUTBOX_CAP: String(n), IRIS_DEDUP_WINDOW: String(n) } : {};
  try {
    const port = await freePort();
    say(`cloudflare: wrangler dev on 127.0.0.1:${port}, state in ${persist}`);
    server = await started(startWrangler(port, SECRET, capVars, persist));
    const sender = await Device.make('cfa', 0, SECRET);
    const rec = await Device.make('cfb', n, SECRET);
    // The recipient's device exists (registered at cursor 0) and is offline while everything arrives.
    await rec.connect(server.url);
    rec.close();
    await sender.connect(server.url);
    const body = new Uint8Array(o.bodyBytes);
    const f0 = now();
    let sent = 0;
    // A window of sends in flight: the fill is not what is measured, it only has to be bounded and quick.
    const WINDOW = 64;
    while (sent < n) {
      const upto = Math.min(n, sent + WINDOW);
      for (let i = sent; i < upto; i++) sender.send(`m${i}`, rec.user, body);
      sent = upto;
      await sender.until(`acks up to m${sent - 1}`, () => sender.acks.size >= sent || sender.errors.length > 0, left());
      if (sender.errors.length > 0) throw new Error(`fill refused: ${sender.errors.slice(0, 3).join('; ')}`);
    }
    // Acked means durable in the sender's outbox; the forwards into the recipient's inbox follow. Poll the
    // inbox head through a hello of the same device (it reads one window and leaves, acking nothing).
    for (;;) {
      const probe = await Device.make('cfb', n, SECRET);
      await probe.connect(server.url);
      probe.close();
      if (probe.head >= n) break;
      if (now() > deadline) throw new Error(`the recipient's inbox holds ${probe.head} of ${n} entries`);
      await sleep(250);
    }
    const fillS = (now() - f0) / 1000;
    sender.close();
    say(`cloudflare: ${n} entries in the recipient's inbox after ${fillS.toFixed(1)} s; restarting wrangler dev on the same state`);
    await stopped(server);
    server = null;
    const port2 = await freePort();
    const r0 = now();
    server = await started(startWrangler(port2, SECRET, capVars, persist));
    const healthzMs = round1(now() - r0);
    rec.acking = true;
    // This device connected once already (to register before the fill): this connection's times are the next.
    const k = rec.welcomes.length;
    const c0 = now();
    await rec.connect(server.url);
    await rec.until('first deliver', () => !Number.isNaN(rec.firstDelivers[k] ?? NaN), left());
    await rec.until('the whole inbox', () => rec.messages >= n || rec.ws === null, left());
    const drainAt = now();
    const cold = { welcomeMs: round1(rec.welcomes[k]! - c0), firstDeliverMs: round1(rec.firstDelivers[k]! - c0), drainMs: round1(drainAt - c0), head: rec.head };
    rec.close();
    const failures: string[] = [];
    const lost = Math.max(0, n - rec.messages);
    const duplicated = Math.max(0, rec.messages - n);
    if (lost > 0) failures.push(`${lost} LOST`);
    if (duplicated > 0) failures.push(`${duplicated} duplicated`);
    if (rec.gaps > 0) failures.push(`${rec.gaps} gap(s)`);
    if (rec.fifo > 0) failures.push(`${rec.fifo} order violation(s)`);
    if (rec.head !== n) failures.push(`welcome head ${rec.head}, expected ${n}`);
    say(`cloudflare: restart -> /healthz ${healthzMs} ms; then welcome +${cold.welcomeMs} ms, first deliver +${cold.firstDeliverMs} ms, all ${rec.messages} +${cold.drainMs} ms; ${failures.length === 0 ? 'PASS' : `FAIL (${failures.join('; ')})`}`);
    return {
      command: `npm run bench:recovery -- --target cloudflare --cf-entries ${n}`,
      entries: n,
      fill: { seconds: round1(fillS), perSecond: Math.round(n / fillS) },
      restart: { healthzMs },
      cold,
      verify: { delivered: rec.messages, lost, duplicated, gaps: rec.gaps, fifoViolations: rec.fifo, repeatedDropped: rec.repeated },
      pass: failures.length === 0,
      failures,
    };
  } finally {
    if (server) await stopped(server);
    removeScratch(persist);
  }
}

// ------------------------------------------------------------------ main

export async function main(argv: string[]): Promise<number> {
  const o = parseOptions(argv);
  quiet = o.quiet;
  const deadline = now() + o.timeoutS * 1000;
  const out: { onprem?: OnpremRecovery; cloudflare?: CloudflareRecovery; machine: Record<string, unknown> } = {
    machine: { node: process.version, at: new Date().toISOString() },
  };
  // Every wait is bounded by the deadline; this is the backstop if something still hangs: stop the servers this
  // run started (by their pids, servers.ts) and exit.
  const guard = setTimeout(() => {
    process.stderr.write(`[recovery] run exceeded --timeout-s ${o.timeoutS}; stopping its servers\n`);
    abort(1, o.keepData);
  }, o.timeoutS * 1000 + 60_000);
  guard.unref();
  // Ctrl-C (or the smoke test's guard): the servers run in their own process groups and would outlive us.
  const onSignal = () => abort(130, o.keepData);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ok = true;
  if (o.target !== 'cloudflare') {
    out.onprem = await runOnprem(o, deadline);
    ok &&= out.onprem.pass;
  }
  if (o.target !== 'onprem') {
    out.cloudflare = await runCloudflare(o, deadline);
    ok &&= out.cloudflare.pass;
  }
  const text = JSON.stringify(out, null, 2);
  if (o.json) writeFileSync(o.json, text + '\n');
  process.stdout.write(text + '\n');
  return ok ? 0 : 1;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`[recovery] failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
