import { LIMITS } from '../protocol/limits.js';

/**
 * The one declaration of every IRIS_* setting of both profiles: name, type, default, range, the profiles that
 * read it, and one sentence of documentation. core/config.ts, auth/config.ts and onprem/config.ts read their
 * settings through it, the edge keys its verifier cache on it, on-prem `--help` prints it, and
 * test/unit/settings-doc.test.ts holds README.md and docs/OPERATIONS.md against it. Pure TS: the Worker, the
 * Durable Object and Node all import it.
 */

export type Profile = 'cloudflare' | 'onprem';

/** Which part of the system reads the setting; the docs and --help group by it. */
export type SettingGroup = 'auth' | 'engine' | 'server' | 'edge' | 'push';

export type SettingType =
  /** An integer in [min, max]. */
  | 'int'
  /** A finite number in [min, max] (or (min, max] with minExclusive). */
  | 'number'
  /** One of `values`, exactly. */
  | 'enum'
  | 'string'
  /** A file or directory; on-prem resolves it against where it was given (cwd, or the config file's folder). */
  | 'path'
  /** An absolute http(s) URL. */
  | 'url'
  /** A JSON Web Key Set: a JSON object with a `keys` array. */
  | 'jwks';

export interface SettingSpec {
  readonly name: string;
  readonly type: SettingType;
  readonly group: SettingGroup;
  readonly profiles: readonly Profile[];
  /** The value as an operator would write it; null when there is none or it is computed (see defaultDoc). */
  readonly default: string | null;
  /** What an unset setting means when `default` is null and that is not simply "none". */
  readonly defaultDoc?: string;
  readonly min?: number;
  readonly max?: number;
  readonly minExclusive?: boolean;
  readonly values?: readonly string[];
  /** One sentence, shown by `--help` and in the README table. */
  readonly doc: string;
}

const BOTH: readonly Profile[] = ['cloudflare', 'onprem'];
const CF: readonly Profile[] = ['cloudflare'];
const ONPREM: readonly Profile[] = ['onprem'];

/** A positive integer engine setting shared by both profiles. */
function engineInt(name: string, def: number, doc: string): SettingSpec {
  return { name, type: 'int', group: 'engine', profiles: BOTH, default: String(def), min: 1, doc };
}

/**
 * The engine settings (core/config.ts `Config`), by their key there. Declared here rather than in config.ts so
 * that the table below is the only list of names.
 */
export const ENGINE_SETTINGS = {
  inboxCap: engineInt('IRIS_INBOX_CAP', 10_000, 'Entries waiting in one user\'s inbox before senders get `inbox_full`.'),
  outboxCap: engineInt('IRIS_OUTBOX_CAP', 10_000, 'Messages one user may have accepted but not yet handed to recipients before `outbox_full`.'),
  dedupWindow: engineInt('IRIS_DEDUP_WINDOW', 10_000, 'How many of a user\'s most recent client message ids are remembered for idempotent retry.'),
  ratePerSec: {
    name: 'IRIS_RATE_PER_SEC',
    type: 'number',
    group: 'engine',
    profiles: BOTH,
    default: '50',
    min: 0,
    minExclusive: true,
    doc: 'Sustained sends per second per user (beyond the burst: `rate_limited` with retry-after).',
  },
  rateBurst: engineInt('IRIS_RATE_BURST', 200, 'Burst of sends per user.'),
  sendWindow: engineInt('IRIS_SEND_WINDOW', 256, 'Entries pushed to one socket and not yet acknowledged.'),
  maxDevices: engineInt('IRIS_MAX_DEVICES', 16, 'Devices remembered per user; the least recently seen offline one is forgotten past it.'),
  retryBaseMs: engineInt('IRIS_RETRY_BASE_MS', 250, 'First delay when handing a message to another shard fails (doubling up to IRIS_RETRY_MAX_MS).'),
  retryMaxMs: engineInt('IRIS_RETRY_MAX_MS', 30_000, 'Ceiling of the delay between retries of a failed forward to another shard.'),
  fullRetryMs: engineInt('IRIS_FULL_RETRY_MS', 5_000, 'How long a sender waits before retrying a full inbox.'),
  connFramesPerSec: engineInt('IRIS_CONN_RATE_PER_SEC', 500, 'Frames of any type per second on one connection (`rate_limited`); never below twice IRIS_RATE_PER_SEC.'),
  connFrameBurst: engineInt('IRIS_CONN_RATE_BURST', 2_000, 'Burst of frames on one connection; never below twice IRIS_RATE_BURST.'),
  maxErrorsInRow: engineInt('IRIS_MAX_ERRORS_IN_ROW', 20, 'Frames refused for the client\'s fault in a row before the connection is closed with 4002.'),
  maxQueuedBytes: engineInt('IRIS_MAX_QUEUED_BYTES', 48 * 1024 * 1024, 'Bytes waiting on one socket for a client that does not read before it is closed with 4003.'),
  helloTimeoutMs: engineInt('IRIS_HELLO_TIMEOUT_MS', 10_000, 'A connection that sends no `hello` this long after the upgrade is closed with 4000.'),
  groupMemberCap: engineInt('IRIS_GROUP_MEMBER_CAP', 1_024, 'Members one group may have (more: `group_full`).'),
  groupRetentionMs: engineInt('IRIS_GROUP_RETENTION_MS', 604_800_000, 'How long a group keeps its log entries; a device further behind gets `history_gap` (default a week).'),
  presenceSubscriptions: { ...engineInt('IRIS_PRESENCE_SUBSCRIPTIONS', 1_000, 'Users one user may subscribe to for presence (`presence_subscribe`; more: `invalid_field`).'), max: LIMITS.maxPresenceSubscriptions },
  presenceHoldMs: engineInt('IRIS_PRESENCE_HOLD_MS', 5_000, 'How long a user must stay offline before its subscribers are told (a flap within it pushes nothing).'),
  presenceLeaseMs: engineInt('IRIS_PRESENCE_LEASE_MS', 600_000, 'How long a presence subscription lasts at the subject without renewal; subscribers renew at half of it.'),
  typingTtlMs: { ...engineInt('IRIS_TYPING_TTL_MS', 5_000, 'How long a pushed "typing" holds without renewal; clients renew at most every third of it, the server pushes a renewal at most every half.'), min: 1_000, max: 60_000 },
  historyDepth: {
    ...engineInt('IRIS_HISTORY_DEPTH', 0, 'Inbox entries (messages both ways) kept per user after every device acknowledged them, for a newly added device to start with; 0: none, and sent entries only for users with several devices (each kept entry is a stored row; docs/ARCHITECTURE.md "Multi-device sync").'),
    min: 0,
    max: 10_000,
  },
  pingMs: engineInt('IRIS_WS_PING_MS', 30_000, 'Heartbeat period: a client silent for 2 × this is dropped and shown offline (on-prem pings; Cloudflare closes with 4004).'),
  // Message references (PROTOCOL.md 9.9): 0 turns edits (deletes) off. The window also ends where the dedup window
  // does, since a message's acceptance time is kept only in its dedup record.
  editWindowS: { ...engineInt('IRIS_EDIT_WINDOW_S', 900, 'Seconds after sending during which the sender may edit a message (`ref_expired` later; 0: no edits).'), min: 0 },
  deleteWindowS: { ...engineInt('IRIS_DELETE_WINDOW_S', 172_800, 'Seconds after sending during which the sender may delete a message for everyone (`ref_expired` later; 0: no deletes).'), min: 0 },
  // The key directory (PROTOCOL.md 8.9, core/keys.ts).
  keysPoolCap: { ...engineInt('IRIS_KEYS_POOL_CAP', 100, 'One-time prekeys one device may have stored; an upload past it is refused (`invalid_field`).'), max: 10_000 },
  keysLowThreshold: { ...engineInt('IRIS_KEYS_LOW', 20, 'A device whose one-time prekeys fall below this is sent `keys_state` (once per crossing, and at hello while below).'), min: 0 },
  keysFetchPerSec: {
    name: 'IRIS_KEYS_FETCH_PER_SEC',
    type: 'number',
    group: 'engine',
    profiles: BOTH,
    default: '2',
    min: 0,
    minExclusive: true,
    doc: 'Sustained key bundle fetches and device queries per second per requesting user, a bucket of its own (beyond the burst: `rate_limited`).',
  },
  keysFetchBurst: engineInt('IRIS_KEYS_FETCH_BURST', 50, 'Burst of key bundle fetches and device queries per requesting user.'),
  // Token expiry on a live connection (PROTOCOL.md 3.4): closed with 4006 once exp + the grace passed unrefreshed.
  tokenExpiryClose: { ...engineInt('IRIS_TOKEN_EXPIRY_CLOSE', 1, '`1`: a connection whose token expired and was not refreshed is closed with 4006 after IRIS_TOKEN_EXPIRY_GRACE_S; `0`: tokens are checked at the upgrade only.'), min: 0, max: 1 },
  tokenExpiryGraceS: { ...engineInt('IRIS_TOKEN_EXPIRY_GRACE_S', 60, 'Seconds a connection may outlive its token\'s `exp` before it is closed with 4006 (time to refresh, clock skew).'), min: 0, max: 86_400 },
} as const satisfies Record<string, SettingSpec>;

export type EngineKey = keyof typeof ENGINE_SETTINGS;

const AUTH: SettingSpec[] = [
  { name: 'IRIS_JWT_SECRET', type: 'string', group: 'auth', profiles: BOTH, default: null, doc: 'HS256 shared secret (a secret: `wrangler secret put`, or the environment / a 0600 config file on-prem, never a flag).' },
  { name: 'IRIS_JWKS', type: 'jwks', group: 'auth', profiles: BOTH, default: null, doc: 'Inline JWKS (JSON with a `keys` array) for RS256 / ES256 / EdDSA tokens.' },
  { name: 'IRIS_JWKS_URL', type: 'url', group: 'auth', profiles: BOTH, default: null, doc: 'JWKS URL for RS256 / ES256 / EdDSA tokens, fetched and cached.' },
  { name: 'IRIS_JWT_ISSUER', type: 'string', group: 'auth', profiles: BOTH, default: null, doc: 'Required `iss` claim, when set.' },
  { name: 'IRIS_JWT_AUDIENCE', type: 'string', group: 'auth', profiles: BOTH, default: null, doc: 'Required `aud` claim, when set.' },
  { name: 'IRIS_JWT_CLOCK_TOLERANCE', type: 'number', group: 'auth', profiles: BOTH, default: '30', min: 0, max: 3600, doc: 'Seconds of clock skew allowed for `exp` / `nbf`.' },
  { name: 'IRIS_ADMIN_SECRET', type: 'string', group: 'auth', profiles: BOTH, default: null, doc: 'Bearer secret of the admin API (`/admin/v1/...`, docs/OPERATIONS.md); unset: the admin API answers 403 `admin_disabled`. A secret, like IRIS_JWT_SECRET.' },
  {
    name: 'IRIS_DEV_MODE',
    type: 'enum',
    group: 'auth',
    profiles: BOTH,
    default: '0',
    values: ['0', '1', 'true', 'false'],
    doc: '`1`: with no key configured, accept tokens signed with the PUBLIC development secret (local only; `npm start` and `npm run onprem` set it); ignored once any key is set.',
  },
];

const EDGE: SettingSpec[] = [
  {
    name: 'IRIS_TRUST_CF_CONNECTING_IP',
    type: 'enum',
    group: 'edge',
    profiles: CF,
    default: 'auto',
    values: ['auto', '0', '1'],
    doc: 'Key the per-IP connect limit on `CF-Connecting-IP`: `1` always, `0` never (one shared budget), `auto` unless the request is addressed to a loopback host.',
  },
  {
    name: 'IRIS_DO_MAX_BYTES',
    type: 'int',
    group: 'edge',
    profiles: CF,
    default: '9500000000',
    min: 1,
    doc: "A user's shard refuses writes that would grow its database past this many bytes (senders get `unavailable` with a retry-after), below the platform's 10 GB, where a full database would reset the object.",
  },
  { name: 'IRIS_SQL_TALLY', type: 'enum', group: 'edge', profiles: CF, default: '0', values: ['0', '1'], doc: '`1` (measurement runs only): count SQL rows per statement text in the shard\'s stats.' },
];

const SERVER: SettingSpec[] = [
  { name: 'IRIS_CONFIG', type: 'path', group: 'server', profiles: ONPREM, default: null, doc: 'JSON config file (flag: `--config`).' },
  { name: 'IRIS_HOST', type: 'string', group: 'server', profiles: ONPREM, default: '127.0.0.1', doc: 'Address to listen on (`0.0.0.0` or `::` for every interface).' },
  { name: 'IRIS_PORT', type: 'int', group: 'server', profiles: ONPREM, default: '8788', min: 0, max: 65535, doc: 'TCP port shared by every worker (SO_REUSEPORT; `wrangler dev` owns 8787); 0 picks a free one.' },
  { name: 'IRIS_DATA_DIR', type: 'path', group: 'server', profiles: ONPREM, default: './data/onprem', doc: 'Data directory: one SQLite file per worker, metadata, lock.' },
  { name: 'IRIS_RUN_DIR', type: 'path', group: 'server', profiles: ONPREM, default: null, defaultDoc: '<data>/run', doc: 'Unix sockets between workers; must be short (socket paths are limited to 107 bytes).' },
  { name: 'IRIS_WORKERS', type: 'int', group: 'server', profiles: ONPREM, default: null, defaultDoc: 'recorded, else cores', min: 1, max: 1024, doc: 'Worker processes; recorded in the data directory at creation, a different value is refused.' },
  { name: 'IRIS_TLS_CERT', type: 'path', group: 'server', profiles: ONPREM, default: null, doc: 'PEM certificate chain: serve `wss://` (needs IRIS_TLS_KEY).' },
  { name: 'IRIS_TLS_KEY', type: 'path', group: 'server', profiles: ONPREM, default: null, doc: 'PEM private key for IRIS_TLS_CERT.' },
  { name: 'IRIS_ROUTE', type: 'enum', group: 'server', profiles: ONPREM, default: 'handoff', values: ['handoff', 'pipe'], doc: 'How a connection reaches its owner: pass the socket (`handoff`) or relay bytes (`pipe`, forced with TLS).' },
  { name: 'IRIS_COMMIT_WINDOW_MS', type: 'int', group: 'server', profiles: ONPREM, default: '0', min: 0, max: 1000, doc: 'Group commit window: 0 = end of the event-loop turn; N = at most N ms after the first write.' },
  { name: 'IRIS_COMMIT_MAX_BATCH', type: 'int', group: 'server', profiles: ONPREM, default: '1024', min: 1, doc: 'Group commit: commit as soon as this many operations wait.' },
  { name: 'IRIS_HEADERS_TIMEOUT_MS', type: 'int', group: 'server', profiles: ONPREM, default: '10000', min: 100, max: 600_000, doc: 'An HTTP request (the upgrade included) whose headers are not complete in time gets 408.' },
  { name: 'IRIS_CONNECT_RATE', type: 'int', group: 'server', profiles: ONPREM, default: '600', min: 1, doc: 'Connection attempts per minute per client IP before 429, split across workers.' },
  { name: 'IRIS_MAX_CONNECTIONS', type: 'int', group: 'server', profiles: ONPREM, default: null, defaultDoc: 'open-file limit − 1024', min: 1, doc: 'WebSockets per worker; beyond it new connections get 503 `server_full`.' },
  { name: 'IRIS_WS_MAX_PAYLOAD', type: 'int', group: 'server', profiles: ONPREM, default: String(LIMITS.maxFrameBytes + 32 * 1024), min: LIMITS.maxFrameBytes, doc: 'Largest WebSocket message read at all (bigger: close 1009).' },
  { name: 'IRIS_MAILBOX_IDLE_MS', type: 'int', group: 'server', profiles: ONPREM, default: '60000', min: 1, doc: 'Evict a user mailbox from memory after this long without sockets or work.' },
  { name: 'IRIS_PEER_TIMEOUT_MS', type: 'int', group: 'server', profiles: ONPREM, default: '10000', min: 1, doc: 'Timeout of one call to another worker (forward, presence).' },
  { name: 'IRIS_DRAIN_TIMEOUT_MS', type: 'int', group: 'server', profiles: ONPREM, default: '10000', min: 1, doc: 'SIGTERM: how long workers may drain before they are killed.' },
  { name: 'IRIS_WAL_SYNC', type: 'enum', group: 'server', profiles: ONPREM, default: 'commit', values: ['commit', 'async'], doc: 'Where the WAL fsync runs: inside COMMIT on the event loop (`commit`), or on the thread pool while the next batch collects (`async`).' },
  { name: 'IRIS_STANDBY_WORKER', type: 'enum', group: 'server', profiles: ONPREM, default: '0', values: ['0', '1'], doc: 'Keep one spare worker process started to replace a worker that dies (restart in ms instead of ~0.6 s, for ~95 MiB).' },
  { name: 'IRIS_SEMI_SPACE_MB', type: 'int', group: 'server', profiles: ONPREM, default: '16', min: 0, max: 1024, doc: "Workers' V8 `--max-semi-space-size` in MiB (young generation = 2 ×); 0 = V8's own." },
  { name: 'IRIS_IDLE_GC_MS', type: 'int', group: 'server', profiles: ONPREM, default: '5000', min: 0, doc: 'Once a process whose heap grew has been quiet this long, one memory-reducing GC hands the memory back (0 = never).' },
  { name: 'IRIS_LOG', type: 'enum', group: 'server', profiles: BOTH, default: 'info', values: ['info', 'warn', 'error'], doc: 'Least severe log level written.' },
];

// Push webhooks (core/push.ts, docs/OPERATIONS.md "Push webhooks"): read by pushSettingsFromEnv, not Config.
const PUSH: SettingSpec[] = [
  { name: 'IRIS_PUSH_URL', type: 'url', group: 'push', profiles: BOTH, default: null, doc: 'Webhook called (HTTP POST, signed) when messages land for a registered device with no open socket; unset: no push.' },
  { name: 'IRIS_PUSH_SECRET', type: 'string', group: 'push', profiles: BOTH, default: null, doc: 'Key of the push call\'s HMAC-SHA256 signature (`X-Iris-Signature`); a secret, like IRIS_JWT_SECRET.' },
  { name: 'IRIS_PUSH_COALESCE_MS', type: 'int', group: 'push', profiles: BOTH, default: '1000', min: 0, max: 600_000, doc: 'Messages for one offline device within this long of the first become one push call with their count.' },
  { name: 'IRIS_PUSH_RETRY_BASE_MS', type: 'int', group: 'push', profiles: BOTH, default: '1000', min: 1, doc: 'First delay before retrying a failed push call (doubling, jittered, up to 5 minutes).' },
  { name: 'IRIS_PUSH_MAX_ATTEMPTS', type: 'int', group: 'push', profiles: BOTH, default: '8', min: 1, max: 100, doc: 'Calls made for one push before it is dropped and counted dead-lettered.' },
  { name: 'IRIS_PUSH_TIMEOUT_MS', type: 'int', group: 'push', profiles: BOTH, default: '10000', min: 1, max: 120_000, doc: 'A push call with no answer this long is aborted and counts as failed.' },
];

// The gateway of the Erlang Iris's wire protocol (gateway/v1/, docs/IRIS-V1.md): off unless a port is set.
const V1: SettingSpec[] = [
  { name: 'IRIS_V1_TCP_PORT', type: 'int', group: 'server', profiles: ONPREM, default: null, min: 1, max: 65535, doc: 'Serve the Erlang Iris\'s binary protocol (v1) over TCP on this port (the old default was 8085); unset: off.' },
  { name: 'IRIS_V1_WS_PORT', type: 'int', group: 'server', profiles: ONPREM, default: null, min: 1, max: 65535, doc: 'Serve the v1 protocol over WebSocket (one packet per binary message) on this port (the old default was 8086); unset: off.' },
  { name: 'IRIS_V1_JWT_SECRET', type: 'string', group: 'server', profiles: ONPREM, default: null, defaultDoc: 'IRIS_JWT_SECRET', doc: 'HS256 secret of the tokens in v1 LOGIN `user:jwt` (iss `iris`, sub = user); a secret, like IRIS_JWT_SECRET.' },
  { name: 'IRIS_V1_ALLOW_ANONYMOUS', type: 'enum', group: 'server', profiles: ONPREM, default: '0', values: ['0', '1'], doc: '`1`: accept a v1 LOGIN without a token (the old default, unauthenticated); `0`: every LOGIN needs `user:jwt`.' },
];

// Cluster mode of the on-prem server on NATS JetStream (issue 13, onprem/cluster/): off unless IRIS_CLUSTER_NATS is set.
const CLUSTER: SettingSpec[] = [
  { name: 'IRIS_CLUSTER_NATS', type: 'string', group: 'server', profiles: ONPREM, default: null, doc: 'Cluster mode: comma-separated NATS server URLs (`nats://host:4222,...`, JetStream on); unset: one box, no NATS.' },
  { name: 'IRIS_CLUSTER_NODE', type: 'string', group: 'server', profiles: ONPREM, default: null, defaultDoc: 'host name', doc: 'This node\'s id in the cluster (unique; a restarted node keeps its id). With N > 1 workers, worker i is the cluster member `<id>.<i>`.' },
  { name: 'IRIS_CLUSTER_PARTITIONS', type: 'int', group: 'server', profiles: ONPREM, default: '1024', min: 1, max: 65536, doc: 'Virtual partitions of the cluster: fixed when the cluster is created, the same on every node.' },
  { name: 'IRIS_CLUSTER_LEASE_MS', type: 'int', group: 'server', profiles: ONPREM, default: '3000', min: 500, max: 120_000, doc: 'Lease of a node\'s partitions (renewed every third of it, one key per node): a dead node\'s partitions are taken over about this long after its last renewal.' },
  { name: 'IRIS_CLUSTER_PIPE_PORT', type: 'int', group: 'server', profiles: ONPREM, default: null, defaultDoc: 'IRIS_PORT + 1', min: 1, max: 65535, doc: 'Port where this node takes WebSockets relayed by other nodes for its partitions; their tokens are verified again here (plain TCP: private network). With N workers, worker i listens on this port + i (N consecutive ports).' },
  { name: 'IRIS_CLUSTER_ADVERTISE', type: 'string', group: 'server', profiles: ONPREM, default: '127.0.0.1', doc: 'Address the other nodes use to reach this node\'s pipe port (the pipe also binds it).' },
];

/** Every setting, in the order of --help and the docs. */
export const SETTINGS: readonly SettingSpec[] = [...SERVER, ...AUTH, ...Object.values(ENGINE_SETTINGS), ...PUSH, ...EDGE, ...V1, ...CLUSTER];

/**
 * IRIS_* variables the servers read that are not settings: set by the supervisor for its own children, or
 * switches for measurements and A/B runs. Listed so the test that scans the sources for IRIS_ names can tell
 * an undeclared setting from these; they are deliberately kept out of --help and the docs.
 */
export const INTERNAL_VARIABLES: Readonly<Record<string, string>> = {
  IRIS_ONPREM_WORKER: 'set by the supervisor: the worker index of a child process',
  IRIS_ONE_HOP: 'A/B switch of the on-prem one-hop send path (0 = off), for benchmarks',
  IRIS_RECOVER_CONCURRENCY: 'on-prem start-up: mailboxes recovered at once, for benchmarks',
};

const BY_NAME = new Map(SETTINGS.map((s) => [s.name, s]));

export function settingSpec(name: string): SettingSpec | undefined {
  return BY_NAME.get(name);
}

export function settingsFor(profile: Profile): SettingSpec[] {
  return SETTINGS.filter((s) => s.profiles.includes(profile));
}

/** The names of a group that a profile reads (the edge keys its verifier cache on the auth ones). */
export function settingNames(profile: Profile, group?: SettingGroup): string[] {
  return settingsFor(profile)
    .filter((s) => group === undefined || s.group === group)
    .map((s) => s.name);
}

/** `IRIS_DATA_DIR` -> `--data-dir`. */
export function flagName(name: string): string {
  return '--' + name.replace(/^IRIS_/, '').toLowerCase().replace(/_/g, '-');
}

/** The default as the docs show it: the value, the computed default's description, or an em dash. */
export function defaultText(s: SettingSpec): string {
  return s.default ?? s.defaultDoc ?? '—';
}

/** The accepted values, as the docs and error messages say them. */
export function rangeText(s: SettingSpec, plain = false): string {
  const what = s.type === 'int' ? 'an integer' : 'a number';
  switch (s.type) {
    case 'int':
    case 'number':
      if (s.min !== undefined && s.max !== undefined && !s.minExclusive) return `${what} from ${s.min} to ${s.max}`;
      if (s.min !== undefined) return `${what} ${s.minExclusive ? '>' : '≥'} ${s.min}${s.max !== undefined ? ` and ≤ ${s.max}` : ''}`;
      return s.max !== undefined ? `${what} ≤ ${s.max}` : what;
    case 'enum': {
      const v = (s.values ?? []).map((x) => (plain ? x : `\`${x}\``));
      return v.length > 1 ? `${v.slice(0, -1).join(', ')} or ${v[v.length - 1]!}` : (v[0] ?? '');
    }
    case 'url':
      return 'an http(s) URL';
    case 'jwks':
      return 'a JSON object with a "keys" array';
    default:
      return 'text';
  }
}

/** A setting whose value is wrong. The message names the setting, what it takes, and what it got. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function bad(s: SettingSpec, raw: unknown, why?: string): ConfigError {
  const got = typeof raw === 'string' ? JSON.stringify(raw.length > 80 ? raw.slice(0, 80) + '…' : raw) : String(raw);
  return new ConfigError(`${s.name} must be ${why ?? rangeText(s, true)}, got ${got}`);
}

/** Unset: absent or the empty string (wrangler and shells both make empty variables easily). */
function rawOf(env: Record<string, unknown>, name: string): unknown {
  const v = env[name];
  return v === undefined || v === null || v === '' ? undefined : v;
}

/**
 * Reads and checks one numeric setting; unset gives its default. Numbers may come as numbers (wrangler
 * [vars]) or strings. A setting without a default must be read with readOptionalNumber.
 */
export function readNumber(env: Record<string, unknown>, name: string): number {
  const n = readOptionalNumber(env, name);
  if (n !== undefined) return n;
  const s = spec(name);
  if (s.default === null) throw new Error(`${name} has no default: read it with readOptionalNumber`);
  return Number(s.default);
}

export function readOptionalNumber(env: Record<string, unknown>, name: string): number | undefined {
  const s = spec(name);
  if (s.type !== 'int' && s.type !== 'number') throw new Error(`${name} is not a numeric setting`);
  const raw = rawOf(env, name);
  if (raw === undefined) return undefined;
  if (typeof raw !== 'number' && typeof raw !== 'string') throw bad(s, raw);
  // Number('') and Number(' ') are 0 and Number('0x10') is 16: only plain decimal notation is a number here.
  if (typeof raw === 'string' && !/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw.trim())) throw bad(s, raw);
  const n = typeof raw === 'number' ? raw : Number(raw);
  if (!Number.isFinite(n) || (s.type === 'int' && !Number.isInteger(n))) throw bad(s, raw);
  if (s.min !== undefined && (s.minExclusive ? n <= s.min : n < s.min)) throw bad(s, raw);
  if (s.max !== undefined && n > s.max) throw bad(s, raw);
  return n;
}

/** Reads and checks one text-like setting (enum, string, path, url, jwks); unset gives its default or undefined. */
export function readString(env: Record<string, unknown>, name: string): string | undefined {
  const s = spec(name);
  const raw = rawOf(env, name);
  if (raw === undefined) return s.default ?? undefined;
  // Worker [vars] may hold numbers or booleans (IRIS_DEV_MODE = 1): read them as the text they stand for.
  const v = typeof raw === 'boolean' ? (raw ? '1' : '0') : typeof raw === 'number' ? String(raw) : raw;
  if (typeof v !== 'string') {
    // wrangler [vars] turns a JSON table into an object: that is what IRIS_JWKS holds, so take it as its JSON.
    if (s.type === 'jwks' && typeof v === 'object') return checkJwks(s, JSON.stringify(v));
    throw bad(s, raw, 'text');
  }
  switch (s.type) {
    case 'enum':
      if (!(s.values ?? []).includes(v)) throw bad(s, v);
      return v;
    case 'url': {
      let u: URL;
      try {
        u = new URL(v);
      } catch {
        throw bad(s, v);
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw bad(s, v);
      return v;
    }
    case 'jwks':
      return checkJwks(s, v);
    case 'int':
    case 'number':
      throw new Error(`${name} is numeric: use readNumber`);
    default:
      return v;
  }
}

function checkJwks(s: SettingSpec, v: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch (e) {
    throw new ConfigError(`${s.name} is not valid JSON (${(e as Error).message})`);
  }
  const keys = typeof parsed === 'object' && parsed !== null ? (parsed as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'object' || k === null)) throw bad(s, v.length > 40 ? v.slice(0, 40) + '…' : v);
  return v;
}

function spec(name: string): SettingSpec {
  const s = BY_NAME.get(name);
  if (s === undefined) throw new Error(`${name} is not a declared setting (core/settings.ts)`);
  return s;
}

/**
 * Checks every setting a profile reads, in declaration order, and throws the first ConfigError. Both profiles
 * call it before serving (on-prem: at start-up; Cloudflare: once per isolate, answering 503 while it fails),
 * so a value one profile refuses is refused by the other too.
 */
export function validateSettings(env: Record<string, unknown>, profile: Profile): void {
  for (const s of settingsFor(profile)) {
    if (s.type === 'int' || s.type === 'number') readOptionalNumber(env, s.name);
    else readString(env, s.name);
  }
}
