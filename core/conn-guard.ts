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
