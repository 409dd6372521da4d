/**
 * Group message designs on the storage layer (issue 10): which way a group message reaches every device of
 * every member, measured before groups are built. Every shard is real node:sqlite as production opens it (WAL,
 * synchronous=FULL, one COMMIT per batch); the member side is the real inbox path (core/schema.ts,
 * core/store.ts MailboxStore); nothing goes over a network: a call between shards is a counted function call.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/groups.ts [--members 16,256,1024] [--messages 300]
 *     [--designs A,B,B-pull,C] [--online 0.25] [--devices 2] [--workers 8] [--burst 1] [--slow-every 4]
 *     [--fanout-batch 64] [--repeat 1] [--max-seconds 120] [--json out.json]
 *
 * Designs (all share the group shard: a group log in one total order, membership as log entries, dedup of
 * client ids, one packed receipts row):
 *   A       fan-out on write: after the group's commit, every member's inbox gets the entry (the 1:1 inbox path:
 *           MailboxStore.inboxAppend, dedup by the group's seq as the sender's number), one call per member
 *           shard per round, one commit per worker; devices read their inbox, acks trim it.
 *   B       fan-out on read, push: the group log only. Online member shards get the round's entries in one
 *           call (a coalesced "group G has seq N" signal that carries the entries), write nothing, push to
 *           their devices; each device keeps a cursor per group (written every 64 entries, like 1:1 cursors).
 *           Offline members pull the group log by cursor when they come back.
 *   B-pull  as B, but the signal carries no entries: every online member shard pulls (a second call, and a
 *           read of the group log on the group shard per member).
 *   C       hybrid: A's fan-out, but the inbox entry is a pointer (group, seq) with no body; bodies live once in
 *           the group log (online devices get them from the fan-out call; a catch-up fetches them per page).
 *
 * Workload: one group of M members (m0..), the first --online share of them online with --devices devices
 * each, the rest offline for the whole run; one online member is slow (its shard accepts a call only every
 * --slow-every rounds). Each round the group takes --burst messages from online members (one group commit),
 * then fans them out. Halfway one member is removed and one added (log entries), so the accounting checks that
 * nobody gets an entry after their removal or from before their joining. After the run: the slow member drains,
 * the offline members catch up (timed on its own), and every device's stream is checked: every entry of its
 * membership range exactly once, in order.
 *
 * Counted, not estimated: SQL rows written (total_changes(), every table; no table here has a secondary index,
 * so that is what Cloudflare bills), COMMITs per file (on-prem), writing transactions per member shard
 * (Cloudflare: one Durable Object per member), calls between shards (Cloudflare RPCs, on-prem inter-worker
 * messages to distinct workers), incoming WebSocket frames (sends and acks; billed at 20:1), rows read. Timed:
 * CPU (process.cpuUsage, whole process) and wall time per round. All shards run on this one thread, so the
 * per-round latency is given serialized (everything one after the other) and as the on-prem critical path (group
 * shard, then the slowest worker, as W worker processes would run in parallel); neither includes the IPC hop.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Row, Sql, SqlValue } from '../../core/ports.js';
import { migrate } from '../../core/schema.js';
import { MailboxStore } from '../../core/store.js';
import { ownerOf } from '../../onprem/owner.js';
import { openSqlite } from './layout.js';

export const DESIGNS = ['A', 'B', 'B-pull', 'C'] as const;
export type Design = (typeof DESIGNS)[number];

export interface Options {
  members: number[];
  messages: number;
  designs: Design[];
  online: number;
  devices: number;
  workers: number;
  burst: number;
  slowEvery: number;
  fanoutBatch: number;
  body: number;
  repeat: number;
  maxSeconds: number;
  json: string | undefined;
}

export function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      members: { type: 'string', default: '16,256,1024' },
      messages: { type: 'string', default: '300' },
      designs: { type: 'string', default: DESIGNS.join(',') },
      online: { type: 'string', default: '0.25' },
      devices: { type: 'string', default: '2' },
      workers: { type: 'string', default: '8' },
      burst: { type: 'string', default: '1' },
      'slow-every': { type: 'string', default: '4' },
      'fanout-batch': { type: 'string', default: '64' },
      body: { type: 'string', default: '100' },
      repeat: { type: 'string', default: '1' },
      'max-seconds': { type: 'string', default: '120' },
      json: { type: 'string' },
    },
  });
  const o: Options = {
    members: values.members.split(',').map(Number),
    messages: Number(values.messages),
    designs: values.designs.split(',') as Design[],
    online: Number(values.online),
    devices: Number(values.devices),
    workers: Number(values.workers),
    burst: Number(values.burst),
    slowEvery: Number(values['slow-every']),
    fanoutBatch: Number(values['fanout-batch']),
    body: Number(values.body),
    repeat: Number(values.repeat),
    maxSeconds: Number(values['max-seconds']),
    json: values.json,
  };
  for (const d of o.designs) if (!DESIGNS.includes(d)) throw new Error(`unknown design ${d}; known: ${DESIGNS.join(', ')}`);
  // Bounded on purpose: the box is shared. 4 members is the least that has an online sender, a slow member, a
  // removed member and an offline one.
  if (!o.members.every((m) => Number.isInteger(m) && m >= 4 && m <= 4096)) throw new Error('--members: integers in 4..4096');
  if (!(o.messages >= 4 && o.messages <= 100_000)) throw new Error('--messages: 4..100000');
  if (!(o.online > 0 && o.online <= 1)) throw new Error('--online: a share in (0, 1]');
  if (!(o.devices >= 1 && o.devices <= 16 && o.workers >= 1 && o.workers <= 64)) throw new Error('--devices 1..16, --workers 1..64');
  if (!(o.burst >= 1 && o.fanoutBatch >= 1 && o.slowEvery >= 0 && o.body >= 0 && o.repeat >= 1 && o.maxSeconds > 0)) throw new Error('bad --burst/--fanout-batch/--slow-every/--body/--repeat/--max-seconds');
  return o;
}

// ---------------------------------------------------------------------------------------------------------
// One SQLite file: the group's shard, or one on-prem worker holding member shards. Every statement goes through
// here, so rows written, rows read and COMMITs are counted in one place.

const GROUP_SCHEMA = [
  // The group's total order. kind: 1 message, 2 join, 3 leave (a membership change is an entry like a message).
  `CREATE TABLE group_log (grp TEXT NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL, sender TEXT NOT NULL,
     subject TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (grp, seq)) WITHOUT ROWID`,
  // Idempotent send: (sender, client id) -> seq, for the dedup window.
  `CREATE TABLE group_dedup (grp TEXT NOT NULL, sender TEXT NOT NULL, cid TEXT NOT NULL, seq INTEGER NOT NULL,
     PRIMARY KEY (grp, sender, cid)) WITHOUT ROWID`,
  // The roster: joined/left are the seqs of the member's join and leave entries (its visible range).
  `CREATE TABLE group_members (grp TEXT NOT NULL, member TEXT NOT NULL, role INTEGER NOT NULL, joined INTEGER NOT NULL,
     left_at INTEGER, PRIMARY KEY (grp, member)) WITHOUT ROWID`,
  // Floors (next seq, trimmed) and every member's delivered/read seq packed into one row: one billed row per
  // change of anyone's receipts, however many members changed.
  `CREATE TABLE groups (grp TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, trimmed INTEGER NOT NULL, receipts BLOB NOT NULL) WITHOUT ROWID`,
];
/**
 * Member side of designs B and B-pull: a device's cursor in a group (written every CURSOR_STEP entries), and one
 * "news" row per group that has entries an offline member has not seen (written once per offline spell, not per
 * message), so that a hello knows which groups to pull without asking every group the user is in.
 */
// IF NOT EXISTS: core/schema.ts (migration 7) now makes group_cursors itself, with these very columns.
const MEMBER_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS group_cursors (user TEXT NOT NULL, grp TEXT NOT NULL, device TEXT NOT NULL,
     cursor INTEGER NOT NULL, PRIMARY KEY (user, grp, device)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS group_news (user TEXT NOT NULL, grp TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (user, grp)) WITHOUT ROWID`,
];

/** Entries a device acks before its cursor is written, and inbox entries between trims (core/mailbox.ts TRIM_STEP). */
const CURSOR_STEP = 64;
/** Entries per delivery read (a device's send window, core/config.ts sendWindow). */
const PAGE = 256;

class Db {
  readonly db: DatabaseSync;
  private readonly stmts = new Map<string, StatementSync>();
  private open = false;
  commits = 0;
  rowsRead = 0;
  readonly sql: Sql;

  constructor(file: string) {
    this.db = openSqlite(file);
    this.sql = { all: <T extends Row = Row>(q: string, ...p: SqlValue[]) => this.all<T>(q, ...p) };
  }

  all<T extends Row = Row>(q: string, ...p: SqlValue[]): T[] {
    let st = this.stmts.get(q);
    if (!st) this.stmts.set(q, (st = this.db.prepare(q)));
    const rows = st.all(...p) as T[];
    this.rowsRead += rows.length;
    return rows;
  }

  /** Rows changed by INSERT/UPDATE/DELETE on this connection so far (upserts count one). */
  changes(): number {
    let st = this.stmts.get('tc');
    if (!st) this.stmts.set('tc', (st = this.db.prepare('SELECT total_changes() AS c')));
    return Number((st.get() as { c: number }).c);
  }

  /** Joins the open batch (group commit: everything of a round shares one COMMIT). */
  begin(): void {
    if (this.open) return;
    this.db.exec('BEGIN');
    this.open = true;
  }

  /**
   * Closes the batch: one COMMIT = one fsync of the WAL (synchronous=FULL). Only a batch that wrote is counted:
   * the group commit resolves a batch without writes without a COMMIT (onprem/storage.ts).
   */
  commit(): void {
    if (!this.open) return;
    this.db.exec('COMMIT');
    this.open = false;
    const c = this.changes();
    if (c > this.atLastCommit) this.commits++;
    this.atLastCommit = c;
  }
  private atLastCommit = 0;

  /** Bytes the database holds (pages in use), to see what stays stored per message. */
  usedBytes(): number {
    const one = (p: string) => Number(Object.values(this.db.prepare(`PRAGMA ${p}`).get() ?? {})[0] ?? 0);
    return (one('page_count') - one('freelist_count')) * one('page_size');
  }
}

// ---------------------------------------------------------------------------------------------------------
// The workload, a pure function of the options, so every design gets exactly the same one.

const G = 'g1';
const TS0 = 1_700_000_000_000;

function bodyOf(seq: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seq * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff; // incompressible, like ciphertext
  }
  return b;
}

type Kind = 1 | 2 | 3;
interface GEntry {
  seq: number;
  kind: Kind;
  sender: string;
  subject: string;
  ts: number;
  body: Uint8Array;
}

interface Device {
  name: string;
  /** A and C: inbox seq acked. B: group seq acked. */
  cursor: number;
  /** Group seqs received, in arrival order: checked at the end. */
  got: number[];
  /** B: cursor as last written. */
  saved: number;
}

interface Member {
  name: string;
  worker: number;
  online: boolean;
  slow: boolean;
  joined: number;
  left: number | null;
  devices: Device[];
  /** A, C: the highest group seq handed to this member's shard (the group shard keeps it in memory only). */
  fanned: number;
  /** B: the highest group seq this member's shard got (pushed or pulled). */
  pushed: number;
  /** B: the member's shard was told, while offline, that this group has news (reset when it pulls). */
  told: boolean;
  store: MailboxStore | null;
}

const visible = (m: Member, seq: number) => seq >= m.joined && (m.left === null || seq <= m.left);

export interface RunResult {
  design: Design;
  members: number;
  online: number;
  messages: number;
  rounds: number;
  cut: boolean;
  cpuUsPerMsg: number;
  /** Rows written per group message: the group shard, the member shards. */
  rowsGroup: number;
  rowsMembers: number;
  /** What per-member receipt rows would have cost instead of the packed row (member states changed per message). */
  receiptStates: number;
  commitsOnprem: number;
  /** Cloudflare: writing transactions per message, group DO and member DOs. */
  txCf: number;
  rpcCf: number;
  /** On-prem: messages between workers per group message (the group's worker to distinct member workers). */
  ipc: number;
  wsIn: number;
  dollarsPerM: number;
  writtenKBPerMsg: number;
  storedBytesPerMsg: number;
  /** Per round, ms: serialized, and the on-prem critical path (group shard + slowest worker). */
  p50SerialMs: number;
  p99SerialMs: number;
  p99CriticalMs: number;
  /** Wall time the group shard itself spends per message (its sends, fan-out bookkeeping, reads it serves). */
  groupMsPerMsg: number;
  /** Longest single step of the group shard in a round (ms): what a large group makes its shard's others wait. */
  groupMaxStepMs: number;
  slow: { maxLag: number; refusedCalls: number; drainRounds: number; logRetained: number };
  catchup: { members: number; entries: number; msPer1k: number; rowsReadPer1k: number; rowsWrittenPer1k: number; rpcPer1k: number };
  verify: { devices: number; expected: number; delivered: number; lost: number; duplicated: number; outside: number; order: number };
}

// Cloudflare list prices (docs/BENCHMARKS.md "Cloudflare: rows and cost per message").
const PER_ROW = 1.0;
const PER_REQUEST = 0.15;

function quantile(xs: number[], q: number): number {
  const v = [...xs].sort((a, b) => a - b);
  return v.length === 0 ? 0 : v[Math.min(v.length - 1, Math.floor(q * v.length))]!;
}

function writtenBytes(): number {
  try {
    return Number(/write_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

export function runOne(design: Design, M: number, o: Options): RunResult {
  const dir = mkdtempSync(join(tmpdir(), `iris-groups-${design}-`));
  let run: Run | undefined;
  try {
    run = new Run(design, M, o, dir);
    return run.go();
  } finally {
    run?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

class Run {
  private readonly group: Db;
  private readonly workers: Db[];
  private readonly members = new Map<string, Member>();
  private readonly log: GEntry[] = []; // the group log mirrored in memory (the run is bounded)
  private seq = 0;
  private round = 0;
  private now = TS0;
  private readonly fanout: boolean;
  private readonly pointers: boolean;
  // Counters over the measured loop.
  private rpcCf = 0;
  private ipc = 0;
  private wsIn = 0;
  private txCf = 0;
  private receiptStates = 0;
  private refused = 0;
  private maxLag = 0;
  private groupStep = 0;
  /** Every member's delivered seq as the group shard knows it (what the packed receipts row holds). */
  private readonly receipts = new Map<string, number>();
  private receiptsDirty = false;
  private onlineAtStart = 0;
  /** The group log is deleted up to here. */
  private trimmed = 0;
  /** After the measured loop: the last entries may be trimmed without waiting for a full CURSOR_STEP. */
  private draining = false;
  /** Time the group shard spent serving log reads (B-pull, gaps, catch-up). */
  private groupReadMs = 0;

  constructor(
    private readonly design: Design,
    private readonly M: number,
    private readonly o: Options,
    dir: string,
  ) {
    this.fanout = design === 'A' || design === 'C';
    this.pointers = design === 'C';
    this.group = new Db(join(dir, 'group.sqlite'));
    this.workers = Array.from({ length: o.workers }, (_, w) => new Db(join(dir, `w${w}.sqlite`)));
  }

  close(): void {
    for (const d of [this.group, ...this.workers]) if (d.db.isOpen) d.db.close();
  }

  private addMember(name: string, online: boolean, slow: boolean, joined: number): Member {
    const w = ownerOf(name, this.o.workers);
    const db = this.workers[w]!;
    const m: Member = {
      name, worker: w, online, slow, joined, left: null, fanned: joined - 1, pushed: joined - 1, told: false, store: null,
      devices: Array.from({ length: this.o.devices }, (_, d) => ({ name: `d${d}`, cursor: 0, got: [], saved: 0 })),
    };
    if (this.fanout) {
      m.store = new MailboxStore(db.sql, name);
      m.store.ensureUser();
      for (const d of m.devices) m.store.upsertDevice(d.name, 0, TS0);
    } else {
      // B: a device starts at the entry before its member's join (it gets the join entry and what follows).
      for (const d of m.devices) d.cursor = d.saved = joined - 1;
    }
    this.members.set(name, m);
    return m;
  }

  private setup(): void {
    const g = this.group;
    g.begin();
    for (const s of GROUP_SCHEMA) g.db.exec(s);
    g.all(`INSERT INTO groups (grp, next_seq, trimmed, receipts) VALUES (?, 1, 0, ?)`, G, new Uint8Array(0));
    g.commit();
    for (const w of this.workers) {
      w.begin();
      migrate(w.sql, TS0);
      for (const st of MEMBER_SCHEMA) w.db.exec(st);
      w.commit();
    }
    const onlineCount = Math.max(3, Math.round(this.M * this.o.online));
    for (const w of this.workers) w.begin();
    g.begin();
    for (let i = 0; i < this.M; i++) {
      // m0 is the admin; m1 is removed halfway; m2 is the slow one; the first onlineCount are online.
      const name = `m${i}`;
      this.addMember(name, i < onlineCount, i === 2 && this.o.slowEvery > 0, 1);
      g.all(`INSERT INTO group_members (grp, member, role, joined) VALUES (?, ?, ?, 1)`, G, name, i === 0 ? 1 : 0);
    }
    g.commit();
    for (const w of this.workers) w.commit();
    this.onlineAtStart = this.online().length;
  }

  private online(): Member[] {
    return [...this.members.values()].filter((m) => m.online && m.left === null);
  }

  /** Online member shards that still have entries of their range to get (a removed member gets its removal). */
  private reachable(): Member[] {
    return [...this.members.values()].filter((m) => m.online && (m.left === null || m.pushed < m.left));
  }

  /** The group shard takes one round of sends (and the membership change) in one commit. */
  private send(count: number, sent: { n: number }): GEntry[] {
    const g = this.group;
    const senders = this.online().filter((m) => !m.slow);
    const fresh: GEntry[] = [];
    g.begin();
    const append = (kind: Kind, sender: string, subject: string, body: Uint8Array) => {
      const e: GEntry = { seq: ++this.seq, kind, sender, subject, ts: this.now, body };
      g.all(`INSERT INTO group_log (grp, seq, kind, sender, subject, ts, body) VALUES (?, ?, ?, ?, ?, ?, ?)`, G, e.seq, kind, sender, subject, e.ts, body);
      this.log.push(e);
      fresh.push(e);
      return e;
    };
    for (let i = 0; i < count; i++) {
      const k = sent.n++;
      if (k === this.o.messages >> 1) {
        // Membership is in the order: m1's removal and j0's joining are entries, and their ranges follow from them.
        const leave = append(3, 'm0', 'm1', new Uint8Array(0));
        this.members.get('m1')!.left = leave.seq;
        g.all(`UPDATE group_members SET left_at = ? WHERE grp = ? AND member = ?`, leave.seq, G, 'm1');
        const join = append(2, 'm0', 'j0', new Uint8Array(0));
        this.workers[ownerOf('j0', this.o.workers)]!.begin();
        this.addMember('j0', true, false, join.seq);
        this.workers[ownerOf('j0', this.o.workers)]!.commit();
        g.all(`INSERT INTO group_members (grp, member, role, joined) VALUES (?, ?, 0, ?)`, G, 'j0', join.seq);
      }
      const sender = senders[k % senders.length]!;
      const cid = `c${k}`;
      // Idempotent send: the (sender, client id) lookup, then the record, in the same commit as the entry.
      if (g.all(`SELECT seq FROM group_dedup WHERE grp = ? AND sender = ? AND cid = ?`, G, sender.name, cid).length > 0) continue;
      const e = append(1, sender.name, '', bodyOf(this.seq + 1, this.o.body));
      g.all(`INSERT INTO group_dedup (grp, sender, cid, seq) VALUES (?, ?, ?, ?)`, G, sender.name, cid, e.seq);
      this.rpcCf++; // the sender's user shard calls the group shard (and acks after its reply)
      this.ipc += ownerOf(sender.name, this.o.workers) === ownerOf(G, this.o.workers) ? 0 : 1;
      this.wsIn++; // the send frame
    }
    g.commit();
    return fresh;
  }

  /** Whether the slow member's shard takes a call this round. */
  private accepts(m: Member): boolean {
    return !m.slow || this.round % this.o.slowEvery === 0;
  }

  // ---- designs A and C: the group shard writes into every member's inbox ----

  private fanOut(workerMs: number[]): void {
    const byWorker = new Map<number, Member[]>();
    for (const m of this.members.values()) {
      if (m.fanned >= Math.min(this.seq, m.left ?? Infinity)) continue;
      (byWorker.get(m.worker) ?? byWorker.set(m.worker, []).get(m.worker)!).push(m);
    }
    for (const [w, ms] of byWorker) {
      const t0 = performance.now();
      const db = this.workers[w]!;
      this.ipc++; // one message to this worker carries the entries for all its members
      db.begin();
      for (const m of ms) {
        this.rpcCf++; // Cloudflare: one call per member Durable Object
        if (!this.accepts(m)) {
          this.refused++;
          continue;
        }
        // Bounded: at most fanoutBatch entries per call; the rest goes in the next round.
        const entries = this.log.slice(m.fanned, m.fanned + this.o.fanoutBatch).filter((e) => visible(m, e.seq));
        const upTo = Math.min(m.fanned + this.o.fanoutBatch, this.seq, m.left ?? Infinity);
        const store = m.store!;
        const before = db.changes();
        const last = store.peerLastN(G);
        const fresh = entries.filter((e) => e.seq > last);
        if (fresh.length > 0) {
          store.inboxAppend(store.userRow().next_seq, fresh.map((e) => ({
            kind: 'message' as const, msg: `${G}:${e.seq}`, peer: G, ts: e.ts, body: this.pointers ? new Uint8Array(0) : e.body, n: e.seq,
          })));
          store.setPeerLastN(G, fresh[fresh.length - 1]!.seq);
        }
        m.fanned = upTo;
        if (m.online) this.deliverInbox(m);
        if (db.changes() > before) this.txCf++;
      }
      db.commit();
      workerMs[w] = (workerMs[w] ?? 0) + performance.now() - t0;
    }
  }

  /** A member's connected devices read their inbox and ack; every CURSOR_STEP entries the inbox is trimmed. */
  private deliverInbox(m: Member): number {
    const store = m.store!;
    let n = 0;
    for (const d of m.devices) {
      for (;;) {
        const page = store.inboxRange(d.cursor, PAGE);
        if (page.length === 0) break;
        for (const e of page) d.got.push(Number(e.msg.slice(e.msg.indexOf(':') + 1)));
        d.cursor = page[page.length - 1]!.seq;
        store.noteCursor(d.name, d.cursor);
        n += page.length;
        if (page.length < PAGE) break;
      }
      this.wsIn++; // one cumulative deliver_ack per device per round
    }
    const u = store.userRow();
    const min = Math.min(...m.devices.map((d) => d.cursor));
    if (min - u.trimmed >= CURSOR_STEP) {
      // core/mailbox.ts trim(): write the cursors, delete what every device acked.
      store.saveCursors(this.now);
      store.trimInbox(min);
    }
    this.noteReceipt(m);
    return n;
  }

  // ---- designs B and B-pull: members read the group log ----

  private push(fresh: GEntry[], workerMs: number[]): void {
    const byWorker = new Map<number, Member[]>();
    for (const m of this.reachable()) (byWorker.get(m.worker) ?? byWorker.set(m.worker, []).get(m.worker)!).push(m);
    const pull = this.design === 'B-pull';
    for (const [w, ms] of byWorker) {
      const t0 = performance.now();
      const db = this.workers[w]!;
      this.ipc++;
      db.begin();
      for (const m of ms) {
        this.rpcCf++; // the signal "G has seq N" (carrying the entries, unless B-pull)
        if (!this.accepts(m)) {
          this.refused++;
          continue;
        }
        let entries: GEntry[];
        const first = fresh[0]?.seq ?? this.seq + 1;
        if (pull || m.pushed < first - 1) {
          // The member shard reads the group log from its last seq: B-pull always, B after a missed signal.
          this.rpcCf++;
          entries = this.readLog(m, m.pushed, this.o.fanoutBatch * 4);
        } else {
          entries = fresh.filter((e) => visible(m, e.seq));
        }
        if (entries.length > 0) m.pushed = entries[entries.length - 1]!.seq;
        else m.pushed = Math.max(m.pushed, Math.min(this.seq, m.left ?? Infinity));
        const before = db.changes();
        this.deliverLog(db, m, entries);
        if (db.changes() > before) this.txCf++;
      }
      db.commit();
      workerMs[w] = (workerMs[w] ?? 0) + performance.now() - t0;
    }
    // Offline members are not called per message: the first entry of an offline spell leaves one "news" row in the
    // member's shard (one call), so its next hello knows this group has something to pull.
    const told = new Set<number>();
    for (const m of this.members.values()) {
      if (m.online || m.told || m.left !== null || m.pushed >= this.seq) continue;
      this.rpcCf++;
      const db = this.workers[m.worker]!;
      if (!told.has(m.worker)) {
        told.add(m.worker);
        this.ipc++;
        db.begin();
      }
      db.all(`INSERT INTO group_news (user, grp, seq) VALUES (?, ?, ?) ON CONFLICT (user, grp) DO UPDATE SET seq = excluded.seq`, m.name, G, this.seq);
      this.txCf++;
      m.told = true;
    }
    for (const w of told) this.workers[w]!.commit();
  }

  /** The group shard serves a read of its log for member m: entries after `after` in m's visible range. */
  private readLog(m: Member, after: number, limit: number): GEntry[] {
    const t0 = performance.now();
    const hi = m.left ?? Number.MAX_SAFE_INTEGER;
    const rows = this.group.all<{ seq: number; kind: number; sender: string; subject: string; ts: number; body: Uint8Array }>(
      `SELECT seq, kind, sender, subject, ts, body FROM group_log WHERE grp = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
      G, Math.max(after, m.joined - 1), hi, limit,
    );
    this.groupStep = Math.max(this.groupStep, performance.now() - t0);
    this.groupReadMs += performance.now() - t0;
    return rows.map((r) => ({ seq: r.seq, kind: r.kind as Kind, sender: r.sender, subject: r.subject, ts: r.ts, body: r.body }));
  }

  /** B: the member shard pushes entries to its devices; cursors are acked in memory, written every CURSOR_STEP. */
  private deliverLog(db: Db, m: Member, entries: GEntry[]): void {
    for (const d of m.devices) {
      for (const e of entries) {
        if (e.seq <= d.cursor) continue;
        d.got.push(e.seq);
        d.cursor = e.seq;
      }
      this.wsIn++;
      if (d.cursor - d.saved >= CURSOR_STEP) this.saveCursor(db, m, d);
    }
    this.noteReceipt(m);
  }

  private saveCursor(db: Db, m: Member, d: Device): void {
    db.all(
      `INSERT INTO group_cursors (user, grp, device, cursor) VALUES (?, ?, ?, ?)
       ON CONFLICT (user, grp, device) DO UPDATE SET cursor = excluded.cursor`,
      m.name, G, d.name, d.cursor,
    );
    d.saved = d.cursor;
  }

  // ---- shared: receipts and the group log's trim ----

  /** The member's delivered seq travels back in the reply to the call that delivered it (no call of its own). */
  private noteReceipt(m: Member): void {
    const seq = this.fanout ? Math.max(...m.devices.map((d) => d.got[d.got.length - 1] ?? 0)) : Math.max(...m.devices.map((d) => d.cursor));
    if (seq > (this.receipts.get(m.name) ?? 0)) {
      this.receipts.set(m.name, seq);
      this.receiptStates++;
      this.receiptsDirty = true;
    }
  }

  /** One packed row for everyone's receipts; then the log below what every current member has is deleted. */
  private groupHousekeeping(): void {
    const t0 = performance.now();
    const g = this.group;
    // No COMMIT of its own: this joins the group shard's open batch, which the next round's sends commit.
    g.begin();
    if (this.receiptsDirty) {
      const packed = new Float64Array(this.members.size);
      let i = 0;
      for (const m of this.members.values()) packed[i++] = this.receipts.get(m.name) ?? 0;
      g.all(`UPDATE groups SET receipts = ? WHERE grp = ?`, new Uint8Array(packed.buffer), G);
      this.receiptsDirty = false;
    }
    // A: an entry can go once every member's inbox has it. B, C: once every member's devices have it (the log is
    // where they read it). Removed members stop counting at their removal.
    let floor = this.seq;
    for (const m of this.members.values()) {
      // C: a device's inbox cursor is a member seq; the group seq it reached is that of the last pointer it got.
      const has = this.fanout && !this.pointers ? m.fanned : Math.min(...m.devices.map((d) => (this.fanout ? (d.got[d.got.length - 1] ?? 0) : d.cursor)));
      floor = Math.min(floor, m.left !== null && has >= m.left ? this.seq : has);
    }
    const trimmed = this.trimmed;
    if (floor - trimmed >= CURSOR_STEP || (floor === this.seq && floor > trimmed && this.draining)) {
      g.all(`DELETE FROM group_log WHERE grp = ? AND seq <= ?`, G, floor);
      g.all(`UPDATE groups SET trimmed = ?, next_seq = ? WHERE grp = ?`, floor, this.seq + 1, G);
      this.trimmed = floor;
    }
    this.groupStep = Math.max(this.groupStep, performance.now() - t0);
  }

  // ---- the run ----

  go(): RunResult {
    this.setup();
    const dbs = [this.group, ...this.workers];
    const rows0 = dbs.map((d) => d.changes());
    const commits0 = dbs.map((d) => d.commits);
    const used0 = dbs.reduce((s, d) => s + d.usedBytes(), 0);
    const io0 = writtenBytes();
    const cpu0 = process.cpuUsage();
    const deadline = performance.now() + this.o.maxSeconds * 1000;
    const serial: number[] = [];
    const critical: number[] = [];
    let groupMs = 0;
    const sent = { n: 0 };
    let cut = false;
    this.groupReadMs = 0;
    while (sent.n < this.o.messages) {
      if (performance.now() > deadline) {
        cut = true;
        break;
      }
      this.round++;
      this.now += 1000;
      const workerMs: number[] = [];
      const t0 = performance.now();
      const fresh = this.send(Math.min(this.o.burst, this.o.messages - sent.n), sent);
      const tGroup = performance.now() - t0;
      this.groupStep = Math.max(this.groupStep, tGroup);
      const r0 = this.groupReadMs;
      if (this.fanout) this.fanOut(workerMs);
      else this.push(fresh, workerMs);
      const t1 = performance.now();
      this.groupHousekeeping();
      const tHouse = performance.now() - t1;
      serial.push(t1 - t0);
      critical.push(tGroup + (this.groupReadMs - r0) + Math.max(0, ...workerMs.filter((x) => x !== undefined)));
      groupMs += tGroup + tHouse + (this.groupReadMs - r0);
      const slow = this.members.get('m2');
      if (slow?.slow) this.maxLag = Math.max(this.maxLag, this.seq - (this.fanout ? slow.fanned : slow.pushed));
    }
    const cpu = process.cpuUsage(cpu0);
    const written = writtenBytes() - io0;
    // What stays stored once the run's messages are sent: offline members' backlogs, the log kept for them.
    const storedBytes = dbs.reduce((s, d) => s + d.usedBytes(), 0) - used0;
    const msgs = sent.n;
    const logRetained = this.seq - this.trimmed;
    const refusedInRun = this.refused;
    const groupMaxStep = this.groupStep;

    // The slow member drains (no new sends): how many rounds until it has everything.
    this.draining = true;
    let drainRounds = 0;
    const slow = this.members.get('m2')!;
    while ((this.fanout ? slow.fanned : slow.pushed) < this.seq && drainRounds < 10_000) {
      this.round++;
      drainRounds++;
      if (this.fanout) this.fanOut([]);
      else this.push([], []);
    }

    // Offline members come back: each catches up on everything of its range.
    const c0 = { rpc: this.rpcCf, rows: dbs.reduce((s, d) => s + d.changes(), 0), read: dbs.reduce((s, d) => s + d.rowsRead, 0) };
    const offline = [...this.members.values()].filter((m) => !m.online);
    const tc = performance.now();
    let caught = 0;
    for (const m of offline) {
      m.online = true;
      const db = this.workers[m.worker]!;
      db.begin();
      const before = db.changes();
      if (this.fanout) {
        caught += this.catchUpInbox(m);
      } else {
        // The hello finds which groups have news, pulls each by cursor, and clears the mark.
        const news = db.all<{ grp: string }>(`SELECT grp FROM group_news WHERE user = ?`, m.name);
        if (news.length !== 1) throw new Error(`B: ${m.name} has ${news.length} news rows, want 1`);
        db.all(`DELETE FROM group_news WHERE user = ? AND grp = ?`, m.name, G);
        m.told = false;
        for (;;) {
          this.rpcCf++;
          const page = this.readLog(m, m.pushed, PAGE);
          if (page.length === 0) break;
          m.pushed = page[page.length - 1]!.seq;
          caught += page.length * m.devices.length; // one pull serves every device of the member
          this.deliverLog(db, m, page);
        }
        for (const d of m.devices) if (d.cursor > d.saved) this.saveCursor(db, m, d);
      }
      if (db.changes() > before) this.txCf++;
      db.commit();
    }
    const catchMs = performance.now() - tc;
    const c1 = { rpc: this.rpcCf, rows: dbs.reduce((s, d) => s + d.changes(), 0), read: dbs.reduce((s, d) => s + d.rowsRead, 0) };
    // Everyone has everything: the group log goes (its deletes are part of what a message costs).
    this.groupHousekeeping();
    this.group.commit();

    // Costs cover a message's whole life: sent, fanned out, delivered, caught up by the offline, trimmed.
    const rowsGroup = this.group.changes() - rows0[0]!;
    const rowsMembers = this.workers.reduce((s, w, i) => s + w.changes() - rows0[i + 1]!, 0);
    const commits = dbs.reduce((s, d, i) => s + d.commits - commits0[i]!, 0);
    const groupTx = this.group.commits - commits0[0]!;
    const verify = this.verify();
    const per = (x: number) => x / msgs;
    const rpcCf = per(this.rpcCf);
    const wsIn = per(this.wsIn);
    const rows = per(rowsGroup + rowsMembers);
    const k = caught > 0 ? 1000 / caught : 0;
    return {
      design: this.design,
      members: this.M,
      online: this.onlineAtStart,
      messages: msgs,
      rounds: serial.length,
      cut,
      cpuUsPerMsg: (cpu.user + cpu.system) / msgs,
      rowsGroup: per(rowsGroup),
      rowsMembers: per(rowsMembers),
      receiptStates: per(this.receiptStates),
      commitsOnprem: per(commits),
      txCf: per(groupTx + this.txCf),
      rpcCf,
      ipc: per(this.ipc),
      wsIn,
      dollarsPerM: rows * PER_ROW + (rpcCf + wsIn / 20) * PER_REQUEST,
      writtenKBPerMsg: written / msgs / 1024,
      storedBytesPerMsg: storedBytes / msgs,
      p50SerialMs: quantile(serial, 0.5),
      p99SerialMs: quantile(serial, 0.99),
      p99CriticalMs: quantile(critical, 0.99),
      groupMsPerMsg: groupMs / msgs,
      groupMaxStepMs: groupMaxStep,
      slow: { maxLag: this.maxLag, refusedCalls: refusedInRun, drainRounds, logRetained },
      catchup: {
        members: offline.length,
        entries: caught,
        msPer1k: catchMs * k,
        rowsReadPer1k: (c1.read - c0.read) * k,
        rowsWrittenPer1k: (c1.rows - c0.rows) * k,
        rpcPer1k: (c1.rpc - c0.rpc) * k,
      },
      verify,
    };
  }

  /** A and C: a device that was offline reads its inbox from its cursor; C fetches the bodies page by page. */
  private catchUpInbox(m: Member): number {
    const store = m.store!;
    let n = 0;
    for (const d of m.devices) {
      for (;;) {
        const page = store.inboxRange(d.cursor, PAGE);
        if (page.length === 0) break;
        const seqs = page.map((e) => Number(e.msg.slice(e.msg.indexOf(':') + 1)));
        if (this.pointers) {
          // The bodies are in the group log: one call per page to the group shard.
          this.rpcCf++;
          const bodies = this.readLog(m, seqs[0]! - 1, seqs[seqs.length - 1]! - seqs[0]! + 1);
          if (bodies.length < seqs.length) throw new Error(`C: group log lost bodies for ${m.name}`);
        }
        d.got.push(...seqs);
        d.cursor = page[page.length - 1]!.seq;
        store.noteCursor(d.name, d.cursor);
        n += page.length;
      }
    }
    store.saveCursors(this.now);
    store.trimInbox(Math.min(...m.devices.map((d) => d.cursor)));
    this.noteReceipt(m);
    return n;
  }

  /** Every device got every entry of its member's range exactly once, in order, and nothing outside it. */
  private verify(): RunResult['verify'] {
    const v = { devices: 0, expected: 0, delivered: 0, lost: 0, duplicated: 0, outside: 0, order: 0 };
    for (const m of this.members.values()) {
      const want = this.log.filter((e) => visible(m, e.seq)).map((e) => e.seq);
      const wantSet = new Set(want);
      for (const d of m.devices) {
        v.devices++;
        v.expected += want.length;
        v.delivered += d.got.length;
        const seen = new Set<number>();
        let prev = 0;
        for (const s of d.got) {
          if (seen.has(s)) v.duplicated++;
          else if (!wantSet.has(s)) v.outside++;
          seen.add(s);
          if (s <= prev) v.order++;
          prev = s;
        }
        for (const s of want) if (!seen.has(s)) v.lost++;
      }
    }
    return v;
  }
}


// ---------------------------------------------------------------------------------------------------------

const fmt = (x: number, d = 0) => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

/** "median [min-max]" when there is more than one run. */
function spread(xs: number[], d: number): string {
  if (xs.length === 1) return fmt(xs[0]!, d);
  return `${fmt(median(xs), d)} [${fmt(Math.min(...xs), d)}-${fmt(Math.max(...xs), d)}]`;
}

export interface Report {
  options: Options;
  node: string;
  startedAt: string;
  runs: RunResult[];
  failures: string[];
}

export function main(argv: string[]): Report {
  const o = parseOptions(argv);
  const started = performance.now();
  const report: Report = { options: o, node: process.version, startedAt: new Date().toISOString(), runs: [], failures: [] };
  console.log(
    `groups bench: members ${o.members.join('/')}, ${o.messages} messages of ${o.body} B in rounds of ${o.burst}, ${Math.round(o.online * 100)}% online, ` +
      `${o.devices} devices each, ${o.workers} on-prem workers, slow member accepts 1 call in ${o.slowEvery || '(none)'}, fan-out batch ${o.fanoutBatch}; ` +
      `node ${process.version}; ${report.startedAt}`,
  );
  for (const M of o.members) {
    // Designs alternate within each repeat, the order rotated, so a neighbour's burst of load does not land on one.
    for (let r = 0; r < o.repeat; r++) {
      for (let i = 0; i < o.designs.length; i++) report.runs.push(runOne(o.designs[(i + r) % o.designs.length]!, M, o));
    }
  }
  for (const run of report.runs) {
    const v = run.verify;
    if (v.lost || v.duplicated || v.outside || v.order || v.delivered !== v.expected) {
      report.failures.push(`${run.design} ${run.members}: ${JSON.stringify(v)}`);
    }
    if (run.cut) report.failures.push(`${run.design} ${run.members}: cut at --max-seconds after ${run.messages} messages`);
  }

  for (const M of o.members) {
    const rs = (d: Design) => report.runs.filter((x) => x.design === d && x.members === M);
    const first = (d: Design) => rs(d)[0]!;
    console.log(`\n### ${M} members (${first(o.designs[0]!).online} online), per group message${o.repeat > 1 ? `; timed columns: median [range] of ${o.repeat} runs` : ''}\n`);
    console.log('| design | rows written (group + members) | per-member receipt rows instead | CF transactions | CF RPCs | WS in | **$ / M msgs** | on-prem COMMITs | on-prem IPC | CPU µs | written KB | stored B | round p50 / p99 ms (serial) | p99 ms (critical path) | group shard ms | group max step ms |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const d of o.designs) {
      const a = first(d);
      const t = rs(d);
      console.log(
        `| ${d} | ${fmt(a.rowsGroup + a.rowsMembers, 2)} (${fmt(a.rowsGroup, 2)} + ${fmt(a.rowsMembers, 2)}) | +${fmt(a.receiptStates, 2)} | ${fmt(a.txCf, 2)} | ${fmt(a.rpcCf, 2)} | ${fmt(a.wsIn, 2)} | **${fmt(a.dollarsPerM, 2)}** | ` +
          `${fmt(a.commitsOnprem, 2)} | ${fmt(a.ipc, 2)} | ${spread(t.map((x) => x.cpuUsPerMsg), 0)} | ${spread(t.map((x) => x.writtenKBPerMsg), 1)} | ${fmt(a.storedBytesPerMsg, 0)} | ` +
          `${spread(t.map((x) => x.p50SerialMs), 2)} / ${spread(t.map((x) => x.p99SerialMs), 2)} | ${spread(t.map((x) => x.p99CriticalMs), 2)} | ${spread(t.map((x) => x.groupMsPerMsg), 3)} | ${spread(t.map((x) => x.groupMaxStepMs), 2)} |`,
      );
    }
    console.log('\n| design | slow member: max lag (entries) | calls refused | drain rounds | group log entries kept at the end | catch-up: offline members | entries | ms / 1k entries | rows read / 1k | rows written / 1k | CF RPCs / 1k | every device exactly once |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const d of o.designs) {
      const a = first(d);
      const t = rs(d);
      const bad = t.filter((x) => x.verify.lost || x.verify.duplicated || x.verify.outside || x.verify.order || x.verify.delivered !== x.verify.expected);
      console.log(
        `| ${d} | ${a.slow.maxLag} | ${a.slow.refusedCalls} | ${a.slow.drainRounds} | ${a.slow.logRetained} | ${a.catchup.members} | ${fmt(a.catchup.entries)} | ${spread(t.map((x) => x.catchup.msPer1k), 1)} | ` +
          `${fmt(a.catchup.rowsReadPer1k)} | ${fmt(a.catchup.rowsWrittenPer1k)} | ${fmt(a.catchup.rpcPer1k, 1)} | ` +
          `${bad.length ? `NO: ${JSON.stringify(bad[0]!.verify)}` : `yes (${fmt(a.verify.delivered)} deliveries to ${a.verify.devices} devices)`} |`,
      );
    }
  }
  if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2));
  for (const f of report.failures) console.log(`FAIL ${f}`);
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return report;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (main(process.argv.slice(2)).failures.length > 0) process.exitCode = 1;
}
