/**
 * Storage engine comparison for the on-prem message log (issue 8, "Message path v2"): the same logical write
 * path on each engine, one durable commit per batch, and only then is the batch counted as acked.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/storage-engines.ts [--messages 30000] [--users 10000]
 *     [--batch 100,1000] [--body 100] [--engines sqlite-core,sqlite-log,lmdb,lmdb-overlap,lmdb-sync,level]
 *     [--inbox-index stored|memory] [--repeat 1] [--crash-iterations 3] [--crash-batch 100]
 *
 * Per commit batch of B messages (what group commit produces under load), each 1:1 from a random sender to a
 * random recipient among U users, with an incompressible body (E2E ciphertext):
 *   - the message (sender, recipient, client id, server ts, body, sender's outbox n, recipient's inbox seq) is
 *     appended once to a log keyed by a monotonically increasing log sequence;
 *   - an inbox index entry (recipient, inbox seq) -> log seq, so a device's delivery read is a range read
 *     (--inbox-index memory: no stored index; the worker keeps each user's pending log seqs in memory, as it
 *     could rebuild them from the untrimmed log at start, and the delivery read is point reads of the log;
 *     sqlite-core keeps its own inbox table either way);
 *   - the client id's durable dedup record, in the same batch. It is its own append-only record keyed by log
 *     seq (not the log entry) because it lives for the dedup window, while the log entry goes when acked;
 *   - per touched user once per batch: outbox counter and inbox seq; per touched (recipient, sender) pair once
 *     per batch: the recipient's peer dedup mark;
 *   - ONE durable commit, then the batch is acked.
 * Engines:
 *   sqlite-core   baseline: today's core schema and per-message statements (scripts/bench/layout.ts CoreWriter)
 *   sqlite-log    node:sqlite, WAL, synchronous=FULL: rowid log table (+ index on recipient, rseq), rowid
 *                 dedup table, users and peers WITHOUT ROWID; one BEGIN/COMMIT per batch
 *   lmdb          lmdb-js, overlappingSync: false, noSync/noMetaSync false: every put of the batch is queued in
 *                 one event turn (one LMDB write txn on lmdb-js's write thread); the promise resolves after
 *                 mdb_txn_commit, which syncs the data and the meta page before returning
 *   lmdb-overlap  lmdb-js with its Linux default overlappingSync: true: its docs only promise that the put
 *                 promise resolves at commit (visible), possibly before the flush, so the ack waits for
 *                 db.flushed as well
 *   lmdb-sync     lmdb-js, overlappingSync: false, the batch in one db.transactionSync on the main thread (like
 *                 node:sqlite: the commit and its sync block the event loop), instead of lmdb-js's write thread
 *   level         classic-level (LevelDB): one db.batch(ops, { sync: true }) per batch (fdatasync of its log)
 * Reported per engine and batch size: msg/s over the write loop, CPU µs per message (process.cpuUsage, all
 * threads, user + system), commits/s, allocated bytes on disk after the writes, bytes written to storage per
 * message (/proc/self/io write_bytes), ratios to sqlite-core and
 * sqlite-log of the same batch size in this invocation; then the delivery read (pages of 50 from the middle
 * of a random user's inbox, by cursor) and the trim (bulk delete of the acked first half of the log, its inbox
 * entries and dedup records, one durable commit), each verified. Every run checks afterwards that all rows /
 * keys are there and spot-checks bodies, so no engine wins by not writing.
 * Crash check (per engine, --crash-iterations times): a child process writes batches and prints each acked
 * batch's last log seq; it is SIGKILLed mid-run; the parent reopens the store and checks that every acked seq
 * is there and that counters and log agree (batches are atomic). A process kill, not a power cut: it proves
 * ordering and atomicity, not that the disk honours fsync.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { open as openLmdb, type Database as LmdbDatabase, type RootDatabase } from 'lmdb';
import { CoreWriter, openSqlite } from './layout.js';

const ENGINES = ['sqlite-core', 'sqlite-log', 'lmdb', 'lmdb-overlap', 'lmdb-sync', 'level'] as const;
type EngineName = (typeof ENGINES)[number];

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '30000' },
    users: { type: 'string', default: '10000' },
    batch: { type: 'string', default: '100,1000' },
    body: { type: 'string', default: '100' },
    engines: { type: 'string', default: ENGINES.join(',') },
    'crash-iterations': { type: 'string', default: '3' },
    'crash-batch': { type: 'string', default: '100' },
    repeat: { type: 'string', default: '1' },
    'inbox-index': { type: 'string', default: 'stored' },
    // Internal: the crash check's child process.
    child: { type: 'string' },
    dir: { type: 'string' },
  },
});
const N = Number(args.messages);
const USERS = Number(args.users);
const BODY = Number(args.body);
const BATCHES = args.batch.split(',').map(Number);
const CRASH_ITERATIONS = Number(args['crash-iterations']);
const CRASH_BATCH = Number(args['crash-batch']);
const REPEAT = Number(args.repeat);
/** Whether the log engines store the inbox index (recipient, inbox seq) -> log seq, or keep it in memory. */
const STORED_INDEX = args['inbox-index'] !== 'memory';
if (!['stored', 'memory'].includes(args['inbox-index'])) throw new Error('--inbox-index is stored or memory');
const engines = args.engines.split(',') as EngineName[];
for (const e of engines) if (!ENGINES.includes(e)) throw new Error(`unknown engine ${e}; known: ${ENGINES.join(', ')}`);
if (!(N > 0 && USERS > 1 && BODY >= 8 && BATCHES.every((b) => b > 0))) throw new Error('bad --messages/--users/--body/--batch');

// ---------------------------------------------------------------------------------------------------------
// The workload: message `seq` (1, 2, ...) is a pure function of seq, so a parent can regenerate what a child
// wrote, and a body can be checked byte for byte.

const TS0 = 1_700_000_000_000;
const NAMES = Array.from({ length: USERS }, (_, u) => `u${u}`);

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Pseudo-random (incompressible, like ciphertext) and reproducible from seq. */
function bodyOf(seq: number): Buffer {
  const b = Buffer.allocUnsafe(BODY);
  let x = mix(seq) | 1;
  for (let i = 0; i + 4 <= BODY; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x, i);
  }
  for (let i = BODY & ~3; i < BODY; i++) b[i] = seq & 0xff;
  return b;
}

interface Message {
  seq: number;
  from: number;
  to: number;
  cid: string;
  ts: number;
  body: Buffer;
}

function message(seq: number): Message {
  const from = mix(seq) % USERS;
  let to = mix(seq ^ 0x5bd1e995) % USERS;
  if (to === from) to = (from + 1) % USERS;
  return { seq, from, to, cid: `c${seq.toString(36)}-${from}`, ts: TS0 + seq, body: bodyOf(seq) };
}

/** A message as the log stores it: with the sender's outbox number and the recipient's inbox seq. */
interface Entry extends Message {
  sender: string;
  recipient: string;
  n: number;
  rseq: number;
}

interface Batch {
  entries: Entry[];
  /** Once per touched user: the counters after this batch. */
  users: { user: string; nextN: number; nextSeq: number }[];
  /** Once per touched (recipient, sender) pair: the recipient's dedup mark for that sender. */
  peers: { user: string; peer: string; lastN: number }[];
}

/** The worker's in-memory counters (in the v2 design they live in memory; the store gets them per batch). */
class Sequencer {
  readonly nextN = new Int32Array(USERS).fill(1);
  readonly nextSeq = new Int32Array(USERS).fill(1);
  readonly pairs = new Set<number>();
  /** Per user, the log seqs of its inbox in inbox-seq order (index rseq - 1): the in-memory inbox index. */
  readonly inbox = Array.from({ length: USERS }, () => [] as number[]);

  batch(msgs: readonly Message[]): Batch {
    const entries: Entry[] = [];
    const touched = new Set<number>();
    const peers = new Map<number, { user: string; peer: string; lastN: number }>();
    for (const m of msgs) {
      const n = this.nextN[m.from]!++;
      const rseq = this.nextSeq[m.to]!++;
      entries.push({ ...m, sender: NAMES[m.from]!, recipient: NAMES[m.to]!, n, rseq });
      this.inbox[m.to]!.push(m.seq);
      touched.add(m.from).add(m.to);
      const pair = m.to * USERS + m.from;
      peers.set(pair, { user: NAMES[m.to]!, peer: NAMES[m.from]!, lastN: n });
      this.pairs.add(pair);
    }
    const users = [...touched].map((u) => ({ user: NAMES[u]!, nextN: this.nextN[u]!, nextSeq: this.nextSeq[u]! }));
    return { entries, users, peers: [...peers.values()] };
  }
}

// ---------------------------------------------------------------------------------------------------------
// The engines, behind one small interface. write() resolves only once the batch is durable.

interface Counts {
  /** Messages stored (log entries; inbox rows for sqlite-core). */
  log: number;
  dedup: number;
  inbox: number;
  peers: number;
  /** Sums over users of (next_n - 1) and (next_seq - 1): each equals `log` when batches are atomic. */
  sentSum: number;
  receivedSum: number;
}

interface InboxItem {
  rseq: number;
  body: Uint8Array;
}

interface Engine {
  write(b: Batch): void | Promise<void>;
  /** Up to `limit` inbox entries of `user` after inbox seq `after`, in order (the delivery read). */
  readInbox(user: string, after: number, limit: number): InboxItem[] | Promise<InboxItem[]>;
  /** The log entries with these seqs, in order (the delivery read with the in-memory inbox index). */
  readLog?(seqs: readonly number[]): InboxItem[] | Promise<InboxItem[]>;
  /** Deletes messages with log seq <= upTo, their inbox entries and dedup records, in one durable commit. */
  trim(upTo: number, plan: TrimPlan): number | Promise<number>;
  /** The stored body of message `e`, or undefined. */
  body(e: Entry): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /** How many messages with log seq <= upTo are stored. */
  countUpTo(upTo: number): number | Promise<number>;
  counts(): Counts | Promise<Counts>;
  close(): void | Promise<void>;
}

/** Per-user trim bounds, for sqlite-core whose inbox and dedup are keyed per user, not by log seq. */
interface TrimPlan {
  inboxUpTo: Map<string, number>;
  dedupUpTo: Map<string, number>;
}

/** fresh: a new file, migrated, with users created (CoreWriter). Otherwise the file a crashed child left, read only. */
function sqliteCore(dir: string, fresh: boolean): Engine {
  const file = join(dir, 'core.sqlite');
  const w = fresh ? new CoreWriter(openSqlite(file), USERS) : undefined;
  const db = w?.db ?? openSqlite(file);
  const one = (q: string, ...p: (string | number)[]) => Number(Object.values(db.prepare(q).get(...p) ?? { v: 0 })[0] ?? 0);
  const read = db.prepare('SELECT seq, body FROM inbox WHERE user = ? AND seq > ? ORDER BY seq LIMIT ?');
  return {
    write: (b) => w!.write(b.entries),
    readInbox: (user, after, limit) => read.all(user, after, limit).map((r) => ({ rseq: Number(r['seq']), body: r['body'] as Uint8Array })),
    trim(_upTo, plan) {
      // What core/store.ts does once every device acked: per user, DELETE inbox ... seq <= acked, dedup n <= window.
      const inbox = db.prepare('DELETE FROM inbox WHERE user = ? AND seq <= ?');
      const dedup = db.prepare('DELETE FROM dedup WHERE user = ? AND n <= ?');
      let rows = 0;
      db.exec('BEGIN');
      for (const [u, s] of plan.inboxUpTo) rows += Number(inbox.run(u, s).changes);
      for (const [u, n] of plan.dedupUpTo) rows += Number(dedup.run(u, n).changes);
      db.exec('COMMIT');
      return rows;
    },
    body: (e) => db.prepare('SELECT body FROM inbox WHERE user = ? AND seq = ?').get(e.recipient, e.rseq)?.['body'] as Uint8Array | undefined,
    countUpTo: (upTo) => one('SELECT count(*) FROM inbox WHERE ts <= ?', TS0 + upTo),
    counts: () => ({
      log: one('SELECT count(*) FROM inbox'),
      inbox: one('SELECT count(*) FROM inbox'),
      dedup: one('SELECT count(*) FROM dedup'),
      peers: one('SELECT count(*) FROM peers'),
      sentSum: one('SELECT sum(next_n - 1) FROM users'),
      receivedSum: one('SELECT sum(next_seq - 1) FROM users'),
    }),
    close: () => db.close(),
  };
}

function sqliteLog(dir: string): Engine {
  const db: DatabaseSync = openSqlite(join(dir, 'log.sqlite'));
  db.exec(`CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, sender TEXT NOT NULL, n INTEGER NOT NULL,
             recipient TEXT NOT NULL, rseq INTEGER NOT NULL, cid TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL)`);
  if (STORED_INDEX) db.exec(`CREATE INDEX IF NOT EXISTS log_inbox ON log (recipient, rseq)`);
  db.exec(`CREATE TABLE IF NOT EXISTS dedup (seq INTEGER PRIMARY KEY, sender TEXT NOT NULL, cid TEXT NOT NULL)`);
  db.exec(`CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, next_n INTEGER NOT NULL, next_seq INTEGER NOT NULL) WITHOUT ROWID`);
  db.exec(`CREATE TABLE IF NOT EXISTS peers (user TEXT NOT NULL, peer TEXT NOT NULL, last_n INTEGER NOT NULL, PRIMARY KEY (user, peer)) WITHOUT ROWID`);
  const insLog = db.prepare('INSERT INTO log (seq, sender, n, recipient, rseq, cid, ts, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const insDedup = db.prepare('INSERT INTO dedup (seq, sender, cid) VALUES (?, ?, ?)');
  const upUser = db.prepare(
    'INSERT INTO users (user, next_n, next_seq) VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE SET next_n = excluded.next_n, next_seq = excluded.next_seq',
  );
  const upPeer = db.prepare('INSERT INTO peers (user, peer, last_n) VALUES (?, ?, ?) ON CONFLICT (user, peer) DO UPDATE SET last_n = excluded.last_n');
  const read = db.prepare('SELECT rseq, body FROM log WHERE recipient = ? AND rseq > ? ORDER BY rseq LIMIT ?');
  const point = db.prepare('SELECT rseq, body FROM log WHERE seq = ?');
  const one = (q: string, ...p: (string | number)[]) => Number(Object.values(db.prepare(q).get(...p) ?? { v: 0 })[0] ?? 0);
  return {
    write(b) {
      db.exec('BEGIN');
      for (const e of b.entries) {
        insLog.run(e.seq, e.sender, e.n, e.recipient, e.rseq, e.cid, e.ts, e.body);
        insDedup.run(e.seq, e.sender, e.cid);
      }
      for (const u of b.users) upUser.run(u.user, u.nextN, u.nextSeq);
      for (const p of b.peers) upPeer.run(p.user, p.peer, p.lastN);
      db.exec('COMMIT');
    },
    readInbox: (user, after, limit) => read.all(user, after, limit).map((r) => ({ rseq: Number(r['rseq']), body: r['body'] as Uint8Array })),
    readLog: (seqs) =>
      seqs.map((seq) => point.get(seq)).filter((r) => r !== undefined).map((r) => ({ rseq: Number(r['rseq']), body: r['body'] as Uint8Array })),
    trim(upTo) {
      db.exec('BEGIN');
      const rows = Number(db.prepare('DELETE FROM log WHERE seq <= ?').run(upTo).changes) + Number(db.prepare('DELETE FROM dedup WHERE seq <= ?').run(upTo).changes);
      db.exec('COMMIT');
      return rows;
    },
    body: (e) => db.prepare('SELECT body FROM log WHERE seq = ?').get(e.seq)?.['body'] as Uint8Array | undefined,
    countUpTo: (upTo) => one('SELECT count(*) FROM log WHERE seq <= ?', upTo),
    counts: () => ({
      log: one('SELECT count(*) FROM log'),
      inbox: STORED_INDEX ? one('SELECT count(*) FROM log INDEXED BY log_inbox WHERE recipient >= ?', '') : 0,
      dedup: one('SELECT count(*) FROM dedup'),
      peers: one('SELECT count(*) FROM peers'),
      sentSum: one('SELECT sum(next_n - 1) FROM users'),
      receivedSum: one('SELECT sum(next_seq - 1) FROM users'),
    }),
    close: () => db.close(),
  };
}

// Key-value layout shared by lmdb and level: byte-ordered binary keys, one keyspace with a one-byte prefix.
//   L seq(6B)                 -> log record          D seq(6B)      -> sender 0x00 cid (dedup record)
//   I user 0x00 rseq(4B)      -> seq(6B)             U user         -> next_n(4B) next_seq(4B)
//   P user 0x00 peer          -> last_n(4B)
const K = { log: 0x4c, dedup: 0x44, inbox: 0x49, user: 0x55, peer: 0x50 };

function seqKey(prefix: number, seq: number): Buffer {
  const k = Buffer.allocUnsafe(7);
  k[0] = prefix;
  k.writeUIntBE(seq, 1, 6);
  return k;
}

function inboxKey(user: string, rseq: number): Buffer {
  const k = Buffer.allocUnsafe(2 + user.length + 4);
  k[0] = K.inbox;
  k.write(user, 1, 'latin1');
  k[1 + user.length] = 0;
  k.writeUInt32BE(rseq, 2 + user.length);
  return k;
}

function pairKey(prefix: number, user: string, peer?: string): Buffer {
  return Buffer.from(peer === undefined ? `${String.fromCharCode(prefix)}${user}` : `${String.fromCharCode(prefix)}${user}\0${peer}`, 'latin1');
}

/** Log record: n(4) rseq(4) ts(6) then sender, recipient, cid as (u8 length, latin1) and the body. */
function encodeEntry(e: Entry): Buffer {
  const strs = e.sender.length + e.recipient.length + e.cid.length;
  const b = Buffer.allocUnsafe(14 + 3 + strs + e.body.length);
  b.writeUInt32BE(e.n, 0);
  b.writeUInt32BE(e.rseq, 4);
  b.writeUIntBE(e.ts, 8, 6);
  let o = 14;
  for (const s of [e.sender, e.recipient, e.cid]) {
    b[o++] = s.length;
    o += b.write(s, o, 'latin1');
  }
  b.set(e.body, o);
  return b;
}

function decodeEntry(b: Uint8Array): { rseq: number; recipient: string; body: Uint8Array } {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let o = 14;
  const strs: string[] = [];
  for (let i = 0; i < 3; i++) {
    const len = buf[o++]!;
    strs.push(buf.toString('latin1', o, o + len));
    o += len;
  }
  return { rseq: buf.readUInt32BE(4), recipient: strs[1]!, body: buf.subarray(o) };
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

/** The batch as key-value puts, identical for every key-value engine. */
function kvPuts(b: Batch): [Buffer, Buffer][] {
  const out: [Buffer, Buffer][] = [];
  for (const e of b.entries) {
    out.push([seqKey(K.log, e.seq), encodeEntry(e)]);
    if (STORED_INDEX) out.push([inboxKey(e.recipient, e.rseq), seqKey(K.log, e.seq).subarray(1)]);
    out.push([seqKey(K.dedup, e.seq), Buffer.from(`${e.sender}\0${e.cid}`, 'latin1')]);
  }
  for (const u of b.users) {
    const v = Buffer.allocUnsafe(8);
    v.writeUInt32BE(u.nextN, 0);
    v.writeUInt32BE(u.nextSeq, 4);
    out.push([pairKey(K.user, u.user), v]);
  }
  for (const p of b.peers) out.push([pairKey(K.peer, p.user, p.peer), u32(p.lastN)]);
  return out;
}

const prefixEnd = (prefix: number) => Buffer.from([prefix + 1]);
const prefixStart = (prefix: number) => Buffer.from([prefix]);

function lmdbEngine(dir: string, mode: 'async' | 'overlap' | 'sync'): Engine {
  const overlappingSync = mode === 'overlap';
  // Durability: noSync and noMetaSync stay false (LMDB syncs data pages and the meta page on commit). With
  // overlappingSync false, lmdb-js resolves a write's promise after mdb_txn_commit returned, sync included.
  // With overlappingSync true (lmdb-js's Linux default) the documented durable point is db.flushed, so the
  // batch awaits it as well. Verified with strace: see docs/ARCHITECTURE.md.
  const env: RootDatabase<Buffer, Buffer> = openLmdb<Buffer, Buffer>({
    path: join(dir, 'lmdb'),
    keyEncoding: 'binary',
    encoding: 'binary',
    compression: false,
    noSync: false,
    noMetaSync: false,
    overlappingSync,
  });
  // One named database per record type, all in the one environment (one write transaction per batch). Keys
  // keep their one-byte prefix, so the key-value layout is byte for byte the one level stores; the log and
  // the dedup records only ever grow at the end, so they are written with MDB_APPEND (pages filled, not split).
  const sub = new Map<number, LmdbDatabase<Buffer, Buffer>>(
    Object.entries(K).map(([name, prefix]) => [prefix, env.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary', compression: false })]),
  );
  const of = (prefix: number) => sub.get(prefix)!;
  const APPEND = { append: true } as unknown as number; // lmdb-js takes put options here; its typings only show a version
  const appends = (prefix: number) => prefix === K.log || prefix === K.dedup;
  const durable = async (last: Promise<boolean> | undefined) => {
    await last;
    if (overlappingSync) await env.flushed;
  };
  return {
    async write(b) {
      const puts = kvPuts(b);
      if (mode === 'sync') {
        env.transactionSync(() => {
          for (const [k, v] of puts) {
            if (appends(k[0]!)) of(k[0]!).putSync(k, v, { append: true });
            else of(k[0]!).putSync(k, v);
          }
        });
        return;
      }
      let last: Promise<boolean> | undefined;
      // All puts in one event turn go into one LMDB write transaction (lmdb-js eventTurnBatching).
      for (const [k, v] of puts) last = appends(k[0]!) ? of(k[0]!).put(k, v, APPEND) : of(k[0]!).put(k, v);
      await durable(last);
    },
    readInbox(user, after, limit) {
      const out: InboxItem[] = [];
      for (const { value } of of(K.inbox).getRange({ start: inboxKey(user, after + 1), end: inboxKey(user, 0xffffffff), limit })) {
        const rec = of(K.log).getBinary(Buffer.concat([Buffer.from([K.log]), value]));
        if (rec) out.push(decodeEntry(rec));
      }
      return out;
    },
    readLog: (seqs) =>
      seqs.map((seq) => of(K.log).getBinary(seqKey(K.log, seq))).filter((r) => r !== undefined).map(decodeEntry),
    async trim(upTo) {
      let rows = 0;
      let last: Promise<boolean> | undefined;
      for (const { key, value } of of(K.log).getRange({ end: seqKey(K.log, upTo + 1) })) {
        const e = decodeEntry(value);
        if (STORED_INDEX) of(K.inbox).remove(inboxKey(e.recipient, e.rseq));
        last = of(K.log).remove(key);
        rows++;
      }
      for (const key of of(K.dedup).getKeys({ end: seqKey(K.dedup, upTo + 1) })) {
        last = of(K.dedup).remove(key);
        rows++;
      }
      await durable(last);
      return rows;
    },
    body(e) {
      const rec = of(K.log).getBinary(seqKey(K.log, e.seq));
      return rec ? decodeEntry(rec).body : undefined;
    },
    countUpTo: (upTo) => of(K.log).getKeysCount({ end: seqKey(K.log, upTo + 1) }),
    counts() {
      let sentSum = 0;
      let receivedSum = 0;
      for (const { value } of of(K.user).getRange({})) {
        sentSum += value.readUInt32BE(0) - 1;
        receivedSum += value.readUInt32BE(4) - 1;
      }
      const n = (prefix: number) => of(prefix).getKeysCount();
      return { log: n(K.log), inbox: n(K.inbox), dedup: n(K.dedup), peers: n(K.peer), sentSum, receivedSum };
    },
    close: () => env.close(),
  };
}

async function levelEngine(dir: string): Promise<Engine> {
  // LevelDB defaults (4 MB write buffer, snappy on, which the incompressible bodies do not benefit from).
  const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'level'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  const count = async (gte: Buffer, lt: Buffer) => {
    let n = 0;
    for await (const _ of db.keys({ gte, lt })) n++;
    return n;
  };
  return {
    async write(b) {
      await db.batch(
        kvPuts(b).map(([key, value]) => ({ type: 'put' as const, key, value })),
        { sync: true },
      );
    },
    async readInbox(user, after, limit) {
      const seqs = await db.values({ gte: inboxKey(user, after + 1), lte: inboxKey(user, 0xffffffff), limit }).all();
      const recs = await db.getMany(seqs.map((seq) => Buffer.concat([Buffer.from([K.log]), seq])));
      return recs.filter((r) => r !== undefined).map(decodeEntry);
    },
    async readLog(seqs) {
      const recs = await db.getMany(seqs.map((seq) => seqKey(K.log, seq)));
      return recs.filter((r) => r !== undefined).map(decodeEntry);
    },
    async trim(upTo) {
      const ops: { type: 'del'; key: Buffer }[] = [];
      let rows = 0;
      for await (const [key, value] of db.iterator({ gte: seqKey(K.log, 0), lte: seqKey(K.log, upTo) })) {
        const e = decodeEntry(value);
        ops.push({ type: 'del', key });
        if (STORED_INDEX) ops.push({ type: 'del', key: inboxKey(e.recipient, e.rseq) });
        rows++;
      }
      for await (const key of db.keys({ gte: seqKey(K.dedup, 0), lte: seqKey(K.dedup, upTo) })) {
        ops.push({ type: 'del', key });
        rows++;
      }
      await db.batch(ops, { sync: true });
      return rows;
    },
    async body(e) {
      const rec = await db.get(seqKey(K.log, e.seq));
      return rec ? decodeEntry(rec).body : undefined;
    },
    countUpTo: (upTo) => count(seqKey(K.log, 0), seqKey(K.log, upTo + 1)),
    async counts() {
      let sent = 0;
      let received = 0;
      for await (const v of db.values({ gte: prefixStart(K.user), lt: prefixEnd(K.user) })) {
        sent += v.readUInt32BE(0) - 1;
        received += v.readUInt32BE(4) - 1;
      }
      return {
        log: await count(prefixStart(K.log), prefixEnd(K.log)),
        inbox: await count(prefixStart(K.inbox), prefixEnd(K.inbox)),
        dedup: await count(prefixStart(K.dedup), prefixEnd(K.dedup)),
        peers: await count(prefixStart(K.peer), prefixEnd(K.peer)),
        sentSum: sent,
        receivedSum: received,
      };
    },
    close: () => db.close(),
  };
}

/** Opens the engine's store in dir, creating it on first use (fresh: the sqlite-core baseline sets up its schema). */
async function openEngine(name: EngineName, dir: string, fresh: boolean): Promise<Engine> {
  switch (name) {
    case 'sqlite-core':
      return sqliteCore(dir, fresh);
    case 'sqlite-log':
      return sqliteLog(dir);
    case 'lmdb':
      return lmdbEngine(dir, 'async');
    case 'lmdb-overlap':
      return lmdbEngine(dir, 'overlap');
    case 'lmdb-sync':
      return lmdbEngine(dir, 'sync');
    case 'level':
      return levelEngine(dir);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Measurement.

function allocatedBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.blocks * 512;
  let sum = 0;
  for (const f of readdirSync(path)) sum += allocatedBytes(join(path, f));
  return sum;
}

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array) => a !== undefined && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), b) === 0;

interface Result {
  engine: EngineName;
  batch: number;
  secs: number;
  cpuUs: number;
  commits: number;
  disk: number;
  readUsPerPage: number;
  trimMs: number;
  trimRows: number;
  /** Bytes this process (all threads) sent to the block layer during the write loop (/proc/self/io). */
  written: number;
  problems: string[];
}

/** write_bytes of /proc/self/io: what the process caused to be written to storage (0 where unavailable). */
function writtenBytes(): number {
  try {
    return Number(/write_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function measure(name: EngineName, batchSize: number, msgs: readonly Message[]): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), `iris-engines-${name}-`));
  const problems: string[] = [];
  try {
    const engine = await openEngine(name, dir, true);
    const seq = new Sequencer();
    const batches: Batch[] = [];
    for (let i = 0; i < msgs.length; i += batchSize) batches.push(seq.batch(msgs.slice(i, i + batchSize)));
    const entries = batches.flatMap((b) => b.entries);

    // The write path: one durable commit per batch, awaited before the next batch (the ack point).
    const io0 = writtenBytes();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (const b of batches) await engine.write(b);
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const written = writtenBytes() - io0;
    const disk = allocatedBytes(dir);

    // Everything is there.
    const c = await engine.counts();
    const memoryIndex = !STORED_INDEX && name !== 'sqlite-core';
    const want: Counts = { log: N, inbox: memoryIndex ? 0 : N, dedup: N, peers: seq.pairs.size, sentSum: N, receivedSum: N };
    for (const k of Object.keys(want) as (keyof Counts)[]) if (c[k] !== want[k]) problems.push(`${k} ${c[k]} != ${want[k]}`);
    for (const e of [entries[0]!, entries[entries.length >> 1]!, entries[entries.length - 1]!]) {
      if (!sameBytes(await engine.body(e), e.body)) problems.push(`body of seq ${e.seq} differs`);
    }

    // The delivery read: pages of 50 from the middle of random users' inboxes, by cursor; each page checked.
    const pages = Math.min(1000, USERS);
    const readers = Array.from({ length: pages }, (_, i) => mix(i + 77) % USERS);
    const byRecipient = new Map<string, Entry[]>();
    for (const e of entries) (byRecipient.get(e.recipient) ?? byRecipient.set(e.recipient, []).get(e.recipient)!).push(e);
    const r0 = performance.now();
    const got: InboxItem[][] = [];
    for (const u of readers) {
      const after = seq.nextSeq[u]! >> 1;
      got.push(await (memoryIndex ? engine.readLog!(seq.inbox[u]!.slice(after, after + 50)) : engine.readInbox(NAMES[u]!, after, 50)));
    }
    const readUsPerPage = ((performance.now() - r0) * 1000) / pages;
    readers.forEach((u, i) => {
      const expected = (byRecipient.get(NAMES[u]!) ?? []).slice(seq.nextSeq[u]! >> 1, (seq.nextSeq[u]! >> 1) + 50);
      const page = got[i]!;
      if (page.length !== expected.length || page.some((p, j) => p.rseq !== expected[j]!.rseq || !sameBytes(p.body, expected[j]!.body))) {
        problems.push(`inbox page of ${NAMES[u]} wrong (${page.length} entries, want ${expected.length})`);
      }
    });

    // The trim: the acked first half of the log, in bulk, one durable commit.
    const half = N >> 1;
    const plan: TrimPlan = { inboxUpTo: new Map(), dedupUpTo: new Map() };
    for (const e of entries.slice(0, half)) {
      plan.inboxUpTo.set(e.recipient, e.rseq);
      plan.dedupUpTo.set(e.sender, e.n);
    }
    const t1 = performance.now();
    const trimRows = await engine.trim(half, plan);
    const trimMs = performance.now() - t1;
    const after = await engine.counts();
    if (trimRows !== 2 * half) problems.push(`trim deleted ${trimRows} rows, want ${2 * half}`);
    if (after.log !== N - half || after.inbox !== (memoryIndex ? 0 : N - half) || after.dedup !== N - half) {
      problems.push(`after trim: ${JSON.stringify(after)}`);
    }
    if (!sameBytes(await engine.body(entries[N - 1]!), entries[N - 1]!.body)) problems.push('last body gone after trim');
    await engine.close();
    return { engine: name, batch: batchSize, secs, cpuUs: (cpu.user + cpu.system) / N, commits: batches.length, disk, readUsPerPage, trimMs, trimRows, written, problems };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Crash check.

/** Child: write batches until killed (or 20 s), printing each acked batch's last log seq once it is durable. */
async function child(name: EngineName, dir: string): Promise<void> {
  const engine = await openEngine(name, dir, true);
  const seq = new Sequencer();
  const deadline = Date.now() + 20_000;
  for (let next = 1; Date.now() < deadline; next += CRASH_BATCH) {
    const msgs = Array.from({ length: CRASH_BATCH }, (_, i) => message(next + i));
    await engine.write(seq.batch(msgs));
    writeSync(1, `${next + CRASH_BATCH - 1}\n`);
  }
  await engine.close();
}

async function crashCheck(name: EngineName, iteration: number): Promise<{ acked: number; stored: number; problems: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), `iris-engines-crash-${name}-`));
  try {
    const script = fileURLToPath(import.meta.url);
    const argv = [...process.execArgv, script, '--child', name, '--dir', dir, '--users', String(USERS), '--body', String(BODY), '--crash-batch', String(CRASH_BATCH),
      '--inbox-index', args['inbox-index']];
    const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let acked = 0;
    let buf = '';
    let killTimer: NodeJS.Timeout | undefined;
    const killAfter = 150 + ((iteration * 211) % 500); // ms after the first ack: a different point each time
    proc.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) acked = Math.max(acked, Number(l));
      if (acked > 0 && !killTimer) killTimer = setTimeout(() => proc.kill('SIGKILL'), killAfter);
    });
    const guard = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((res) => proc.once('exit', (c, s) => res([c, s])));
    clearTimeout(guard);
    clearTimeout(killTimer);
    const problems: string[] = [];
    if (signal !== 'SIGKILL') problems.push(`child exited ${code} ${signal} before the kill`);
    if (acked === 0) problems.push('no batch acked before the kill');

    const engine = await openEngine(name, dir, false);
    const c = await engine.counts();
    const stored = await engine.countUpTo(acked);
    if (stored !== acked) problems.push(`${acked - stored} acked messages missing`);
    // Batches are atomic: counters, dedup records and the log agree, and the log is whole batches.
    const inbox = !STORED_INDEX && name !== 'sqlite-core' ? 0 : c.log;
    if (c.sentSum !== c.log || c.receivedSum !== c.log || c.dedup !== c.log || c.inbox !== inbox || c.log % CRASH_BATCH !== 0) {
      problems.push(`torn state: ${JSON.stringify(c)}`);
    }
    if (acked > 0) {
      // Regenerate the workload to find the last acked message's place (recipient, inbox seq) and body.
      const s = new Sequencer();
      let last: Entry | undefined;
      for (let next = 1; next <= acked; next += CRASH_BATCH) last = s.batch(Array.from({ length: CRASH_BATCH }, (_, i) => message(next + i))).entries.at(-1);
      if (!sameBytes(await engine.body(last!), last!.body)) problems.push(`body of last acked seq ${acked} differs`);
    }
    await engine.close();
    return { acked, stored: c.log, problems };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------

const fmt = (x: number, d = 0) => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });

async function main(): Promise<void> {
  if (args.child) return child(args.child as EngineName, args.dir!);
  const started = performance.now();
  console.log(
    `storage engines: ${fmt(N)} messages, ${fmt(USERS)} users, ${BODY}-byte bodies, batches of ${BATCHES.join('/')} per durable commit; inbox index ${STORED_INDEX ? 'stored' : 'in memory'}; ` +
      `node ${process.version}; ${new Date().toISOString()}`,
  );
  const msgs = Array.from({ length: N }, (_, i) => message(i + 1));
  // Every (engine, batch) --repeat times, round after round, the engine order rotated each round, so a burst of
  // load from a neighbour on this shared box does not land on one engine only. Medians are reported.
  const runs: Result[] = [];
  for (let r = 0; r < REPEAT; r++) {
    for (const b of BATCHES) {
      for (let i = 0; i < engines.length; i++) runs.push(await measure(engines[(i + r) % engines.length]!, b, msgs));
    }
  }
  const median = (xs: number[]) => {
    const v = [...xs].sort((a, b) => a - b);
    return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
  };
  const results = BATCHES.flatMap((batch) =>
    engines.map((engine) => {
      const rs = runs.filter((x) => x.engine === engine && x.batch === batch);
      const m = (f: (x: Result) => number) => median(rs.map(f));
      return {
        engine,
        batch,
        secs: m((x) => x.secs),
        rates: rs.map((x) => N / x.secs),
        cpuUs: m((x) => x.cpuUs),
        commits: rs[0]!.commits,
        disk: m((x) => x.disk),
        written: m((x) => x.written),
        readUsPerPage: m((x) => x.readUsPerPage),
        trimMs: m((x) => x.trimMs),
        problems: rs.flatMap((x) => x.problems),
      };
    }),
  );

  console.log(
    `\n${REPEAT > 1 ? `medians of ${REPEAT} runs each; msg/s range in brackets. ` : ''}` +
      'ratios = sqlite-core or sqlite-log time / this engine time, same batch size, this invocation',
  );
  console.log('| engine | batch | msg/s | CPU µs/msg | commits/s | disk MB | written KB/msg | × sqlite-core | × sqlite-log | read µs/page | trim ms | all rows present |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  let failed = false;
  for (const r of results) {
    const ratio = (base: EngineName) => {
      const b = results.find((x) => x.engine === base && x.batch === r.batch);
      return b ? `${(b.secs / r.secs).toFixed(2)}x` : '-';
    };
    const range = REPEAT > 1 ? ` [${fmt(Math.min(...r.rates))}-${fmt(Math.max(...r.rates))}]` : '';
    failed ||= r.problems.length > 0;
    console.log(
      `| ${r.engine} | ${r.batch} | ${fmt(N / r.secs)}${range} | ${r.cpuUs.toFixed(1)} | ${fmt(r.commits / r.secs)} | ${(r.disk / 2 ** 20).toFixed(1)} | ` +
        `${(r.written / N / 1024).toFixed(2)} | ${ratio('sqlite-core')} | ${ratio('sqlite-log')} | ${r.readUsPerPage.toFixed(0)} | ${r.trimMs.toFixed(0)} | ` +
        `${r.problems.length ? `NO: ${r.problems.join('; ')}` : 'yes'} |`,
    );
  }

  if (CRASH_ITERATIONS > 0) {
    console.log(`\ncrash check: child writes batches of ${CRASH_BATCH}, SIGKILL mid-run, reopen, every acked seq present and state not torn`);
    // Engines run their crash children side by side (nothing here is timed); iterations one after another.
    const byEngine = new Map(engines.map((e) => [e, [] as Awaited<ReturnType<typeof crashCheck>>[]]));
    for (let i = 0; i < CRASH_ITERATIONS; i++) {
      const runs = await Promise.all(engines.map((e) => crashCheck(e, i)));
      runs.forEach((r, j) => byEngine.get(engines[j]!)!.push(r));
    }
    for (const [e, runs] of byEngine) {
      const bad = runs.flatMap((r) => r.problems);
      failed ||= bad.length > 0;
      console.log(`  ${e.padEnd(12)} ${bad.length ? `FAIL: ${bad.join('; ')}` : 'ok'}  (acked/stored: ${runs.map((r) => `${r.acked}/${r.stored}`).join(', ')})`);
    }
  }
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (failed) process.exitCode = 1;
}

await main();
