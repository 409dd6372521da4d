import type { ErrorCode } from '../protocol/index.js';
import { TokenBucket } from './ratelimit.js';

/**
 * What one connection may cost the shard it talks to, whatever the user's other sockets do. Without it a client
 * that never reads could make the server queue a pong or an error frame for every frame it sends, without
 * bound (seen: one worker at 2.9 GB in 60 s, other users' acks delayed by seconds).
 *
 * - Every frame takes a token from the connection's own bucket (the per-user send bucket only counts sends).
 * - Frames refused for the client's own fault count in a row; a frame handled cleanly resets the count.
 *   Past the limit the connection is closed with 4002 too_many_errors.
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

export class ConnGuard {
  private readonly frames: TokenBucket;
  private errorsInRow = 0;
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
    return this.frames.take(now);
  }

  /** Counts a refusal; true when the connection has now earned a 4002 close. */
  refused(code: ErrorCode | 'frame_rate'): boolean {
    if (code !== 'frame_rate' && !CLIENT_FAULTS.has(code)) return false;
    return ++this.errorsInRow >= this.limits.maxErrorsInRow;
  }

  /** A frame was handled without a client-fault refusal. */
  ok(): void {
    this.errorsInRow = 0;
  }
}
