import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { AuthError, DEV_SECRET, authConfigFromEnv, devAuthDecision, devModeRequested, type AuthConfig } from '../auth/index.js';
import { CONFIG_ENV_NAMES, ConfigError, configFromEnv, type Config } from '../core/config.js';
import { LIMITS } from '../protocol/index.js';

/**
 * On-prem settings. Every setting has one IRIS_* name and can come from (later wins):
 *   embedded defaults < JSON config file (--config / IRIS_CONFIG) < environment < command-line flags.
 * A flag is the name without IRIS_, lower case, dashes: IRIS_DATA_DIR <-> --data-dir. The config file is one
 * JSON object whose keys are IRIS_* names or flag names ({"port": 8788, "IRIS_INBOX_CAP": 5000}).
 * The supervisor resolves the map once and hands it to every worker, so all processes agree.
 */

export type Settings = Record<string, string>;

interface SettingDoc {
  def: string;
  doc: string;
  path?: boolean;
}

/** Settings of the on-prem adapter itself. docs/OPERATIONS.md carries the same table. */
export const ONPREM_SETTINGS: Record<string, SettingDoc> = {
  IRIS_HOST: { def: '127.0.0.1', doc: 'Address to listen on (0.0.0.0 or :: for every interface).' },
  IRIS_PORT: { def: '8788', doc: 'TCP port shared by every worker (SO_REUSEPORT). wrangler dev owns 8787.' },
  IRIS_DATA_DIR: { def: './data/onprem', doc: 'Data directory: one SQLite file per worker, metadata, lock.', path: true },
  IRIS_RUN_DIR: { def: '', doc: 'Unix sockets between workers (default <data dir>/run). Path must be short (< 100 bytes).', path: true },
  IRIS_WORKERS: { def: '', doc: 'Worker processes (default: the count recorded in the data dir, else available cores). Fixed per data dir.' },
  IRIS_TLS_CERT: { def: '', doc: 'PEM certificate chain: serve wss:// (needs IRIS_TLS_KEY).', path: true },
  IRIS_TLS_KEY: { def: '', doc: 'PEM private key for IRIS_TLS_CERT.', path: true },
  IRIS_ROUTE: { def: 'handoff', doc: 'How a connection reaches its owner: handoff (pass the socket) or pipe (byte relay). TLS forces pipe.' },
  IRIS_COMMIT_WINDOW_MS: { def: '0', doc: 'Group commit window: 0 = end of the event-loop turn; N = at most N ms after the first write.' },
  IRIS_COMMIT_MAX_BATCH: { def: '1024', doc: 'Group commit: commit as soon as this many operations wait.' },
  IRIS_HEADERS_TIMEOUT_MS: { def: '10000', doc: 'HTTP request headers must arrive within this time (else 408).' },
  IRIS_CONNECT_RATE: { def: '600', doc: 'Connection attempts per minute per client IP (429 beyond), split across workers.' },
  IRIS_MAX_CONNECTIONS: { def: '', doc: 'WebSockets per worker before 503 (default: open-file limit minus 1024).' },
  IRIS_WS_MAX_PAYLOAD: { def: String(LIMITS.maxFrameBytes + 32 * 1024), doc: 'Largest WebSocket message read at all (bigger: close 1009).' },
  IRIS_MAILBOX_IDLE_MS: { def: '60000', doc: 'Evict a user mailbox from memory after this long without sockets or work.' },
  IRIS_PEER_TIMEOUT_MS: { def: '10000', doc: 'Timeout of one call to another worker (forward, presence).' },
  IRIS_DRAIN_TIMEOUT_MS: { def: '10000', doc: 'SIGTERM: how long workers may take to drain before they are killed.' },
  IRIS_WAL_SYNC: { def: 'commit', doc: 'Where the WAL fsync runs: commit = inside COMMIT on the event loop (cheapest on a disk whose fsync is ~0.1 ms); async = on the thread pool while the next batch collects (for disks whose fsync takes milliseconds).' },
  IRIS_STANDBY_WORKER: { def: '0', doc: 'Keep one spare worker process started (Node and modules loaded) to replace a worker that dies: restart in ms instead of ~0.6 s, for ~95 MiB. 0 or 1.' },
  IRIS_SEMI_SPACE_MB: { def: '16', doc: "Workers' V8 young generation: --max-semi-space-size in MiB (young generation = 2x). 0 = V8's own (64 on a large machine)." },
  IRIS_IDLE_GC_MS: { def: '5000', doc: 'After a burst, once a process has been quiet this long, one memory-reducing GC hands its grown V8 heap back (0 = never).' },
  IRIS_LOG: { def: 'info', doc: 'info | warn | error.' },
  IRIS_CONFIG: { def: '', doc: 'JSON config file (flag: --config).', path: true },
};

const AUTH_SETTINGS: Record<string, string> = {
  IRIS_JWT_SECRET: 'HS256 shared secret (prefer the environment or a 0600 config file to a flag).',
  IRIS_JWKS: 'Inline JWKS (JSON) for RS256 / ES256 / EdDSA tokens.',
  IRIS_JWKS_URL: 'JWKS URL, fetched and cached.',
  IRIS_JWT_ISSUER: 'Required iss claim.',
  IRIS_JWT_AUDIENCE: 'Required aud claim.',
  IRIS_JWT_CLOCK_TOLERANCE: 'Clock skew allowed for exp / nbf, seconds (default 30).',
  IRIS_DEV_MODE: 'Default 0. 1: with no IRIS_JWT_SECRET / IRIS_JWKS / IRIS_JWKS_URL, accept tokens signed with the PUBLIC dev secret (npm run onprem sets it). Ignored when any key is set.',
};

export function knownNames(): Set<string> {
  return new Set([...Object.keys(ONPREM_SETTINGS), ...Object.keys(AUTH_SETTINGS), ...Object.values(CONFIG_ENV_NAMES)]);
}

/** `data-dir` / `dataDir` / `IRIS_DATA_DIR` -> `IRIS_DATA_DIR`. */
export function settingName(key: string): string {
  if (key.startsWith('IRIS_')) return key;
  return 'IRIS_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/-/g, '_').toUpperCase();
}

export class StartupError extends Error {
  override readonly name = 'StartupError';
}

export interface ParsedArgs {
  settings: Settings;
  help: boolean;
}

/** Parses `--name value`, `--name=value`, `--help`. Unknown names are an error, so typos never pass silently. */
export function parseArgs(argv: string[], cwd: string): ParsedArgs {
  const known = knownNames();
  const settings: Settings = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      help = true;
      continue;
    }
    if (!a.startsWith('--')) throw new StartupError(`unexpected argument "${a}" (see --help)`);
    const eq = a.indexOf('=');
    const flag = eq === -1 ? a.slice(2) : a.slice(2, eq);
    const name = settingName(flag);
    if (!known.has(name)) throw new StartupError(`unknown option --${flag} (see --help)`);
    let value: string;
    if (eq !== -1) value = a.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new StartupError(`option --${flag} needs a value`);
      value = next;
      i++;
    }
    settings[name] = resolvePath(name, value, cwd);
  }
  return { settings, help };
}

function resolvePath(name: string, value: string, base: string): string {
  const doc = ONPREM_SETTINGS[name];
  if (!doc?.path || value === '' || isAbsolute(value)) return value;
  return resolve(base, value);
}

export function readConfigFile(file: string): Settings {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    throw new StartupError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new StartupError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StartupError(`config file ${file} must hold one JSON object`);
  }
  const known = knownNames();
  const out: Settings = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    const name = settingName(k);
    if (!known.has(name)) throw new StartupError(`config file ${file}: unknown setting "${k}"`);
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new StartupError(`config file ${file}: "${k}" must be a string, number or boolean`);
    }
    const s = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
    out[name] = resolvePath(name, s, dirname(resolve(file)));
  }
  return out;
}

/** Merges the sources: defaults < file < environment < flags. */
export function resolveSettings(argv: string[], env: NodeJS.ProcessEnv, cwd: string): ParsedArgs {
  const args = parseArgs(argv, cwd);
  const known = knownNames();
  const fromEnv: Settings = {};
  for (const [k, v] of Object.entries(env)) {
    if (known.has(k) && v !== undefined && v !== '') fromEnv[k] = resolvePath(k, v, cwd);
  }
  const file = args.settings['IRIS_CONFIG'] ?? fromEnv['IRIS_CONFIG'];
  const fromFile = file ? readConfigFile(file) : {};
  const settings: Settings = {};
  for (const [k, d] of Object.entries(ONPREM_SETTINGS)) if (d.def !== '') settings[k] = resolvePath(k, d.def, cwd);
  Object.assign(settings, fromFile, fromEnv, args.settings);
  return { settings, help: args.help };
}

export interface OnpremConfig {
  host: string;
  port: number;
  dataDir: string;
  runDir: string;
  /** Explicitly configured worker count, or null (use the data dir's record, else the cores). */
  workers: number | null;
  tls: { cert: string; key: string } | null;
  route: 'handoff' | 'pipe';
  commitWindowMs: number;
  commitMaxBatch: number;
  helloTimeoutMs: number;
  headersTimeoutMs: number;
  connectRatePerMin: number;
  maxConnections: number | null;
  pingMs: number;
  maxPayload: number;
  mailboxIdleMs: number;
  peerTimeoutMs: number;
  drainTimeoutMs: number;
  /** V8 --max-semi-space-size of each worker, MiB; 0 leaves V8's default. */
  semiSpaceMb: number;
  /** Quiet time after which a process whose heap grew runs a memory-reducing GC (onprem/memory.ts); 0 = off. */
  idleGcMs: number;
  /** Keep a spare worker process booted, to replace one that dies without paying Node's start-up. */
  standbyWorker: boolean;
  /** Where the group commit's fsync runs (onprem/storage.ts `sync`). */
  walSync: 'commit' | 'async';
  log: 'info' | 'warn' | 'error';
  engine: Config;
  auth: AuthConfig;
  /** True when tokens signed with the public development secret are accepted (banner, /healthz). */
  devAuth: boolean;
  /** IRIS_DEV_MODE=1 was set but a key is configured, so the development secret is NOT accepted. */
  devModeIgnored: boolean;
}

function int(s: Settings, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = s[name] ?? ONPREM_SETTINGS[name]?.def ?? '';
  const n = Number(raw);
  if (raw === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new StartupError(`${name} must be an integer in [${min}, ${max}], got "${raw}"`);
  }
  return n;
}

/** Validates and types the merged settings. Throws StartupError with a message meant for an operator. */
export function onpremConfig(s: Settings): OnpremConfig {
  const dataDir = s['IRIS_DATA_DIR'] ?? resolve(ONPREM_SETTINGS['IRIS_DATA_DIR']!.def);
  const runDir = s['IRIS_RUN_DIR'] || resolve(dataDir, 'run');
  const cert = s['IRIS_TLS_CERT'] ?? '';
  const key = s['IRIS_TLS_KEY'] ?? '';
  if ((cert === '') !== (key === '')) throw new StartupError('TLS needs both IRIS_TLS_CERT and IRIS_TLS_KEY');
  const route = s['IRIS_ROUTE'] ?? 'handoff';
  if (route !== 'handoff' && route !== 'pipe') throw new StartupError(`IRIS_ROUTE must be handoff or pipe, got "${route}"`);
  const walSync = s['IRIS_WAL_SYNC'] ?? 'commit';
  if (walSync !== 'commit' && walSync !== 'async') throw new StartupError(`IRIS_WAL_SYNC must be commit or async, got "${walSync}"`);
  const log = s['IRIS_LOG'] ?? 'info';
  if (log !== 'info' && log !== 'warn' && log !== 'error') throw new StartupError(`IRIS_LOG must be info, warn or error, got "${log}"`);
  let engine: Config;
  try {
    engine = configFromEnv(s);
  } catch (e) {
    if (e instanceof ConfigError) throw new StartupError(e.message);
    throw e;
  }
  const devRaw = s['IRIS_DEV_MODE'] ?? '0';
  if (!['0', '1', 'true', 'false'].includes(devRaw)) throw new StartupError(`IRIS_DEV_MODE must be 0 or 1, got "${devRaw}"`);
  if (devAuthDecision(s) === 'none') {
    throw new StartupError('no JWT key configured: set IRIS_JWT_SECRET, IRIS_JWKS or IRIS_JWKS_URL (or IRIS_DEV_MODE=1 for local development)');
  }
  let auth: AuthConfig;
  try {
    auth = authConfigFromEnv(s);
  } catch (e) {
    if (e instanceof SyntaxError) throw new StartupError(`IRIS_JWKS is not valid JSON: ${e.message}`);
    if (e instanceof AuthError) throw new StartupError(e.message);
    throw e;
  }
  if (!Number.isFinite(auth.clockToleranceSec) || auth.clockToleranceSec < 0) {
    throw new StartupError(`IRIS_JWT_CLOCK_TOLERANCE must be a non-negative number of seconds`);
  }
  const workersRaw = s['IRIS_WORKERS'] ?? '';
  return {
    host: s['IRIS_HOST'] ?? '127.0.0.1',
    port: int(s, 'IRIS_PORT', 0, 65535),
    dataDir: resolve(dataDir),
    runDir: resolve(runDir),
    workers: workersRaw === '' ? null : int(s, 'IRIS_WORKERS', 1, 1024),
    tls: cert !== '' ? { cert, key } : null,
    route: cert !== '' ? 'pipe' : route,
    commitWindowMs: int(s, 'IRIS_COMMIT_WINDOW_MS', 0, 1000),
    commitMaxBatch: int(s, 'IRIS_COMMIT_MAX_BATCH', 1),
    // Shared with the Cloudflare profile (core/config.ts): same names, same defaults.
    helloTimeoutMs: engine.helloTimeoutMs,
    headersTimeoutMs: int(s, 'IRIS_HEADERS_TIMEOUT_MS', 100, 600_000),
    connectRatePerMin: int(s, 'IRIS_CONNECT_RATE', 1),
    maxConnections: (s['IRIS_MAX_CONNECTIONS'] ?? '') === '' ? null : int(s, 'IRIS_MAX_CONNECTIONS', 1),
    pingMs: engine.pingMs,
    maxPayload: int(s, 'IRIS_WS_MAX_PAYLOAD', LIMITS.maxFrameBytes),
    mailboxIdleMs: int(s, 'IRIS_MAILBOX_IDLE_MS', 1),
    peerTimeoutMs: int(s, 'IRIS_PEER_TIMEOUT_MS', 1),
    drainTimeoutMs: int(s, 'IRIS_DRAIN_TIMEOUT_MS', 1),
    semiSpaceMb: int(s, 'IRIS_SEMI_SPACE_MB', 0, 1024),
    idleGcMs: int(s, 'IRIS_IDLE_GC_MS', 0),
    standbyWorker: int(s, 'IRIS_STANDBY_WORKER', 0, 1) === 1,
    walSync,
    log,
    engine,
    auth,
    devAuth: auth.devAuth,
    devModeIgnored: devModeRequested(s) && !auth.devAuth,
  };
}

export function defaultWorkers(): number {
  return availableParallelism();
}

export function helpText(): string {
  const lines = [
    'iris-onprem — the Iris messaging engine on one machine, one worker process per core.',
    '',
    'Usage: iris-onprem [--option value ...]     (npm run onprem -- [options])',
    '',
    'Every option is also an environment variable (IRIS_<NAME>) and a key of the JSON config file.',
    'Precedence: flags > environment > config file > defaults.',
    '',
    'Server:',
  ];
  const flag = (n: string) => '--' + n.slice(5).toLowerCase().replace(/_/g, '-');
  for (const [k, d] of Object.entries(ONPREM_SETTINGS)) {
    lines.push(`  ${flag(k).padEnd(24)} ${d.doc}${d.def ? ` [${d.def}]` : ''}`);
  }
  lines.push('', 'Auth:');
  for (const [k, doc] of Object.entries(AUTH_SETTINGS)) lines.push(`  ${flag(k).padEnd(24)} ${doc}`);
  lines.push('', 'Engine (same names as the Cloudflare profile):');
  for (const n of Object.values(CONFIG_ENV_NAMES)) lines.push(`  ${flag(n)}`);
  lines.push(
    '',
    'Endpoints: ws(s)://HOST:PORT/v1/connect, /healthz, /readyz, /metrics (Prometheus).',
    'A key (IRIS_JWT_SECRET, IRIS_JWKS or IRIS_JWKS_URL) is required. Only with --dev-mode 1 and no key at all are',
    `tokens signed with the PUBLIC secret "${DEV_SECRET}" accepted (npm run token). Never expose that to a network.`,
  );
  return lines.join('\n');
}
