/**
 * Storage layout measurement for one worker's SQLite file (node:sqlite, WAL, synchronous=FULL), batches of
 * --batch messages per transaction (what group commit produces under load):
 *
 *   core     the core's schema (core/schema.ts, keyed by user first, WITHOUT ROWID, two secondary indexes)
 *            and the writes one 1:1 message costs there today: outbox + dedup + users.next_n (sender),
 *            inbox + users.next_seq + peers.last_n (recipient), outbox delete (hand-over done).
 *   log      an append-only alternative: one rowid table every message is appended to (no secondary index),
 *            and per-user cursors written once per user per batch; hand-over and delivery move cursors, and
 *            old log ranges are deleted in bulk, off the hot path.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/layout.ts [--messages 200000] [--users 10000] [--batch 1000]
 *
 * The core write path (openSqlite, CoreWriter) is exported: scripts/bench/storage-engines.ts uses it as the
 * `sqlite-core` baseline when it compares storage engines on the full v2 write path (dedup records, peer
 * marks, an inbox index, reads and bulk trims).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { migrate } from '../../core/schema.js';
import type { SqlValue } from '../../core/ports.js';

/** One worker's SQLite file as onprem/storage.ts opens it: WAL, synchronous=FULL (COMMIT = one fsync). */
export function openSqlite(file: string): DatabaseSync {
  const db = new DatabaseSync(file);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = FULL');
  db.exec('PRAGMA cache_size = -65536');
  return db;
}

/** One 1:1 message from user index `from` to user index `to` (users are named `u<index>`). */
export interface CoreMessage {
  from: number;
  to: number;
  cid: string;
  ts: number;
  body: Uint8Array;
}

/**
 * The core schema's write path for 1:1 messages, one transaction (one COMMIT, one fsync) per write() call.
 * The constructor migrates a fresh database and creates users u0..u<users-1>.
 */
export class CoreWriter {
  private readonly stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();
  private readonly nextN: number[];
  private readonly nextSeq: number[];

  constructor(
    readonly db: DatabaseSync,
    users: number,
  ) {
    db.exec('BEGIN');
    migrate({ all: (s, ...p) => db.prepare(s).all(...p) as never[] }, 0);
    const ins = db.prepare('INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES (?, 1, 1, 0, 0, 0)');
    for (let u = 0; u < users; u++) ins.run(`u${u}`);
    db.exec('COMMIT');
    this.nextN = new Array<number>(users).fill(1);
    this.nextSeq = new Array<number>(users).fill(1);
  }

  private q(s: string, ...p: SqlValue[]): void {
    let st = this.stmts.get(s);
    if (!st) this.stmts.set(s, (st = this.db.prepare(s)));
    st.run(...p);
  }

  write(batch: readonly CoreMessage[]): void {
    this.db.exec('BEGIN');
    for (const m of batch) {
      const s = `u${m.from}`;
      const r = `u${m.to}`;
      const n = this.nextN[m.from]!++;
      this.q('INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES (?, ?, ?, 1, ?, ?, ?)', s, n, r, `${s}:${n}`, m.ts, m.body);
      this.q('INSERT INTO dedup (user, cid, n, ts) VALUES (?, ?, ?, ?)', s, m.cid, n, m.ts);
      this.q('UPDATE users SET next_n = ? WHERE user = ?', n + 1, s);
      const seq = this.nextSeq[m.to]!++;
      this.q('INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES (?, ?, 1, ?, ?, ?, ?)', r, seq, `${s}:${n}`, s, m.ts, m.body);
      this.q('UPDATE users SET next_seq = ? WHERE user = ?', seq + 1, r);
      this.q('INSERT INTO peers (user, peer, last_n) VALUES (?, ?, ?) ON CONFLICT (user, peer) DO UPDATE SET last_n = excluded.last_n', r, s, n);
      this.q('DELETE FROM outbox WHERE user = ? AND recipient = ? AND n <= ?', s, r, n);
    }
    this.db.exec('COMMIT');
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', default: '200000' },
      users: { type: 'string', default: '10000' },
      batch: { type: 'string', default: '1000' },
    },
  });
  const N = Number(values.messages);
  const USERS = Number(values.users);
  const BATCH = Number(values.batch);
  const body = new Uint8Array(100).fill(7);

  let rnd = 42;
  const pick = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) % USERS;

  function core(dir: string): { secs: number; commits: number } {
    const writer = new CoreWriter(openSqlite(join(dir, 'core.sqlite')), USERS);
    let commits = 0;
    const t0 = performance.now();
    for (let i = 0; i < N; i += BATCH) {
      const batch: CoreMessage[] = [];
      for (let j = i; j < Math.min(N, i + BATCH); j++) {
        const a = pick();
        let b = pick();
        if (b === a) b = (a + 1) % USERS;
        batch.push({ from: a, to: b, cid: `c${j}`, ts: 1_700_000_000_000 + j, body });
      }
      writer.write(batch);
      commits++;
    }
    const secs = (performance.now() - t0) / 1000;
    writer.db.close();
    return { secs, commits };
  }

  function log(dir: string): { secs: number; commits: number } {
    const db = openSqlite(join(dir, 'log.sqlite'));
    db.exec(`CREATE TABLE log (id INTEGER PRIMARY KEY, sender TEXT NOT NULL, n INTEGER NOT NULL, recipient TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL)`);
    db.exec(`CREATE TABLE cursors (user TEXT PRIMARY KEY, next_n INTEGER NOT NULL, next_seq INTEGER NOT NULL) WITHOUT ROWID`);
    const ins = db.prepare('INSERT INTO log (sender, n, recipient, seq, ts, body) VALUES (?, ?, ?, ?, ?, ?)');
    const cur = db.prepare('INSERT INTO cursors (user, next_n, next_seq) VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE SET next_n = excluded.next_n, next_seq = excluded.next_seq');
    const nextN = new Array<number>(USERS).fill(1);
    const nextSeq = new Array<number>(USERS).fill(1);
    let commits = 0;
    const t0 = performance.now();
    for (let i = 0; i < N; i += BATCH) {
      db.exec('BEGIN');
      const touched = new Set<number>();
      for (let j = i; j < Math.min(N, i + BATCH); j++) {
        const a = pick();
        let b = pick();
        if (b === a) b = (a + 1) % USERS;
        ins.run(`u${a}`, nextN[a]!++, `u${b}`, nextSeq[b]!++, 1_700_000_000_000 + j, body);
        touched.add(a);
        touched.add(b);
      }
      for (const u of touched) cur.run(`u${u}`, nextN[u]!, nextSeq[u]!);
      db.exec('COMMIT');
      commits++;
    }
    const secs = (performance.now() - t0) / 1000;
    db.close();
    return { secs, commits };
  }

  const dir = mkdtempSync(join(tmpdir(), 'iris-layout-'));
  try {
    console.log(`layout bench: ${N} messages, ${USERS} users, ${BATCH} messages per COMMIT, 100-byte bodies, node ${process.version}`);
    rnd = 42;
    const a = core(dir);
    console.log(`core schema  : ${Math.round(N / a.secs)} msg/s (${a.commits} COMMITs, ${a.secs.toFixed(2)} s)`);
    rnd = 42;
    const b = log(dir);
    console.log(`append-only  : ${Math.round(N / b.secs)} msg/s (${b.commits} COMMITs, ${b.secs.toFixed(2)} s) = ${(a.secs / b.secs).toFixed(1)}x`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
