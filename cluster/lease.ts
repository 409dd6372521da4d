import type { KV } from '@nats-io/kv';
import { isWrongLastSequence } from './nats.js';

/**
 * Partition leases in a JetStream KV bucket (issue 13), renewed per NODE, not per partition.
 *
 * Two kinds of keys, every write a compare-and-set on the entry's revision (kv.create for a key never written,
 * kv.update with the revision read otherwise), so of two writers racing exactly one lands:
 * - `l.<node>`, the node's lease session `{"session":..,"ms":..}`: the only key renewed, every renewMs. A node
 *   that starts (or lost its session) writes a new session id.
 * - `p.<partition>`, the owner `{"node":..,"session":..,"ms":..}`: written when a partition is taken or handed
 *   over, never renewed. A partition is held while the session it names is the live one of its node.
 * So an idle cluster writes one key per node per renewMs whatever the partition count (it was one per partition:
 * 341 KV writes/s per node at the default 1,024 partitions over 3 nodes, ~0.7 cores of Iris CPU for nothing).
 *
 * Time without synchronized clocks: nobody compares wall-clock timestamps across machines. A CONTENDER for a
 * partition whose owner's session looks alive reads revision R of `l.<owner>`, starts a local timer when the
 * answer arrives, and if, a whole lease later, the key still has revision R, ends the session: it writes a dead
 * mark over R (compare-and-set: if the owner renewed meanwhile, the write fails and the wait starts over). Only
 * then may it take the partitions that name that session. The HOLDER counts its validity from the moment it SENT
 * the write that created its latest revision, which is before any contender could have read it, and stops
 * serving every partition at sent + leaseMs - safetyMs. So the holder's validity always ends before any
 * takeover, given only that local clocks run at about the same RATE (safetyMs covers the drift); a renewal sent
 * after the dead mark fails, and the holder learns it lost everything. The log's compare-and-set
 * (cluster/log.ts) is the second, independent fence, which needs no timing at all.
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
  /**
   * Lists the nodes that have a lease session key (ClusterNode: the bucket stream's subjects, no consumer). When
   * given, every node watches every session all the time (every leaseMs/4), so a contender has usually been
   * watching a dead node's session since before it died: the takeover waits one lease from the last renewal it
   * saw instead of one lease from when it started to want the partition (failover about a lease shorter).
   */
  sessions?: () => Promise<string[]>;
}

interface OwnerValue {
  node: string;
  session?: string;
  ms: number;
}

interface SessionValue {
  session: string;
  ms: number;
  /** Written by a contender that saw the session unrenewed for a whole lease: it is over. */
  dead?: true;
}

export interface Held {
  partition: number;
  /** Revision of the partition's owner key as this node wrote it (names the ownership term in the log's claim). */
  revision: number;
  /** Local monotonic time until which this node may serve the partition without another renewal. */
  validUntil: number;
}

export type LostReason = 'taken' | 'expired' | 'released';

export function leaseKey(partition: number): string {
  return `p.${partition}`;
}

export function sessionKey(node: string): string {
  return `l.${node}`;
}

interface Session {
  id: string;
  revision: number;
  validUntil: number;
}

export class Leases {
  /** Partition -> revision of its owner key. Valid only while `session` is. */
  private readonly held = new Map<number, number>();
  private readonly lostListeners: ((partition: number, reason: LostReason) => void)[] = [];
  private readonly now: () => number;
  private readonly renewMs: number;
  private readonly safetyMs: number;
  private session: Session | null = null;
  private starting: Promise<Session> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private renewing: Promise<void> | null = null;
  private closed = false;
  /** For every node's session key: the revision last seen and the local time it was FIRST seen. */
  private readonly observed = new Map<string, { revision: number; at: number }>();
  private watcher: ReturnType<typeof setTimeout> | null = null;
  /** Fires at the session's validity end, whatever a renewal in flight is doing (a request to an unreachable server can take longer than the lease). */
  private expiry: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly kv: KV,
    private readonly opts: LeaseOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.renewMs = opts.renewMs ?? Math.floor(opts.leaseMs / 3);
    this.safetyMs = opts.safetyMs ?? Math.floor(opts.leaseMs / 10);
    if (opts.sessions) this.watchSessions(opts.sessions);
  }

  /** Records revision `revision` of `node`'s session as seen now, unless it was seen before; returns when first seen. */
  private observe(node: string, revision: number): number {
    const o = this.observed.get(node);
    if (o && o.revision === revision) return o.at;
    const at = this.now();
    this.observed.set(node, { revision, at });
    return at;
  }

  private watchSessions(list: () => Promise<string[]>): void {
    const tick = async () => {
      try {
        for (const node of await list()) {
          const e = await this.kv.get(sessionKey(node));
          if (e && e.operation === 'PUT') this.observe(node, e.revision);
        }
      } catch {
        // NATS unreachable: observations just stop advancing (a takeover then waits longer, never less).
      }
      if (!this.closed) this.watcher = setTimeout(() => void tick(), Math.max(50, Math.floor(this.opts.leaseMs / 4)));
    };
    void tick();
  }

  /** Called when this node stops holding a partition (it must stop serving it at once). */
  onLost(fn: (partition: number, reason: LostReason) => void): void {
    this.lostListeners.push(fn);
  }

  /** True while this node holds the partition's lease and it has not run out. */
  holds(partition: number): boolean {
    return this.held.has(partition) && this.session !== null && this.now() < this.session.validUntil;
  }

  get(partition: number): Held | undefined {
    const revision = this.held.get(partition);
    if (revision === undefined || !this.session) return undefined;
    return { partition, revision, validUntil: this.session.validUntil };
  }

  /** This node's live session, started (a new id written to `l.<node>`) if it has none. */
  private live(): Promise<Session> {
    if (this.session && this.now() < this.session.validUntil) return Promise.resolve(this.session);
    // Ran out before its expiry timer fired: what it held is lost before a new session may hold anything.
    if (this.session) this.end('expired');
    this.starting ??= this.start().finally(() => (this.starting = null));
    return this.starting;
  }

  private async start(): Promise<Session> {
    if (this.closed) throw new Error('leases closed');
    const id = `${this.opts.node}.${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 10)}`;
    const value = JSON.stringify({ session: id, ms: this.opts.leaseMs } satisfies SessionValue);
    const key = sessionKey(this.opts.node);
    const sent = this.now();
    const e = await this.kv.get(key);
    const revision = e ? await this.kv.update(key, value, e.revision) : await this.kv.create(key, value);
    const s: Session = { id, revision, validUntil: sent + this.opts.leaseMs - this.safetyMs };
    this.session = s;
    this.schedule();
    this.armExpiry();
    return s;
  }

  /**
   * One attempt: takes the partition if it is free (never written, handed over, or naming a session that is
   * over), and reports the current holder otherwise. Never waits for a lapse; acquire() does.
   */
  async tryAcquire(partition: number): Promise<{ won: true; held: Held } | { won: false; owner: string; revision: number; ms: number }> {
    const key = leaseKey(partition);
    const e = await this.kv.get(key);
    const cur = e && e.operation === 'PUT' && e.length > 0 ? e.json<OwnerValue>() : null;
    if (cur && cur.node !== '' && (await this.sessionAlive(cur))) return { won: false, owner: cur.node, revision: e!.revision, ms: cur.ms };
    const s = await this.live();
    const value = JSON.stringify({ node: this.opts.node, session: s.id, ms: this.opts.leaseMs } satisfies OwnerValue);
    try {
      const rev = e ? await this.kv.update(key, value, e.revision) : await this.kv.create(key, value);
      if (this.session !== s) throw new Error('lease session ended while taking the partition');
      this.held.set(partition, rev);
      return { won: true, held: { partition, revision: rev, validUntil: s.validUntil } };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      const now = await this.kv.get(key);
      const v = now?.json<OwnerValue>();
      return { won: false, owner: v?.node ?? '', revision: now?.revision ?? 0, ms: v?.ms ?? 0 };
    }
  }

  /** Whether the session an owner key names is still the live one of its node (not replaced, not marked dead). */
  private async sessionAlive(owner: OwnerValue): Promise<boolean> {
    // Keys of the per-partition leases before sessions name no session: upgrading from them stops every node first
    // (docs/OPERATIONS.md), so no such holder is alive.
    if (owner.session === undefined) return false;
    if (owner.node === this.opts.node && this.session?.id !== owner.session) return false; // an earlier run of this node
    const e = await this.kv.get(sessionKey(owner.node));
    const v = e && e.operation === 'PUT' && e.length > 0 ? e.json<SessionValue>() : null;
    return v !== null && v.session === owner.session && v.dead !== true;
  }

  /**
   * Takes the partition: at once if it is free, otherwise once its owner's session has kept the same revision for
   * a whole lease (the owner stopped renewing) and this node ended it. Resolves when this node holds it; rejects
   * if `signal` aborts or the bucket cannot be reached.
   */
  async acquire(partition: number, signal?: AbortSignal): Promise<Held> {
    for (;;) {
      if (signal?.aborted || this.closed) throw signal?.reason ?? new Error('leases closed');
      if (this.holds(partition)) return this.get(partition)!;
      const tried = await this.tryAcquire(partition);
      if (tried.won) return tried.held;
      const se = await this.kv.get(sessionKey(tried.owner));
      const since = se ? this.observe(tried.owner, se.revision) : this.now();
      const wait = Math.max(this.opts.leaseMs, tried.ms);
      if (se && this.now() >= since + wait) {
        // The owner left revision R of its session in place for a whole lease: end the session (compare-and-set
        // on R, so a renewal that lands first wins), then the next attempt finds its partitions free.
        const v = se.json<SessionValue>();
        try {
          await this.kv.update(sessionKey(tried.owner), JSON.stringify({ ...v, dead: true } satisfies SessionValue), se.revision);
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
        continue;
      }
      // Look again every quarter lease (not only at the lapse): a holder that hands over is followed at once.
      const left = se ? since + wait - this.now() : this.opts.leaseMs / 4;
      await delay(Math.max(1, Math.min(left, this.opts.leaseMs / 4)), signal);
    }
  }

  private armExpiry(): void {
    if (this.expiry) clearTimeout(this.expiry);
    this.expiry = null;
    const s = this.session;
    if (!s || this.closed) return;
    this.expiry = setTimeout(() => {
      this.expiry = null;
      if (this.session !== s) return;
      if (this.now() >= s.validUntil) this.end('expired');
      else this.armExpiry(); // renewed meanwhile
    }, Math.max(0, s.validUntil - this.now()));
  }

  /** Next renewal of the session, or the expiry check if that comes first. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const s = this.session;
    if (!s || this.closed) return;
    this.timer = setTimeout(() => void this.renew(s), Math.max(0, Math.min(this.renewMs, s.validUntil - this.now())));
  }

  private async renew(s: Session): Promise<void> {
    this.timer = null;
    if (this.session !== s || this.closed) return;
    if (this.now() >= s.validUntil) return this.end('expired');
    const sent = this.now();
    let taken = false;
    this.renewing = (async () => {
      try {
        s.revision = await this.kv.update(sessionKey(this.opts.node), JSON.stringify({ session: s.id, ms: this.opts.leaseMs } satisfies SessionValue), s.revision);
        s.validUntil = Math.max(s.validUntil, sent + this.opts.leaseMs - this.safetyMs);
      } catch (err) {
        // Refused: a contender ended the session. Unreachable or slow: keep the old validity; the next attempt
        // (or the expiry) decides.
        taken = isWrongLastSequence(err);
      }
    })();
    await this.renewing;
    this.renewing = null;
    if (this.session !== s) return;
    if (taken) return this.end('taken');
    this.schedule();
  }

  /** The session is over: every partition is lost; a later acquire starts a new session. */
  private end(reason: LostReason): void {
    this.session = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.expiry) clearTimeout(this.expiry);
    this.expiry = null;
    const lost = [...this.held.keys()];
    this.held.clear();
    for (const p of lost) for (const fn of this.lostListeners) fn(p, reason);
  }

  /** Gives the partition up at once (a planned hand-over): the next contender need not wait for a lapse. */
  async release(partition: number): Promise<void> {
    const revision = this.held.get(partition);
    if (revision === undefined) return;
    this.held.delete(partition);
    for (const fn of this.lostListeners) fn(partition, 'released');
    try {
      await this.kv.update(leaseKey(partition), JSON.stringify({ node: '', ms: 0 } satisfies OwnerValue), revision);
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
    if (this.watcher) clearTimeout(this.watcher);
    if (this.expiry) clearTimeout(this.expiry);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
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
