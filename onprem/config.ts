import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { AuthError, DEV_SECRET, authConfigFromEnv, devAuthDecision, devModeRequested, type AuthConfig } from '../auth/index.js';
import { configFromEnv, type Config } from '../core/config.js';
import { clusterConfig, type ClusterConfig } from './cluster/config.js';
import { pushSettingsFromEnv, type PushSettings } from '../core/push.js';
import { ConfigError, SETTINGS, flagName, rangeText, readNumber, readOptionalNumber, readString, settingNames, settingSpec, settingsFor, validateSettings, type SettingGroup } from '../core/settings.js';

/**
 * On-prem settings. Every setting has one IRIS_* name and can come from (later wins):
 *   embedded defaults < JSON config file (--config / IRIS_CONFIG) < environment < command-line flags.
 * A flag is the name without IRIS_, lower case, dashes: IRIS_DATA_DIR <-> --data-dir. The config file is one
 * JSON object whose keys are IRIS_* names or flag names ({"port": 8788, "IRIS_INBOX_CAP": 5000}).
 * The supervisor resolves the map once and hands it to every worker, so all processes agree.
 */

export type Settings = Record<string, string>;

/** Every name the on-prem profile takes, as flag, environment variable or config file key (core/settings.ts). */
export function knownNames(): Set<string> {
  return new Set(settingNames('onprem'));
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
  if (settingSpec(name)?.type !== 'path' || value === '' || isAbsolute(value)) return value;
  return resolve(base, value);
}

export function readConfigFile(file: string): Settings {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    throw new StartupError(`cannot read config file ${file}: ${(e as Error).message}`, { cause: e });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new StartupError(`config file ${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
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
  // The server's own defaults, written out so every worker receives the same resolved map (paths made absolute
  // against the supervisor's cwd); auth and engine defaults are applied where they are read.
  for (const d of settingsFor('onprem')) if (d.group === 'server' && d.default !== null) settings[d.name] = resolvePath(d.name, d.default, cwd);
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
  linkTimeoutMs: number;
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
  /** Push webhooks (core/push.ts); url undefined: off. */
  push: PushSettings;
  auth: AuthConfig;
  /** True when tokens signed with the public development secret are accepted (banner, /healthz). */
  devAuth: boolean;
  /** IRIS_DEV_MODE=1 was set but a key is configured, so the development secret is NOT accepted. */
  devModeIgnored: boolean;
  /** IRIS_ADMIN_SECRET: the admin API's bearer secret (core/admin.ts); undefined: the admin API is off. */
  adminSecret: string | undefined;
  /** The v1 gateway (gateway/v1/): its ports (null: that transport is off), the HS256 secret, anonymous LOGIN. */
  v1: { tcpPort: number | null; wsPort: number | null; secret: string | undefined; allowAnonymous: boolean };
  /** Cluster mode on NATS JetStream (onprem/cluster/); null: one box (IRIS_CLUSTER_NATS unset). */
  cluster: ClusterConfig | null;
}

/** Validates and types the merged settings. Throws StartupError with a message meant for an operator. */
export function onpremConfig(s: Settings): OnpremConfig {
  // Every value against its declared type and range first, the same check the Cloudflare edge runs.
  try {
    validateSettings(s, 'onprem');
  } catch (e) {
    if (e instanceof ConfigError) throw new StartupError(e.message, { cause: e });
    throw e;
  }
  const dataDir = s['IRIS_DATA_DIR'] ?? resolve(readString(s, 'IRIS_DATA_DIR')!);
  const runDir = s['IRIS_RUN_DIR'] || resolve(dataDir, 'run');
  const cert = s['IRIS_TLS_CERT'] ?? '';
  const key = s['IRIS_TLS_KEY'] ?? '';
  if ((cert === '') !== (key === '')) throw new StartupError('TLS needs both IRIS_TLS_CERT and IRIS_TLS_KEY');
  const route = readString(s, 'IRIS_ROUTE') as 'handoff' | 'pipe';
  const walSync = readString(s, 'IRIS_WAL_SYNC') as 'commit' | 'async';
  const log = readString(s, 'IRIS_LOG') as 'info' | 'warn' | 'error';
  const engine = configFromEnv(s);
  if (devAuthDecision(s) === 'none') {
    throw new StartupError('no JWT key configured: set IRIS_JWT_SECRET, IRIS_JWKS or IRIS_JWKS_URL (or IRIS_DEV_MODE=1 for local development)');
  }
  let auth: AuthConfig;
  try {
    auth = authConfigFromEnv(s);
  } catch (e) {
    if (e instanceof AuthError) throw new StartupError(e.message, { cause: e });
    throw e;
  }
  return {
    host: readString(s, 'IRIS_HOST')!,
    port: readNumber(s, 'IRIS_PORT'),
    dataDir: resolve(dataDir),
    runDir: resolve(runDir),
    workers: readOptionalNumber(s, 'IRIS_WORKERS') ?? null,
    tls: cert !== '' ? { cert, key } : null,
    route: cert !== '' ? 'pipe' : route,
    commitWindowMs: readNumber(s, 'IRIS_COMMIT_WINDOW_MS'),
    commitMaxBatch: readNumber(s, 'IRIS_COMMIT_MAX_BATCH'),
    // Shared with the Cloudflare profile (core/config.ts): same names, same defaults.
    helloTimeoutMs: engine.helloTimeoutMs,
    headersTimeoutMs: readNumber(s, 'IRIS_HEADERS_TIMEOUT_MS'),
    connectRatePerMin: readNumber(s, 'IRIS_CONNECT_RATE'),
    maxConnections: readOptionalNumber(s, 'IRIS_MAX_CONNECTIONS') ?? null,
    pingMs: engine.pingMs,
    maxPayload: readNumber(s, 'IRIS_WS_MAX_PAYLOAD'),
    mailboxIdleMs: readNumber(s, 'IRIS_MAILBOX_IDLE_MS'),
    linkTimeoutMs: readNumber(s, 'IRIS_PEER_TIMEOUT_MS'),
    drainTimeoutMs: readNumber(s, 'IRIS_DRAIN_TIMEOUT_MS'),
    semiSpaceMb: readNumber(s, 'IRIS_SEMI_SPACE_MB'),
    idleGcMs: readNumber(s, 'IRIS_IDLE_GC_MS'),
    standbyWorker: readString(s, 'IRIS_STANDBY_WORKER') === '1',
    walSync,
    log,
    engine,
    push: pushSettingsFromEnv(s),
    auth,
    devAuth: auth.devAuth,
    devModeIgnored: devModeRequested(s) && !auth.devAuth,
    adminSecret: readString(s, 'IRIS_ADMIN_SECRET'),
    v1: {
      tcpPort: readOptionalNumber(s, 'IRIS_V1_TCP_PORT') ?? null,
      wsPort: readOptionalNumber(s, 'IRIS_V1_WS_PORT') ?? null,
      secret: readString(s, 'IRIS_V1_JWT_SECRET') ?? auth.secret,
      allowAnonymous: readString(s, 'IRIS_V1_ALLOW_ANONYMOUS') === '1',
    },
    cluster: clusterConfig(s, readNumber(s, 'IRIS_PORT')),
  };
}

export function defaultWorkers(): number {
  return availableParallelism();
}

const HELP_GROUPS: [SettingGroup, string][] = [
  ['server', 'Server:'],
  ['auth', 'Auth:'],
  ['engine', 'Engine (same names, defaults and ranges as the Cloudflare profile):'],
  ['push', 'Push webhooks (both profiles; docs/OPERATIONS.md "Push webhooks"):'],
];

/** --help: every on-prem setting from core/settings.ts, with its sentence, accepted values and default. */
export function helpText(): string {
  const lines = [
    'iris-onprem — the Iris messaging engine on one machine, one worker process per core.',
    '',
    'Usage: iris-onprem [--option value ...]     (npm run onprem -- [options])',
    '',
    'Every option is also an environment variable (IRIS_<NAME>) and a key of the JSON config file.',
    'Precedence: flags > environment > config file > defaults.',
  ];
  for (const [group, title] of HELP_GROUPS) {
    lines.push('', title);
    for (const d of SETTINGS.filter((x) => x.group === group && x.profiles.includes('onprem'))) {
      const takes = d.type === 'string' ? 'text' : d.type === 'path' ? 'a path' : rangeText(d, true);
      lines.push(`  ${flagName(d.name)}`, `      ${d.doc.replace(/`/g, '')}`, `      (${takes}; default: ${d.default ?? d.defaultDoc ?? 'none'})`);
    }
  }
  lines.push(
    '',
    'Endpoints: ws(s)://HOST:PORT/v1/connect, /healthz, /readyz, /metrics (Prometheus).',
    'A key (IRIS_JWT_SECRET, IRIS_JWKS or IRIS_JWKS_URL) is required. Only with --dev-mode 1 and no key at all are',
    `tokens signed with the PUBLIC secret "${DEV_SECRET}" accepted (npm run token). Never expose that to a network.`,
  );
  return lines.join('\n');
}
