import type { KV } from '@nats-io/kv';
import { isWrongLastSequence } from './nats.js';

/**
 * Partition leases in a JetStream KV bucket (issue 13). Key `p.<partition>`, value `{"node":..,"ms":..}`; the
 * entry's revision is the compare-and-set token of every write (kv.create for a key never written, kv.update
 * with the revision read otherwise), so of two nodes racing for a partition exactly one write lands.
 *
 * Time without synchronized clocks: nobody compares wall-clock timestamps across machines. A CONTENDER that
 * reads revision R starts a local timer when the answer arrives and may take over only if, leaseMs later, the
 * key still has revision R (the holder did not renew). The HOLDER counts its lease from the moment it SENT the
 * write that created revision R, which is before the contender could have read R, and stops serving at
 * sent + leaseMs - safetyMs. So the holder's validity always ends before any contender's takeover, given only
 * that local clocks run at about the same RATE (safetyMs covers the drift). A holder that cannot renew (NATS
 * unreachable, partitioned away) therefore stops by itself: that is the fencing at the lease level. The log's
 * compare-and-set (cluster/log.ts) is the second, independent fence, which needs no timing at all.
 */

export interface LeaseOptions {
  /** This node's id (unique in the cluster). */
  node: string;
  /** How long a lease lasts without renewal. */
  leaseMs: number;
  /** Renew this often (default leaseMs / 3: two renewals may fail before the lease is at risk). */
  renewMs?: number;
  /** Subtracted from the holder's validity for clock-rate drift and scheduling delay (default leaseMs / 10). */
  safetyMs?: number;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
}

interface LeaseValue {
  node: string;
  ms: number;
}

export interface Held {
  partition: number;
  revision: number;
  /** Local monotonic time until which this node may serve the partition without another renewal. */
  validUntil: number;
}

export type LostReason = 'taken' | 'expired' | 'released';

export function leaseKey(partition: number): string {
  return `p.${partition}`;
}

export class Leases {
  private readonly held = new Map<number, Held & { timer: ReturnType<typeof setTimeout> | null; renewing: Promise<void> | null }>();
  private readonly lostListeners: ((partition: number, reason: LostReason) => void)[] = [];
  private readonly now: () => number;
  private readonly renewMs: number;
  private readonly safetyMs: number;
  private closed = false;

  constructor(
    private readonly kv: KV,
    private readonly opts: LeaseOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.renewMs = opts.renewMs ?? Math.floor(opts.leaseMs / 3);
    this.safetyMs = opts.safetyMs ?? Math.floor(opts.leaseMs / 10);
  }

  /** Called when this node stops holding a partition (it must stop serving it at once). */
  onLost(fn: (partition: number, reason: LostReason) => void): void {
    this.lostListeners.push(fn);
  }

  /** True while this node holds the partition's lease and it has not run out. */
  holds(partition: number): boolean {
    const h = this.held.get(partition);
    return h !== undefined && this.now() < h.validUntil;
  }

  get(partition: number): Held | undefined {
    const h = this.held.get(partition);
    return h && { partition: h.partition, revision: h.revision, validUntil: h.validUntil };
  }

  private value(): string {
    return JSON.stringify({ node: this.opts.node, ms: this.opts.leaseMs } satisfies LeaseValue);
  }

  /**
   * One attempt: takes the partition if its lease is free (never written, or released), and reports the current
   * holder otherwise. Never waits for a lapse; acquire() does.
   */
  async tryAcquire(partition: number): Promise<{ won: true; held: Held } | { won: false; owner: string; revision: number; ms: number }> {
    const key = leaseKey(partition);
    const e = await this.kv.get(key);
    const cur = e && e.operation === 'PUT' && e.length > 0 ? (e.json<LeaseValue>()) : null;
    if (cur && cur.node !== '') return { won: false, owner: cur.node, revision: e!.revision, ms: cur.ms };
    const sent = this.now();
    try {
      const rev = e ? await this.kv.update(key, this.value(), e.revision) : await this.kv.create(key, this.value());
      return { won: true, held: this.hold(partition, rev, sent) };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      const now = await this.kv.get(key);
      const v = now?.json<LeaseValue>();
      return { won: false, owner: v?.node ?? '', revision: now?.revision ?? 0, ms: v?.ms ?? 0 };
    }
  }

  /**
   * Takes the partition: at once if its lease is free, otherwise once the holder has left the same revision in
   * place for a whole lease (it stopped renewing). Resolves when this node holds it; rejects if `signal` aborts
   * or the bucket cannot be reached.
   */
  async acquire(partition: number, signal?: AbortSignal): Promise<Held> {
    const key = leaseKey(partition);
    let seen: { revision: number; at: number } | null = null;
    for (;;) {
      if (signal?.aborted || this.closed) throw signal?.reason ?? new Error('leases closed');
      const mine = this.held.get(partition);
      if (mine && this.holds(partition)) return this.get(partition)!;
      const tried = await this.tryAcquire(partition);
      if (tried.won) return tried.held;
      const at = this.now();
      if (seen && seen.revision === tried.revision && at >= seen.at + Math.max(this.opts.leaseMs, tried.ms)) {
        // The holder left revision R in place for a whole lease (its own, if longer): it stopped renewing.
        const sent = this.now();
        try {
          const rev = await this.kv.update(key, this.value(), tried.revision);
          return this.hold(partition, rev, sent);
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
          seen = null; // someone else renewed or took it: watch the new revision from now
          continue;
        }
      }
      if (!seen || seen.revision !== tried.revision) seen = { revision: tried.revision, at };
      // Look again every quarter lease (not only at the lapse): a holder that releases is taken at once.
      const wait = seen.at + Math.max(this.opts.leaseMs, tried.ms) - this.now();
      await delay(Math.max(1, Math.min(wait, this.opts.leaseMs / 4)), signal);
    }
  }

  private hold(partition: number, revision: number, sent: number): Held {
    const old = this.held.get(partition);
    if (old?.timer) clearTimeout(old.timer);
    const h = { partition, revision, validUntil: sent + this.opts.leaseMs - this.safetyMs, timer: null, renewing: null as Promise<void> | null };
    this.held.set(partition, h);
    this.schedule(partition);
    return { partition, revision, validUntil: h.validUntil };
  }

  /** Next renewal, or the expiry check if that comes first. */
  private schedule(partition: number): void {
    const h = this.held.get(partition);
    if (!h || this.closed) return;
    const untilExpiry = h.validUntil - this.now();
    h.timer = setTimeout(() => void this.renew(partition), Math.max(0, Math.min(this.renewMs, untilExpiry)));
  }

  private async renew(partition: number): Promise<void> {
    const h = this.held.get(partition);
    if (!h || this.closed) return;
    h.timer = null;
    if (this.now() >= h.validUntil) return this.lose(partition, 'expired');
    if (h.renewing) return this.schedule(partition);
    const sent = this.now();
    let taken = false;
    h.renewing = (async () => {
      try {
        // The revision is kept even if the lease was given up meanwhile: release() waits for this write and
        // frees the key under the revision it produced.
        h.revision = await this.kv.update(leaseKey(partition), this.value(), h.revision);
        h.validUntil = Math.max(h.validUntil, sent + this.opts.leaseMs - this.safetyMs);
      } catch (err) {
        // Refused: taken. Unreachable or slow: keep the old validity; the next attempt (or the expiry) decides.
        taken = isWrongLastSequence(err);
      }
    })();
    await h.renewing;
    h.renewing = null;
    if (this.held.get(partition) !== h) return; // lost or released meanwhile; a later acquire starts over
    if (taken) return this.lose(partition, 'taken');
    this.schedule(partition);
  }

  private lose(partition: number, reason: LostReason): void {
    const h = this.held.get(partition);
    if (!h) return;
    if (h.timer) clearTimeout(h.timer);
    this.held.delete(partition);
    for (const fn of this.lostListeners) fn(partition, reason);
  }

  /** Gives the partition up at once (a planned hand-over): the next contender need not wait for a lapse. */
  async release(partition: number): Promise<void> {
    const h = this.held.get(partition);
    if (!h) return;
    this.lose(partition, 'released');
    if (h.renewing) await h.renewing;
    try {
      await this.kv.update(leaseKey(partition), JSON.stringify({ node: '', ms: 0 } satisfies LeaseValue), h.revision);
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err; // already taken over: nothing to release
    }
  }

  /**
   * Stops renewing without releasing (what a crash looks like to the others: they wait for the lapse). Used by
   * shutdown paths that could not hand over, and by tests.
   */
  close(): void {
    this.closed = true;
    for (const h of this.held.values()) if (h.timer) clearTimeout(h.timer);
    this.held.clear();
  }
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
