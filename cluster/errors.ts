import { StorageFullError } from '../core/ports.js';

/**
 * This node may no longer write a partition: its lease lapsed or was taken over (cluster/lease.ts), or the log
 * refused its append because another owner appended first (cluster/log.ts, "wrong last sequence"). Nothing of
 * the refused write was kept; the node must stop serving the partition and drop its local view of it (a new
 * owner, possibly this node again later, rebuilds the view from snapshot + log).
 */
export class FencedError extends Error {
  override readonly name = 'FencedError';
  constructor(
    message: string,
    readonly partition: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * An append's outcome is unknown (no answer from JetStream after every retry with the same Nats-Msg-Id): the
 * record may or may not be in the log. The writer stops (like FencedError) and whoever owns the partition next
 * learns the truth by replaying; clients retry with their idempotency keys.
 */
export class AppendUnknownError extends Error {
  override readonly name = 'AppendUnknownError';
  constructor(
    message: string,
    readonly partition: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * What a commit on a partition that stopped being served here rejects with (onprem/cluster/host.ts): the core's
 * StorageFullError, because the core already answers that one the right way, `unavailable` with a retry-after and
 * nothing acked, and the client retries with its idempotency key (reaching the new owner after its reconnect).
 * Whether an append that was in flight still landed is for the new owner to say (the retry is then a duplicate).
 */
export class PartitionUnavailableError extends StorageFullError {
  constructor(partition: number, options?: { cause?: unknown }) {
    super(`partition ${partition} is not served here any more; retry`, 1000, options);
    Object.defineProperty(this, 'name', { value: 'PartitionUnavailableError' });
  }
}
