/** Reconnect delays: exponential growth from baseMs up to maxMs, with jitter so clients do not reconnect in step. */
export interface BackoffOptions {
  /** First delay (before jitter). Default 500 ms. */
  baseMs?: number;
  /** Ceiling of the delay. Default 30 s. */
  maxMs?: number;
}

export const DEFAULT_BACKOFF = { baseMs: 500, maxMs: 30_000 } as const;

/**
 * Delay before reconnect attempt number `attempt` (0 for the first retry): "equal jitter", a uniform draw
 * in [d/2, d] where d = min(maxMs, baseMs * 2^attempt). Never 0, so a flapping server is not hammered.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = Math.max(1, opts.baseMs ?? DEFAULT_BACKOFF.baseMs);
  const max = Math.max(base, opts.maxMs ?? DEFAULT_BACKOFF.maxMs);
  const d = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(d / 2 + (random() * d) / 2);
}
