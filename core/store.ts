import { ENTRY_KINDS, type Entry, type EntryKind } from '../protocol/index.js';
import type { ForwardItem, Sql } from './ports.js';

/** Every query the mailbox makes, typed, for one user. Synchronous: callers wrap writes in Storage.commit. */

export interface UserRow {
  next_seq: number;
  next_n: number;
  trimmed: number;
  delivered: number;
  last_seen: number;
  [k: string]: number;
}

const KIND_NAMES: Record<number, EntryKind> = { [ENTRY_KINDS.message]: 'message', [ENTRY_KINDS.delivered]: 'delivered' };

export class MailboxStore {
  constructor(
    private readonly sql: Sql,
    readonly user: string,
  ) {}

  /** Creates the user's row on first contact; last_seen stays 0 ("never") until a device connects. */
  ensureUser(): void {
    this.sql.all(
      `INSERT OR IGNORE INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES (?, 1, 1, 0, 0, 0)`,
      this.user,
    );
  }

  /** The user's counters, creating the row on first use (only write paths call this). */
  userRow(): UserRow {
    const q = `SELECT next_seq, next_n, trimmed, delivered, last_seen FROM users WHERE user = ?`;
    let r = this.sql.all<UserRow>(q, this.user)[0];
    if (!r) {
      this.ensureUser();
      r = this.sql.all<UserRow>(q, this.user)[0]!;
    }
    return r;
  }

  /** Last disconnect time, 0 if never seen. Reads only: a presence query must not create users. */
  lastSeen(): number {
    return this.sql.all<{ t: number }>(`SELECT last_seen AS t FROM users WHERE user = ?`, this.user)[0]?.t ?? 0;
  }

  setLastSeen(ts: number): void {
    this.sql.all(`UPDATE users SET last_seen = ? WHERE user = ?`, ts, this.user);
  }

  // ---- idempotent send ----

  dedupLookup(cid: string): { n: number; ts: number } | undefined {
    return this.sql.all<{ n: number; ts: number }>(`SELECT n, ts FROM dedup WHERE user = ? AND cid = ?`, this.user, cid)[0];
  }

  /** Appends to the outbox; returns the outbox number. Message sends also record their client id for dedup. */
  outboxAppend(recipient: string, kind: ForwardItem['kind'], msg: string | null, ts: number, body: Uint8Array, cid?: string): number {
    const n = this.userRow().next_n;
    const id = msg ?? `${this.user}:${n}`;
    this.sql.all(
      `INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      this.user, n, recipient, ENTRY_KINDS[kind], id, ts, body,
    );
    if (cid !== undefined) this.sql.all(`INSERT INTO dedup (user, cid, n, ts) VALUES (?, ?, ?, ?)`, this.user, cid, n, ts);
    this.sql.all(`UPDATE users SET next_n = ? WHERE user = ?`, n + 1, this.user);
    return n;
  }

  /** Forgets client ids older than the window. Indexed by n, so this is a short range delete. */
  dedupPrune(keepAfterN: number): void {
    this.sql.all(`DELETE FROM dedup WHERE user = ? AND n <= ?`, this.user, keepAfterN);
  }

  outboxCount(): number {
    return this.sql.all<{ c: number }>(`SELECT count(*) AS c FROM outbox WHERE user = ? AND kind = ?`, this.user, ENTRY_KINDS.message)[0]?.c ?? 0;
  }

  outboxRecipients(): string[] {
    return this.sql.all<{ r: string }>(`SELECT DISTINCT recipient AS r FROM outbox WHERE user = ?`, this.user).map((x) => x.r);
  }

  outboxFor(recipient: string, limit: number): ForwardItem[] {
    return this.sql
      .all<{ n: number; kind: number; msg: string; ts: number; body: Uint8Array }>(
        `SELECT n, kind, msg, ts, body FROM outbox WHERE user = ? AND recipient = ? ORDER BY n LIMIT ?`,
        this.user, recipient, limit,
      )
      .map((r) => ({ n: r.n, kind: KIND_NAMES[r.kind] === 'delivered' ? 'delivered' : 'message', msg: r.msg, ts: r.ts, body: r.body }));
  }

  outboxDelete(recipient: string, upToN: number): void {
    this.sql.all(`DELETE FROM outbox WHERE user = ? AND recipient = ? AND n <= ?`, this.user, recipient, upToN);
  }

  // ---- incoming ----

  peerLastN(peer: string): number {
    return this.sql.all<{ n: number }>(`SELECT last_n AS n FROM peers WHERE user = ? AND peer = ?`, this.user, peer)[0]?.n ?? 0;
  }

  setPeerLastN(peer: string, n: number): void {
    this.sql.all(
      `INSERT INTO peers (user, peer, last_n) VALUES (?, ?, ?) ON CONFLICT (user, peer) DO UPDATE SET last_n = excluded.last_n`,
      this.user, peer, n,
    );
  }

  /** Appends entries to the inbox starting at next_seq; returns the last seq written. */
  inboxAppend(startSeq: number, entries: Omit<Entry, 'seq'>[]): number {
    let seq = startSeq;
    for (const e of entries) {
      this.sql.all(
        `INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
        this.user, seq, ENTRY_KINDS[e.kind], e.msg, e.peer, e.ts, e.body,
      );
      seq++;
    }
    this.sql.all(`UPDATE users SET next_seq = ? WHERE user = ?`, seq, this.user);
    return seq - 1;
  }

  inboxRange(afterSeq: number, limit: number): Entry[] {
    return this.sql
      .all<{ seq: number; kind: number; msg: string; peer: string; ts: number; body: Uint8Array }>(
        `SELECT seq, kind, msg, peer, ts, body FROM inbox WHERE user = ? AND seq > ? ORDER BY seq LIMIT ?`,
        this.user, afterSeq, limit,
      )
      .map((r) => ({ seq: r.seq, kind: KIND_NAMES[r.kind] ?? 'message', msg: r.msg, peer: r.peer, ts: r.ts, body: r.body }));
  }

  /** Messages (not receipts) in (after, upTo]: the ones that need a delivery receipt. */
  messagesBetween(after: number, upTo: number): { msg: string; peer: string }[] {
    return this.sql.all<{ msg: string; peer: string }>(
      `SELECT msg, peer FROM inbox WHERE user = ? AND seq > ? AND seq <= ? AND kind = ? ORDER BY seq`,
      this.user, after, upTo, ENTRY_KINDS.message,
    );
  }

  setDelivered(seq: number): void {
    this.sql.all(`UPDATE users SET delivered = ? WHERE user = ?`, seq, this.user);
  }

  trimInbox(upTo: number): void {
    this.sql.all(`DELETE FROM inbox WHERE user = ? AND seq <= ?`, this.user, upTo);
    this.sql.all(`UPDATE users SET trimmed = ? WHERE user = ?`, upTo, this.user);
  }

  // ---- devices ----

  devices(): { device: string; cursor: number; last_seen: number }[] {
    return this.sql.all<{ device: string; cursor: number; last_seen: number }>(
      `SELECT device, cursor, last_seen FROM devices WHERE user = ? ORDER BY last_seen`,
      this.user,
    );
  }

  deviceCursor(device: string): number | undefined {
    return this.sql.all<{ c: number }>(`SELECT cursor AS c FROM devices WHERE user = ? AND device = ?`, this.user, device)[0]?.c;
  }

  upsertDevice(device: string, cursor: number, now: number): void {
    this.sql.all(
      `INSERT INTO devices (user, device, cursor, last_seen) VALUES (?, ?, ?, ?)
       ON CONFLICT (user, device) DO UPDATE SET cursor = excluded.cursor, last_seen = excluded.last_seen`,
      this.user, device, cursor, now,
    );
  }

  deleteDevice(device: string): void {
    this.sql.all(`DELETE FROM devices WHERE user = ? AND device = ?`, this.user, device);
  }
}
