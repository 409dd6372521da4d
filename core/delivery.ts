import {
  CLOSE_CODES,
  LIMITS,
  encodeFrame,
  type Encoding,
  type Entry,
  type ErrorCode,
  type ReadPosition,
  type ReceiptState,
  type ServerFrame,
  type Settings,
} from '../protocol/index.js';
import { ConnGuard } from './conn-guard.js';
import { heldFrom } from './history.js';
import type { MailboxDeps } from './mailbox.js';
import type { Conn, ConnState } from './ports.js';
import type { MailboxStore } from './store.js';
import { partial, shownOf } from './shown.js';

/**
 * Per-socket tables, keyed by the Conn. A Conn belongs to exactly one mailbox, so one table per process serves
 * every mailbox: four empty tables per mailbox were ~550 bytes per user in memory, idle ones included.
 */
const PUMPING = new WeakSet<Conn>();
const PUMP_AGAIN = new WeakSet<Conn>();
/** Sockets whose receipt catch-up (pumpReceipts) is running: live receipts wait for it. */
const RECEIPT_PUMPING = new WeakSet<Conn>();
/** Sockets whose read-state catch-up (pumpReads) is running: live read positions wait for it. */
const READ_PUMPING = new WeakSet<Conn>();

/** A client written before read receipts (no hello.reads) gets receipts exactly as it knew them. */
function forConn(item: ReceiptState, st: ConnState): ReceiptState {
  if (st.rdsent !== undefined || item.read === undefined) return item;
  return { peer: item.peer, msg: item.msg, ts: item.ts };
}
/** Per-connection frame rate and error count (core/conn-guard.ts). */
const GUARDS = new WeakMap<Conn, ConnGuard>();

/**
 * The socket side of a mailbox: everything written to this user's devices. Inbox entries pumped from storage
 * or pushed live from memory within each socket's send window, receipt states, replies and error frames, and
 * the per-socket guard (frame rate, errors in a row, the send barrier: core/conn-guard.ts). Every byte goes
 * through write(), which bounds what one socket may hold (maxQueuedBytes).
 */
export class Delivery {
  constructor(
    private readonly deps: MailboxDeps,
    private readonly store: MailboxStore,
    /** The mailbox's Storage.commit (it drops the store's caches when a commit fails). */
    private readonly tx: <T>(fn: () => T) => Promise<T>,
  ) {}

  /**
   * Pushes inbox entries to one socket, keeping at most sendWindow entries unacked on it: this is the bound
   * on the per-socket send queue. Further entries follow as the device acks.
   */
  async pump(conn: Conn): Promise<void> {
    if (PUMPING.has(conn)) {
      PUMP_AGAIN.add(conn);
      return;
    }
    PUMPING.add(conn);
    try {
      do {
        PUMP_AGAIN.delete(conn);
        const st = conn.state;
        if (st === null) return;
        // Caught up with everything written so far (committed or not): nothing to read.
        if (st.sent >= this.store.userRow().next_seq - 1) continue;
        const window = this.deps.config.sendWindow;
        const entries = await this.tx(() => {
          const acked = st.acked ?? this.store.deviceCursor(st.device) ?? st.sent;
          // Not past a sent entry whose send_ack this socket has not been written yet (core/history.ts).
          const room = Math.min(LIMITS.maxDeliverBatch, window - (st.sent - acked), heldFrom(conn) - 1 - st.sent);
          return room > 0 ? this.store.inboxRange(st.sent, room) : [];
        });
        const now = conn.state;
        if (entries.length === 0 || now === null || now.sent !== st.sent) continue;
        // A client written before some entries is not shown them (core/shown.ts).
        const shown = shownOf(now, entries);
        if (shown.length === 0) {
          this.skipped(conn, now, entries[entries.length - 1]!.seq);
          PUMP_AGAIN.add(conn);
          continue;
        }
        // A deliver frame must fit in maxFrameBytes (the client's decoder refuses anything larger): halve the
        // batch until it does. One entry always fits, even with a full body in JSON; the rest follow next round.
        let batch = shown;
        let data = encodeFrame({ t: 'deliver', entries: batch }, now.enc);
        while (batch.length > 1 && (typeof data === 'string' ? data.length : data.byteLength) > LIMITS.maxFrameBytes) {
          batch = batch.slice(0, Math.ceil(batch.length / 2));
          data = encodeFrame({ t: 'deliver', entries: batch }, now.enc);
        }
        if (!this.write(conn, data)) return;
        const last = batch[batch.length - 1]!.seq;
        // Entries skipped after the last one shown count as sent on this connection (its ack covers them).
        if (!partial(now)) conn.setState({ ...now, sent: last });
        else conn.setState({ ...now, sent: batch.length === shown.length ? entries[entries.length - 1]!.seq : last, vis: last });
        this.deps.metrics?.delivered?.(batch.length);
        PUMP_AGAIN.add(conn);
      } while (PUMP_AGAIN.has(conn));
    } finally {
      PUMPING.delete(conn);
    }
  }

  /**
   * Only entries this connection is not shown, up to `upTo` (core/shown.ts): none is written. When it has acked
   * everything it was shown they are acknowledged here, since no ack of it can cover them.
   */
  private skipped(conn: Conn, st: ConnState, upTo: number): void {
    const vis = st.vis ?? st.sent;
    if ((st.acked ?? 0) >= vis) {
      this.store.noteCursor(st.device, upTo);
      conn.setState({ ...st, sent: upTo, vis, acked: upTo });
    } else conn.setState({ ...st, sent: upTo, vis });
  }

  /**
   * Delivers entries just committed to the inbox. A socket that is caught up (it was sent everything before
   * them) and has window room gets them straight from memory, one encoding shared by all such sockets; any
   * other socket is pumped from storage.
   */
  async pushLive(entries: Entry[]): Promise<void> {
    const first = entries[0]!.seq;
    const last = entries[entries.length - 1]!.seq;
    const encoded: Partial<Record<`${Encoding}:${boolean}`, string | Uint8Array>> = {};
    const work: Promise<void>[] = [];
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st === null || last >= heldFrom(c)) continue; // pumped when its send_ack is written (core/history.ts)
      const part = partial(st);
      // A client written before some entries (core/shown.ts): when some are left out, the pump does it.
      const shown = part ? shownOf(st, entries) : entries;
      if (shown.length !== entries.length) {
        work.push(this.pump(c));
        continue;
      }
      const acked = st.acked;
      const live = !PUMPING.has(c) && st.sent === first - 1 && acked !== undefined && last - acked <= this.deps.config.sendWindow;
      // Replies read as plain messages by a client without refs: its own encoding.
      const key = `${st.enc}:${st.refs === true}` as const;
      const data = live && entries.length <= LIMITS.maxDeliverBatch ? (encoded[key] ??= encodeFrame({ t: 'deliver', entries: shown }, st.enc)) : null;
      if (data === null || (typeof data === 'string' ? data.length : data.byteLength) > LIMITS.maxFrameBytes) {
        work.push(this.pump(c));
        continue;
      }
      if (!this.write(c, data)) continue;
      c.setState(part ? { ...st, sent: last, vis: last } : { ...st, sent: last });
      this.deps.metrics?.delivered?.(entries.length);
    }
    await Promise.all(work);
  }

  /**
   * Brings one socket's receipts up to date: every receipt state that changed after the version it has, oldest
   * change first, in frames of maxReceiptBatch. Receipts are not acked: a device resumes by sending the last
   * frame's `upTo` in its next hello.
   */
  async pumpReceipts(conn: Conn): Promise<void> {
    if (RECEIPT_PUMPING.has(conn)) return;
    RECEIPT_PUMPING.add(conn);
    try {
      for (;;) {
        const st = conn.state;
        if (st === null || st.rsent >= this.store.receiptVersion()) return;
        // Through a commit: only receipts that are durable here go out (a version a device has must never be
        // handed out again for something else after a crash).
        const rows = await this.tx(() => this.store.receiptsAfter(st.rsent, LIMITS.maxReceiptBatch));
        const now = conn.state;
        if (rows.length === 0 || now === null || now.rsent !== st.rsent) return;
        const upTo = rows[rows.length - 1]!.v;
        const items = rows.map(({ v: _, ...item }): ReceiptState => forConn(item, now));
        if (!this.write(conn, encodeFrame({ t: 'receipts', upTo, items }, now.enc))) return;
        conn.setState({ ...now, rsent: upTo });
      }
    } finally {
      RECEIPT_PUMPING.delete(conn);
    }
  }

  /** A receipt state just committed as version v: to every socket that has everything before it, straight away. */
  pushReceipt(item: ReceiptState, v: number): Promise<void> {
    const encoded: Partial<Record<`${Encoding}:${boolean}`, string | Uint8Array>> = {};
    const work: Promise<void>[] = [];
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st === null) continue;
      if (st.rsent !== v - 1 || RECEIPT_PUMPING.has(c)) {
        work.push(this.pumpReceipts(c));
        continue;
      }
      const key = `${st.enc}:${st.rdsent !== undefined}` as const;
      if (!this.write(c, (encoded[key] ??= encodeFrame({ t: 'receipts', upTo: v, items: [forConn(item, st)] }, st.enc)))) continue;
      c.setState({ ...st, rsent: v });
    }
    return Promise.all(work).then(() => undefined);
  }

  /**
   * Brings one socket's read state up to date (PROTOCOL.md 9.8), like pumpReceipts: every read position that
   * changed after the read version it has, oldest change first. Only for clients that speak read receipts.
   */
  async pumpReads(conn: Conn): Promise<void> {
    if (READ_PUMPING.has(conn)) return;
    READ_PUMPING.add(conn);
    try {
      for (;;) {
        const st = conn.state;
        if (st === null || st.rdsent === undefined || st.rdsent >= this.store.readVersion()) return;
        // Through a commit, like receipts: a read version a device has is never handed out again for another mark.
        const rows = await this.tx(() => this.store.readsAfter(st.rdsent!, LIMITS.maxReceiptBatch));
        const now = conn.state;
        if (rows.length === 0 || now === null || now.rdsent !== st.rdsent) return;
        const upTo = rows[rows.length - 1]!.v;
        const items = rows.map(({ conv, msg, ts }): ReadPosition => ({ conv, msg, ts }));
        if (!this.write(conn, encodeFrame({ t: 'read_state', upTo, items }, now.enc))) return;
        conn.setState({ ...now, rdsent: upTo });
      }
    } finally {
      READ_PUMPING.delete(conn);
    }
  }

  /** A read position just committed as read version v: to every socket that has everything before it. */
  pushRead(item: ReadPosition, v: number): Promise<void> {
    const encoded: Partial<Record<Encoding, string | Uint8Array>> = {};
    const work: Promise<void>[] = [];
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st === null || st.rdsent === undefined) continue;
      if (st.rdsent !== v - 1 || READ_PUMPING.has(c)) {
        work.push(this.pumpReads(c));
        continue;
      }
      if (!this.write(c, (encoded[st.enc] ??= encodeFrame({ t: 'read_state', upTo: v, items: [item] }, st.enc)))) continue;
      c.setState({ ...st, rdsent: v });
    }
    return Promise.all(work).then(() => undefined);
  }

  /** The user's settings, to every socket that speaks read receipts (the one that changed them included). */
  pushSettings(settings: Settings): void {
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st !== null && st.rdsent !== undefined) this.reply(c, st.enc, settings);
    }
  }


  reply(conn: Conn, enc: Encoding, frame: ServerFrame): void {
    this.write(conn, encodeFrame(frame, enc));
  }

  /**
   * The one way bytes reach a socket. A client that stopped reading cannot make the server hold more than
   * maxQueuedBytes for it: past that the socket is closed (4003) and nothing more is written. Nothing is lost:
   * undelivered entries stay in the inbox for the next connection.
   */
  write(conn: Conn, data: string | Uint8Array): boolean {
    const size = typeof data === 'string' ? data.length : data.byteLength;
    if (conn.queuedBytes + size > this.deps.config.maxQueuedBytes) {
      this.guardOf(conn).closed = true;
      conn.close(CLOSE_CODES.slow_consumer, 'output queue full: the client is not reading');
      return false;
    }
    conn.send(data);
    return true;
  }

  guardOf(conn: Conn): ConnGuard {
    let g = GUARDS.get(conn);
    if (!g) {
      const c = this.deps.config;
      // Never below twice the user's send budget: sends allowed by that bucket, with their acks and pings, must
      // not be refused by this one (a deployment that raises IRIS_RATE_* raises this with it).
      const limits = {
        framesPerSec: Math.max(c.connFramesPerSec, 2 * c.ratePerSec),
        frameBurst: Math.max(c.connFrameBurst, 2 * c.rateBurst),
        maxErrorsInRow: c.maxErrorsInRow,
      };
      g = new ConnGuard(limits, this.deps.clock.now());
      GUARDS.set(conn, g);
    }
    return g;
  }

  closeForErrors(conn: Conn): void {
    this.guardOf(conn).closed = true;
    conn.close(CLOSE_CODES.too_many_errors, 'too many invalid frames');
  }

  error(conn: Conn, enc: Encoding, code: ErrorCode, message: string, ref?: string, retryAfter?: number): void {
    this.deps.metrics?.error?.(code);
    const frame: ServerFrame = { t: 'error', code, message: message.slice(0, LIMITS.maxErrorMessageLength) };
    if (ref !== undefined) frame.ref = ref;
    if (retryAfter !== undefined) frame.retryAfter = retryAfter;
    this.reply(conn, enc, frame);
    if (this.guardOf(conn).refused(code)) this.closeForErrors(conn);
  }}
