/**
 * What a message reference costs the sender's shard (PROTOCOL.md 9.9, core/refs.ts): the rule check reads the
 * target's dedup record by outbox number, which is not a key (an index would be one more row per send), so it
 * scans the user's dedup rows. This times that lookup and a whole send-side check on a real node:sqlite file
 * opened as production opens it, with the dedup window full (dedupWindow + 256 rows for the user) and other
 * users' rows around it (an on-prem worker's file holds many users).
 *
 *   sh scripts/node.sh --import tsx scripts/bench/refs.ts [--window 10000] [--others 200] [--lookups 2000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { checkRef, oneToOneContext } from '../../core/refs.js';
import { migrate } from '../../core/schema.js';
import { MailboxStore } from '../../core/store.js';
import type { Sql, SqlValue } from '../../core/ports.js';
import { openSqlite } from './layout.js';

const { values } = parseArgs({
  options: {
    window: { type: 'string', default: '10000' },
    others: { type: 'string', default: '200' },
    lookups: { type: 'string', default: '2000' },
  },
});
const window = Number(values.window) + 256;
const others = Number(values.others);
const lookups = Number(values.lookups);

const dir = mkdtempSync(join(tmpdir(), 'iris-refs-bench-'));
try {
  const db = openSqlite(join(dir, 'refs.sqlite'));
  const stmts = new Map<string, ReturnType<typeof db.prepare>>();
  const sql: Sql = {
    all: <T>(q: string, ...p: SqlValue[]): T[] => {
      let s = stmts.get(q);
      if (!s) stmts.set(q, (s = db.prepare(q)));
      return s.all(...p) as T[];
    },
  };
  db.exec('BEGIN');
  migrate(sql, 1);
  const users = ['alice', ...Array.from({ length: others }, (_, i) => `u${i}`)];
  // Users named around alice in key order, so her rows sit between theirs in the B-tree.
  users.push(...Array.from({ length: others }, (_, i) => `alicf${i}`));
  const now = 1_767_225_600_000;
  for (const u of users) {
    const s = new MailboxStore(sql, u);
    // Random client ids (UUID-like): where a record sits in key order says nothing about its number.
    for (let i = 0; i < window; i++) s.accept(`${Math.random().toString(36).slice(2, 10)}-${i}`, now - (window - i) * 1000, i % 2 === 0 ? 'bob' : 'carol');
  }
  db.exec('COMMIT');
  const alice = new MailboxStore(sql, 'alice');
  const nextN = alice.userRow().next_n;

  const time = (label: string, fn: (i: number) => void): void => {
    for (let i = 0; i < 50; i++) fn(i); // warm
    const ms: number[] = [];
    for (let i = 0; i < lookups; i++) {
      const t = process.hrtime.bigint();
      fn(i);
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    ms.sort((a, b) => a - b);
    const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!.toFixed(3);
    process.stdout.write(`| ${label} | ${q(0.5)} | ${q(0.99)} | ${q(1 - 1e-9)} |\n`);
  };
  process.stdout.write(`dedup rows per user: ${window}; users in the file: ${users.length}; lookups: ${lookups}\n\n`);
  process.stdout.write('| operation | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|\n');
  time('dedupSent(n), n spread over the window', (i) => void alice.dedupSent(1 + ((i * 7919) % (nextN - 1))));
  time('dedupSent(n), n older than the window (no row)', () => void alice.dedupSent(nextN + 5));
  const ctx = () =>
    oneToOneContext({ user: 'alice', peer: 'bob', now, editWindowS: 900, deleteWindowS: 172_800, nextN: () => nextN, peerLastN: () => 50, sent: (n) => alice.dedupSent(n) });
  // Targets sent to bob (even numbers were), within the delete window.
  time('checkRef delete of an own message (scan)', (i) => void checkRef({ kind: 'delete', msg: `alice:${nextN - 1 - (i % 100) * 2}` }, ctx()));
  time("checkRef reaction to the peer's message (no scan)", (i) => void checkRef({ kind: 'react', msg: `bob:${1 + (i % 50)}` }, ctx()));
  db.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
