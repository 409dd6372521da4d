// Over 400 lines on purpose: the frame handlers and the hand-over side (receive, handOver, accept) decide
// together what one commit writes (dedup, rate, barrier, one hop, receipts owed); split, one transaction's rules
// would be spread over files. Forwarding and socket output, which only follow a commit, are in their own files.
import {
  CLOSE_CODES,
  HELLO_FEATURES,
  ProtocolError,
  decodeFrame,
  isClientFrame,
  type DeliverAck,
  type Encoding,
  type Entry,
  type Hello,
  type PresenceInfo,
  type PresenceQuery,
  type PresenceSubscribe,
  type Read,
  type ReceiptState,
  type Send,
  type SetPresence,
  type SetSettings,
} from '../protocol/index.js';
import type { Config } from './config.js';
import type {
  Clock,
  Conn,
  ConnState,
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
import type { BarrierCode } from './conn-guard.js';
import { StorageFullError, type CommitOptions } from './ports.js';
import { Delivery } from './delivery.js';
import { GroupMember } from './group/member.js';
import type { GroupNews } from './group/types.js';
import type { GroupEntry } from '../protocol/index.js';
import { Forwarder } from './forwarder.js';
import { History, releaseHeld } from './history.js';
import { PresenceHub } from './presence.js';
import { checkRef, oneToOneContext } from './refs.js';
import { TokenBucket } from './ratelimit.js';
import { ackCovers, partial } from './shown.js';
import { MailboxStore } from './store.js';
import { TypingHub } from './typing.js';
import { KeysHub } from './keys.js';
import { refreshConn, type TokenCheck } from './refresh.js';
import { Pusher, type PushDeps, type PushPlan } from './push.js';
import type { GroupPushNote } from './group/push-notes.js';

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
  /** Verifies a `refresh` frame's token (core/refresh.ts); without it a refresh gets `unavailable`. */
  tokens?: TokenCheck;
  /** Jitter for retry delays, in [0, 1); Math.random unless a test needs them exact. */
  random?: () => number;
  /** Push webhooks for offline devices (core/push.ts); absent or without a URL: none. */
  push?: PushDeps;
}

/** If the runtime drops a shard between ack and forward, its scheduled wake retries within this. */
const FORWARD_SAFETY_NET_MS = 2_000;
/** Acked inbox entries are deleted in steps of this many (they still count towards inboxCap until then). */
const TRIM_STEP = 64;

/** What accept() stored: how far the batch was taken, whether the inbox is full, the receipt version, the entries. */
interface Accepted {
  accepted: number;
  full: boolean;
  v: number;
  /** The sender's receipt state for this conversation after the batch, when it changed (v > 0). */
  receipt?: ReceiptState;
  stored: Entry[];
  /** Offline devices the stored messages push to (core/push.ts), their window rows written in the same commit. */
  push?: PushPlan | null;
}

/** Reference server message ids are `<sender>:<n>`; a read mark names one of `conv`'s. */
const MSG_NUMBER = /^[1-9][0-9]{0,15}$/;

/**
 * One user's mailbox: everything Iris knows about a user, and every rule that must hold for them (the shard
 * around it, a Durable Object or an on-prem Shard, holds its sockets and wakes it). Two parts live beside it:
 * core/forwarder.ts (the outbox drained towards other shards) and core/delivery.ts (what is written to the
 * user's sockets); core/store.ts holds every query.
 *
 * The message path through here:
 *   send frame -> onSend: rate limit, dedup record, then in the SAME transaction either
 *                 - one hop: the recipient shares this storage (Peers.local) -> its handOver() appends to its inbox, or
 *                 - the outbox -> Forwarder: the recipient's receive() in its shard -> retried with backoff until accepted
 *              -> send_ack after the commit
 *   receive()  -> dedup by sender outbox number, inbox append (one transaction) -> Delivery.pushLive / pump
 *   read       -> read position (reads, versioned; read_state to the user's devices) and ONE read receipt owed
 *                 to the sender, carried like a delivery receipt (ForwardBatch.read) unless the user turned them off
 *   deliver_ack -> device cursor; per sender ONE cumulative receipt (state, PROTOCOL.md 9.6): handed over in the
 *                 same transaction to a local sender, else owed (memory, derivable from the inbox) and carried
 *                 by the next forward;
 *                 the sender stores it (receipts_in, versioned) and pushes `receipts` frames; inbox trimmed below
 *                 every cursor
 *
 * The adapters (Durable Object, on-prem worker) only move bytes and call these methods.
 */

export class Mailbox {
  readonly user: string;
  private readonly store: MailboxStore;
  private readonly bucket: TokenBucket;
  /** Created when the user first sends or wakes (most mailboxes in memory are idle). */
  private forwarderOrNull: Forwarder | null = null;
  /** What goes out to this user's sockets (core/delivery.ts). */
  private readonly out: Delivery;
  /** Presence subscriptions, both ends, in memory (core/presence.ts). */
  readonly presenceHub: PresenceHub;
  /** Sent entries and history for new devices (core/history.ts). */
  private readonly history: History;
  /** The member side of groups (core/group/member.ts). */
  private readonly groups: GroupMember;

  private get forwarder(): Forwarder {
    return (this.forwarderOrNull ??= new Forwarder(this.deps, { store: this.store, tx: (fn, opts) => this.tx(fn, opts), receive: (b) => this.receive(b) }));
  }

  /** Typing indicators, both ends, in memory (core/typing.ts); created on first use, like the forwarder. */
  private typingOrNull: TypingHub | null = null;
  /** Push webhooks (core/push.ts); null when no IRIS_PUSH_URL is set. */
  private readonly pusher: Pusher | null;

  get typing(): TypingHub {
    return (this.typingOrNull ??= new TypingHub({ ...this.deps, out: this.out, group: (c, conv, on) => this.groups.typing(c, conv, on) }));
  }

  /** The key directory (core/keys.ts); created on first use. */
  private keysOrNull: KeysHub | null = null;

  get keys(): KeysHub {
    return (this.keysOrNull ??= new KeysHub({ ...this.deps, sql: this.deps.storage.sql, out: this.out, tx: (fn) => this.tx(fn) }));
  }

  private forward(recipient: string, trace?: string): Promise<void> {
    return this.forwarder.forward(recipient, trace);
  }

  constructor(private readonly deps: MailboxDeps) {
    this.user = deps.user;
    this.store = new MailboxStore(deps.storage.sql, deps.user);
    this.out = new Delivery(deps, this.store, (fn) => this.tx(fn));
    this.history = new History(this.store, deps.config.historyDepth);
    this.bucket = new TokenBucket(deps.config.ratePerSec, deps.config.rateBurst, deps.clock.now());
    this.pusher = deps.push?.settings.url ? new Pusher(deps.push, {
      user: deps.user, clock: deps.clock, scheduler: deps.scheduler, log: deps.log, metrics: deps.metrics, random: deps.random ?? Math.random,
      devices: () => this.store.devices().map((d) => d.device),
      deviceCount: () => this.store.deviceCount(),
      online: () => new Set([...deps.sockets.list()].flatMap((c) => (c.state ? [c.state.device] : []))),
      sql: deps.storage.sql,
      tx: (fn) => this.tx(fn),
    }) : null;
    this.groups = new GroupMember({ deps, out: this.out, take: (now) => this.bucket.take(now), tx: (fn) => this.tx(fn) });
    this.presenceHub = new PresenceHub({
      ...deps,
      out: this.out,
      visibleTo: (u) => this.store.presenceVisibleTo(u),
      lastSeen: () => this.store.lastSeen(),
    });
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
    const guard = this.out.guardOf(conn);
    if (guard.closed) return;
    const wait = guard.admit(this.deps.clock.now());
    if (wait > 0) {
      // Not decoded, not answered beyond this one refusal: a flood costs a token-bucket check per frame.
      this.out.error(conn, enc, 'rate_limited', 'too many frames on this connection', undefined, wait);
      if (guard.overRate) this.out.closeForErrors(conn);
      return;
    }
    let ref: string | undefined;
    try {
      const frame = decodeFrame(data);
      if (!isClientFrame(frame)) throw new ProtocolError('unknown_type', `"${frame.t}" is a server frame`);
      if (frame.t === 'send') ref = frame.id;
      if (frame.t === 'presence_query' || frame.t === 'presence_subscribe') ref = frame.ref;
      if (frame.t === 'keys_upload' || frame.t === 'keys_fetch' || frame.t === 'devices_query') ref = frame.ref;
      if (frame.t === 'ping') {
        guard.ok();
        return this.out.reply(conn, enc, { t: 'pong' });
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
        case 'read':
          return await this.onRead(conn, frame);
        case 'set_settings':
          return await this.onSetSettings(conn, frame);
        case 'presence_subscribe':
          return await this.onPresenceSubscribe(conn, frame);
        case 'set_presence':
          return await this.onSetPresence(conn, frame);
        case 'typing':
          return await this.typing.onFrame(conn, frame.conv, frame.on);
        case 'keys_upload':
          return await this.keys.onUpload(conn, frame);
        case 'keys_fetch':
          return await this.keys.onFetch(conn, frame);
        case 'devices_query':
          return await this.keys.onDevicesQuery(conn, frame);
        case 'refresh': {
          const exp = await refreshConn(conn, frame, this.user, this.deps.storage.sql, this.deps.tokens);
          return this.out.reply(conn, enc, { t: 'refreshed', exp });
        }
        default:
          return await this.groups.onFrame(conn, frame);
      }
    } catch (e) {
      if (e instanceof ProtocolError) return this.out.error(conn, enc, e.code, e.message, e.ref ?? ref);
      // Not a bug: the disk is full. Retryable, with a retry-after, and not worth a log line per frame.
      if (e instanceof StorageFullError) return this.out.error(conn, enc, 'unavailable', 'server storage is full; retry later', ref, e.retryAfterMs);
      this.out.error(conn, enc, 'internal', 'internal error', ref);
      this.deps.log.log('error', `${this.user}: unexpected error`, e, { user: this.user, ...(conn.trace !== undefined && { trace: conn.trace }) });
    }
  }

  /**
   * The shard moves away (cluster mode: its partition is handed over) before its sockets close: writes what the
   * devices acked since their cursors were last written, as their closes would, while the storage still takes
   * writes (the closes come after it is released). Without it, a device reconnecting to the new owner is sent
   * again what it had acked (it drops them by its own cursor, but a client without a store shows them twice).
   */
  parting(): Promise<void> {
    return this.tx(() => this.store.saveCursors(this.deps.clock.now()));
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
    // After last seen is stored: an offline announced after the hold carries it.
    const online = [...this.deps.sockets.list()].some((c) => c !== conn && c.state !== null);
    await Promise.all([this.presenceHub.changed(conn), online ? undefined : this.presenceHub.lastOffline(), this.typingOrNull?.closed(conn), this.groups.onClose(conn)]);
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
      let start = u.trimmed;
      if (known === undefined) {
        // Where a new device starts (core/history.ts) needs `trimmed` exact: trim first.
        this.trim();
        start = this.history.newDeviceCursor(head, u.trimmed);
        const devices = this.store.devices();
        if (devices.length >= this.deps.config.maxDevices) {
          // Forget the least recently seen device that is not connected; its undelivered tail goes with it.
          const victim = devices.find((d) => !online.has(d.device));
          if (!victim) return null;
          this.store.deleteDevice(victim.device);
          // Its published keys go with it: senders must stop encrypting for a device that no longer receives.
          this.keys.forgetDevice(victim.device);
        }
      }
      // A new device starts where history says (what a known device has not acked, and the newest kept entries).
      // A client that says it processed further than the server recorded (its last ack was lost) is believed,
      // up to the head.
      const cursor = Math.min(head, known === undefined ? Math.max(start, f.cursor) : Math.max(known, f.cursor, u.trimmed));
      // A client cursor ahead of every device's acknowledgement (its last ack was lost) counts as an ack: the
      // entries it skips get their receipts here, since `delivered` is derived from the device cursors.
      if (cursor > u.delivered) kick = this.oweReceipts(u.delivered, cursor, now, handed);
      this.store.upsertDevice(f.device, cursor, now);
      this.store.setLastSeen(now);
      this.trim();
      return { cursor, fresh: known === undefined, head, rv: this.store.receiptVersion(), rdv: this.store.readVersion(), readReceipts: this.store.readReceiptsOn(), presence: this.store.presenceVisibility() };
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
        const readReceipts = (u?.read_receipts ?? 1) !== 0;
        const cursor = known === undefined ? Math.max(this.history.newDeviceCursor(head, trimmed), f.cursor) : Math.max(known, f.cursor, trimmed);
        return { cursor: Math.min(head, cursor), fresh: known === undefined, head, rv: this.store.receiptVersion(), rdv: this.store.readVersion(), readReceipts, presence: this.store.presenceVisibility() };
      });
    });
    if (r === null) {
      this.out.error(conn, enc, 'too_many_devices', `all ${this.deps.config.maxDevices} devices of this user are connected`);
      conn.close(CLOSE_CODES.normal, 'too many devices');
      return;
    }
    for (const c of this.deps.sockets.list()) {
      if (c !== conn && c.state?.device === f.device) c.close(CLOSE_CODES.replaced, 'replaced by a newer connection');
    }
    // A receipt version beyond ours comes from a store this server no longer has (restored from a backup, or
    // another deployment): send every receipt again rather than none.
    const rsent = f.receipts !== undefined && f.receipts <= r.rv ? f.receipts : 0;
    const features = f.features ?? 0;
    const refs = (features & HELLO_FEATURES.refs) !== 0;
    const typing = (features & HELLO_FEATURES.typing) !== 0;
    const sync = (features & HELLO_FEATURES.sync) !== 0;
    const groups = (features & HELLO_FEATURES.groups) !== 0;
    const keys = (features & HELLO_FEATURES.keys) !== 0;
    const base: ConnState = { device: f.device, sent: r.cursor, enc, rsent, acked: r.cursor, ...(refs && { refs }), ...(typing && { typing }), ...(sync && { sync }), ...(groups && { groups }), ...(keys && { keys }), ...(r.fresh && { fresh: true }) };
    // A client that did not name every entry feature is not shown some entries (core/shown.ts).
    conn.setState(partial(base) ? { ...base, vis: r.cursor } : base);
    this.out.reply(conn, enc, { t: 'welcome', user: this.user, device: f.device, cursor: r.cursor, head: r.head, time: now });
    // Only a client that sent hello.reads speaks read receipts; the same rule as for receipt versions.
    if (f.reads !== undefined) {
      conn.setState({ ...conn.state!, rdsent: f.reads <= r.rdv ? f.reads : 0 });
      this.out.reply(conn, enc, { t: 'settings', readReceipts: r.readReceipts, presence: r.presence });
    }
    if (kick.length > 0) this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await Promise.all([this.out.pump(conn), this.out.pumpReceipts(conn), this.out.pumpReads(conn), ...kick.map((p) => this.forward(p)), ...handed.map((h) => h.deliver()), this.presenceHub.changed(), this.typingOrNull?.online(), this.groups.onHello(conn), keys ? this.keys.hello(conn) : undefined]);
  }

  private async onSend(conn: Conn, f: Send): Promise<void> {
    const now = this.deps.clock.now();
    const { config } = this.deps;
    const barrier = this.out.guardOf(conn).barrier;
    let handed: HandOver | undefined;
    let sent: Entry | undefined;
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
      const full = this.forwarderOrNull?.fullUntil(f.to) ?? 0;
      if (full > now) return refuse('inbox_full', full - now, `inbox of ${f.to} is full`);
      if (this.store.outboxCount() >= config.outboxCap) {
        return refuse('outbox_full', config.fullRetryMs, 'too many messages waiting for their recipients');
      }
      // A reference is checked here, after the token (a refused one costs the sender like a send): core/refs.ts.
      // Refused for good, not "not now": no barrier, nothing stored.
      if (f.ref) {
        const { user, store } = this;
        const ctx = oneToOneContext({ user, peer: f.to, now, editWindowS: config.editWindowS, deleteWindowS: config.deleteWindowS, nextN: () => store.userRow().next_n, peerLastN: (p) => store.peerLastN(p), sent: (n) => store.dedupSent(n) });
        const v = checkRef(f.ref, ctx);
        if (!v.ok) return { ok: false, code: v.code, retryAfter: undefined, message: v.message } as const;
      }
      barrier.accepted(f.id, f.to);
      const n = this.store.accept(f.id, now, f.to);
      if (n % 256 === 0 && n > config.dedupWindow) this.store.dedupPrune(n - config.dedupWindow);
      const msg = `${this.user}:${n}`;
      // The user's other devices see this send in the user's own order (core/history.ts); same commit.
      sent = this.history.recordSent(conn, msg, f.to, now, f.body, f.ref);
      // One hop, one commit: a recipient in the same storage with nothing queued ahead of this message takes it
      // into its inbox inside this transaction. No outbox row, no forward, no second commit to wait for.
      const local = f.to !== this.user && (this.forwarderOrNull?.idleTowards(f.to) ?? this.store.outboxFor(f.to, 1).length === 0) ? this.deps.peers.local?.(f.to) : undefined;
      if (local) {
        const h = local.handOver({ from: this.user, items: [{ n, kind: 'message', msg, ts: now, body: f.body, ...(f.ref && { ref: f.ref }) }] });
        handed = h;
        if (h.result.acceptedUpTo >= n) return { ok: true, n, ts: now, dup: false, local: true } as const;
        // Its inbox is full: the message waits in the outbox like one a forward was refused for.
        this.forwarder.markFull(f.to, now + (h.result.retryAfter ?? config.fullRetryMs));
      }
      this.store.outboxPut(f.to, n, 'message', msg, now, f.body, f.ref);
      return { ok: true, n, ts: now, dup: false, local: false } as const;
    }).catch((e: unknown) => {
      handed?.rollback();
      if (sent) releaseHeld(conn);
      // Disk full: nothing was stored. "Not now" like the refusals above, so it raises the barrier too (when
      // the commit itself failed, sends that ran in the same batch fail with it).
      if (e instanceof StorageFullError) barrier.refused(f.id, f.to, 'unavailable', e.retryAfterMs, now);
      throw e;
    });
    const enc = conn.state?.enc ?? 'binary';
    if (!r.ok) return this.out.error(conn, enc, r.code, r.message, f.id, r.retryAfter);
    this.out.reply(conn, enc, { t: 'send_ack', id: f.id, msg: `${this.user}:${r.n}`, ts: r.ts, dup: r.dup });
    if (r.dup) return;
    this.deps.metrics?.accepted?.();
    // The ack is written: this socket may now get the sent entry too (core/history.ts), as may the others.
    if (sent) releaseHeld(conn);
    // Then a pump: entries that arrived behind the held one were not pushed live to this socket.
    const own = sent ? this.out.pushLive([sent]).then(() => this.out.pump(conn)) : undefined;
    if (r.local) return void (await Promise.all([own, handed!.deliver()]));
    this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await Promise.all([own, this.forward(f.to, conn.trace)]);
  }

  private async onAck(conn: Conn, f: DeliverAck): Promise<void> {
    const st = conn.state!;
    if (f.seq > st.sent) throw new ProtocolError('bad_ack', `ack for seq ${f.seq} beyond the last delivered seq ${st.sent}`);
    // An older client's ack also covers the sent entries it was not shown (core/history.ts, ackCovers).
    const seq = ackCovers(st, f.seq);
    const now = this.deps.clock.now();
    const handed: HandOver[] = [];
    // Lazy (core/ports.ts CommitOptions): a cursor, `delivered` and a trim lost in a crash are derived again (the
    // receipts owed for them are re-sent and merged as a maximum). A receipt handed to a sender in this storage
    // is not: its version goes to the sender's sockets, so then the commit is a durable one.
    const mode: CommitOptions = { lazy: true };
    const kick = await this.tx(() => {
      const cursor = st.acked ?? this.store.deviceCursor(st.device) ?? 0;
      if (seq <= cursor) return [];
      // Not written now: the device's cursor is written with the next trim (every TRIM_STEP entries), at close
      // and at hello. A crash in between redelivers at most those entries, which a device with a durable store
      // drops by its own cursor (hello.cursor wins when ahead), and their receipts are derived again.
      this.store.noteCursor(st.device, seq);
      const u = this.store.userRow();
      const recipients = seq > u.delivered ? this.oweReceipts(u.delivered, seq, now, handed) : [];
      // Trimming needs every device's cursor: do it in steps of TRIM_STEP entries, not on every ack.
      if (seq - u.trimmed >= TRIM_STEP) this.trim();
      mode.lazy = handed.length === 0;
      return recipients;
    }, mode).catch((e: unknown): string[] => {
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
    if (cur !== null && seq > (cur.acked ?? 0)) conn.setState({ ...cur, acked: seq });
    this.deps.metrics?.acked?.();
    await Promise.all([this.out.pump(conn), ...kick.map((r) => this.forward(r)), ...handed.map((h) => h.deliver())]);
  }

  private async onPresenceQuery(conn: Conn, f: PresenceQuery): Promise<void> {
    // A query fans out to up to 32 shards: it spends a token from the same bucket as sends.
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait > 0) return this.out.error(conn, conn.state?.enc ?? 'binary', 'rate_limited', 'request rate exceeded', f.ref, wait);
    const users = await Promise.all(
      f.users.map((u) => (u === this.user ? Promise.resolve(this.presence(this.user)) : this.deps.peers.presence(u, this.user))),
    ).catch(() => null);
    const enc = conn.state?.enc ?? 'binary';
    if (users === null) return this.out.error(conn, enc, 'unavailable', 'presence lookup failed; retry', f.ref, 1000);
    this.out.reply(conn, enc, { t: 'presence', ref: f.ref, users });
  }

  /**
   * A device read `conv` up to `msg` (PROTOCOL.md 9.8). Bounded like an ack: only a message this user stored from
   * `conv` and already sent on this connection. One row here (the read position, versioned for the user's other
   * devices) and, unless the user turned read receipts off, ONE read receipt owed to `conv`, coalesced with any
   * earlier one not yet carried: handed over in this commit to a sender in the same storage, else carried by the
   * next forward batch. Nothing is written for a mark at or behind the stored one.
   */
  private async onRead(conn: Conn, f: Read): Promise<void> {
    const st = conn.state!;
    const now = this.deps.clock.now();
    const wait = this.bucket.take(now);
    if (wait > 0) return this.out.error(conn, st.enc, 'rate_limited', 'request rate exceeded', undefined, wait);
    const num = f.msg.startsWith(`${f.conv}:`) ? f.msg.slice(f.conv.length + 1) : '';
    if (!MSG_NUMBER.test(num)) throw new ProtocolError('invalid_field', `msg: expected a message id of ${f.conv} ("${f.conv}:<n>")`);
    const n = Number(num);
    const mark = { n, msg: f.msg, ts: now };
    let handed: HandOver | undefined;
    const r = await this.tx((): { bad: string; v?: undefined; kick?: undefined } | { bad?: undefined; v: number; kick: boolean } => {
      if (n > this.store.peerLastN(f.conv)) return { bad: `no message ${f.msg} was stored for this user` };
      const first = this.store.firstUndeliveredFrom(f.conv, st.sent);
      if (first !== undefined && first <= n) return { bad: `${f.conv}:${first} was not delivered to this connection yet` };
      const v = this.store.markRead(f.conv, mark);
      if (v === 0 || f.conv === this.user || !this.store.readReceiptsOn()) return { v, kick: false };
      const local = this.deps.peers.local?.(f.conv);
      if (local) {
        handed = local.handOver({ from: this.user, items: [], read: mark });
        return { v, kick: false };
      }
      this.store.oweRead(f.conv, mark, v);
      return { v, kick: true };
    }).catch((e: unknown) => {
      handed?.rollback();
      throw e;
    });
    if (r.bad !== undefined) throw new ProtocolError('bad_ack', r.bad);
    if (r.v === 0) return;
    if (r.kick) this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await Promise.all([this.out.pushRead({ conv: f.conv, msg: f.msg, ts: now }, r.v), r.kick ? this.forward(f.conv) : undefined, handed?.deliver()]);
  }

  /** PROTOCOL.md 8.6: one token from the user's bucket, then one watch call per subject (core/presence.ts). */
  private async onPresenceSubscribe(conn: Conn, f: PresenceSubscribe): Promise<void> {
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait > 0) return this.out.error(conn, conn.state!.enc, 'rate_limited', 'request rate exceeded', f.ref, wait);
    await this.presenceHub.subscribe(conn, f.ref, f.users);
  }

  /** Who may see this user's presence: one column of the users row; applies from the next state handed out. */
  private async onSetPresence(conn: Conn, f: SetPresence): Promise<void> {
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait > 0) return this.out.error(conn, conn.state!.enc, 'rate_limited', 'request rate exceeded', undefined, wait);
    const readReceipts = await this.tx(() => {
      this.store.setPresenceVisibility(f.visibility);
      return this.store.readReceiptsOn();
    });
    // Every device shows the same setting (PROTOCOL.md 7.15); not an answer: sent whether or not it changed.
    this.out.pushSettings({ t: 'settings', readReceipts, presence: f.visibility });
  }

  private async onSetSettings(conn: Conn, f: SetSettings): Promise<void> {
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait > 0) return this.out.error(conn, conn.state!.enc, 'rate_limited', 'request rate exceeded', undefined, wait);
    const presence = await this.tx(() => {
      this.store.setReadReceipts(f.readReceipts);
      return this.store.presenceVisibility();
    });
    // Every device that shows the setting learns it; a client written before read receipts gets no frame at all.
    this.out.pushSettings({ t: 'settings', readReceipts: f.readReceipts, presence });
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
    if (min > this.store.userRow().trimmed) this.store.trimInbox(min, this.history.deleteUpTo(min));
  }

  // ------------------------------------------------------------------ between shards

  /** Called by another user's shard (or this one) to hand over outbox items. Resolves after they are durable here. */
  async receive(batch: ForwardBatch): Promise<ForwardResult> {
    let r: Accepted;
    try {
      r = await this.tx(() => this.accept(batch));
    } catch (e) {
      // The sender retries and logs too; this line carries the sender's trace id into the recipient's log. A full
      // disk is logged once where it is detected, not per refused batch.
      if (!(e instanceof StorageFullError)) this.deps.log.log('warn', `${this.user}: forward from ${batch.from} not stored`, e, { user: this.user, ...(batch.trace !== undefined && { trace: batch.trace }) });
      throw e;
    }
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
      entries.push({ kind: item.kind, msg: item.msg, peer: batch.from, ts: item.ts, body: item.body, n: item.n, ...(item.ref && { ref: item.ref }) });
      size++;
      accepted = item.n;
    }
    const first = u.next_seq;
    if (entries.length > 0) this.store.inboxAppend(first, entries);
    if (accepted > last) this.store.setPeerLastN(batch.from, accepted);
    const v = batch.receipt || batch.read ? this.store.receiptFrom(batch.from, batch.receipt, batch.read) : 0;
    const receipt = v > 0 ? this.store.receiptState(batch.from) : undefined;
    // Offline devices get a push (core/push.ts): a device whose window opens now gets its row in this commit.
    const push = this.pusher?.plan(entries.filter((e) => e.kind === 'message').map((e) => ({ sender: batch.from, conversation: batch.from, msg: e.msg, ts: e.ts })));
    return { accepted, full, v, ...(receipt && { receipt }), push, stored: entries.map((e, i): Entry => ({ kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body, seq: first + i, ...(e.ref && { ref: e.ref }) })) };
  }

  /** After accept()'s commit: push what was stored to the sockets that are caught up. */
  private async stored(batch: ForwardBatch, r: Accepted): Promise<void> {
    // Its shard handed something over: the sender may have come online since a typing push found it offline.
    this.typingOrNull?.heard(batch.from);
    // Offline devices get a push (core/push.ts): counted here, sent from onWake, never awaited on this path.
    this.pusher?.apply(r.push ?? null);
    await Promise.all([
      r.stored.length > 0 ? this.out.pushLive(r.stored) : undefined,
      r.receipt && r.v > 0 ? this.out.pushReceipt(r.receipt, r.v) : undefined,
    ]);
  }

  /**
   * This user's presence as `asker` may see it (presence_query, PROTOCOL.md 8.6): hidden reads as never seen.
   * No asker: the unfiltered state (an adapter's own use).
   */
  presence(asker?: string): PresenceInfo {
    return this.presenceHub.stateFor(asker) ?? { user: this.user, online: false, lastSeen: 0 };
  }

  /** Another shard watches (or stops watching) this user's presence (Peers.watch). Nothing is written. */
  watchPresence(watcher: string, on: boolean): PresenceInfo | undefined {
    return this.presenceHub.watch(watcher, on);
  }

  /** A subject this user watches changed (Peers.presenceChanged); false: not wanted any more. */
  presenceChanged(info: PresenceInfo): boolean {
    return this.presenceHub.changedAt(info);
  }

  /** Another user's shard pushes its typing state (Peers.typing); false: this user has no online connection. */
  typingFrom(from: string, conv: string, on: boolean): boolean {
    return this.typing.typingFrom(from, conv, on);
  }

  /** A group's fan-out round (Peers.groupPush), filtered to this user's ranges; false: no device connected. */
  groupPush(group: string, after: number, upTo: number, entries: GroupEntry[]): boolean {
    const any = this.groups.push(group, after, upTo, entries);
    // Its devices that are offline get a push (all of them when `any` is false: it went offline since the group
    // last heard), coalesced with 1:1 pushes (core/group/push-notes.ts); the group notes only members it knows offline.
    if (this.pusher) {
      const items = entries.filter((e) => e.kind === 'message' && e.from !== this.user).map((e) => ({ sender: e.from, conversation: group, msg: `${group}:${e.seq}`, ts: e.ts, group: true }));
      const last = entries.at(-1)?.seq ?? 0;
      this.pusher.note(items, (device) => this.groups.deviceCursor(group, device) >= last);
    }
    return any;
  }

  /**
   * A group's coalesced note (Peers.groupNote): `count` messages landed for this user, offline in the group. Its
   * offline devices count them for a push (a device whose stored cursor in the group is past them saw them), the
   * rows of windows that open written before this resolves, so the group may forget the note.
   */
  async groupNote(n: GroupPushNote): Promise<void> {
    if (!this.pusher) return;
    const items = [{ sender: n.sender, conversation: n.group, msg: `${n.group}:${n.seq}`, ts: n.ts, count: n.count, group: true }];
    const plan = await this.tx(() => this.pusher!.plan(items, (device) => this.groups.deviceCursor(n.group, device) >= n.seq));
    this.pusher.apply(plan);
  }

  /** A group changed this user's membership (Peers.groupNews). */
  groupNews(news: GroupNews): Promise<void> {
    return this.groups.news(news);
  }

  /** Scheduled wake-up: retry every recipient that still has outbox items and is not backing off; presence timers. */
  async onWake(): Promise<void> {
    this.pusher?.tick();
    await Promise.all([this.forwarder.wake(), this.presenceHub.tick(), this.groups.tick()]);
  }

  /** Storage.commit, dropping the store's caches if the commit fails (the database rolled back, they did not). */
  private tx<T>(fn: () => T, opts?: CommitOptions): Promise<T> {
    return this.deps.storage.commit(fn, opts).catch((e: unknown) => {
      this.store.forget();
      throw e;
    });
  }

}
