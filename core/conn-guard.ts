import type { ErrorCode } from '../protocol/index.js';
import { TokenBucket } from './ratelimit.js';

/**
 * What one connection may cost the shard it talks to, whatever the user's other sockets do. Without it a client
 * that never reads could make the server queue a pong or an error frame for every frame it sends, without
 * bound (seen: one worker at 2.9 GB in 60 s, other users' acks delayed by seconds).
 *
 * - Every frame takes a token from the connection's own bucket (the per-user send bucket only counts sends).
 * - Frames refused for the client's own fault count in a row; a frame handled cleanly resets the count.
 *   Past the limit the connection is closed with 4002 too_many_errors. Frame-rate refusals count on their own
 *   and start again only after a second without one.
 * - Replies are bounded in bytes by the adapter's view of what is still queued on the socket (Conn.queuedBytes).
 * - After a "not now" send refusal, later sends wait behind the refused one (SendBarrier, below). Those
 *   refusals are back-pressure: like every rate_limited / inbox_full / outbox_full / unavailable of a send,
 *   they never count towards 4002.
 *
 * Kept in memory: a shard that hibernates or restarts starts a connection afresh, which only ever errs
 * towards letting a client talk.
 */
export interface ConnLimits {
  framesPerSec: number;
  frameBurst: number;
  maxErrorsInRow: number;
}

/** Error codes that say "this client sent something it must not": they count towards too_many_errors. */
const CLIENT_FAULTS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'bad_frame',
  'frame_too_large',
  'unknown_type',
  'invalid_field',
  'hello_required',
  'bad_state',
  'bad_ack',
]);

/**
 * A frame-rate refusal more than this long after the previous one starts the count again: the client slowed
 * down. A flooder is refused continuously, so its count only grows, whatever its rate above the limit (a count
 * reset by every frame the refill lets through would never reach the limit).
 */
const QUIET_MS = 1_000;

export class ConnGuard {
  private readonly frames: TokenBucket;
  private errorsInRow = 0;
  private rateRefusals = 0;
  private lastRateRefusal = Number.NEGATIVE_INFINITY;
  /** Set once the core closed this connection: frames still in flight from it are dropped unanswered. */
  closed = false;
  /** Holds back later sends after a "not now" refusal, so that acceptance order is send order (SendBarrier). */
  readonly barrier = new SendBarrier();

  constructor(
    private readonly limits: ConnLimits,
    now: number,
  ) {
    this.frames = new TokenBucket(limits.framesPerSec, limits.frameBurst, now);
  }

  /** 0 when the frame may be handled, else milliseconds until the connection may send another. */
  admit(now: number): number {
    const wait = this.frames.take(now);
    if (wait > 0) {
      if (now - this.lastRateRefusal >= QUIET_MS) this.rateRefusals = 0;
      this.rateRefusals++;
      this.lastRateRefusal = now;
    }
    return wait;
  }

  /** True when the connection was refused for its frame rate maxErrorsInRow times without a quiet second: 4002. */
  get overRate(): boolean {
    return this.rateRefusals >= this.limits.maxErrorsInRow;
  }

  /** Counts a refusal for the client's fault; true when the connection has now earned a 4002 close. */
  refused(code: ErrorCode): boolean {
    if (!CLIENT_FAULTS.has(code)) return false;
    return ++this.errorsInRow >= this.limits.maxErrorsInRow;
  }

  /** A frame was handled without a client-fault refusal. */
  ok(): void {
    this.errorsInRow = 0;
  }
}

/** A send refusal that raises a barrier: "not now", with a retry-after. */
export type BarrierCode = 'rate_limited' | 'inbox_full' | 'outbox_full' | 'unavailable';

interface Barrier {
  /** Client message id of the send whose refusal raised it: its resend is handled normally. */
  id: string;
  code: BarrierCode;
  /** When the refused send may be sent again (its retryAfter). */
  retryAt: number;
  /** When the barrier lifts on its own: retryAt plus a grace of max(BARRIER_GRACE_MS, retryAfter). */
  until: number;
}

/** Least grace after a refused send's retryAfter before its barrier lifts without a resend. */
export const BARRIER_GRACE_MS = 1_000;

/**
 * The send barrier of one connection (docs/PROTOCOL.md 8.4, 9.3): keeps the acceptance order of a pipelining
 * client equal to its send order across "not now" refusals. Without it, send m1 could be refused (the bucket
 * is empty) while m2, a moment later on the same connection, finds a refilled token and is accepted: m2 before
 * m1, though the client sent m1 first.
 *
 * After a send X is refused with a retryable code, every later send on the connection in the refusal's scope —
 * every recipient, or only X's for inbox_full — is refused with the same code and the remaining retryAfter,
 * without spending a token or writing anything, until the resend of X is accepted (a refusal of it renews
 * the barrier), or `until` passed (the client gave up on X), or the connection is gone. Duplicates of accepted
 * sends are acked before this check and change nothing (but a duplicate of X itself lifts its barrier: X was
 * accepted after all).
 *
 * Kept in memory, like the rest of ConnGuard: a Durable Object that hibernates forgets its barriers, which
 * only errs towards accepting a send. That cannot reorder a conforming client (the SDK): after a refusal it
 * writes nothing new in the refusal's scope before the refused send is written again, first, after retryAfter;
 * and the sends it had in flight behind the refused one arrive right after it, long before an object goes idle
 * enough to hibernate (a restart that loses the memory closes the sockets with it).
 */
export class SendBarrier {
  private all: Barrier | null = null;
  /** Created by the first inbox_full refusal: one empty Map per connection was ~180 bytes of idle memory. */
  private byRecipient: Map<string, Barrier> | null = null;

  /** The refusal for a send that a barrier holds back, or null when the send may be handled. */
  check(id: string, to: string, now: number): { code: BarrierCode; retryAfter: number } | null {
    if (this.all === null && (this.byRecipient === null || this.byRecipient.size === 0)) return null; // the hot path: no barrier
    const all = this.live(this.all, now);
    if (all && all.id !== id) return { code: all.code, retryAfter: Math.max(1, all.retryAt - now) };
    const one = this.live(this.byRecipient?.get(to), now);
    if (one && one.id !== id) return { code: one.code, retryAfter: Math.max(1, one.retryAt - now) };
    return null;
  }

  /** Send `id` to `to` was refused with a retryable code: raise (or renew) the barrier of that scope. */
  refused(id: string, to: string, code: BarrierCode, retryAfter: number, now: number): void {
    const b: Barrier = { id, code, retryAt: now + retryAfter, until: now + retryAfter + Math.max(BARRIER_GRACE_MS, retryAfter) };
    if (code === 'inbox_full') {
      (this.byRecipient ??= new Map()).set(to, b);
      // Only that conversation waits now: a user-wide barrier held by the same send is over.
      if (this.all?.id === id) this.all = null;
    } else {
      this.all = b;
    }
  }

  /** Send `id` was accepted: the barriers it held lift. */
  accepted(id: string, to: string): void {
    if (this.all?.id === id) this.all = null;
    if (this.byRecipient?.get(to)?.id === id) this.byRecipient.delete(to);
  }

  private live(b: Barrier | null | undefined, now: number): Barrier | null {
    if (!b) return null;
    if (b.until > now) return b;
    // Lifted by time: the client gave up on the refused send (or never resent it).
    if (b === this.all) this.all = null;
    else if (this.byRecipient !== null) for (const [to, x] of this.byRecipient) if (x === b) this.byRecipient.delete(to);
    return null;
  }
}
