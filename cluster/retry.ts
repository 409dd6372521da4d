/**
 * Retrying requests to JetStream (issue 13). Measured on nats-server 2.9.10 with the 3.4 clients: the first
 * request after the client reconnected to another server is sometimes lost (a timeout), and while a stream has
 * no leader (just created, or its leader was killed: about 1-3 s) requests get "no responders". Both pass.
 */

/**
 * No answer, or nobody to answer yet (a stream leader being elected, a connection moving): worth another try.
 * The client reports a publish that found no responder as "jetstream is not enabled" (caused by "no
 * responders"), so the cause chain is read too.
 */
export function retryable(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x !== undefined && x !== null && depth < 5; depth++) {
    const m = x instanceof Error ? `${x.name} ${x.message}` : String(x);
    if (/timeout|no responders|NoResponders|not enabled|reconnect|disconnect|not (yet )?(available|ready)|leader/i.test(m)) return true;
    x = x instanceof Error ? x.cause : undefined;
  }
  return false;
}

/** Runs fn again (with backoff) while it fails with a retryable error, for at most forMs. */
export async function withRetry<T>(fn: () => Promise<T>, forMs = 10_000): Promise<T> {
  const until = performance.now() + forMs;
  for (let i = 0; ; i++) {
    if (i > 0) await backoff(i);
    try {
      return await fn();
    } catch (e) {
      if (performance.now() >= until || !retryable(e)) throw e;
    }
  }
}

export function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.min(1000, 25 * 2 ** attempt)));
}
