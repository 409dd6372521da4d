/**
 * Engine settings shared by both profiles. Each has an IRIS_* environment name (wrangler.toml [vars] on
 * Cloudflare, the environment or config file on-prem); README.md lists them.
 */
export interface Config {
  /** Entries waiting in one user's inbox before senders get inbox_full. */
  inboxCap: number;
  /** Messages one user may have accepted but not yet handed to recipients before outbox_full. */
  outboxCap: number;
  /** How many of a user's most recent client message ids are remembered for idempotent retry. */
  dedupWindow: number;
  /** Token bucket for sends: sustained rate per second and burst size. */
  ratePerSec: number;
  rateBurst: number;
  /** Entries pushed to one socket and not yet acked; bounds the per-socket send queue. */
  sendWindow: number;
  /** Devices remembered per user; the least recently seen offline device is forgotten past this. */
  maxDevices: number;
  /** Retry of a failed forward: first delay and ceiling (doubling in between). */
  retryBaseMs: number;
  retryMaxMs: number;
  /** How long a sender waits before retrying a full inbox. */
  fullRetryMs: number;
  /**
   * Frames one connection may send: sustained per second and burst, all frame types (beyond: rate_limited).
   * The effective values are never below twice ratePerSec / rateBurst.
   */
  connFramesPerSec: number;
  connFrameBurst: number;
  /** Frames refused for the client's fault in a row before the connection is closed with 4002. */
  maxErrorsInRow: number;
  /**
   * Bytes queued on one socket and not yet taken by the network before the server stops writing to it and
   * closes it (4003 slow_consumer). Twice what a full sendWindow of the largest entries can hold in JSON, so a
   * client that reads never reaches it.
   */
  maxQueuedBytes: number;
  /** A connection that has not sent `hello` this long after the upgrade is closed with 4000 hello_timeout. */
  helloTimeoutMs: number;
  /**
   * Heartbeat period. On-prem sends a WebSocket ping this often and drops a socket that missed the previous
   * pong. Cloudflare cannot ping without waking the object, so it closes (4004 idle_timeout) a socket from
   * which nothing — no frame, not even the `{"t":"ping"}` heartbeat — arrived for 2 x this. Either way a
   * silent client is gone within 2 x pingMs.
   */
  pingMs: number;
}

export const DEFAULT_CONFIG: Config = {
  inboxCap: 10_000,
  outboxCap: 10_000,
  dedupWindow: 10_000,
  ratePerSec: 50,
  rateBurst: 200,
  sendWindow: 256,
  maxDevices: 16,
  retryBaseMs: 250,
  retryMaxMs: 30_000,
  fullRetryMs: 5_000,
  connFramesPerSec: 500,
  connFrameBurst: 2_000,
  maxErrorsInRow: 20,
  maxQueuedBytes: 48 * 1024 * 1024,
  helloTimeoutMs: 10_000,
  pingMs: 30_000,
};

const ENV_NAMES: Record<keyof Config, string> = {
  inboxCap: 'IRIS_INBOX_CAP',
  outboxCap: 'IRIS_OUTBOX_CAP',
  dedupWindow: 'IRIS_DEDUP_WINDOW',
  ratePerSec: 'IRIS_RATE_PER_SEC',
  rateBurst: 'IRIS_RATE_BURST',
  sendWindow: 'IRIS_SEND_WINDOW',
  maxDevices: 'IRIS_MAX_DEVICES',
  retryBaseMs: 'IRIS_RETRY_BASE_MS',
  retryMaxMs: 'IRIS_RETRY_MAX_MS',
  fullRetryMs: 'IRIS_FULL_RETRY_MS',
  connFramesPerSec: 'IRIS_CONN_RATE_PER_SEC',
  connFrameBurst: 'IRIS_CONN_RATE_BURST',
  maxErrorsInRow: 'IRIS_MAX_ERRORS_IN_ROW',
  maxQueuedBytes: 'IRIS_MAX_QUEUED_BYTES',
  helloTimeoutMs: 'IRIS_HELLO_TIMEOUT_MS',
  pingMs: 'IRIS_WS_PING_MS',
};

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Reads IRIS_* settings from an environment-like object; anything unset keeps its default. */
export function configFromEnv(env: Record<string, unknown>): Config {
  const out: Config = { ...DEFAULT_CONFIG };
  for (const key of Object.keys(ENV_NAMES) as (keyof Config)[]) {
    const raw = env[ENV_NAMES[key]];
    if (raw === undefined || raw === '') continue;
    const n = typeof raw === 'number' ? raw : Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${ENV_NAMES[key]} must be a positive number, got ${String(raw)}`);
    out[key] = n;
  }
  return out;
}

export const CONFIG_ENV_NAMES = ENV_NAMES;
