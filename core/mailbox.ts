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
  type Send,
  type ServerFrame,
} from '../protocol/index.js';
import type { Config } from './config.js';
import type {
  Clock,
  Conn,
  ForwardBatch,
  ForwardResult,
  Metrics,
  Peers,
  Scheduler,
  Sockets,
  Storage,
} from './ports.js';
import { ConnGuard, type BarrierCode } from './conn-guard.js';
import { StorageFullError } from './ports.js';
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
  metrics?: Metrics;
}

/** Outbox items handed to a recipient per RPC. */
const FORWARD_BATCH = 64;
/** If the runtime drops a shard between ack and forward, its scheduled wake retries within this. */
const FORWARD_SAFETY_NET_MS = 2_000;
const EMPTY = new Uint8Array(0);
/** Acked inbox entries are deleted in steps of this many (they still count towards inboxCap until then). */
const TRIM_STEP = 64;

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
 *   send frame -> onSend: rate limit, dedup, outbox append (one transaction) -> send_ack after commit
 *              -> forward(): outbox -> recipient shard's receive() -> retried with backoff until accepted
 *   receive()  -> dedup by sender outbox number, inbox append (one transaction) -> pump() to each device
 *   deliver_ack -> device cursor, delivery receipts into the outbox, inbox trimmed below every cursor
 *
 * The adapters (Durable Object, on-prem worker) only move bytes and call these methods.
 */
/**
 * Per-socket tables, keyed by the Conn. A Conn belongs to exactly one mailbox, so one table per process serves
 * every mailbox: four empty tables per mailbox were ~550 bytes per user in memory, idle ones included.
 */
const PUMPING = new WeakSet<Conn>();
const PUMP_AGAIN = new WeakSet<Conn>();
const ACKED_OF = new WeakMap<Conn, number>();
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
  /** Highest seq each socket's device acked, as this process last saw it: saves a read per delivery. */
  private readonly ackedOf = ACKED_OF;
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
      console.error(`iris: ${this.user}: unexpected error`, e);
    }
  }

  /** The socket is gone (closed by either side or the network). */
  async onClose(conn: Conn): Promise<void> {
    const st = conn.state;
    if (st === null) return;
    const now = this.deps.clock.now();
    await this.tx(() => {
      this.store.setLastSeen(now);
      const cursor = this.store.deviceCursor(st.device);
      if (cursor !== undefined) this.store.upsertDevice(st.device, cursor, now);
    });
  }

  private async onHello(conn: Conn, f: Hello, enc: Encoding): Promise<void> {
    if (conn.state !== null) throw new ProtocolError('bad_state', 'hello already received on this connection');
    const now = this.deps.clock.now();
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
      this.store.upsertDevice(f.device, cursor, now);
      this.store.setLastSeen(now);
      this.trim();
      return { cursor, head };
    }).catch((e: unknown) => {
      // Disk full: a hello must still work, so that devices can read (and ack) what waits for them. Nothing
      // is registered; the cursor is computed the same way from what is stored.
      if (!(e instanceof StorageFullError)) throw e;
      return this.tx(() => {
        const u = this.store.peekUserRow();
        const head = (u?.next_seq ?? 1) - 1;
        const trimmed = u?.trimmed ?? 0;
        const known = this.store.deviceCursor(f.device);
        return { cursor: Math.min(head, Math.max(known ?? trimmed, f.cursor, trimmed)), head };
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
    conn.setState({ device: f.device, sent: r.cursor, enc });
    this.ackedOf.set(conn, r.cursor);
    this.reply(conn, enc, { t: 'welcome', user: this.user, device: f.device, cursor: r.cursor, head: r.head, time: now });
    await this.pump(conn);
  }

  private async onSend(conn: Conn, f: Send): Promise<void> {
    const now = this.deps.clock.now();
    const { config } = this.deps;
    const barrier = this.guardOf(conn).barrier;
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
      const n = this.store.outboxAppend(f.to, 'message', null, now, f.body, f.id);
      if (n % 256 === 0 && n > config.dedupWindow) this.store.dedupPrune(n - config.dedupWindow);
      return { ok: true, n, ts: now, dup: false } as const;
    }).catch((e: unknown) => {
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
    this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    await this.forward(f.to);
  }

  private async onAck(conn: Conn, f: DeliverAck): Promise<void> {
    const st = conn.state!;
    if (f.seq > st.sent) throw new ProtocolError('bad_ack', `ack for seq ${f.seq} beyond the last delivered seq ${st.sent}`);
    const now = this.deps.clock.now();
    const kick = await this.tx(() => {
      const cursor = this.ackedOf.get(conn) ?? this.store.deviceCursor(st.device) ?? 0;
      if (f.seq <= cursor) return [];
      this.store.upsertDevice(st.device, f.seq, now);
      const u = this.store.userRow();
      const recipients = new Set<string>();
      if (f.seq > u.delivered) {
        // First device to ack these messages: tell each sender, through the same reliable outbox as messages,
        // with ONE cumulative receipt per sender — its newest message acked here. Each sender's messages entered
        // this inbox in the order they were sent (per-conversation FIFO), so the newest one delivered implies
        // every earlier one: a burst of N messages costs one receipt, not N.
        const newest = new Map<string, string>();
        for (const m of this.store.messagesBetween(u.delivered, f.seq)) if (m.peer !== this.user) newest.set(m.peer, m.msg);
        for (const [peer, msg] of newest) {
          this.store.outboxAppend(peer, 'delivered', msg, now, EMPTY);
          recipients.add(peer);
        }
        this.store.setDelivered(f.seq);
      }
      // Trimming needs every device's cursor: do it in steps of TRIM_STEP entries, not on every ack.
      if (f.seq - u.trimmed >= TRIM_STEP) this.trim();
      return [...recipients];
    }).catch((e: unknown): string[] => {
      // Disk full: the cursor stays where it was stored (a reconnect redelivers; the SDK drops what it has
      // seen) and receipts wait for a later ack, but this socket's window moves on so reading continues.
      if (e instanceof StorageFullError) return [];
      throw e;
    });
    // Receipts are outbox items like messages: arm the same safety net in case this shard goes away now.
    if (kick.length > 0) this.deps.scheduler.wakeAt(now + FORWARD_SAFETY_NET_MS);
    if (f.seq > (this.ackedOf.get(conn) ?? 0)) this.ackedOf.set(conn, f.seq);
    this.deps.metrics?.acked?.();
    await Promise.all([this.pump(conn), ...kick.map((r) => this.forward(r))]);
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

  /** Deletes inbox entries every device has acked. Call inside a commit. */
  private trim(): void {
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
          const acked = this.ackedOf.get(conn) ?? this.store.deviceCursor(st.device) ?? st.sent;
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
      const acked = this.ackedOf.get(c);
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

  // ------------------------------------------------------------------ between shards

  /** Called by another user's shard (or this one) to hand over outbox items. Resolves after they are durable here. */
  async receive(batch: ForwardBatch): Promise<ForwardResult> {
    const cap = this.deps.config.inboxCap;
    const r = await this.tx(() => {
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
      return { accepted, full, stored: entries.map((e, i): Entry => ({ kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body, seq: first + i })) };
    });
    if (r.stored.length > 0) await this.pushLive(r.stored);
    return r.full ? { acceptedUpTo: r.accepted, retryAfter: this.deps.config.fullRetryMs } : { acceptedUpTo: r.accepted };
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
    for (const r of this.store.outboxRecipients()) {
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
  private forward(recipient: string): Promise<void> {
    let st = this.forwards.get(recipient);
    if (!st) {
      st = { running: null, again: false, attempt: 0, retryAt: 0 };
      this.forwards.set(recipient, st);
    }
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
        const items = await this.tx(() => this.store.outboxFor(recipient, FORWARD_BATCH));
        if (items.length === 0) {
          if (st.again) continue;
          return;
        }
        const batch = { from: this.user, items };
        const res = recipient === this.user ? await this.receive(batch) : await peers.forward(recipient, batch);
        if (res.acceptedUpTo > 0) await this.tx(() => this.store.outboxDelete(recipient, res.acceptedUpTo));
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
      const delay = Math.min(config.retryMaxMs, config.retryBaseMs * 2 ** Math.min(st.attempt - 1, 20));
      st.retryAt = clock.now() + delay;
      scheduler.wakeAt(st.retryAt);
      this.deps.metrics?.forwardFailed?.();
      console.warn(`iris: forward ${this.user} -> ${recipient} failed (attempt ${st.attempt}, retry in ${delay} ms):`, e);
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
