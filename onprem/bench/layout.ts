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
 *   sh scripts/node.sh --import tsx onprem/bench/layout.ts [--messages 200000] [--users 10000] [--batch 1000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';
import { migrate } from '../../core/schema.js';
import type { SqlValue } from '../../core/ports.js';

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

function open(file: string): DatabaseSync {
  const db = new DatabaseSync(file);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = FULL');
  db.exec('PRAGMA cache_size = -65536');
  return db;
}

let rnd = 42;
const pick = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) % USERS;

function core(dir: string): { secs: number; commits: number } {
  const db = open(join(dir, 'core.sqlite'));
  const stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();
  const q = (s: string, ...p: SqlValue[]) => {
    let st = stmts.get(s);
    if (!st) stmts.set(s, (st = db.prepare(s)));
    return st.run(...p);
  };
  db.exec('BEGIN');
  migrate({ all: (s, ...p) => (db.prepare(s).all(...p) as never[]) }, 0);
  const ins = db.prepare('INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES (?, 1, 1, 0, 0, 0)');
  for (let u = 0; u < USERS; u++) ins.run(`u${u}`);
  db.exec('COMMIT');
  const nextN = new Array<number>(USERS).fill(1);
  const nextSeq = new Array<number>(USERS).fill(1);
  let commits = 0;
  const t0 = performance.now();
  for (let i = 0; i < N; i += BATCH) {
    db.exec('BEGIN');
    for (let j = i; j < Math.min(N, i + BATCH); j++) {
      const a = pick();
      let b = pick();
      if (b === a) b = (a + 1) % USERS;
      const s = `u${a}`;
      const r = `u${b}`;
      const n = nextN[a]!++;
      const ts = 1_700_000_000_000 + j;
      q('INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES (?, ?, ?, 1, ?, ?, ?)', s, n, r, `${s}:${n}`, ts, body);
      q('INSERT INTO dedup (user, cid, n, ts) VALUES (?, ?, ?, ?)', s, `c${j}`, n, ts);
      q('UPDATE users SET next_n = ? WHERE user = ?', n + 1, s);
      const seq = nextSeq[b]!++;
      q('INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES (?, ?, 1, ?, ?, ?, ?)', r, seq, `${s}:${n}`, s, ts, body);
      q('UPDATE users SET next_seq = ? WHERE user = ?', seq + 1, r);
      q('INSERT INTO peers (user, peer, last_n) VALUES (?, ?, ?) ON CONFLICT (user, peer) DO UPDATE SET last_n = excluded.last_n', r, s, n);
      q('DELETE FROM outbox WHERE user = ? AND recipient = ? AND n <= ?', s, r, n);
    }
    db.exec('COMMIT');
    commits++;
  }
  const secs = (performance.now() - t0) / 1000;
  db.close();
  return { secs, commits };
}

function log(dir: string): { secs: number; commits: number } {
  const db = open(join(dir, 'log.sqlite'));
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
