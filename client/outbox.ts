import type { ErrorFrame, MessageRef, SendAck as WireSendAck } from '../protocol/index.js';
import { IrisError, errText, errorOfFrame } from './errors.js';
import type { Link, LinkSource } from './link.js';
import type { StoreQueue } from './store-queue.js';
import type { PendingSend } from './store.js';
import type { RetryEvent, SendAck, SentEvent } from './types.js';

/**
 * Send refusals that only mean "not now": the client keeps the send and writes it again (same id) after the
 * server's retry-after. rate_limited / outbox_full / unavailable concern every send of this user, so all sends
 * pause; inbox_full concerns one recipient, so only that conversation waits.
 */
const TRANSIENT_SEND_ERRORS = new Set(['rate_limited', 'outbox_full', 'unavailable', 'inbox_full']);
/** Wait before rewriting a transiently refused send whose error frame carried no retry-after. */
export const DEFAULT_SEND_RETRY_MS = 1000;
/**
 * Sends written and not yet answered on one connection, at most (retries on). The window halves on a "not now"
 * refusal and grows by one per ack, so a rate-limited client settles near the rate it is allowed instead of
 * rewriting a full window behind every refusal (each rewrite is a frame against the connection's frame rate).
 */
const MAX_SENDS_IN_FLIGHT = 128;
/** Longest gap kept between two sends while pacing to a rate limit (see `paceMs`). */
const MAX_PACE_MS = 1000;

interface Waiter {
  resolve: (v: SendAck) => void;
  reject: (e: IrisError) => void;
}

/** One unacknowledged send. */
interface Outgoing {
  item: PendingSend;
  waiters: Waiter[];
  /** Persisted in the store: may be written to a socket. */
  ready: boolean;
  /** Generation of the socket it was last written to (0: none). */
  gen: number;
  /** Not to be written before this time (ms since epoch): a transient refusal's retry-after. */
  notBefore: number;
  /** When the first transient refusal of this send came (0: none): bounds the total wait by retry.maxWaitMs. */
  firstRefusal: number;
  /**
   * In flight on the current socket, and an earlier send in its scope was refused after it was written: the
   * server's barrier most likely refuses it too, but it may have been accepted first. Until its own answer
   * comes, nothing later to its recipient is written (that could overtake its resend).
   */
  doubt: boolean;
}

/** What the outbox tells the app about, besides settling send() promises. */
export interface OutboxEvents {
  ack(e: SentEvent): void;
  retry(e: RetryEvent): void;
  /** A send refused for good that no send() call waits for (one resumed from the store). */
  error(e: IrisError): void;
}

export interface OutboxOptions {
  queue: StoreQueue;
  link: LinkSource;
  events: OutboxEvents;
  /** Unacknowledged sends kept before add() refuses with outbox_full. */
  maxOutbox: number;
  /** See IrisClientOptions.retry. */
  retry: false | { maxWaitMs?: number };
}

/**
 * The sending half: keeps every send (in memory and in the store) until the server acks it, writes them to the
 * current connection in order (pipelined, paced and retried after "not now" refusals) and writes them again,
 * with the same ids, on the next connection.
 */
export class Outbox {
  private readonly items = new Map<string, Outgoing>();
  /** Transient send refusals are retried here (false: send() rejects with them). */
  private readonly retrySends: boolean;
  private readonly retryMaxWaitMs: number;
  /** No send is written before this time (rate_limited and the like concern the whole user). */
  private sendsPausedUntil = 0;
  /** Sends that may be in flight at once now (retries on): AIMD between 1 and MAX_SENDS_IN_FLIGHT. */
  private sendWindow = MAX_SENDS_IN_FLIGHT;
  /**
   * After a rate_limited refusal the bucket is empty and refills one token every ~retryAfter ms: sends are then
   * written at most one per paceMs (the largest retryAfter seen since) instead of in bursts that the barrier
   * would mostly refuse. 0: not pacing. Reset when every send is acked (the bucket refills while idle).
   */
  private paceMs = 0;
  private nextSendAt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryAt = 0;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly o: OutboxOptions) {
    this.retrySends = o.retry !== false;
    this.retryMaxWaitMs = Math.max(0, (o.retry === false ? undefined : o.retry.maxWaitMs) ?? 120_000);
  }

  /** Sends not yet acknowledged by the server. */
  get size(): number {
    return this.items.size;
  }

  /** Takes over the sends the store kept: they are older than anything added since, so they go first. */
  restore(stored: PendingSend[]): void {
    const fresh = [...this.items.entries()];
    this.items.clear();
    for (const item of stored) {
      if (!fresh.some(([id]) => id === item.id)) this.items.set(item.id, { item, waiters: [], ready: true, gen: 0, notBefore: 0, firstRefusal: 0, doubt: false });
    }
    for (const [id, o] of fresh) this.items.set(id, o);
  }

  /** Stores a send, then writes it when its turn comes; resolves with the server's ack. */
  add(id: string, to: string, body: Uint8Array, ref?: MessageRef): Promise<SendAck> {
    const existing = this.items.get(id);
    if (existing) {
      // The same id while the first is still in flight: one message, one answer for both callers.
      return new Promise((resolve, reject) => existing.waiters.push({ resolve, reject }));
    }
    if (this.items.size >= this.o.maxOutbox) {
      return Promise.reject(new IrisError('outbox_full', `${this.items.size} sends are waiting for their acks`, { ref: id }));
    }
    return new Promise<SendAck>((resolve, reject) => {
      const o: Outgoing = { item: { id, to, body, createdAt: Date.now(), ...(ref && { ref }) }, waiters: [{ resolve, reject }], ready: false, gen: 0, notBefore: 0, firstRefusal: 0, doubt: false };
      this.items.set(id, o);
      this.o.queue.run(
        (st) => st.putPending(o.item),
        () => {
          o.ready = true;
          this.pump();
        },
        (e) => {
          this.items.delete(id);
          this.settleDrain();
          reject(new IrisError('internal', `store: ${errText(e)}`, { ref: id }));
        },
      );
    });
  }

  /** Resolves once every send has been acknowledged or refused. */
  drain(): Promise<void> {
    if (this.items.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** The server acked a send. */
  acked(f: WireSendAck): void {
    const o = this.items.get(f.id);
    if (!o) return; // a duplicate answer (the send was written twice); already settled
    this.items.delete(f.id);
    this.o.queue.run((st) => st.deletePending(f.id));
    const ack: SendAck = { id: f.id, msg: f.msg, ts: f.ts, dup: f.dup };
    for (const w of o.waiters) w.resolve(ack);
    this.o.events.ack({ ...ack, to: o.item.to });
    this.settleDrain();
    // Accepted in order (a send the server took before refusing an earlier one would have been refused by
    // its barrier): it needs no resend, and the window may grow.
    if (this.sendWindow < MAX_SENDS_IN_FLIGHT) this.sendWindow++;
    this.pump();
  }

  /**
   * An error frame whose ref may name a send. True when it did: the send is then retried later or settled with
   * the error. Also true for a late "not now" about a send already acked (the answer to an extra copy of it,
   * written again after a frame-rate refusal, say): nothing is left to do for it.
   */
  refused(f: ErrorFrame & { ref: string }): boolean {
    const o = this.items.get(f.ref);
    if (!o) return false;
    if (this.retryLater(o, f)) return true;
    // Refused for good (or retries are off, or waited retry.maxWaitMs already).
    const err = errorOfFrame(f);
    this.items.delete(f.ref);
    const id = f.ref;
    this.o.queue.run((st) => st.deletePending(id), () => {}, () => {});
    for (const w of o.waiters) w.reject(err);
    if (o.waiters.length === 0) this.o.events.error(err);
    this.settleDrain();
    this.pump();
    return true;
  }

  /** A "not now" about a send this outbox no longer holds: the answer to an extra copy of an acked send. */
  isLateRefusal(f: ErrorFrame): boolean {
    return TRANSIENT_SEND_ERRORS.has(f.code);
  }

  /**
   * The server refused a frame for the connection's frame rate, unread: if it was a send, no answer will come
   * for it. Pause all sends for retryAfter, then write everything that was in flight again, in order (answers
   * to the first copies still count; duplicates are acked by the server's dedup).
   */
  frameRateRefused(gen: number, retryAfter: number | undefined): void {
    if (!this.retrySends) return;
    const wait = Math.max(1, retryAfter ?? DEFAULT_SEND_RETRY_MS);
    const now = Date.now();
    this.sendWindow = 1;
    this.sendsPausedUntil = Math.max(this.sendsPausedUntil, now + wait);
    for (const o of this.items.values()) {
      if (o.gen !== gen) continue;
      o.gen = 0;
      o.doubt = false;
    }
    this.pump();
  }

  /** Settles every waiting send() with `err`; the sends themselves stay (and stay in the store). */
  rejectAll(err: IrisError): void {
    for (const o of this.items.values()) {
      const ws = o.waiters;
      o.waiters = [];
      for (const w of ws) w.reject(err.withRef(o.item.id));
    }
  }

  /** Stops the timer of a paused or paced write (closed, or given up): the next connection writes them. */
  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /**
   * Writes every send that may go now, oldest first. With `retry: false` every send is written at once, as soon
   * as it is stored. With retries on (the default) sends are pipelined, up to `sendWindow` in flight, and the
   * order of send() calls to one recipient stays the order in which the server accepts them:
   * - the server keeps a barrier per connection (docs/PROTOCOL.md 9.3): after refusing send X with "not now"
   *   it refuses every later send in X's scope until X comes again;
   * - so after such a refusal this client writes nothing in the scope (every recipient, or X's for inbox_full)
   *   until retryAfter passed, then writes X and what follows it again in their original order;
   * - a send that was in flight behind X (`doubt`) holds back later sends to its recipient until its own
   *   answer comes: a refusal (then it is written again in its place) or an ack (it was accepted in order).
   */
  pump(): void {
    const s = this.o.link.current();
    if (s === null) return;
    if (!this.retrySends) {
      for (const o of this.items.values()) if (o.ready && o.gen !== s.gen) this.writeSend(s, o);
      return;
    }
    const now = Date.now();
    let inFlight = 0;
    for (const o of this.items.values()) if (o.gen === s.gen) inFlight++;
    const held = new Set<string>();
    let wake = Infinity;
    for (const o of this.items.values()) {
      const to = o.item.to;
      if (held.has(to)) continue;
      if (!o.ready) {
        held.add(to); // not stored yet: nothing later to its recipient overtakes it
        continue;
      }
      if (o.gen === s.gen) {
        if (o.doubt) held.add(to);
        continue;
      }
      const at = Math.max(o.notBefore, this.sendsPausedUntil);
      if (at > now) {
        wake = Math.min(wake, at);
        held.add(to);
        continue;
      }
      if (inFlight >= this.sendWindow) break; // the rest follow as answers come, in order
      if (this.paceMs > 0) {
        if (now < this.nextSendAt) {
          wake = Math.min(wake, this.nextSendAt);
          break;
        }
        this.nextSendAt = now + this.paceMs;
      }
      this.writeSend(s, o);
      inFlight++;
    }
    if (wake !== Infinity && (!this.retryTimer || wake < this.retryAt)) {
      this.stop();
      this.retryAt = wake;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.pump();
      }, wake - now);
    }
  }

  private writeSend(s: Link, o: Outgoing): void {
    o.gen = s.gen;
    o.doubt = false;
    s.write({ t: 'send', id: o.item.id, to: o.item.to, body: o.item.body, ...(o.item.ref && { ref: o.item.ref }) });
  }

  /**
   * A "not now" refusal (rate_limited, inbox_full, outbox_full, unavailable): keeps the send to write it again,
   * with the same id, after the server's retry-after, and marks the sends written after it in its scope as in
   * doubt (see pump). False when retries are off, the code is final, or the send has waited
   * retry.maxWaitMs since its first refusal: then send() rejects with the error.
   */
  private retryLater(o: Outgoing, f: ErrorFrame): boolean {
    if (!this.retrySends || !TRANSIENT_SEND_ERRORS.has(f.code)) return false;
    const now = Date.now();
    if (o.firstRefusal === 0) o.firstRefusal = now;
    const wait = Math.max(1, f.retryAfter ?? DEFAULT_SEND_RETRY_MS);
    if (now + wait - o.firstRefusal > this.retryMaxWaitMs) return false;
    const s = this.o.link.current();
    // The first refusal of a run (not one that only echoes the server's barrier): back off the window.
    if (!o.doubt) {
      this.sendWindow = Math.max(1, Math.floor(this.sendWindow / 2));
      if (f.code === 'rate_limited') this.paceMs = Math.min(MAX_PACE_MS, Math.max(this.paceMs, wait));
    }
    o.gen = 0;
    o.doubt = false;
    const scope = f.code === 'inbox_full' ? o.item.to : null;
    if (scope !== null) o.notBefore = now + wait;
    else this.sendsPausedUntil = Math.max(this.sendsPausedUntil, now + wait);
    if (s) {
      let after = false;
      for (const x of this.items.values()) {
        if (x === o) after = true;
        else if (after && x.gen === s.gen && (scope === null || x.item.to === scope)) x.doubt = true;
      }
    }
    this.o.events.retry({ id: o.item.id, to: o.item.to, code: f.code, retryAfter: wait });
    this.pump();
    return true;
  }

  private settleDrain(): void {
    if (this.items.size > 0) return;
    this.paceMs = 0;
    this.sendWindow = MAX_SENDS_IN_FLIGHT;
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of ws) w();
  }
}
