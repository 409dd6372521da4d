import { Mailbox, type MailboxDeps } from '../../core/mailbox.js';
import { MailboxStore, usersToResume } from '../../core/store.js';
import type { Conn, Scheduler, Sockets } from '../../core/ports.js';
import type { PresenceInfo } from '../../protocol/index.js';
import type { ConnOwner, HeldConn } from '../conn.js';
import { describeError } from '../log.js';
import type { WorkerMetrics } from '../metrics.js';
import { ownerOf } from '../owner.js';
import { owns, type WorkerContext } from './context.js';

/**
 * The shards a worker owns: one Shard per user of this worker that is in memory, created on first use,
 * woken when its mailbox asks, forgotten when idle, and resumed after a restart (recover).
 */

/**
 * Mailboxes whose pending outbox a starting worker forwards at once (see Shards.recover); the others wait for a
 * turn. IRIS_RECOVER_CONCURRENCY overrides it only for measuring (0 = all at once, the old behaviour).
 */
const RECOVER_CONCURRENCY = (() => {
  const n = Number(process.env['IRIS_RECOVER_CONCURRENCY'] ?? '8');
  return Number.isInteger(n) && n >= 0 ? n : 8;
})();

/** What every mailbox of a worker shares. */
export type MailboxEnv = Pick<MailboxDeps, 'storage' | 'peers' | 'clock' | 'config' | 'log' | 'metrics' | 'tokens' | 'push'>;

const NO_CONNS: readonly HeldConn[] = Object.freeze([]);

/**
 * One user's shard in this worker: the mailbox, its sockets, and the bookkeeping for eviction and wake-ups.
 * It is also the mailbox's Sockets and Scheduler ports and its sockets' owner: prototype methods, so a user
 * costs no closures and their contexts (ARCHITECTURE.onprem.md "Memory").
 */
export class Shard implements Sockets, Scheduler, ConnOwner {
  readonly mailbox: Mailbox;
  /**
   * Open sockets. Replaced, never mutated (copy on write): iterating it is safe while sockets come and go,
   * and one socket costs a one-element array (most users have one or two devices online).
   */
  conns: readonly HeldConn[] = NO_CONNS;
  /** Core calls in flight (onMessage, receive, onWake, onClose): a busy mailbox is never evicted. */
  busy = 0;
  wakeAtMs: number | null = null;
  wakeTimer: ReturnType<typeof setTimeout> | null = null;
  lastUsed = Date.now();

  constructor(
    readonly host: Shards,
    readonly user: string,
    env: MailboxEnv,
  ) {
    // One literal with every field (not a spread plus three): its properties stay in the object itself.
    this.mailbox = new Mailbox({
      user,
      storage: env.storage,
      peers: env.peers,
      sockets: this,
      scheduler: this,
      clock: env.clock,
      config: env.config,
      log: env.log,
      metrics: env.metrics,
      tokens: env.tokens,
      // A push call in flight counts as work: the mailbox is not evicted (and its retry forgotten) under it.
      push: env.push && { ...env.push, background: (p) => void host.track(this, p) },
    });
  }

  list(): Iterable<Conn> {
    return this.conns;
  }

  wakeAt(ms: number): void {
    this.host.scheduleWake(this, ms);
  }

  sent(): void {
    this.host.metrics.framesOut.inc();
  }

  closing(code: number): void {
    this.host.metrics.serverCloses.inc({ code: String(code) });
  }

  add(c: HeldConn): void {
    this.conns = this.conns.length === 0 ? [c] : [...this.conns, c];
  }

  remove(c: HeldConn): void {
    const i = this.conns.indexOf(c);
    if (i < 0) return;
    if (this.conns.length === 1) {
      this.conns = NO_CONNS;
      return;
    }
    const next = new Array<HeldConn>(this.conns.length - 1);
    for (let j = 0, k = 0; j < this.conns.length; j++) if (j !== i) next[k++] = this.conns[j]!;
    this.conns = next;
  }
}

export class Shards {
  private readonly byUser = new Map<string, Shard>();
  /** What all mailboxes share (set once storage is open). */
  private env: MailboxEnv | null = null;
  readonly metrics: WorkerMetrics;
  /** Open client sockets over all shards (the listener refuses past IRIS_MAX_CONNECTIONS). */
  connCount = 0;
  /** Cluster mode: the Storage of the partition that holds `key` (one per partition, onprem/cluster/host.ts). */
  storageFor: ((key: string) => MailboxEnv['storage']) | null = null;

  constructor(private readonly ctx: WorkerContext) {
    this.metrics = ctx.metrics;
  }

  /** What every mailbox shares, once storage is open (group shards share it too: onprem/worker/groups.ts). */
  mailboxEnv(key?: string): MailboxEnv | null {
    if (this.env && this.storageFor && key !== undefined) return { ...this.env, storage: this.storageFor(key) };
    return this.env;
  }

  /** Storage is open: mailboxes can be made from now on. */
  open(env: MailboxEnv): void {
    this.env = env;
  }

  /** The worker's storage (revocation checks at the upgrade, the admin API); throws before it is open. */
  storage(user?: string): MailboxEnv['storage'] {
    if (!this.env) throw new Error('storage is not open yet');
    if (this.storageFor && user !== undefined) return this.storageFor(user);
    return this.env.storage;
  }

  /** The user's shard, loaded if it was not in memory. Throws for a user of another worker. */
  get(user: string): Shard {
    let s = this.byUser.get(user);
    if (s) return s;
    if (!owns(this.ctx, user)) throw new Error(`user ${user} is not owned by worker ${this.ctx.id}`);
    if (!this.env) throw new Error('storage is not open yet');
    const shard = new Shard(this, user, this.mailboxEnv(user)!);
    this.byUser.set(user, shard);
    this.metrics.mailboxes.set(this.byUser.size);
    return shard;
  }

  /** The user was erased (admin API): its in-memory shard, with caches of the deleted rows, goes; the next use loads afresh. */
  forget(user: string): void {
    const s = this.byUser.get(user);
    if (!s) return;
    if (s.wakeTimer) clearTimeout(s.wakeTimer);
    this.byUser.delete(user);
    this.metrics.mailboxes.set(this.byUser.size);
  }

  all(): IterableIterator<Shard> {
    return this.byUser.values();
  }

  /**
   * Counts a core call in flight for the shard: a busy mailbox is never evicted. (It used to also run onWake()
   * whenever a shard went idle, to work around a race in Mailbox.forward that the core has since fixed: that was
   * an outbox query and a forward check per client frame.)
   */
  track<T>(shard: Shard, p: Promise<T>): Promise<T> {
    shard.busy++;
    shard.lastUsed = Date.now();
    const done = () => {
      shard.busy--;
      shard.lastUsed = Date.now();
    };
    p.then(done, done);
    return p;
  }

  /** The Scheduler port of a shard (Shard.wakeAt): one timer per shard, the earliest request wins. */
  scheduleWake(shard: Shard, ms: number): void {
    if (this.ctx.draining) return;
    if (shard.wakeAtMs !== null && shard.wakeAtMs <= ms) return;
    if (shard.wakeTimer) clearTimeout(shard.wakeTimer);
    shard.wakeAtMs = ms;
    shard.wakeTimer = setTimeout(() => {
      shard.wakeAtMs = null;
      shard.wakeTimer = null;
      if (this.ctx.draining) return;
      this.track(shard, shard.mailbox.onWake()).catch((e: unknown) => this.ctx.log('warn', `wake of ${shard.user} failed: ${describeError(e)}`));
    }, Math.max(0, ms - Date.now()));
  }

  /**
   * Forgets mailboxes with no socket, no core call in flight and no wake-up pending, idle for
   * IRIS_MAILBOX_IDLE_MS. Everything a mailbox must not lose is in SQLite; what goes is its rate-limit bucket
   * (a new one starts full) and its memory of full recipients (the next send asks again). Not forgotten while
   * it holds presence watchers (memory only, core/presence.ts).
   */
  evictIdle(): void {
    const cutoff = Date.now() - this.ctx.cfg.mailboxIdleMs;
    for (const [user, s] of this.byUser) {
      // A mailbox with live presence watchers keeps them in memory only: it stays until their leases run out.
      if (s.conns.length === 0 && s.busy === 0 && s.wakeTimer === null && s.lastUsed < cutoff && !s.mailbox.presenceHub.hasWatchers(Date.now())) this.byUser.delete(user);
    }
    this.metrics.mailboxes.set(this.byUser.size);
  }

  /**
   * After a crash or restart, so nothing acked is stranded: forwards what the outboxes held when the worker stopped: every mailbox with outbox rows is woken, at most
   * RECOVER_CONCURRENCY at a time, the next when one has drained its outbox (onWake resolves then, or when
   * it backs off). All at once, a large backlog (1M pending forwards: docs/BENCHMARKS.md "Recovery") made
   * thousands of forward loops share every commit batch and event-loop turn with the users reconnecting, whose
   * first `welcome` then waited ~4 s; a few at a time keep the disk and the peers just as busy.
   */
  recover(storage?: MailboxEnv['storage']): void {
    const { ctx } = this;
    const users = usersToResume((storage ?? this.env!.storage).sql)
      .filter((user) => {
        if (owns(ctx, user)) return true;
        ctx.log('error', `outbox of ${user} is in worker ${ctx.id}'s file but ${user} belongs to worker ${ownerOf(user, ctx.workers)}`);
        return false;
      });
    if (users.length === 0) return;
    ctx.log('info', `resuming outbox forwarding for ${users.length} user(s)`);
    let next = 0;
    const wakeNext = (): void => {
      const user = users[next++];
      if (user === undefined || ctx.draining) return;
      let wake: Promise<void>;
      try {
        const s = this.get(user);
        wake = this.track(s, s.mailbox.onWake());
      } catch (e) {
        wake = Promise.reject(e);
      }
      // Never rejects: a failed resume is logged (its retry is scheduled by the core) and the next one starts.
      void wake.catch((e: unknown) => ctx.log('warn', `resume of ${user} failed: ${describeError(e)}`)).then(wakeNext);
    };
    const width = RECOVER_CONCURRENCY === 0 ? users.length : Math.min(RECOVER_CONCURRENCY, users.length);
    for (let i = 0; i < width; i++) wakeNext();
  }

  /** A user of this worker, asked by another shard. Throws if the stored last-seen cannot be read. */
  presence(user: string, asker: string): PresenceInfo {
    const loaded = this.byUser.get(user);
    if (loaded) return loaded.mailbox.presence(asker);
    // Not in memory means no socket: offline. Read last-seen without loading a mailbox for the asker's
    // sake (presence queries may name users who never connected).
    const store = new MailboxStore(this.storage(user).sql, user);
    if (!store.presenceVisibleTo(asker)) return { user, online: false, lastSeen: 0 };
    return { user, online: false, lastSeen: store.lastSeen() };
  }

  /** The user's shard if it is in memory (a presence push must not load one). */
  loaded(user: string): Shard | undefined {
    return this.byUser.get(user);
  }

  /**
   * Cluster mode: the partition of these users moved away (its lease or log was lost). Their shards go (their
   * storage is fenced) and their sockets are closed with going_away, so the clients reconnect and reach the new owner.
   */
  dropWhere(gone: (user: string) => boolean, closeCode: number): void {
    for (const [user, s] of this.byUser) {
      if (!gone(user)) continue;
      // Runs its commit now, so a planned hand-over's last append carries it (a lost partition refuses it).
      if (s.conns.length > 0) void s.mailbox.parting().catch(() => undefined);
      for (const c of s.conns) c.close(closeCode, 'the shard moved; reconnect');
      if (s.wakeTimer) clearTimeout(s.wakeTimer);
      this.byUser.delete(user);
    }
    this.metrics.mailboxes.set(this.byUser.size);
  }

  /** Draining: no wake-up fires any more. */
  stopWakes(): void {
    for (const s of this.byUser.values()) if (s.wakeTimer) clearTimeout(s.wakeTimer);
  }

  anyBusy(): boolean {
    return [...this.byUser.values()].some((s) => s.busy > 0);
  }
}
