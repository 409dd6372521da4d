import { ConfigError, ENGINE_SETTINGS, readNumber, type EngineKey } from './settings.js';

export { ConfigError };

/**
 * Engine settings shared by both profiles. Each has an IRIS_* environment name (wrangler.toml [vars] on
 * Cloudflare, the environment or config file on-prem). Names, defaults and ranges are declared once, in
 * core/settings.ts (ENGINE_SETTINGS); this is their typed shape.
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
  /**
   * Inbox entries kept after every device acked them, so that a device new to the user starts with the newest
   * of them (core/history.ts). Non-zero also makes every send leave a `sent` entry in the sender's inbox.
   */
  historyDepth: number;
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
  /** Members one group may have; a create or add past it gets group_full. */
  groupMemberCap: number;
  /** How long a group's log entries are kept; a device whose cursor is older gets history_gap. */
  groupRetentionMs: number;
  /** Users one user may subscribe to for presence; over it a presence_subscribe gets invalid_field. */
  presenceSubscriptions: number;
  /** Offline is announced to subscribers only after this long offline: a flap within it is coalesced away. */
  presenceHoldMs: number;
  /** A subject forgets a watcher that did not renew within this; subscribers renew at half of it. */
  presenceLeaseMs: number;
  /**
   * Typing (PROTOCOL.md 8.8): a pushed `on` holds this long at the recipient without renewal (the SDK turns it off
   * by itself); the server pushes a renewal at most every half of it, so a typer that renews every third never
   * lets it lapse.
   */
  typingTtlMs: number;
  /**
   * Heartbeat period. On-prem sends a WebSocket ping this often and drops a socket that missed the previous
   * pong. Cloudflare cannot ping without waking the object, so it closes (4004 idle_timeout) a socket from
   * which nothing — no frame, not even the `{"t":"ping"}` heartbeat — arrived for 2 x this. Either way a
   * silent client is gone within 2 x pingMs.
   */
  pingMs: number;
  /** Seconds after sending during which a message may be edited (PROTOCOL.md 9.9); 0: never. */
  editWindowS: number;
  /** Seconds after sending during which a message may be deleted for everyone; 0: never. */
  deleteWindowS: number;
  /** Key directory (PROTOCOL.md 8.9): one-time prekeys one device may have stored. */
  keysPoolCap: number;
  /** A device's pool below this is pushed `keys_state` once per crossing (and at hello while below). */
  keysLowThreshold: number;
  /** Bundle fetches and device queries per requesting user: sustained per second and burst, a bucket of their own. */
  keysFetchPerSec: number;
  keysFetchBurst: number;
  /** 1: a connection whose token expired (plus tokenExpiryGraceS) unrefreshed is closed with 4006; 0: never. */
  tokenExpiryClose: number;
  /** Seconds past the token's exp before that close (core/revocation.ts expiryDeadline). */
  tokenExpiryGraceS: number;
}

// Config and ENGINE_SETTINGS must name the same keys: a setting added to one and not the other fails here.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const sameKeys: Same<keyof Config, EngineKey> = true;
void sameKeys;

const KEYS = Object.keys(ENGINE_SETTINGS) as EngineKey[];

function fromSchema(read: (name: string) => number): Config {
  const out = {} as Config;
  for (const key of KEYS) out[key] = read(ENGINE_SETTINGS[key].name);
  return out;
}

export const DEFAULT_CONFIG: Config = fromSchema((name) => readNumber({}, name));

/**
 * Reads IRIS_* settings from an environment-like object; anything unset keeps its default. Throws ConfigError
 * for a value outside the setting's declared type or range (a cap of 1.5, a rate of "fast").
 */
export function configFromEnv(env: Record<string, unknown>): Config {
  return fromSchema((name) => readNumber(env, name));
}

/** Config key -> IRIS_* name. */
export const CONFIG_ENV_NAMES = Object.fromEntries(KEYS.map((k) => [k, ENGINE_SETTINGS[k].name])) as Record<keyof Config, string>;
