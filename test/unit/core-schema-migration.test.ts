import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import type { Sql, SqlValue } from '../../core/ports.js';
import { SCHEMA_VERSION, migrate } from '../../core/schema.js';
import { MailboxStore } from '../../core/store.js';

/**
 * Migration 2 rebuilds the outbox keyed by recipient and drops the two secondary indexes. A shard that was
 * written by version 1 (a Durable Object or an on-prem worker file with messages still waiting) must come out
 * of it with every row, readable by the same queries.
 */
function open(): { db: DatabaseSync; sql: Sql } {
  const db = new DatabaseSync(':memory:');
  return { db, sql: { all: <T>(q: string, ...p: SqlValue[]) => db.prepare(q).all(...p) as T[] } };
}

describe('schema migration 1 -> 2', () => {
  it('keeps every waiting outbox row and dedup record, and drops the secondary indexes', () => {
    const { db, sql } = open();
    db.exec('BEGIN');
    expect(migrate(sql, 1, 1)).toBe(1);
    const body = new Uint8Array([1, 2, 3]);
    sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('alice', 1, 6, 0, 0, 0)`);
    const recipients = ['bob', 'carol', 'bob', 'carol', 'bob'];
    recipients.forEach((r, i) => {
      sql.all(`INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES ('alice', ?, ?, 1, ?, 7, ?)`, i + 1, r, `alice:${i + 1}`, body);
      sql.all(`INSERT INTO dedup (user, cid, n, ts) VALUES ('alice', ?, ?, 7)`, `c${i + 1}`, i + 1);
    });
    db.exec('COMMIT');

    db.exec('BEGIN');
    expect(migrate(sql, 2)).toBe(SCHEMA_VERSION);
    db.exec('COMMIT');
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(6);
    const indexes = sql.all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL`).map((r) => r.name);
    expect(indexes).toEqual([]);
    expect(sql.all(`SELECT version FROM iris_migrations ORDER BY version`)).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));

    const store = new MailboxStore(sql, 'alice');
    expect(store.outboxFor('bob', 10).map((i) => i.n)).toEqual([1, 3, 5]);
    expect(store.outboxFor('carol', 10).map((i) => [i.n, i.msg])).toEqual([[2, 'alice:2'], [4, 'alice:4']]);
    expect(store.outboxRecipients().sort()).toEqual(['bob', 'carol']);
    expect(store.outboxCount()).toBe(5);
    expect(store.dedupLookup('c3')).toEqual({ n: 3, ts: 7 });
    expect(store.userRow().next_n).toBe(6);
    // And the migrated tables take new rows as version 2 writes them.
    db.exec('BEGIN');
    expect(store.outboxAppend('bob', 'message', null, 8, body, 'c6')).toBe(6);
    store.outboxDelete('bob', 3);
    store.dedupPrune(2);
    db.exec('COMMIT');
    expect(store.outboxFor('bob', 10).map((i) => i.n)).toEqual([5, 6]);
    expect(store.dedupLookup('c1')).toBeUndefined();
    expect(store.dedupLookup('c6')).toEqual({ n: 6, ts: 8 });
  });

  it('3: per-sender dedup marks written by version 2 stay exact; new entries carry their numbers', () => {
    const { db, sql } = open();
    db.exec('BEGIN');
    migrate(sql, 1, 2);
    sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('bob', 3, 1, 0, 0, 0)`);
    for (const seq of [1, 2]) sql.all(`INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES ('bob', ?, 1, ?, 'alice', 7, x'00')`, seq, `alice:${seq + 40}`);
    sql.all(`INSERT INTO peers (user, peer, last_n) VALUES ('bob', 'alice', 42), ('bob', 'carol', 9)`);
    db.exec('COMMIT');
    db.exec('BEGIN');
    migrate(sql, 2);
    db.exec('COMMIT');
    const store = new MailboxStore(sql, 'bob');
    expect(store.peerLastN('alice')).toBe(42);
    expect(store.peerLastN('carol')).toBe(9);
    expect(store.peerLastN('dave')).toBe(0);
    db.exec('BEGIN');
    store.inboxAppend(3, [{ kind: 'message', msg: 'alice:43', peer: 'alice', ts: 8, body: new Uint8Array(1), n: 43 }]);
    store.setPeerLastN('alice', 43);
    store.trimInbox(3); // everything goes: alice's floor must now say 43
    db.exec('COMMIT');
    expect(sql.all(`SELECT last_n FROM peers WHERE user = 'bob' AND peer = 'alice'`)).toEqual([{ last_n: 43 }]);
    expect(new MailboxStore(sql, 'bob').peerLastN('alice')).toBe(43);
  });

  it('a new database gets every migration at once', () => {
    const { db, sql } = open();
    db.exec('BEGIN');
    expect(migrate(sql, 1)).toBe(SCHEMA_VERSION);
    expect(migrate(sql, 1)).toBe(SCHEMA_VERSION); // idempotent
    db.exec('COMMIT');
  });

  it('6: a user written by version 5 shows its presence to everyone until it changes the setting', () => {
    const { db, sql } = open();
    db.exec('BEGIN');
    migrate(sql, 1, 5);
    sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('alice', 1, 1, 0, 0, 42)`);
    migrate(sql, 1);
    db.exec('COMMIT');
    const store = new MailboxStore(sql, 'alice');
    expect(store.presenceVisibility()).toBe('everyone');
    expect(store.presenceVisibleTo('bob')).toBe(true);
    db.exec('BEGIN');
    store.setPresenceVisibility('nobody');
    db.exec('COMMIT');
    expect(new MailboxStore(sql, 'alice').presenceVisibility()).toBe('nobody');
    expect(store.presenceVisibleTo('bob')).toBe(false);
    expect(store.presenceVisibleTo('alice')).toBe(true);
    expect(store.lastSeen()).toBe(42);
  });
});
