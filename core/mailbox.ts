import {
  CLOSE_CODES,
  LIMITS,
  ProtocolError,
  decodeFrame,
  encodeFrame,
  isClientFrame,
  type DeliverAck,
  type Encoding,
  type Entry,
  type ErrorCode,
  type Hello,
  type PresenceInfo,
  type PresenceQuery,
  type ReceiptState,
  type Send,
  type ServerFrame,
} from '../protocol/index.js';
import type { Config } from './config.js';
import type {
  Clock,
  Conn,
  ForwardBatch,
  ForwardResult,
  HandOver,
  Logger,
  Metrics,
  Peers,
  Scheduler,
  Sockets,
  Storage,
} from './ports.js';
import { ConnGuard, type BarrierCode } from './conn-guard.js';
import { PeerOverloadedError, StorageFullError } from './ports.js';
import { TokenBucket } from './ratelimit.js';
import { MailboxStore } from './store.js';

export interface MailboxDeps {
  user: string;
  storage: Storage;
  peers: Peers;
  sockets: Sockets;
  scheduler: Scheduler;
  clock: Clock;
  config: Config;
  log: Logger;
  metrics?: Metrics;
  /** Jitter for retry delays, in [0, 1); Math.random unless a test needs them exact. */
  random?: () => number;
}

/** Outbox items handed to a recipient per RPC. */
const FORWARD_BATCH = 64;
/** If the runtime drops a shard between ack and forward, its scheduled wake retries within this. */
const FORWARD_SAFETY_NET_MS = 2_000;
/**
 * A forward refused as overloaded (PeerOverloadedError) waits at least this many backoff steps: with the default
 * 250 ms base, ~4 s instead of 250 ms.
 */
const OVERLOADED_MIN_RETRIES = 5;
/** Acked inbox entries are deleted in steps of this many (they still count towards inboxCap until then). */
const TRIM_STEP = 64;

/** What accept() stored: how far the batch was taken, whether the inbox is full, the receipt version, the entries. */
interface Accepted {
  accepted: number;
  full: boolean;
  v: number;
  stored: Entry[];
}

interface ForwardState {
  running: Promise<void> | null;
  again: boolean;
  attempt: number;
  retryAt: number;
}

/**
 * One user's shard: everything Iris knows about a user, and every rule that must hold for them.
 *
 * The message path through here:
 *   send frame -> onSend: rate limit, dedup record, then in the SAME transaction either
 *                 - one hop: the recipient shares this storage (Peers.local) -> its handOver() appends to its inbox, or
 *                 - the outbox -> forward(): recipient shard's receive() -> retried with backoff until accepted
 *              -> send_ack after the commit
 *   receive()  -> dedup by sender outbox number, inbox append (one transaction) -> pump() to each device
 *   deliver_ack -> device cursor; per sender ONE cumulative receipt (state, PROTOCOL.md 9.6): handed over in the
 *                 same transaction to a local sender, else owed (memory, derivable from the inbox) and carried
 *                 by the next forward;
 *                 the sender stores it (receipts_in, versioned) and pushes `receipts` frames; inbox trimmed below
 *                 every cursor
 *
 * The adapters (Durable Object, on-prem worker) only move bytes and call these methods.
 */
/**
 * Per-socket tables, keyed by the Conn. A Conn belongs to exactly one mailbox, so one table per process serves
 * every mailbox: four empty tables per mailbox were ~550 bytes per user in memory, idle ones included.
 */
const PUMPING = new WeakSet<Conn>();
const PUMP_AGAIN = new WeakSet<Conn>();
const RECEIPT_PUMPING = new WeakSet<Conn>();
const GUARDS = new WeakMap<Conn, ConnGuard>();

export class Mailbox {
  readonly user: string;
  private readonly store: MailboxStore;
  private readonly bucket: TokenBucket;
  /** Created when the user first sends (most mailboxes in memory are idle): see `forwards`, `fullUntil`. */
  private forwardsOrNull: Map<string, ForwardState> | null = null;
  private fullUntilOrNull: Map<string, number> | null = null;
  private readonly pumping = PUMPING;
  private readonly pumpAgain = PUMP_AGAIN;
  /** Sockets whose receipt catch-up (pumpReceipts) is running: live receipts wait for it. */
  private readonly receiptPumping = RECEIPT_PUMPING;
  /** Per-connection frame rate and error count (core/conn-guard.ts). */
  private readonly guards = GUARDS;

  private get forwards(): Map<string, ForwardState> {
    return (this.forwardsOrNull ??= new Map());
  }

  /** Recipients whose inbox answered full, until when. New sends to them are refused before they are acked. */
  private get fullUntil(): Map<string, number> {
    return (this.fullUntilOrNull ??= new Map());
  }

  constructor(private readonly deps: MailboxDeps) {
    this.user = deps.user;
    this.store = new MailboxStore(deps.storage.sql, deps.user);
    this.bucket = new TokenBucket(deps.config.ratePerSec, deps.config.rateBurst, deps.clock.now());
    // A shard woken from hibernation finds its sockets still open: what their devices acked since their cursors
    // were last written is in the sockets' state. Without it the receipts owed for those entries (kept in memory)
    // could not be derived again (MailboxStore.owedMap), and windows would count from older cursors.
    for (const c of deps.sockets.list()) {
      const st = c.state;
      if (st?.acked !== undefined) this.store.noteCursor(st.device, st.acked);
    }
  }

  // ------------------------------------------------------------------ sockets

  /**
   * Handles one WebSocket message. Never throws: bad input becomes an error frame for this socket only.
   * Decoding and the first commit happen before the first await, so frames from one socket are applied in
   * the order they arrived even when the adapter does not wait for this promise.
   */
  async onMessage(conn: Conn, data: string | ArrayBuffer | ArrayBufferView): Promise<void> {
    const enc: Encoding = typeof data === 'string' ? 'json' : 'binary';
    const guard = this.guardOf(conn);
    if (guard.closed) return;
    const wait = guard.admit(this.deps.clock.now());
    if (wait > 0) {
      // Not decoded, not answered beyond this one refusal: a flood costs a token-bucket check per frame.
      this.error(conn, enc, 'rate_limited', 'too many frames on this connection', undefined, wait);
      if (guard.overRate) this.closeForErrors(conn);
      return;
    }
    let ref: string | undefined;
    try {
      const frame = decodeFrame(data);
      if (!isClientFrame(frame)) throw new ProtocolError('unknown_type', `"${frame.t}" is a server frame`);
      if (frame.t === 'send') ref = frame.id;
      if (frame.t === 'presence_query') ref = frame.ref;
      if (frame.t === 'ping') {
        guard.ok();
        return this.reply(conn, enc, { t: 'pong' });
      }
      if (frame.t === 'hello') return await this.onHello(conn, frame, enc);
      const st = conn.state;
      if (st === null) throw new ProtocolError('hello_required', 'send a hello frame first', ref);
      guard.ok();
      if (st.enc !== enc) conn.setState({ ...st, enc });
      switch (frame.t) {
        case 'send':
          return await this.onSend(conn, frame);
        case 'deliver_ack':
          return await this.onAck(conn, frame);
        case 'presence_query':
          return await this.onPresenceQuery(conn, frame);
      }
    } catch (e) {
      if (e instanceof ProtocolError) return this.error(conn, enc, e.code, e.message, e.ref ?? ref);
      // Not a bug: the disk is full. Retryable, with a retry-after, and not worth a log line per frame.
      if (e instanceof StorageFullError) return this.error(conn, enc, 'unavailable', 'server storage is full; retry later', ref, e.retryAfterMs);
      this.error(conn, enc, 'internal', 'internal error', ref);
      this.deps.log.log('error', `${this.user}: unexpected error`, e);
    }
  }

  /** The socket is gone (closed by either side or the network). */
  async onClose(conn: Conn): Promise<void> {
    const st = conn.state;
    if (st === null) return;
    const now = this.deps.clock.now();
    await this.tx(() => {
      this.store.setLastSeen(now);
      // Includes what the device acked since its cursor was last written.
      const cursor = this.store.deviceCursor(st.device);
      if (cursor !== undefined) this.store.upsertDevice(st.device, cursor, now);
    });
  }

  private async onHello(conn: Conn, f: Hello, enc: Encoding): Promise<void> {
    if (conn.state !== null) throw new ProtocolError('bad_state', 'hello already received on this connection');
    const now = this.deps.clock.now();
    let kick: string[] = [];
    const handed: HandOver[] = [];
    const online = new Set<string>();
    for (const c of this.deps.sockets.list()) if (c !== conn && c.state) online.add(c.state.device);
    const r = await this.tx(() => {
      const u = this.store.userRow();
      const head = u.next_seq - 1;
      const known = this.store.deviceCursor(f.device);
      if (known === undefined) {
        const devices = this.store.devices();
        if (devices.length >= this.deps.config.maxDevices) {
          // Forget the least recently seen device that is not connected; its undelivered tail goes with it.
          const victim = devices.find((d) => !online.has(d.device));
          if (!victim) return null;
          this.store.deleteDevice(victim.device);
        }
      }
      // A new device starts at the oldest entry still kept. A client that says it processed further than the
      // server recorded (its last ack was lost) is believed, up to the head.
      const cursor = Math.min(head, Math.max(known ?? u.trimmed, f.cursor, u.trimmed));
      // A client cursor ahead of every device's acknowledgement (its last ack was lost) counts as an ack: the
      // entries it skips get their receipts here, since `delivered` is derived from the device cursors.
      if (cursor > u.delivered) kick = this.oweReceipts(u.delivered, cursor, now, handed);
      this.store.upsertDevice(f.device, cursor, now);
      this.store.setLastSeen(now);
      this.trim();
      return { cursor, head, rv: this.store.receiptVersion() };
    }).catch((e: unknown) => {
      for (const h of handed) h.rollback();
      handed.length = 0;
      kick = [];
      // Disk full: a hello must still work, so that devices can read (and ack) what waits for them. Nothing
      // is registered; the cursor is computed the same way from what is stored.
      if (!(e instanceof StorageFullError)) throw e;
      return this.tx(() => {
        const u = this.store.peekUserRow();
        const head = (u?.next_seq ?? 1) - 1;
        const trimmed = u?.trimmed ?? 0;
        const known = this.store.deviceCursor(f.device);
        return { cursor: Math.min(head, Math.max(known ?? trimmed, f.cursor, trimmed)), head, rv: this.store.receiptVersion() };
      });
    });
    if (r === null) {
      this.error(conn, enc, 'too_many_devices', `all ${this.deps.config.maxDevices} devices of this user are connected`);
      conn.close(CLOSE_CODES.normal, 'too many devices');
      return;
    }
    for (const c of this.deps.sockets.list()) {
      if (c !== conn && c.state?.device === f.device) c.close(CLOSE_CODES.replaced, 'replaced by a newer connection');
    }
    // A receipt version beyond ours comes from a store this server no longer has (restored from a backup, or
    // another deployment): send every receipt again rather than none.
    const rsent = f.receipts !== undefined && f.receipts <= r.rv ? f.receipts : 0;
    conn.setState({ device: f.device, sent: r.cursor, enc, rsent, acked: r.cursor });
    this.reply(conn, enc, { t: 'welcome', user: this.user, device: f.device, cursor: r.cursor, head: r.head, time: now });
    if (kick.length > 0) this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await Promise.all([this.pump(conn), this.pumpReceipts(conn), ...kick.map((p) => this.forward(p)), ...handed.map((h) => h.deliver())]);
  }

  private async onSend(conn: Conn, f: Send): Promise<void> {
    const now = this.deps.clock.now();
    const { config } = this.deps;
    const barrier = this.guardOf(conn).barrier;
    let handed: HandOver | undefined;
    const r = await this.tx(() => {
      // Dedup before everything else: a retry of an accepted message gets its original ack even when the
      // sender is now rate limited or the recipient is now full, or a barrier is up.
      const prior = this.store.dedupLookup(f.id);
      if (prior) {
        barrier.accepted(f.id, f.to); // if it held a barrier, it is accepted after all
        return { ok: true, n: prior.n, ts: prior.ts, dup: true } as const;
      }
      // After a "not now" refusal on this connection, later sends in its scope wait behind the refused one
      // (conn-guard.ts, SendBarrier): refused as it was, without spending a token. This runs synchronously on
      // arrival (commit runs fn at once), so a send arriving right behind a refused one always sees the barrier.
      const held = barrier.check(f.id, f.to, now);
      if (held) return { ok: false, code: held.code, retryAfter: held.retryAfter, message: 'an earlier send on this connection was refused; resend it first' } as const;
      const refuse = (code: BarrierCode, retryAfter: number, message: string) => {
        barrier.refused(f.id, f.to, code, retryAfter, now);
        return { ok: false, code, retryAfter, message } as const;
      };
      const wait = this.bucket.take(now);
      if (wait > 0) return refuse('rate_limited', wait, 'send rate exceeded');
      const full = this.fullUntil.get(f.to) ?? 0;
      if (full > now) return refuse('inbox_full', full - now, `inbox of ${f.to} is full`);
      if (this.store.outboxCount() >= config.outboxCap) {
        return refuse('outbox_full', config.fullRetryMs, 'too many messages waiting for their recipients');
      }
      barrier.accepted(f.id, f.to);
      const n = this.store.accept(f.id, now);
      if (n % 256 === 0 && n > config.dedupWindow) this.store.dedupPrune(n - config.dedupWindow);
      const msg = `${this.user}:${n}`;
      // One hop, one commit: a recipient in the same storage with nothing queued ahead of this message takes it
      // into its inbox inside this transaction. No outbox row, no forward, no second commit to wait for.
      const local = f.to !== this.user && this.idleTowards(f.to) ? this.deps.peers.local?.(f.to) : undefined;
      if (local) {
        const h = local.handOver({ from: this.user, items: [{ n, kind: 'message', msg, ts: now, body: f.body }] });
        handed = h;
        if (h.result.acceptedUpTo >= n) return { ok: true, n, ts: now, dup: false, local: true } as const;
        // Its inbox is full: the message waits in the outbox like one a forward was refused for.
        const at = now + (h.result.retryAfter ?? config.fullRetryMs);
        this.fullUntil.set(f.to, at);
        this.forwardState(f.to).retryAt = at;
        this.deps.scheduler.wakeAt(at);
      }
      this.store.outboxPut(f.to, n, 'message', msg, now, f.body);
      return { ok: true, n, ts: now, dup: false, local: false } as const;
    }).catch((e: unknown) => {
      handed?.rollback();
      // Disk full: nothing was stored. "Not now" like the refusals above, so it raises the barrier too (when
      // the commit itself failed, sends that ran in the same batch fail with it).
      if (e instanceof StorageFullError) barrier.refused(f.id, f.to, 'unavailable', e.retryAfterMs, now);
      throw e;
    });
    const enc = conn.state?.enc ?? 'binary';
    if (!r.ok) return this.error(conn, enc, r.code, r.message, f.id, r.retryAfter);
    this.reply(conn, enc, { t: 'send_ack', id: f.id, msg: `${this.user}:${r.n}`, ts: r.ts, dup: r.dup });
    if (r.dup) return;
    this.deps.metrics?.accepted?.();
    if (r.local) return handed!.deliver();
    this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await this.forward(f.to);
  }

  /** Nothing of ours for `to` is queued or on its way: a new message may skip the outbox without overtaking any. */
  private idleTowards(to: string): boolean {
    return !this.forwardsOrNull?.get(to)?.running && (this.fullUntilOrNull?.get(to) ?? 0) <= this.deps.clock.now() && this.store.outboxFor(to, 1).length === 0;
  }

  private async onAck(conn: Conn, f: DeliverAck): Promise<void> {
    const st = conn.state!;
    if (f.seq > st.sent) throw new ProtocolError('bad_ack', `ack for seq ${f.seq} beyond the last delivered seq ${st.sent}`);
    const now = this.deps.clock.now();
    const handed: HandOver[] = [];
    const kick = await this.tx(() => {
      const cursor = st.acked ?? this.store.deviceCursor(st.device) ?? 0;
      if (f.seq <= cursor) return [];
      // Not written now: the device's cursor is written with the next trim (every TRIM_STEP entries), at close
      // and at hello. A crash in between redelivers at most those entries, which a device with a durable store
      // drops by its own cursor (hello.cursor wins when ahead), and their receipts are derived again.
      this.store.noteCursor(st.device, f.seq);
      const u = this.store.userRow();
      const recipients = f.seq > u.delivered ? this.oweReceipts(u.delivered, f.seq, now, handed) : [];
      // Trimming needs every device's cursor: do it in steps of TRIM_STEP entries, not on every ack.
      if (f.seq - u.trimmed >= TRIM_STEP) this.trim();
      return recipients;
    }).catch((e: unknown): string[] => {
      for (const h of handed) h.rollback();
      handed.length = 0;
      // Disk full: the cursor stays where it was stored (a reconnect redelivers; the SDK drops what it has
      // seen) and receipts wait for a later ack, but this socket's window moves on so reading continues.
      if (e instanceof StorageFullError) return [];
      throw e;
    });
    // Owed receipts are stored like outbox items: arm the same safety net in case this shard goes away now.
    if (kick.length > 0) this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    const cur = conn.state;
    if (cur !== null && f.seq > (cur.acked ?? 0)) conn.setState({ ...cur, acked: f.seq });
    this.deps.metrics?.acked?.();
    await Promise.all([this.pump(conn), ...kick.map((r) => this.forward(r)), ...handed.map((h) => h.deliver())]);
  }

  private async onPresenceQuery(conn: Conn, f: PresenceQuery): Promise<void> {
    // A query fans out to up to 32 shards: it spends a token from the same bucket as sends.
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait > 0) return this.error(conn, conn.state?.enc ?? 'binary', 'rate_limited', 'request rate exceeded', f.ref, wait);
    const users = await Promise.all(
      f.users.map((u) => (u === this.user ? Promise.resolve(this.presence()) : this.deps.peers.presence(u))),
    ).catch(() => null);
    const enc = conn.state?.enc ?? 'binary';
    if (users === null) return this.error(conn, enc, 'unavailable', 'presence lookup failed; retry', f.ref, 1000);
    this.reply(conn, enc, { t: 'presence', ref: f.ref, users });
  }

  /**
   * The first device acknowledged the inbox entries (after, upTo]: owe each of their senders ONE cumulative receipt,
   * its newest message among them. Each sender's messages entered this inbox in the order they were sent
   * (per-conversation FIFO), so the newest one delivered implies every earlier one: a burst of N messages costs
   * one receipt, not N. A receipt is state, owed in memory (derivable from the inbox until the trim, see
   * MailboxStore.owedMap) and forwarded with the next batch to that sender. Call inside a commit; returns the
   * senders to forward to.
   */
  private oweReceipts(after: number, upTo: number, now: number, handed: HandOver[]): string[] {
    const newest = new Map<string, { n: number; msg: string; seq: number }>();
    for (const m of this.store.messagesBetween(after, upTo)) if (m.peer !== this.user) newest.set(m.peer, m);
    this.store.setDelivered(upTo);
    const peers: string[] = [];
    for (const [peer, m] of newest) {
      // Entries stored before schema migration 3 carry n = 0; the reference ids are `<sender>:<n>`.
      const n = m.n > 0 ? m.n : Number(m.msg.slice(m.msg.lastIndexOf(':') + 1)) || 0;
      if (n === 0) continue;
      const receipt = { n, msg: m.msg, ts: now };
      // A sender in the same storage takes the receipt in this very commit: nothing owed, nothing to forward.
      const local = this.deps.peers.local?.(peer);
      if (local) {
        handed.push(local.handOver({ from: this.user, items: [], receipt }));
        continue;
      }
      this.store.owe(peer, receipt, m.seq);
      peers.push(peer);
    }
    return peers;
  }

  /** Writes the devices' cursors and deletes inbox entries every device has acked. Call inside a commit. */
  private trim(): void {
    this.store.saveCursors(this.deps.clock.now());
    const devices = this.store.devices();
    if (devices.length === 0) return;
    const min = Math.min(...devices.map((d) => d.cursor));
    if (min > this.store.userRow().trimmed) this.store.trimInbox(min);
  }

  // ------------------------------------------------------------------ delivery to devices

  /**
   * Pushes inbox entries to one socket, keeping at most sendWindow entries unacked on it: this is the bound
   * on the per-socket send queue. Further entries follow as the device acks.
   */
  private async pump(conn: Conn): Promise<void> {
    if (this.pumping.has(conn)) {
      this.pumpAgain.add(conn);
      return;
    }
    this.pumping.add(conn);
    try {
      do {
        this.pumpAgain.delete(conn);
        const st = conn.state;
        if (st === null) return;
        // Caught up with everything written so far (committed or not): nothing to read.
        if (st.sent >= this.store.userRow().next_seq - 1) continue;
        const window = this.deps.config.sendWindow;
        const entries = await this.tx(() => {
          const acked = st.acked ?? this.store.deviceCursor(st.device) ?? st.sent;
          const room = Math.min(LIMITS.maxDeliverBatch, window - (st.sent - acked));
          return room > 0 ? this.store.inboxRange(st.sent, room) : [];
        });
        const now = conn.state;
        if (entries.length === 0 || now === null || now.sent !== st.sent) continue;
        // A deliver frame must fit in maxFrameBytes (the client's decoder refuses anything larger): halve the
        // batch until it does. One entry always fits, even with a full body in JSON; the rest follow next round.
        let batch = entries;
        let data = encodeFrame({ t: 'deliver', entries: batch }, now.enc);
        while (batch.length > 1 && (typeof data === 'string' ? data.length : data.byteLength) > LIMITS.maxFrameBytes) {
          batch = batch.slice(0, Math.ceil(batch.length / 2));
          data = encodeFrame({ t: 'deliver', entries: batch }, now.enc);
        }
        if (!this.write(conn, data)) return;
        conn.setState({ ...now, sent: batch[batch.length - 1]!.seq });
        this.deps.metrics?.delivered?.(batch.length);
        this.pumpAgain.add(conn);
      } while (this.pumpAgain.has(conn));
    } finally {
      this.pumping.delete(conn);
    }
  }

  /**
   * Delivers entries just committed to the inbox. A socket that is caught up (it was sent everything before
   * them) and has window room gets them straight from memory, one encoding shared by all such sockets; any
   * other socket is pumped from storage.
   */
  private async pushLive(entries: Entry[]): Promise<void> {
    const first = entries[0]!.seq;
    const last = entries[entries.length - 1]!.seq;
    const encoded: Partial<Record<Encoding, string | Uint8Array>> = {};
    const work: Promise<void>[] = [];
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st === null) continue;
      const acked = st.acked;
      const live = !this.pumping.has(c) && st.sent === first - 1 && acked !== undefined && last - acked <= this.deps.config.sendWindow;
      const data = live && entries.length <= LIMITS.maxDeliverBatch ? (encoded[st.enc] ??= encodeFrame({ t: 'deliver', entries }, st.enc)) : null;
      if (data === null || (typeof data === 'string' ? data.length : data.byteLength) > LIMITS.maxFrameBytes) {
        work.push(this.pump(c));
        continue;
      }
      if (!this.write(c, data)) continue;
      c.setState({ ...st, sent: last });
      this.deps.metrics?.delivered?.(entries.length);
    }
    await Promise.all(work);
  }

  /**
   * Brings one socket's receipts up to date: every receipt state that changed after the version it has, oldest
   * change first, in frames of maxReceiptBatch. Receipts are not acked: a device resumes by sending the last
   * frame's `upTo` in its next hello.
   */
  private async pumpReceipts(conn: Conn): Promise<void> {
    if (this.receiptPumping.has(conn)) return;
    this.receiptPumping.add(conn);
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
        const items = rows.map((r): ReceiptState => ({ peer: r.peer, msg: r.msg, ts: r.ts }));
        if (!this.write(conn, encodeFrame({ t: 'receipts', upTo, items }, now.enc))) return;
        conn.setState({ ...now, rsent: upTo });
      }
    } finally {
      this.receiptPumping.delete(conn);
    }
  }

  /** A receipt state just committed as version v: to every socket that has everything before it, straight away. */
  private pushReceipt(item: ReceiptState, v: number): Promise<void> {
    const encoded: Partial<Record<Encoding, string | Uint8Array>> = {};
    const work: Promise<void>[] = [];
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st === null) continue;
      if (st.rsent !== v - 1 || this.receiptPumping.has(c)) {
        work.push(this.pumpReceipts(c));
        continue;
      }
      if (!this.write(c, (encoded[st.enc] ??= encodeFrame({ t: 'receipts', upTo: v, items: [item] }, st.enc)))) continue;
      c.setState({ ...st, rsent: v });
    }
    return Promise.all(work).then(() => undefined);
  }

  // ------------------------------------------------------------------ between shards

  /** Called by another user's shard (or this one) to hand over outbox items. Resolves after they are durable here. */
  async receive(batch: ForwardBatch): Promise<ForwardResult> {
    const r = await this.tx(() => this.accept(batch));
    await this.stored(batch, r);
    return r.full ? { acceptedUpTo: r.accepted, retryAfter: this.deps.config.fullRetryMs } : { acceptedUpTo: r.accepted };
  }

  /** receive() inside the caller's commit, for a sender in the same storage (Peers.local). */
  handOver(batch: ForwardBatch): HandOver {
    let r: Accepted;
    try {
      r = this.accept(batch);
    } catch (e) {
      // The caller's transaction rolls back what accept() wrote; its caches must not keep it either.
      this.store.forget();
      throw e;
    }
    return {
      result: r.full ? { acceptedUpTo: r.accepted, retryAfter: this.deps.config.fullRetryMs } : { acceptedUpTo: r.accepted },
      deliver: () => this.stored(batch, r),
      rollback: () => this.store.forget(),
    };
  }

  /** The part of receive() that writes: dedup by sender number, inbox append, receipt state. Inside a commit. */
  private accept(batch: ForwardBatch): Accepted {
    const cap = this.deps.config.inboxCap;
    const u = this.store.userRow();
    const last = this.store.peerLastN(batch.from);
    let accepted = last;
    let size = u.next_seq - 1 - u.trimmed;
    let full = false;
    let trimmedNow = false;
    const entries = [];
    for (const item of batch.items) {
      if (item.n <= last) continue; // a retry of something already stored
      if (item.kind === 'message' && size >= cap && !trimmedNow) {
        // Acked entries are trimmed lazily; before calling the inbox full, trim for real once.
        this.trim();
        trimmedNow = true;
        size = u.next_seq - 1 - u.trimmed + entries.length;
      }
      // Receipts are never refused: they are bounded by this user's own (rate-limited) sends.
      if (item.kind === 'message' && size >= cap) {
        full = true;
        break;
      }
      entries.push({ kind: item.kind, msg: item.msg, peer: batch.from, ts: item.ts, body: item.body, n: item.n });
      size++;
      accepted = item.n;
    }
    const first = u.next_seq;
    if (entries.length > 0) this.store.inboxAppend(first, entries);
    if (accepted > last) this.store.setPeerLastN(batch.from, accepted);
    const v = batch.receipt ? this.store.receiptFrom(batch.from, batch.receipt) : 0;
    return { accepted, full, v, stored: entries.map((e, i): Entry => ({ kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body, seq: first + i })) };
  }

  /** After accept()'s commit: push what was stored to the sockets that are caught up. */
  private async stored(batch: ForwardBatch, r: Accepted): Promise<void> {
    const rc = batch.receipt;
    await Promise.all([
      r.stored.length > 0 ? this.pushLive(r.stored) : undefined,
      rc && r.v > 0 ? this.pushReceipt({ peer: batch.from, msg: rc.msg, ts: rc.ts }, r.v) : undefined,
    ]);
  }

  presence(): PresenceInfo {
    let online = false;
    for (const c of this.deps.sockets.list()) if (c.state) online = true;
    return { user: this.user, online, lastSeen: online ? this.deps.clock.now() : this.store.lastSeen() };
  }

  /** Scheduled wake-up: retry every recipient that still has outbox items and is not backing off. */
  async onWake(): Promise<void> {
    const now = this.deps.clock.now();
    const work: Promise<void>[] = [];
    for (const r of new Set([...this.store.outboxRecipients(), ...this.store.owedPeers()])) {
      const st = this.forwards.get(r);
      if (st && st.retryAt > now) {
        this.deps.scheduler.wakeAt(st.retryAt);
        continue;
      }
      if (st) st.retryAt = 0;
      work.push(this.forward(r));
    }
    await Promise.all(work);
  }

  /**
   * Drains this user's outbox towards one recipient, in outbox order (which is what makes per-conversation
   * order hold end to end). One run per recipient at a time; sends arriving meanwhile set `again`.
   */
  private forwardState(recipient: string): ForwardState {
    let st = this.forwards.get(recipient);
    if (!st) {
      st = { running: null, again: false, attempt: 0, retryAt: 0 };
      this.forwards.set(recipient, st);
    }
    return st;
  }

  private forward(recipient: string): Promise<void> {
    const st = this.forwardState(recipient);
    if (st.running) {
      st.again = true;
      return st.running;
    }
    if (st.retryAt > this.deps.clock.now()) return Promise.resolve();
    const state = st;
    state.running = this.runForward(recipient, state).finally(() => {
      state.running = null;
      // A forward() that arrived after the run's last outbox read but before this point only set `again`.
      if (state.again) void this.forward(recipient);
    });
    return state.running;
  }

  private async runForward(recipient: string, st: ForwardState): Promise<void> {
    const { peers, config, clock, scheduler } = this.deps;
    try {
      for (;;) {
        st.again = false;
        const { items, receipt } = await this.tx(() => ({ items: this.store.outboxFor(recipient, FORWARD_BATCH), receipt: this.store.owedTo(recipient) }));
        if (items.length === 0 && receipt === undefined) {
          if (st.again) continue;
          return;
        }
        const batch: ForwardBatch = receipt ? { from: this.user, items, receipt } : { from: this.user, items };
        const res = recipient === this.user ? await this.receive(batch) : await peers.forward(recipient, batch);
        if ((res.acceptedUpTo > 0 && items.length > 0) || receipt) {
          await this.tx(() => {
            if (res.acceptedUpTo > 0 && items.length > 0) this.store.outboxDelete(recipient, res.acceptedUpTo);
            if (receipt) this.store.paid(recipient, receipt.n);
          });
        }
        st.attempt = 0;
        if (res.retryAfter !== undefined) {
          const at = clock.now() + res.retryAfter;
          this.fullUntil.set(recipient, at);
          st.retryAt = at;
          scheduler.wakeAt(at);
          return;
        }
        this.fullUntil.delete(recipient);
        // A short batch drained the outbox as of its read; only a send since then (again) needs another look.
        if (items.length < FORWARD_BATCH && !st.again) return;
      }
    } catch (e) {
      st.attempt++;
      if (e instanceof PeerOverloadedError) st.attempt = Math.max(st.attempt, OVERLOADED_MIN_RETRIES);
      const ceiling = Math.min(config.retryMaxMs, config.retryBaseMs * 2 ** Math.min(st.attempt - 1, 20));
      // Half fixed, half random: shards that failed together (a peer restarting) do not retry together, and
      // none retries sooner than half its step.
      const delay = Math.round(ceiling / 2 + (ceiling / 2) * (this.deps.random ?? Math.random)());
      st.retryAt = clock.now() + delay;
      scheduler.wakeAt(st.retryAt);
      this.deps.metrics?.forwardFailed?.();
      this.deps.log.log('warn', `forward ${this.user} -> ${recipient} failed (attempt ${st.attempt}, retry in ${delay} ms)`, e);
    }
  }

  /** Storage.commit, dropping the store's caches if the commit fails (the database rolled back, they did not). */
  private tx<T>(fn: () => T): Promise<T> {
    return this.deps.storage.commit(fn).catch((e: unknown) => {
      this.store.forget();
      throw e;
    });
  }

  // ------------------------------------------------------------------ replies

  private reply(conn: Conn, enc: Encoding, frame: ServerFrame): void {
    this.write(conn, encodeFrame(frame, enc));
  }

  /**
   * The one way bytes reach a socket. A client that stopped reading cannot make the server hold more than
   * maxQueuedBytes for it: past that the socket is closed (4003) and nothing more is written. Nothing is lost:
   * undelivered entries stay in the inbox for the next connection.
   */
  private write(conn: Conn, data: string | Uint8Array): boolean {
    const size = typeof data === 'string' ? data.length : data.byteLength;
    if (conn.queuedBytes + size > this.deps.config.maxQueuedBytes) {
      this.guardOf(conn).closed = true;
      conn.close(CLOSE_CODES.slow_consumer, 'output queue full: the client is not reading');
      return false;
    }
    conn.send(data);
    return true;
  }

  private guardOf(conn: Conn): ConnGuard {
    let g = this.guards.get(conn);
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
      this.guards.set(conn, g);
    }
    return g;
  }

  private closeForErrors(conn: Conn): void {
    this.guardOf(conn).closed = true;
    conn.close(CLOSE_CODES.too_many_errors, 'too many invalid frames');
  }

  private error(conn: Conn, enc: Encoding, code: ErrorCode, message: string, ref?: string, retryAfter?: number): void {
    this.deps.metrics?.error?.(code);
    const frame: ServerFrame = { t: 'error', code, message: message.slice(0, LIMITS.maxErrorMessageLength) };
    if (ref !== undefined) frame.ref = ref;
    if (retryAfter !== undefined) frame.retryAfter = retryAfter;
    this.reply(conn, enc, frame);
    if (this.guardOf(conn).refused(code)) this.closeForErrors(conn);
  }
}
