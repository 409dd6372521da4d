import { LIMITS, ProtocolError, type PresenceInfo } from '../protocol/index.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import type { Clock, Conn, Logger, Peers, Scheduler, Sockets } from './ports.js';

const ignore = (): undefined => undefined;

/** Watchers one subject keeps in memory; past it a watch is refused (the watcher gets no state, no pushes). */
export const MAX_WATCHERS = 100_000;

export interface PresenceDeps {
  user: string;
  peers: Peers;
  sockets: Sockets;
  clock: Clock;
  config: Config;
  scheduler: Scheduler;
  log: Logger;
  out: Delivery;
  /** The subject's setting applied to `asker` (MailboxStore.presenceVisibleTo): read when a state is handed out. */
  visibleTo(asker: string): boolean;
  lastSeen(): number;
}

/** What one presence change cost: the benchmark (scripts/bench/presence.ts) and tests read it. */
export interface PresenceCounts {
  /** Peers.watch calls made by this user as a subscriber (subscribe, renew, unwatch). */
  watchCalls: number;
  /** Peers.presenceChanged calls made by this user as a subject. */
  pushCalls: number;
  /** presence frames written to this user's sockets. */
  framesOut: number;
}

/**
 * Presence subscriptions (PROTOCOL.md 8.6), both ends, in memory only: nothing here writes a row.
 *
 * Subscriber side: `presence_subscribe` replaces the user's list; each subject's shard is asked ONCE to "watch"
 * (it answers its current state, visibility applied) and the answers go to the device at once. The watch is a
 * lease, renewed at half its length while the user stays online, dropped explicitly when its last device goes
 * offline (so an offline subscriber is never called).
 *
 * Subject side: the watchers (bounded, with lease expiry) and the state last announced to them. Online is pushed
 * at once; offline only after presenceHoldMs, with last seen, so a flap (offline and back within the hold) pushes
 * nothing at all. Pushes are best effort: one attempt, never stored; a subscriber that missed one repairs it by
 * subscribing again on its next connection. A push answered "not wanted" drops the watcher (its subscriber lost
 * its list, e.g. a Durable Object evicted).
 */
export class PresenceHub {
  readonly counts: PresenceCounts = { watchCalls: 0, pushCalls: 0, framesOut: 0 };
  // ---- subject side
  /** watcher -> lease expiry (ms). */
  private readonly watchers = new Map<string, number>();
  /** Online state the watchers were last told (or would have been: the state at creation). */
  private announced: boolean;
  /** When the user went offline, while the announcement waits out the hold; 0: nothing pending. */
  private offlineSince = 0;
  // ---- subscriber side
  private subs = new Set<string>();
  /** What this user's connections were last told of each subject (online, lastSeen): a renewal that finds otherwise pushes it. */
  private told = new Map<string, string>();
  private renewAt = 0;

  constructor(private readonly deps: PresenceDeps) {
    this.announced = this.online();
  }

  private online(except?: Conn): boolean {
    for (const c of this.deps.sockets.list()) if (c !== except && c.state) return true;
    return false;
  }

  /** The user's state as `asker` may see it; undefined when the user hides it from `asker`. */
  stateFor(asker: string | undefined, except?: Conn): PresenceInfo | undefined {
    if (asker !== undefined && !this.visibleTo(asker)) return undefined;
    const online = this.online(except);
    return { user: this.deps.user, online, lastSeen: online ? this.deps.clock.now() : this.deps.lastSeen() };
  }

  private visibleTo(asker: string): boolean {
    return this.deps.visibleTo(asker);
  }

  // ------------------------------------------------------------------ subject side

  /**
   * Another user's shard registers (on) or drops (off) its interest. Returns the state `watcher` may see, or
   * undefined (hidden, or refused because MAX_WATCHERS are registered). A hidden watcher stays registered, so a
   * later change of the setting reaches it; each push checks visibility again.
   */
  watch(watcher: string, on: boolean): PresenceInfo | undefined {
    const now = this.deps.clock.now();
    if (!on) {
      this.watchers.delete(watcher);
      return undefined;
    }
    if (!this.watchers.has(watcher) && this.watchers.size >= MAX_WATCHERS) {
      this.expire(now);
      if (this.watchers.size >= MAX_WATCHERS) {
        this.deps.log.log('warn', `${this.deps.user}: ${MAX_WATCHERS} presence watchers; refusing ${watcher}`);
        return undefined;
      }
    }
    this.watchers.set(watcher, now + this.deps.config.presenceLeaseMs);
    return this.stateFor(watcher);
  }

  /**
   * A device connected (past hello) or went away: compare with what the watchers were told. `closing` is a
   * socket on its way out that the platform may still list.
   */
  async changed(closing?: Conn): Promise<void> {
    const now = this.deps.clock.now();
    if (this.online(closing)) {
      // Back within the hold: the offline was never announced, so there is nothing to take back.
      this.offlineSince = 0;
      if (this.announced) return;
      this.announced = true;
      await this.push({ user: this.deps.user, online: true, lastSeen: now });
      return;
    }
    if (!this.announced || this.offlineSince > 0) return;
    // Nobody to tell: no hold, so a user nobody watches never arms a wake-up for presence.
    if (!this.hasWatchers(now)) {
      this.announced = false;
      return;
    }
    this.offlineSince = now;
    this.deps.scheduler.wakeAt(now + this.deps.config.presenceHoldMs);
  }

  /** Scheduled wake: announce an offline whose hold is over, renew this user's own leases, drop expired watchers. */
  async tick(): Promise<void> {
    const now = this.deps.clock.now();
    this.expire(now);
    const work: Promise<void>[] = [];
    if (this.offlineSince > 0) {
      const due = this.offlineSince + this.deps.config.presenceHoldMs;
      if (this.online()) this.offlineSince = 0;
      else if (now >= due) {
        this.offlineSince = 0;
        this.announced = false;
        work.push(this.push({ user: this.deps.user, online: false, lastSeen: this.deps.lastSeen() }));
      } else this.deps.scheduler.wakeAt(due);
    }
    if (this.subs.size > 0 && this.renewAt > 0) {
      if (now >= this.renewAt) work.push(this.renew());
      else this.deps.scheduler.wakeAt(this.renewAt);
    }
    await Promise.all(work);
  }

  /** Whether a watcher's lease is still running (an adapter keeps such a shard in memory). */
  hasWatchers(now: number): boolean {
    this.expire(now);
    return this.watchers.size > 0;
  }

  private expire(now: number): void {
    for (const [w, until] of this.watchers) if (until <= now) this.watchers.delete(w);
  }

  /** One attempt per current watcher that may see it; never stored, never retried. */
  private async push(info: PresenceInfo): Promise<void> {
    const { peers, user, log } = this.deps;
    const now = this.deps.clock.now();
    const calls: Promise<void>[] = [];
    for (const [w, until] of this.watchers) {
      if (until <= now) {
        this.watchers.delete(w);
        continue;
      }
      if (!this.visibleTo(w)) continue;
      if (w === user) {
        this.changedAt(info);
        continue;
      }
      if (!peers.presenceChanged) continue;
      this.counts.pushCalls++;
      calls.push(
        peers.presenceChanged(w, info).then(
          (wanted) => {
            if (!wanted) this.watchers.delete(w);
          },
          (e: unknown) => log.log('info', `${user}: presence push to ${w} failed (best effort)`, e),
        ),
      );
    }
    await Promise.all(calls);
  }

  // ------------------------------------------------------------------ subscriber side

  /**
   * `presence_subscribe`: replace the list, watch each subject once, answer their visible states on `conn` (in
   * frames of maxPresenceUsers) and mark `conn` as receiving pushes under `ref`. A subject that hides itself
   * yields no record at all. A subject whose shard did not answer is left out and reported with one
   * `unavailable` after the states: the client subscribes again later.
   */
  async subscribe(conn: Conn, ref: string, users: string[]): Promise<void> {
    const { config } = this.deps;
    const list = [...new Set(users)];
    if (list.length > config.presenceSubscriptions) {
      throw new ProtocolError('invalid_field', `users: at most ${config.presenceSubscriptions} presence subscriptions`, ref);
    }
    const st = conn.state!;
    conn.setState({ ...st, pref: ref });
    const next = new Set(list);
    const dropped = [...this.subs].filter((s) => !next.has(s));
    this.subs = next;
    const now = this.deps.clock.now();
    this.renewAt = now + Math.floor(config.presenceLeaseMs / 2);
    if (next.size > 0) this.deps.scheduler.wakeAt(this.renewAt);
    let failed = 0;
    const states = await Promise.all([
      // An unwatch that fails is left to the lease: the subject drops the watcher when it runs out.
      ...dropped.map((s) => this.call(s, false).then(ignore, ignore)),
      ...list.map((s) =>
        this.call(s, true).catch(() => {
          failed++;
          return undefined;
        }),
      ),
    ]);
    const visible = states.filter((s): s is PresenceInfo => s !== undefined);
    this.told = new Map(visible.map((s) => [s.user, toldKey(s)]));
    // An empty answer still tells the client the subscription is in place.
    for (let i = 0; i === 0 || i < visible.length; i += LIMITS.maxPresenceUsers) {
      this.counts.framesOut++;
      this.deps.out.reply(conn, conn.state?.enc ?? st.enc, { t: 'presence', ref, users: visible.slice(i, i + LIMITS.maxPresenceUsers) });
    }
    if (failed > 0) {
      this.deps.out.error(conn, conn.state?.enc ?? st.enc, 'unavailable', `${failed} presence subjects did not answer; subscribe again`, ref, 1000);
    }
  }

  private call(subject: string, on: boolean): Promise<PresenceInfo | undefined> {
    if (subject === this.deps.user) return Promise.resolve(this.watch(subject, on));
    const { peers } = this.deps;
    if (!peers.watch) return Promise.reject(new Error('this deployment has no presence subscriptions'));
    this.counts.watchCalls++;
    return peers.watch(subject, this.deps.user, on);
  }

  /** Lease renewal: one call per subject, all at once, every presenceLeaseMs / 2 while the user is online. */
  private async renew(): Promise<void> {
    const now = this.deps.clock.now();
    this.renewAt = now + Math.floor(this.deps.config.presenceLeaseMs / 2);
    this.deps.scheduler.wakeAt(this.renewAt);
    const states = await Promise.all([...this.subs].map((s) => this.call(s, true).catch(() => undefined)));
    // A change the subject could not push (its shard restarted or moved to another node and lost its watchers,
    // which live in memory only) is pushed now: the renewal registered the watcher again and answered the state.
    for (const s of states) if (s !== undefined && this.told.has(s.user) && this.told.get(s.user) !== toldKey(s)) this.changedAt(s);
  }

  /**
   * A subject's shard pushed a change. Returns whether this user still wants them: false when no connection
   * has subscribed (then the subject drops this watcher, and nothing else is done).
   */
  changedAt(info: PresenceInfo): boolean {
    // After this shard lost its list (evicted with sockets open) the lease runs out at the subjects; until then
    // a subscribed connection keeps getting what they push.
    if (this.subs.size > 0 && !this.subs.has(info.user)) return false;
    let wanted = false;
    this.told.set(info.user, toldKey(info));
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st?.pref === undefined) continue;
      wanted = true;
      this.counts.framesOut++;
      this.deps.out.reply(c, st.enc, { t: 'presence', ref: st.pref, users: [info] });
    }
    return wanted;
  }

  /** The user's last device went offline: drop every watch now, one call per subject, so nobody calls an offline user. */
  async lastOffline(): Promise<void> {
    const subs = [...this.subs];
    this.subs = new Set();
    this.renewAt = 0;
    await Promise.all(subs.map((s) => this.call(s, false).catch(() => undefined)));
  }
}

/** What a watcher must hear again if it changed: online, or offline since lastSeen (online's lastSeen is "now"). */
function toldKey(s: PresenceInfo): string {
  return s.online ? 'on' : `off:${s.lastSeen}`;
}
