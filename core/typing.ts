import { ProtocolError, type TypingState } from '../protocol/index.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import type { Clock, Conn, Logger, Peers, Sockets } from './ports.js';
import { TokenBucket } from './ratelimit.js';

/**
 * Typing frames one user may turn into calls, per second and in a burst, in a bucket of its own: typing never
 * spends the send bucket, so it cannot starve sends. Only frames that would call a peer take a token (a renewal
 * inside the coalescing window and an `off` with nothing shown take none). The SDK renews at most every
 * typingTtlMs / 3 per conversation, so a user typing in four conversations at once stays under it.
 */
export const TYPING_PER_SEC = 5;
export const TYPING_BURST = 20;
/**
 * How long "this peer has no online device" is believed after a call answered so (and how long that peer
 * remembers to tell us when it comes online). While it holds, typing to that peer makes no call at all; after
 * it, the next typing asks again (one call). The trade: a shorter time repairs a lost "I am online" notice sooner,
 * and costs an offline peer one call per this time per user that keeps typing to it.
 */
export const TYPING_OFFLINE_TRUST_MS = 30_000;
/** Entries one map of the hub keeps (conversations, peers, waiters); expired ones are swept first past it. */
export const MAX_TYPING_ENTRIES = 10_000;

export interface TypingDeps {
  user: string;
  peers: Peers;
  sockets: Sockets;
  clock: Clock;
  config: Config;
  log: Logger;
  out: Delivery;
  /** Hands typing in a group to the group's shard (core/group/member.ts); null when `conv` is not a group. */
  group?: (conn: Conn, conv: string, on: boolean) => Promise<void> | null;
}

/** What typing cost here: the benchmark (scripts/bench/typing.ts) and the tests read it. */
export interface TypingCounts {
  /** Peers.typing calls made by this user's shard (pushes and "I am online" notices). */
  calls: number;
  /** Pushes not made because the recipient was known to have no online device (the "never wakes" rule). */
  skipped: number;
  /** Typing frames that changed nothing (a renewal inside the window, an `off` with nothing shown). */
  coalesced: number;
  /** Typing frames dropped by the typing rate limit. */
  dropped: number;
  /** typing_state frames written to this user's sockets. */
  framesOut: number;
}

/**
 * The fan-out of one typing state: one best-effort Peers.typing call per recipient but `from`, all at once, never
 * retried. `answer` gets each recipient's reply (true: it has an online connection; undefined: the call failed).
 * TypingHub uses it for 1:1; a group's shard would call it with its online members, `from` the typing member and
 * `conv` the group's id.
 */
export async function pushTyping(
  peers: Peers,
  recipients: readonly string[],
  from: string,
  conv: string,
  on: boolean,
  answer: (to: string, online: boolean | undefined, error?: unknown) => void = () => {},
): Promise<void> {
  const typing = peers.typing?.bind(peers);
  if (!typing) return;
  await Promise.all(
    recipients
      .filter((to) => to !== from)
      .map((to) =>
        typing(to, from, conv, on).then(
          (online) => answer(to, online),
          (e: unknown) => answer(to, undefined, e),
        ),
      ),
  );
}

/** Removes expired entries (value: expiry time) once a map passes its bound. */
function sweep(map: Map<string, number>, now: number): void {
  if (map.size < MAX_TYPING_ENTRIES) return;
  for (const [k, until] of map) if (until <= now) map.delete(k);
}

/**
 * Typing indicators (PROTOCOL.md 8.8), both ends, in memory only: nothing here reads or writes a row.
 *
 * Typer side: a `typing` frame names a conversation; the state is pushed with Peers.typing to its recipients
 * (1:1: the other user), at most once per typingTtlMs / 2 while it stays on (renewals in between are coalesced,
 * and cost no token), and an `off` only when an `on` was pushed and has not expired. A recipient whose shard
 * answered "no online device" is not called again for TYPING_OFFLINE_TRUST_MS, or until it is heard from (it
 * typed to us, sent us something, or told us it came online). The connection an `on` came from sends the `off`
 * when it closes, so a crashed or vanished typer is cleared as soon as its socket is.
 *
 * Recipient side: a push reaches every connection of the user past hello as `typing_state` with the TTL (the SDK
 * turns an `on` off by itself after it). A push to a user with no connection is dropped and answered false, and
 * the typer is remembered for TYPING_OFFLINE_TRUST_MS: the user's next hello tells it, one call each.
 *
 * Groups: `pushTyping(peers, recipients, from, conv, on)` is the fan-out for any list of recipients. A group's
 * shard knows its online members, so it would call it with them, the typer as `from` and the group as `conv` (the
 * member's shard hands the frame to the group's shard instead of pushing it itself); the recipient side is the same.
 */
export class TypingHub {
  readonly counts: TypingCounts = { calls: 0, skipped: 0, coalesced: 0, dropped: 0, framesOut: 0 };
  private bucketOrNull: TokenBucket | null = null;
  // ---- typer side
  /** conv -> when this user's last pushed `on` was sent there, and from which connection. */
  private readonly typingIn = new Map<string, { at: number; conn: Conn }>();
  /** peer -> until when its "no online device" answer is believed. */
  private readonly offline = new Map<string, number>();
  // ---- recipient side
  /** `${conv} ${from}` -> when the `on` shown to this user's devices expires. */
  private readonly shown = new Map<string, number>();
  /** Users whose push found this user offline -> until when they are told of its next hello. */
  private readonly waiting = new Map<string, number>();
  /** When this hub was created: younger than the TTL, it cannot know what an earlier one showed (an eviction). */
  private readonly born: number;

  constructor(private readonly deps: TypingDeps) {
    this.born = deps.clock.now();
  }

  private get ttl(): number {
    return this.deps.config.typingTtlMs;
  }

  // ------------------------------------------------------------------ typer side

  /**
   * A `typing` frame from one of this user's connections. Never answered: a refused or dropped typing frame is
   * not worth a frame back (nothing for the client to resend; its next renewal carries the state again).
   */
  async onFrame(conn: Conn, conv: string, on: boolean): Promise<void> {
    const { user, clock } = this.deps;
    if (conv === user) throw new ProtocolError('invalid_field', 'conv: a user cannot type to itself');
    const now = clock.now();
    const cur = this.typingIn.get(conv);
    const shownThere = cur !== undefined && now < cur.at + this.ttl;
    if (on && shownThere && now - cur.at < this.ttl / 2) {
      // A renewal inside the window: the pushed `on` still holds long enough. The latest connection owns it.
      cur.conn = conn;
      this.counts.coalesced++;
      return;
    }
    if (!on && !shownThere) {
      this.typingIn.delete(conv);
      this.counts.coalesced++;
      return;
    }
    // An `off` for an `on` that was pushed is always let through: it only shortens what the peer shows.
    if (on && (this.bucketOrNull ??= new TokenBucket(TYPING_PER_SEC, TYPING_BURST, now)).take(now) > 0) {
      this.counts.dropped++;
      return;
    }
    if (on) {
      if (!this.typingIn.has(conv) && this.typingIn.size >= MAX_TYPING_ENTRIES) {
        for (const [c, s] of this.typingIn) if (now >= s.at + this.ttl) this.typingIn.delete(c);
      }
      this.typingIn.set(conv, { at: now, conn });
    } else this.typingIn.delete(conv);
    await this.to(conn, conv, on);
  }

  /** A group's shard pushes to its online members; in 1:1 the recipient names the conversation by this user. */
  private async to(conn: Conn, conv: string, on: boolean): Promise<void> {
    const viaGroup = this.deps.group?.(conn, conv, on);
    if (viaGroup) {
      this.counts.calls++;
      return viaGroup;
    }
    await this.push([conv], this.deps.user, on);
  }

  /**
   * Pushes this user's typing state to each recipient's shard, one best-effort call each, skipping this user and
   * recipients known to have no online device. `conv` is the conversation as the recipients name it: in 1:1 this
   * user, in a group the group's id. For a group, `recipients` would be its online members (the group's shard
   * has them).
   */
  async push(recipients: readonly string[], conv: string, on: boolean): Promise<void> {
    const { peers, user, clock, log } = this.deps;
    if (!peers.typing) return;
    const now = clock.now();
    const to = recipients.filter((r) => {
      const until = this.offline.get(r);
      if (until === undefined || r === user) return r !== user;
      if (until > now) {
        this.counts.skipped++;
        return false;
      }
      this.offline.delete(r);
      return true;
    });
    this.counts.calls += to.length;
    await pushTyping(peers, to, user, conv, on, (r, online, e) => {
      if (online === undefined) log.log('info', `${user}: typing to ${r} failed (best effort)`, e);
      else if (online) this.offline.delete(r);
      else {
        sweep(this.offline, now);
        if (this.offline.size < MAX_TYPING_ENTRIES) this.offline.set(r, clock.now() + TYPING_OFFLINE_TRUST_MS);
      }
    });
  }

  /** `peer` was heard from (it typed here, or its shard handed over something): ask it again next time. */
  heard(peer: string): void {
    this.offline.delete(peer);
  }

  /** A connection of this user closed: the `on`s it pushed and that still hold are turned off now. */
  async closed(conn: Conn): Promise<void> {
    const now = this.deps.clock.now();
    const stops: string[] = [];
    for (const [conv, s] of this.typingIn) {
      if (s.conn !== conn) continue;
      this.typingIn.delete(conv);
      if (now < s.at + this.ttl) stops.push(conv);
    }
    await Promise.all(stops.map((conv) => this.to(conn, conv, false)));
  }

  // ------------------------------------------------------------------ recipient side

  /**
   * Another user's shard pushes `from`'s typing state in `conv` (Peers.typing). Returns whether this user has a
   * connection past hello. An `off` is written over an `on` that was shown and has not expired, and also when
   * this hub is too young to know (the shard was evicted or restarted within the TTL: an `off` too many is ignored
   * by the SDK, one too few would leave "typing…" up to the TTL).
   */
  typingFrom(from: string, conv: string, on: boolean): boolean {
    const now = this.deps.clock.now();
    this.offline.delete(from);
    // Only clients that said they decode typing_state (hello.features); with none of those, the user counts as
    // offline for typing, and the typer's shard stops calling.
    const conns = [...this.deps.sockets.list()].filter((c) => c.state?.typing === true);
    if (conns.length === 0) {
      sweep(this.waiting, now);
      if (this.waiting.has(from) || this.waiting.size < MAX_TYPING_ENTRIES) this.waiting.set(from, now + TYPING_OFFLINE_TRUST_MS);
      return false;
    }
    const key = `${conv} ${from}`;
    if (on) {
      sweep(this.shown, now);
      this.shown.set(key, now + this.ttl);
    } else {
      const until = this.shown.get(key);
      this.shown.delete(key);
      if (until === undefined ? now - this.born >= this.ttl : until <= now) return true;
    }
    const frame: TypingState = { t: 'typing_state', conv, from, on, ttl: on ? this.ttl : 0 };
    for (const c of conns) {
      this.counts.framesOut++;
      this.deps.out.reply(c, c.state!.enc, frame);
    }
    return true;
  }

  /** A device of this user completed hello: tell the typers that found it offline, one call each. */
  async online(): Promise<void> {
    if (this.waiting.size === 0) return;
    const { peers, user, clock, log } = this.deps;
    const now = clock.now();
    const due = [...this.waiting].filter(([, until]) => until > now).map(([w]) => w);
    this.waiting.clear();
    if (!peers.typing) return;
    this.counts.calls += due.length;
    // "Not typing" is true, and is news that this user is online; nothing is shown for it there.
    await Promise.all(due.map((w) => peers.typing!(w, user, user, false).then(undefined, (e: unknown) => log.log('info', `${user}: typing notice to ${w} failed (best effort)`, e))));
  }
}
