// Over 400 lines on purpose: every query of the schema is here, next to the in-memory caches that mirror what
// those queries wrote (counters, outbox mirrors, owed receipts, cursors); a query and the cache it keeps in step
// must change together, so they are not split across files.
import { ENTRY_KINDS, PRESENCE_VISIBILITY, type Entry, type EntryKind, type PresenceVisibility, type ReadPosition, type ReceiptState } from '../protocol/index.js';
import type { ForwardItem, Receipt, Sql } from './ports.js';
import { refColumns, refFromColumns } from './refs.js';

/**
 * Every query the mailbox makes, typed, for one user. Synchronous: callers wrap writes in Storage.commit.
 *
 * The mailbox is the only writer of its user's rows, so the user's counters and outbox size are cached here
 * instead of read back on every message (they were ~30% of the statements per message). A failed commit
 * rolls the database back but not this cache: the mailbox calls forget() whenever a commit rejects.
 *
 * The two sequence counters are derived, not rewritten per message (each rewrite is a billed row on Cloudflare
 * and a statement on-prem): `next_seq` is one past the highest inbox seq still stored (or past `trimmed`), and
 * `next_n` one past the highest outbox or dedup number; the stored columns are floors, written only when the
 * rows that carry a number are about to go (see outboxDelete). A number is therefore never handed out twice,
 * across restarts included, which the recipients' dedup by outbox number and the devices' cursors rely on.
 */

/** The one user whose rows a storage holds (a Durable Object is one user's); undefined before its first hello. */
export function soleUser(sql: Sql): string | undefined {
  return sql.all<{ user: string }>(`SELECT user FROM users LIMIT 1`)[0]?.user;
}

/**
 * The users of a storage with work to resume after a restart, when nobody may connect to wake them: messages
 * waiting in an outbox, and receipts owed to senders elsewhere, both written ones (receipts_out) and those
 * derived from acknowledged entries not yet trimmed (MailboxStore.owedMap), and push webhooks waiting (core/push.ts).
 */
export function usersToResume(sql: Sql): string[] {
  return sql
    .all<{ user: string }>(
      `SELECT DISTINCT user FROM outbox UNION SELECT DISTINCT user FROM receipts_out
       UNION SELECT DISTINCT d.user FROM devices d JOIN users u ON u.user = d.user WHERE d.cursor > u.trimmed
       UNION SELECT DISTINCT r.user FROM reads r JOIN users u ON u.user = r.user
         WHERE r.v > u.reads_paid AND u.read_receipts = 1 AND r.conv <> r.user
       UNION SELECT DISTINCT user FROM push_pending`,
    )
    .map((r) => r.user);
}

export interface UserRow {
  next_seq: number;
  next_n: number;
  trimmed: number;
  delivered: number;
  last_seen: number;
  /** 1: senders learn how far this user read (the user's setting, default on). */
  read_receipts: number;
  /** Read-version floor as stored: every read mark up to it reached its sender (see MailboxStore.readOwedMap). */
  reads_paid: number;
  [k: string]: number;
}

/** How far this user's messages to one peer were delivered and read (receipts_in, mirrored). */
// A type, not an interface: SQL row types need the implicit index signature.
type ReceivedState = {
  n: number;
  msg: string;
  ts: number;
  rn: number;
  rmsg: string;
  rts: number;
};

/** A read receipt owed to a conversation's sender: the mark's read version `v` orders the floor. */
interface OwedRead extends Receipt {
  v: number;
}

/** A receipt owed to a sender: `seq` is the inbox entry it can be derived from (0: written in receipts_out). */
interface OwedReceipt extends Receipt {
  seq: number;
  stored: boolean;
}

function receiptItem(peer: string, s: ReceivedState): ReceiptState {
  const item: ReceiptState = { peer, msg: s.msg, ts: s.ts };
  if (s.rn > 0) {
    item.read = s.rmsg;
    item.readTs = s.rts;
  }
  return item;
}

/** Outbox items mirrored in memory per recipient, at most. */
const MIRROR_MAX = 256;

const KIND_NAMES: Record<number, EntryKind> = { [ENTRY_KINDS.message]: 'message', [ENTRY_KINDS.delivered]: 'delivered', [ENTRY_KINDS.sent]: 'sent' };

export class MailboxStore {
  private row: UserRow | null = null;
  private outboxMessages: number | null = null;
  /** Per sender, the highest outbox number received (the incoming dedup key); null until first needed. */
  private lastN: Map<string, number> | null = null;
  /** next_n as stored in the users row (a floor), and the highest number a dedup record still carries. */
  private storedNextN = 0;
  private maxDedupN = 0;
  /**
   * Exact in-memory mirrors of the outbox, per recipient, kept in step with the SQL rows inside the same
   * transactions. Forwarding reads them instead of SQL. Dropped when they grow past MIRROR_MAX (a recipient
   * that is down or full), so memory stays bounded; SQL stays the truth.
   */
  private readonly mirrors = new Map<string, ForwardItem[]>();
  /** Per sender, the receipt owed to it (null until first needed; see owedMap). */
  private owed: Map<string, OwedReceipt> | null = null;
  /** receipts_in mirrored (null until first needed): per recipient, how far this user's messages were delivered and read. */
  private received: Map<string, ReceivedState> | null = null;
  private version = 0;
  /** reads mirrored (null until first needed): per conversation, the message number read up to. */
  private readPos: Map<string, number> | null = null;
  private readV = 0;
  /** Per conversation, the read receipt owed to its sender (null until first needed; see readOwedMap). */
  private readOwed: Map<string, OwedRead> | null = null;
  /** The user's registered devices (null until first needed). */
  private deviceNames: Set<string> | null = null;
  /** Device cursors acknowledged and not yet written (Mailbox.onAck); saveCursors writes them. */
  private readonly unsaved = new Map<string, number>();

  constructor(
    private readonly sql: Sql,
    readonly user: string,
  ) {}

  /** Drops the caches; the next read goes to SQL. */
  forget(): void {
    this.row = null;
    this.lastN = null;
    this.storedNextN = 0;
    this.maxDedupN = 0;
    this.outboxMessages = null;
    this.mirrors.clear();
    this.owed = null;
    this.received = null;
    this.version = 0;
    this.readPos = null;
    this.readV = 0;
    this.readOwed = null;
    this.deviceNames = null;
    this.unsaved.clear();
  }

  /** Creates the user's row on first contact; last_seen stays 0 ("never") until a device connects. */
  ensureUser(): void {
    this.sql.all(
      `INSERT OR IGNORE INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES (?, 1, 1, 0, 0, 0)`,
      this.user,
    );
  }

  /** The user's counters, creating the row on first use (only write paths call this). Read-only view. */
  userRow(): Readonly<UserRow> {
    if (this.row) return this.row;
    let r = this.readUserRow();
    if (!r) {
      this.ensureUser();
      r = this.readUserRow()!;
    }
    this.row = r;
    return this.row;
  }

  /** The user's counters if the user exists; never writes (for paths that must work while writes fail). */
  peekUserRow(): Readonly<UserRow> | undefined {
    return this.row ?? this.readUserRow();
  }

  /** The stored row with the counters derived from the rows that carry the numbers (see the class comment). */
  private readUserRow(): UserRow | undefined {
    const r = this.sql.all<UserRow>(`SELECT next_seq, next_n, trimmed, delivered, last_seen, read_receipts, reads_paid FROM users WHERE user = ?`, this.user)[0];
    if (!r) return undefined;
    const max = (q: string) => this.sql.all<{ m: number | null }>(q, this.user)[0]?.m ?? 0;
    const maxSeq = max(`SELECT max(seq) AS m FROM inbox WHERE user = ?`);
    const maxOutboxN = max(`SELECT max(n) AS m FROM outbox WHERE user = ?`);
    this.maxDedupN = max(`SELECT max(n) AS m FROM dedup WHERE user = ?`);
    this.storedNextN = r.next_n;
    // Receipts were sent for everything any device acknowledged: `delivered` is the highest device cursor (the
    // stored column is a floor from before migration 4). A hello that moves a cursor forward sends the receipts
    // for the entries it skips (Mailbox.onHello), so every cursor position is covered by receipts.
    let maxCursor = max(`SELECT max(cursor) AS m FROM devices WHERE user = ?`);
    for (const c of this.unsaved.values()) if (c > maxCursor) maxCursor = c;
    return {
      ...r,
      delivered: Math.max(r.delivered, maxCursor),
      next_seq: Math.max(r.next_seq, maxSeq + 1, r.trimmed + 1),
      next_n: Math.max(r.next_n, maxOutboxN + 1, this.maxDedupN + 1),
    };
  }

  private mutableRow(): UserRow {
    this.userRow();
    return this.row!;
  }

  /** Last disconnect time, 0 if never seen. Reads only: a presence query must not create users. */
  lastSeen(): number {
    return this.sql.all<{ t: number }>(`SELECT last_seen AS t FROM users WHERE user = ?`, this.user)[0]?.t ?? 0;
  }

  setLastSeen(ts: number): void {
    const row = this.mutableRow();
    row.last_seen = ts;
    // The read floor rides along: the same row, so no extra row written.
    row.reads_paid = this.readsPaidFloor();
    this.sql.all(`UPDATE users SET last_seen = ?, reads_paid = ? WHERE user = ?`, ts, row.reads_paid, this.user);
  }

  // ---- idempotent send ----

  dedupLookup(cid: string): { n: number; ts: number } | undefined {
    return this.sql.all<{ n: number; ts: number }>(`SELECT n, ts FROM dedup WHERE user = ? AND cid = ?`, this.user, cid)[0];
  }

  /** Appends to the outbox; returns the outbox number. Message sends also record their client id for dedup. */
  outboxAppend(recipient: string, kind: ForwardItem['kind'], msg: string | null, ts: number, body: Uint8Array, cid?: string): number {
    const n = cid !== undefined ? this.accept(cid, ts) : this.takeN();
    this.outboxPut(recipient, n, kind, msg ?? `${this.user}:${n}`, ts, body);
    return n;
  }

  private takeN(): number {
    const row = this.mutableRow();
    return row.next_n++;
  }

  /**
   * Takes the next outbox number for an accepted send and records its client id, without an outbox row: the
   * caller either hands the message over in the same commit (one hop) or puts it in the outbox (outboxPut).
   */
  accept(cid: string, ts: number, recipient = ''): number {
    const n = this.takeN();
    this.sql.all(`INSERT INTO dedup (user, cid, n, ts, peer) VALUES (?, ?, ?, ?, ?)`, this.user, cid, n, ts, recipient);
    this.maxDedupN = n;
    return n;
  }

  /**
   * When this user's message n was accepted and to whom, from its dedup record while the window keeps it (message
   * references: core/refs.ts). Not keyed by n (an index would be a row per send): a scan of at most dedupWindow +
   * 256 rows of this user, run only for a reference to one's own message.
   */
  dedupSent(n: number): { ts: number; peer: string } | undefined {
    return this.sql.all<{ ts: number; peer: string }>(`SELECT ts, peer FROM dedup WHERE user = ? AND n = ? LIMIT 1`, this.user, n)[0];
  }

  outboxPut(recipient: string, n: number, kind: ForwardItem['kind'], id: string, ts: number, body: Uint8Array, ref?: ForwardItem['ref']): void {
    const [refKind, refMsg] = refColumns(ref);
    this.sql.all(
      `INSERT INTO outbox (user, n, recipient, kind, msg, ts, body, ref_kind, ref_msg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      this.user, n, recipient, ENTRY_KINDS[kind], id, ts, body, refKind, refMsg,
    );
    if (kind === 'message' && this.outboxMessages !== null) this.outboxMessages++;
    const mirror = this.mirrors.get(recipient);
    if (mirror) {
      if (mirror.length >= MIRROR_MAX) this.mirrors.delete(recipient);
      else mirror.push(ref ? { n, kind, msg: id, ts, body, ref } : { n, kind, msg: id, ts, body });
    }
  }

  /** Forgets client ids older than the window. Indexed by n, so this is a short range delete. */
  dedupPrune(keepAfterN: number): void {
    this.sql.all(`DELETE FROM dedup WHERE user = ? AND n <= ?`, this.user, keepAfterN);
  }

  /** Messages (not receipts) waiting in the outbox. */
  outboxCount(): number {
    this.outboxMessages ??=
      this.sql.all<{ c: number }>(`SELECT count(*) AS c FROM outbox WHERE user = ? AND kind = ?`, this.user, ENTRY_KINDS.message)[0]?.c ?? 0;
    return this.outboxMessages;
  }

  outboxRecipients(): string[] {
    return this.sql.all<{ r: string }>(`SELECT DISTINCT recipient AS r FROM outbox WHERE user = ?`, this.user).map((x) => x.r);
  }

  /** The first `limit` outbox items for a recipient, in order: from the mirror when there is one. */
  outboxFor(recipient: string, limit: number): ForwardItem[] {
    const mirror = this.mirrors.get(recipient);
    if (mirror) return mirror.slice(0, limit);
    const items = this.sql
      .all<{ n: number; kind: number; msg: string; ts: number; body: Uint8Array; ref_kind: number; ref_msg: string }>(
        `SELECT n, kind, msg, ts, body, ref_kind, ref_msg FROM outbox WHERE user = ? AND recipient = ? ORDER BY n LIMIT ?`,
        this.user, recipient, limit,
      )
      .map((r): ForwardItem => {
        const item: ForwardItem = { n: r.n, kind: KIND_NAMES[r.kind] === 'delivered' ? 'delivered' : 'message', msg: r.msg, ts: r.ts, body: r.body };
        const ref = refFromColumns(r.ref_kind, r.ref_msg);
        if (ref) item.ref = ref;
        return item;
      });
    // Everything there is for this recipient fits: from now on the mirror can answer.
    if (items.length < limit) this.mirrors.set(recipient, items.slice());
    return items;
  }

  outboxDelete(recipient: string, upToN: number): void {
    // The rows going may carry the highest number handed out (a receipt has no dedup record): keep it in the
    // stored floor first, so it is never handed out again after a restart.
    const row = this.mutableRow();
    if (upToN > this.maxDedupN && upToN >= this.storedNextN) {
      this.sql.all(`UPDATE users SET next_n = ? WHERE user = ?`, row.next_n, this.user);
      this.storedNextN = row.next_n;
    }
    const mirror = this.mirrors.get(recipient);
    if (mirror) {
      this.sql.all(`DELETE FROM outbox WHERE user = ? AND recipient = ? AND n <= ?`, this.user, recipient, upToN);
      let messages = 0;
      while (mirror.length > 0 && mirror[0]!.n <= upToN) if (mirror.shift()!.kind === 'message') messages++;
      if (this.outboxMessages !== null) this.outboxMessages -= messages;
      return;
    }
    const gone = this.sql.all<{ kind: number }>(
      `DELETE FROM outbox WHERE user = ? AND recipient = ? AND n <= ? RETURNING kind`,
      this.user, recipient, upToN,
    );
    if (this.outboxMessages !== null) {
      for (const g of gone) if (g.kind === ENTRY_KINDS.message) this.outboxMessages--;
    }
  }

  // ---- incoming ----

  /**
   * The highest outbox number received from `peer`: the larger of its stored floor (peers.last_n, written by the
   * trim) and the highest number among its entries still in the inbox. Read for every sender at once, the first
   * time one is needed (one scan of this user's inbox, which inboxCap bounds), then kept in memory.
   */
  peerLastN(peer: string): number {
    if (this.lastN === null) {
      const m = new Map<string, number>();
      for (const r of this.sql.all<{ peer: string; n: number }>(`SELECT peer, last_n AS n FROM peers WHERE user = ?`, this.user)) m.set(r.peer, r.n);
      // A sent entry's peer is its recipient, not a sender: it is no dedup mark (core/history.ts).
      for (const r of this.sql.all<{ peer: string; n: number }>(`SELECT peer, max(n) AS n FROM inbox WHERE user = ? AND kind <> ? GROUP BY peer`, this.user, ENTRY_KINDS.sent)) {
        m.set(r.peer, Math.max(m.get(r.peer) ?? 0, r.n));
      }
      this.lastN = m;
    }
    return this.lastN.get(peer) ?? 0;
  }

  /** Not stored: the entries appended in the same transaction carry the numbers (see peerLastN). */
  setPeerLastN(peer: string, n: number): void {
    this.peerLastN(peer);
    this.lastN!.set(peer, n);
  }

  /** Appends entries (each with its sender's outbox number) to the inbox starting at next_seq; returns the last seq. */
  inboxAppend(startSeq: number, entries: (Omit<Entry, 'seq'> & { n: number })[]): number {
    let seq = startSeq;
    for (const e of entries) {
      const [refKind, refMsg] = refColumns(e.ref);
      this.sql.all(
        `INSERT INTO inbox (user, seq, kind, msg, peer, ts, body, n, ref_kind, ref_msg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        this.user, seq, ENTRY_KINDS[e.kind], e.msg, e.peer, e.ts, e.body, e.n, refKind, refMsg,
      );
      seq++;
    }
    // Not stored: derived from the highest inbox seq (and `trimmed`) when the row is next read from SQL.
    this.mutableRow().next_seq = seq;
    return seq - 1;
  }

  inboxRange(afterSeq: number, limit: number): Entry[] {
    return this.sql
      .all<{ seq: number; kind: number; msg: string; peer: string; ts: number; body: Uint8Array; ref_kind: number; ref_msg: string }>(
        `SELECT seq, kind, msg, peer, ts, body, ref_kind, ref_msg FROM inbox WHERE user = ? AND seq > ? ORDER BY seq LIMIT ?`,
        this.user, afterSeq, limit,
      )
      .map((r) => {
        const e: Entry = { seq: r.seq, kind: KIND_NAMES[r.kind] ?? 'message', msg: r.msg, peer: r.peer, ts: r.ts, body: r.body };
        const ref = refFromColumns(r.ref_kind, r.ref_msg);
        if (ref) e.ref = ref;
        return e;
      });
  }

  /** Messages (not receipts) in (after, upTo]: the ones that need a delivery receipt. */
  messagesBetween(after: number, upTo: number): { msg: string; peer: string; n: number; seq: number }[] {
    return this.sql.all<{ msg: string; peer: string; n: number; seq: number }>(
      `SELECT msg, peer, n, seq FROM inbox WHERE user = ? AND seq > ? AND seq <= ? AND kind = ? ORDER BY seq`,
      this.user, after, upTo, ENTRY_KINDS.message,
    );
  }

  /** Not stored: derived from the device cursors when the row is next read from SQL (see readUserRow). */
  setDelivered(seq: number): void {
    const row = this.mutableRow();
    if (seq > row.delivered) row.delivered = seq;
  }

  // ---- receipts owed to senders (this user's devices got their messages) ----

  /**
   * Owed receipts live in memory; SQL holds what is needed to rebuild them. Every acknowledged entry that is not
   * trimmed is still in the inbox, so after a restart the receipts for (trimmed, delivered] are derived from it
   * (newest message per sender) and sent again: receiving a receipt twice changes nothing. Only when the trim is
   * about to delete entries whose receipt is still owed is that receipt written (receipts_out), so an owed receipt
   * costs no row at all in the common case (the sender's shard answers before the next trim).
   */
  private owedMap(): Map<string, OwedReceipt> {
    if (this.owed === null) {
      const owed = new Map<string, OwedReceipt>();
      for (const r of this.sql.all<{ peer: string; n: number; msg: string; ts: number }>(
        `SELECT peer, n, msg, ts FROM receipts_out WHERE user = ?`,
        this.user,
      )) {
        owed.set(r.peer, { n: r.n, msg: r.msg, ts: r.ts, seq: 0, stored: true });
      }
      const u = this.userRow();
      if (u.delivered > u.trimmed) {
        // SQLite returns the other columns of the row holding max(seq): each sender's newest acknowledged message.
        for (const r of this.sql.all<{ peer: string; n: number; msg: string; ts: number; seq: number }>(
          `SELECT peer, n, msg, ts, max(seq) AS seq FROM inbox WHERE user = ? AND seq > ? AND seq <= ? AND kind = ? GROUP BY peer`,
          this.user, u.trimmed, u.delivered, ENTRY_KINDS.message,
        )) {
          const prev = owed.get(r.peer);
          if (r.peer === this.user || r.n === 0 || (prev && prev.n >= r.n)) continue;
          // When it was acknowledged is not kept; the time the message was accepted is the closest lower bound.
          owed.set(r.peer, { n: r.n, msg: r.msg, ts: r.ts, seq: r.seq, stored: prev?.stored ?? false });
        }
      }
      this.owed = owed;
    }
    return this.owed;
  }

  /** Records that `peer`'s messages up to its outbox number r.n (entry `seq` here) reached a device. Memory only. */
  owe(peer: string, r: Receipt, seq: number): void {
    const owed = this.owedMap();
    const prev = owed.get(peer);
    if (prev && prev.n >= r.n) return;
    owed.set(peer, { ...r, seq, stored: prev?.stored ?? false });
  }

  owedTo(peer: string): Receipt | undefined {
    const o = this.owedMap().get(peer);
    return o && { n: o.n, msg: o.msg, ts: o.ts };
  }

  owedPeers(): string[] {
    return [...this.owedMap().keys()];
  }

  /** `peer` stored the receipt up to n: forget it, unless a newer one is owed meanwhile. */
  paid(peer: string, n: number): void {
    const owed = this.owedMap();
    const cur = owed.get(peer);
    if (!cur || cur.n > n) return;
    if (cur.stored) this.sql.all(`DELETE FROM receipts_out WHERE user = ? AND peer = ? AND n <= ?`, this.user, peer, n);
    owed.delete(peer);
  }

  /** The trim is about to delete entries up to `upTo`: owed receipts that could only be derived from them are written. */
  private keepOwed(upTo: number): void {
    if (this.owed === null && this.userRow().delivered <= this.userRow().trimmed) return;
    for (const [peer, o] of this.owedMap()) {
      if (o.seq === 0 || o.seq > upTo) continue;
      this.sql.all(
        `INSERT INTO receipts_out (user, peer, n, msg, ts) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (user, peer) DO UPDATE SET n = excluded.n, msg = excluded.msg, ts = excluded.ts`,
        this.user, peer, o.n, o.msg, o.ts,
      );
      o.stored = true;
      o.seq = 0;
    }
  }

  // ---- receipts of this user's own messages (state its devices sync by version) ----

  private receivedMap(): Map<string, ReceivedState> {
    if (this.received === null) {
      this.received = new Map();
      let v = 0;
      for (const r of this.sql.all<ReceivedState & { peer: string; v: number }>(
        `SELECT peer, n, msg, ts, rn, rmsg, rts, v FROM receipts_in WHERE user = ?`,
        this.user,
      )) {
        this.received.set(r.peer, { n: r.n, msg: r.msg, ts: r.ts, rn: r.rn, rmsg: r.rmsg, rts: r.rts });
        if (r.v > v) v = r.v;
      }
      this.version = v;
    }
    return this.received;
  }

  /** This user's receipt version: bumped by every change of receipts_in. */
  receiptVersion(): number {
    this.receivedMap();
    return this.version;
  }

  /**
   * `peer` says this user's messages up to outbox number r.n reached it. Returns the new receipt version, or 0 when
   * that was already known (a retry, or an older receipt overtaken): receipts only move forward.
   */
  receiptFrom(peer: string, r: Receipt | undefined, read?: Receipt): number {
    const received = this.receivedMap();
    const cur = received.get(peer) ?? { n: 0, msg: '', ts: 0, rn: 0, rmsg: '', rts: 0 };
    const next = { ...cur };
    if (read && read.n > next.rn) Object.assign(next, { rn: read.n, rmsg: read.msg, rts: read.ts });
    // Read implies delivered: a read position ahead of the delivered one moves it too.
    for (const d of [r, read]) if (d && d.n > next.n) Object.assign(next, { n: d.n, msg: d.msg, ts: d.ts });
    if (next.n === cur.n && next.rn === cur.rn) return 0;
    const v = this.version + 1;
    this.sql.all(
      `INSERT INTO receipts_in (user, peer, n, msg, ts, v, rn, rmsg, rts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (user, peer) DO UPDATE SET n = excluded.n, msg = excluded.msg, ts = excluded.ts, v = excluded.v,
         rn = excluded.rn, rmsg = excluded.rmsg, rts = excluded.rts`,
      this.user, peer, next.n, next.msg, next.ts, v, next.rn, next.rmsg, next.rts,
    );
    received.set(peer, next);
    this.version = v;
    return v;
  }

  /** The receipt state of this user's conversation with `peer`, as a `receipts` item. */
  receiptState(peer: string): ReceiptState | undefined {
    const s = this.receivedMap().get(peer);
    return s && receiptItem(peer, s);
  }

  /** Receipt states changed after version `after`, oldest change first. Bounded by the number of peers. */
  receiptsAfter(after: number, limit: number): (ReceiptState & { v: number })[] {
    return this.sql
      .all<ReceivedState & { peer: string; v: number }>(
        `SELECT peer, n, msg, ts, rn, rmsg, rts, v FROM receipts_in WHERE user = ? AND v > ? ORDER BY v LIMIT ?`,
        this.user, after, limit,
      )
      .map((r) => ({ ...receiptItem(r.peer, r), v: r.v }));
  }

  // ---- read state: how far this user read each conversation (its devices sync it; senders get receipts) ----

  private readMap(): Map<string, number> {
    if (this.readPos === null) {
      this.readPos = new Map();
      let v = 0;
      for (const r of this.sql.all<{ conv: string; n: number; v: number }>(`SELECT conv, n, v FROM reads WHERE user = ?`, this.user)) {
        this.readPos.set(r.conv, r.n);
        if (r.v > v) v = r.v;
      }
      this.readV = v;
    }
    return this.readPos;
  }

  /** This user's read version: bumped by every change of a read position. */
  readVersion(): number {
    this.readMap();
    return this.readV;
  }

  /** Marks `conv` read up to n. Returns the new read version, or 0 when it was read that far already (no write). */
  markRead(conv: string, r: Receipt): number {
    const pos = this.readMap();
    if ((pos.get(conv) ?? 0) >= r.n) return 0;
    const v = this.readV + 1;
    this.sql.all(
      `INSERT INTO reads (user, conv, n, msg, ts, v) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (user, conv) DO UPDATE SET n = excluded.n, msg = excluded.msg, ts = excluded.ts, v = excluded.v`,
      this.user, conv, r.n, r.msg, r.ts, v,
    );
    pos.set(conv, r.n);
    this.readV = v;
    return v;
  }

  /** Read positions changed after read version `after`, oldest change first. */
  readsAfter(after: number, limit: number): (ReadPosition & { v: number })[] {
    return this.sql.all<{ conv: string; msg: string; ts: number; v: number }>(
      `SELECT conv, msg, ts, v FROM reads WHERE user = ? AND v > ? ORDER BY v LIMIT ?`,
      this.user, after, limit,
    );
  }

  /**
   * The lowest outbox number among `peer`'s messages stored after `seq` (what a connection that was sent up to
   * `seq` has not been given yet), or undefined. A range scan of that connection's undelivered tail.
   */
  firstUndeliveredFrom(peer: string, seq: number): number | undefined {
    const m = this.sql.all<{ m: number | null }>(
      `SELECT min(n) AS m FROM inbox WHERE user = ? AND seq > ? AND peer = ? AND kind = ? AND n > 0`,
      this.user, seq, peer, ENTRY_KINDS.message,
    )[0]?.m;
    return m ?? undefined;
  }

  /** The presence visibility setting (schema migration 6); everyone for a user with no row yet. */
  presenceVisibility(): PresenceVisibility {
    const v = this.sql.all<{ p: number }>(`SELECT presence AS p FROM users WHERE user = ?`, this.user)[0]?.p ?? 0;
    return v === 2 ? 'nobody' : v === 1 ? 'contacts' : 'everyone';
  }

  setPresenceVisibility(v: PresenceVisibility): void {
    this.userRow(); // the row exists before it is updated
    this.sql.all(`UPDATE users SET presence = ? WHERE user = ?`, PRESENCE_VISIBILITY[v], this.user);
  }

  /**
   * Contacts, for presence visibility "contacts": users who sent this user a message (stored or trimmed), or
   * to whom its messages were delivered or wait to be. Keyed lookups only: the inbox marks are cached.
   */
  isContact(peer: string): boolean {
    if (this.peerLastN(peer) > 0) return true;
    return (
      this.sql.all(`SELECT 1 AS x FROM receipts_in WHERE user = ? AND peer = ? UNION ALL SELECT 1 AS x FROM outbox WHERE user = ? AND recipient = ? LIMIT 1`, this.user, peer, this.user, peer).length > 0
    );
  }

  /** Whether `asker` may see this user's presence under its setting (the user itself always may). */
  presenceVisibleTo(asker: string): boolean {
    if (asker === this.user) return true;
    const v = this.presenceVisibility();
    return v === 'everyone' || (v === 'contacts' && this.isContact(asker));
  }

  readReceiptsOn(): boolean {
    return this.userRow().read_receipts !== 0;
  }

  /**
   * The user's setting. Either way the marks made so far are not sent (off: senders get nothing more; on: only
   * marks from now), so the owed ones are dropped and the floor moves to the current version, in the same row.
   */
  setReadReceipts(on: boolean): boolean {
    const row = this.mutableRow();
    if ((row.read_receipts !== 0) === on) return false;
    this.readOwed = new Map();
    row.read_receipts = on ? 1 : 0;
    row.reads_paid = this.readVersion();
    this.sql.all(`UPDATE users SET read_receipts = ?, reads_paid = ? WHERE user = ?`, row.read_receipts, row.reads_paid, this.user);
    return true;
  }

  /**
   * Owed read receipts live in memory, like delivery receipts. After a restart they are derived again from the
   * reads rows newer than the stored floor (reads_paid); sending one twice changes nothing at the sender. The
   * floor is written with the users row when that is written anyway (connect, disconnect, trim), never alone.
   */
  private readOwedMap(): Map<string, OwedRead> {
    if (this.readOwed === null) {
      const owed = new Map<string, OwedRead>();
      const u = this.userRow();
      if (u.read_receipts !== 0) {
        for (const r of this.sql.all<{ conv: string; n: number; msg: string; ts: number; v: number }>(
          `SELECT conv, n, msg, ts, v FROM reads WHERE user = ? AND v > ?`,
          this.user, u.reads_paid,
        )) {
          if (r.conv !== this.user) owed.set(r.conv, { n: r.n, msg: r.msg, ts: r.ts, v: r.v });
        }
      }
      this.readOwed = owed;
    }
    return this.readOwed;
  }

  oweRead(conv: string, r: Receipt, v: number): void {
    this.readOwedMap().set(conv, { ...r, v });
  }

  readOwedTo(conv: string): Receipt | undefined {
    const o = this.readOwedMap().get(conv);
    return o && { n: o.n, msg: o.msg, ts: o.ts };
  }

  readOwedPeers(): string[] {
    return [...this.readOwedMap().keys()];
  }

  /** `conv`'s sender stored the read receipt up to n: forget it, unless a newer mark is owed meanwhile. Memory only. */
  readPaid(conv: string, n: number): void {
    const owed = this.readOwedMap();
    const cur = owed.get(conv);
    if (cur && cur.n <= n) owed.delete(conv);
  }

  /** Every read mark up to this version reached its sender (or is not owed to anyone). */
  private readsPaidFloor(): number {
    const row = this.mutableRow();
    if (this.readOwed === null) return row.reads_paid;
    let floor = this.readVersion();
    for (const o of this.readOwed.values()) if (o.v - 1 < floor) floor = o.v - 1;
    return Math.max(floor, row.reads_paid);
  }

  /**
   * Every device acked up to `upTo`: `trimmed` moves there, and entries up to `deleteUpTo` (<= upTo) are deleted;
   * the ones between stay as history for devices yet to come (core/history.ts).
   */
  trimInbox(upTo: number, deleteUpTo = upTo): void {
    this.keepOwed(upTo);
    // The entries trimmed carry their senders' dedup marks: keep each sender's highest as its floor first. Those
    // up to the previous trim had theirs kept then (history keeps them stored): not written again.
    for (const r of this.sql.all<{ peer: string; n: number }>(
      `SELECT peer, max(n) AS n FROM inbox WHERE user = ? AND seq > ? AND seq <= ? AND kind <> ? GROUP BY peer`,
      this.user, this.userRow().trimmed, upTo, ENTRY_KINDS.sent,
    )) {
      this.sql.all(
        `INSERT INTO peers (user, peer, last_n) VALUES (?, ?, ?) ON CONFLICT (user, peer) DO UPDATE SET last_n = max(last_n, excluded.last_n)`,
        this.user, r.peer, r.n,
      );
    }
    this.sql.all(`DELETE FROM inbox WHERE user = ? AND seq <= ?`, this.user, deleteUpTo);
    const row = this.mutableRow();
    row.reads_paid = this.readsPaidFloor();
    this.sql.all(`UPDATE users SET trimmed = ?, reads_paid = ? WHERE user = ?`, upTo, row.reads_paid, this.user);
    row.trimmed = upTo;
  }

  // ---- devices ----

  devices(): { device: string; cursor: number; last_seen: number }[] {
    const rows = this.sql.all<{ device: string; cursor: number; last_seen: number }>(
      `SELECT device, cursor, last_seen FROM devices WHERE user = ? ORDER BY last_seen`,
      this.user,
    );
    this.deviceNames = new Set(rows.map((d) => d.device));
    return rows;
  }

  /** Devices registered (cached: every send of a user asks, core/history.ts). */
  deviceCount(): number {
    if (this.deviceNames === null) this.devices();
    return this.deviceNames!.size;
  }

  /** One below the lowest inbox seq still stored (the head when none is): where reading the whole inbox starts. */
  inboxFloor(): number {
    const m = this.sql.all<{ m: number | null }>(`SELECT min(seq) AS m FROM inbox WHERE user = ?`, this.user)[0]?.m;
    return m == null ? this.userRow().next_seq - 1 : m - 1;
  }

  /** The device's cursor: what it acked, written or not. */
  deviceCursor(device: string): number | undefined {
    const stored = this.sql.all<{ c: number }>(`SELECT cursor AS c FROM devices WHERE user = ? AND device = ?`, this.user, device)[0]?.c;
    const acked = this.unsaved.get(device);
    return acked === undefined ? stored : Math.max(acked, stored ?? 0);
  }

  /** The device acked up to `cursor`: remembered, written by the next saveCursors (or upsertDevice). */
  noteCursor(device: string, cursor: number): void {
    if (cursor > (this.unsaved.get(device) ?? 0)) this.unsaved.set(device, cursor);
  }

  saveCursors(now: number): void {
    for (const [device, cursor] of this.unsaved) this.upsertDevice(device, cursor, now);
  }

  upsertDevice(device: string, cursor: number, now: number): void {
    this.sql.all(
      `INSERT INTO devices (user, device, cursor, last_seen) VALUES (?, ?, ?, ?)
       ON CONFLICT (user, device) DO UPDATE SET cursor = excluded.cursor, last_seen = excluded.last_seen`,
      this.user, device, cursor, now,
    );
    this.deviceNames?.add(device);
    if ((this.unsaved.get(device) ?? 0) <= cursor) this.unsaved.delete(device);
  }

  deleteDevice(device: string): void {
    this.unsaved.delete(device);
    this.deviceNames?.delete(device);
    this.sql.all(`DELETE FROM devices WHERE user = ? AND device = ?`, this.user, device);
  }
}
