/** What the heartbeat watches on one socket. */
export interface Liveness {
  /** ms since epoch of the last frame received / written. */
  lastRx(): number;
  lastTx(): number;
  /** Write a ping (the socket has been quiet on our side for an interval). */
  ping(): void;
  /** Nothing received for two intervals: abandon the socket. */
  dead(): void;
}

/**
 * Starts the heartbeat of one socket: a ping after `everyMs` without writing (so idle sockets through proxies
 * and the Cloudflare edge are not dropped silently), and `dead` after twice that without receiving anything.
 * Returns the function that stops it.
 */
export function startHeartbeat(everyMs: number, s: Liveness): () => void {
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - s.lastRx() >= 2 * everyMs) {
      s.dead();
      return;
    }
    if (now - s.lastTx() >= everyMs) s.ping();
  }, Math.max(5, Math.floor(everyMs / 2)));
  return () => clearInterval(timer);
}
