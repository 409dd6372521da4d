/**
 * Command line and presets of the load generator. A preset is a set of option values; any option given on the
 * command line wins over the preset's. docs/BENCHMARKS.md documents the same presets.
 */
import { parseArgs } from 'node:util';
import { DEV_SECRET } from '../../auth/config.js';
import { parseDuration } from './kill.js';

export type Target = 'onprem' | 'url' | 'relay' | 'cloudflare';
export type Baseline = 'relay' | 'echo' | 'none';
export type Mode = 'fixed' | 'max' | 'memory';
export type Pattern = 'pairs' | 'hot';

/** How find-the-maximum mode searches (the same in the options and in each client's load spec). */
export interface MaxSearch {
  startRate: number;
  stepFactor: number;
  maxRate: number;
  bisect: number;
  pastMax: number;
  maxP99Ms: number;
  track: number;
}

export interface Options extends MaxSearch {
  preset: string | null;
  target: Target;
  url: string | null;
  serverPid: number | null;
  baseline: Baseline;
  baselineOrder: 'before' | 'after';
  mode: Mode;
  pattern: Pattern;
  /** One run per value (memory mode: 20000,50000,100000). */
  connections: number[];
  /** One run per value (scaling: 1,2). Raised automatically when the connections need more processes. */
  workers: number[];
  rate: number;
  rateFrom: string | null;
  size: number;
  warmupS: number;
  durationS: number;
  drainS: number;
  settleS: number;
  processes: number;
  connsPerProcess: number;
  connsPerAddress: number;
  connsPerWorker: number;
  connectConcurrency: number;
  maxInflight: number;
  port: number;
  serverArgs: string[];
  secret: string;
  out: string | null;
  /** Collect V8 CPU profiles of the server and client processes under DIR (summaries + flame graphs). */
  profile: string | null;
  /** Re-render summary.md, report.html and the plots of an existing results directory (no load). */
  render: string | null;
  keepData: boolean;
  quiet: boolean;
  /** Worker-kill mode: SIGKILL on-prem worker `killWorker` this many ms into the measured window (null: off). */
  killWorkerAtMs: number | null;
  killWorker: number;
}

export const DEFAULTS: Options = {
  preset: null,
  target: 'onprem',
  url: null,
  serverPid: null,
  baseline: 'relay',
  baselineOrder: 'before',
  mode: 'fixed',
  pattern: 'pairs',
  connections: [200],
  workers: [2],
  rate: 2000,
  rateFrom: null,
  size: 100,
  warmupS: 2,
  durationS: 10,
  drainS: 10,
  startRate: 2000,
  stepFactor: 1.3,
  maxRate: 2_000_000,
  bisect: 2,
  pastMax: 0,
  maxP99Ms: 50,
  track: 0.95,
  settleS: 5,
  processes: 0,
  connsPerProcess: 18_000,
  connsPerAddress: 20_000,
  connsPerWorker: 18_000,
  connectConcurrency: 200,
  maxInflight: 500_000,
  port: 0,
  serverArgs: [],
  secret: DEV_SECRET,
  out: null,
  profile: null,
  render: null,
  keepData: false,
  quiet: false,
  killWorkerAtMs: null,
  killWorker: 0,
};

export interface Preset {
  doc: string;
  values: Partial<Options>;
}

/**
 * Each preset reproduces one number of docs/BENCHMARKS.md. Durations are the publishing ones; a quick check of
 * any preset is `--duration 3 --warmup 1` on top.
 */
export const PRESETS: Record<string, Preset> = {
  smoke: {
    doc: 'Seconds-long check that the harness works end to end (CI): on-prem vs raw relay, 1:1 pairs, fixed rate.',
    values: { target: 'onprem', baseline: 'relay', mode: 'fixed', pattern: 'pairs', connections: [20], workers: [2], rate: 400, warmupS: 1, durationS: 2, drainS: 10 },
  },
  throughput: {
    doc: 'Maximum sustained durable 1:1 throughput (find-the-maximum), 2 workers, 2,000 connections (1,000 pairs), 100 B bodies, vs the raw relay.',
    values: { target: 'onprem', baseline: 'relay', mode: 'max', pattern: 'pairs', connections: [2000], workers: [2], processes: 2, startRate: 5000, stepFactor: 1.3, bisect: 2, warmupS: 3, durationS: 10, drainS: 15, maxP99Ms: 50, track: 0.95 },
  },
  latency: {
    doc: 'Latency at a fixed offered rate (open loop): pass --rate-from <throughput result.json> to use half of its maximum, or --rate.',
    values: { target: 'onprem', baseline: 'relay', mode: 'fixed', pattern: 'pairs', connections: [2000], workers: [2], processes: 2, rate: 20000, warmupS: 10, durationS: 60, drainS: 15 },
  },
  memory: {
    doc: 'Server RSS (all processes) per idle authenticated connection at 20k, 50k and 100k connections, 6 workers, vs idle connections on the raw relay.',
    values: { target: 'onprem', baseline: 'relay', mode: 'memory', connections: [20000, 50000, 100000], workers: [6], settleS: 10 },
  },
  scaling: {
    doc: 'Maximum sustained 1:1 throughput with 1 and then 2 worker processes (and the relay with 1 and 2).',
    values: { target: 'onprem', baseline: 'relay', mode: 'max', pattern: 'pairs', connections: [2000], workers: [1, 2], processes: 2, startRate: 4000, stepFactor: 1.3, bisect: 2, warmupS: 3, durationS: 10, drainS: 15, maxP99Ms: 50 },
  },
  hot: {
    doc: 'Hot recipient: 200 senders to one inbox, rate stepped up to and past saturation (what the inbox sustains, what senders see).',
    values: { target: 'onprem', baseline: 'relay', mode: 'max', pattern: 'hot', connections: [201], workers: [2], processes: 2, startRate: 1000, stepFactor: 1.3, bisect: 1, pastMax: 2, warmupS: 2, durationS: 8, drainS: 15, maxP99Ms: 100 },
  },
  cloudflare: {
    doc: 'Cloudflare profile on local workerd (wrangler dev): Iris 1:1 message path vs the bare echo Durable Object, find-the-maximum.',
    values: { target: 'cloudflare', baseline: 'echo', mode: 'max', pattern: 'pairs', connections: [200], startRate: 200, stepFactor: 1.4, bisect: 1, warmupS: 3, durationS: 8, drainS: 20, maxP99Ms: 100 },
  },
};

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const SPEC = {
  preset: { type: 'string' },
  target: { type: 'string' },
  url: { type: 'string' },
  'server-pid': { type: 'string' },
  baseline: { type: 'string' },
  'baseline-order': { type: 'string' },
  mode: { type: 'string' },
  pattern: { type: 'string' },
  connections: { type: 'string' },
  workers: { type: 'string' },
  rate: { type: 'string' },
  'rate-from': { type: 'string' },
  size: { type: 'string' },
  warmup: { type: 'string' },
  duration: { type: 'string' },
  drain: { type: 'string' },
  'start-rate': { type: 'string' },
  'step-factor': { type: 'string' },
  'max-rate': { type: 'string' },
  bisect: { type: 'string' },
  'past-max': { type: 'string' },
  'max-p99': { type: 'string' },
  track: { type: 'string' },
  settle: { type: 'string' },
  processes: { type: 'string' },
  'conns-per-process': { type: 'string' },
  'conns-per-address': { type: 'string' },
  'conns-per-worker': { type: 'string' },
  'connect-concurrency': { type: 'string' },
  'max-inflight': { type: 'string' },
  port: { type: 'string' },
  'server-arg': { type: 'string', multiple: true },
  secret: { type: 'string' },
  out: { type: 'string' },
  profile: { type: 'string' },
  render: { type: 'string' },
  'keep-data': { type: 'boolean' },
  'kill-worker-at': { type: 'string' },
  'kill-worker': { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function num(name: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number in [${min}, ${max}], got "${v}"`);
  return n;
}

function list(name: string, v: string, min: number): number[] {
  const out = v.split(',').map((s) => Math.round(num(name, s.trim(), min)));
  if (out.length === 0) throw new UsageError(`--${name} needs at least one value`);
  return out;
}

function oneOf<T extends string>(name: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

export function parseOptions(argv: string[]): { options: Options; help: boolean } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: SPEC, allowPositionals: false, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  const o: Options = { ...DEFAULTS, connections: [...DEFAULTS.connections], workers: [...DEFAULTS.workers], serverArgs: [] };
  if (v.preset !== undefined) {
    const p = PRESETS[v.preset];
    if (!p) throw new UsageError(`unknown preset "${v.preset}" (${Object.keys(PRESETS).join(', ')})`);
    Object.assign(o, p.values);
    o.preset = v.preset;
  }
  if (v.target !== undefined) {
    o.target = oneOf('target', v.target, ['onprem', 'url', 'relay', 'cloudflare'] as const);
    // A target given on the command line picks its natural baseline unless --baseline says otherwise.
    if (v.baseline === undefined) o.baseline = o.target === 'cloudflare' ? 'echo' : o.target === 'relay' ? 'none' : 'relay';
  }
  if (v.url !== undefined) o.url = v.url;
  if (v['server-pid'] !== undefined) o.serverPid = num('server-pid', v['server-pid'], 1);
  if (v.baseline !== undefined) o.baseline = oneOf('baseline', v.baseline, ['relay', 'echo', 'none'] as const);
  if (v['baseline-order'] !== undefined) o.baselineOrder = oneOf('baseline-order', v['baseline-order'], ['before', 'after'] as const);
  if (v.mode !== undefined) o.mode = oneOf('mode', v.mode, ['fixed', 'max', 'memory'] as const);
  if (v.pattern !== undefined) o.pattern = oneOf('pattern', v.pattern, ['pairs', 'hot'] as const);
  if (v.connections !== undefined) o.connections = list('connections', v.connections, 2);
  if (v.workers !== undefined) o.workers = list('workers', v.workers, 1);
  if (v.rate !== undefined) o.rate = num('rate', v.rate, 1);
  if (v['rate-from'] !== undefined) o.rateFrom = v['rate-from'];
  if (v.size !== undefined) o.size = Math.round(num('size', v.size, 16, 64 * 1024));
  if (v.warmup !== undefined) o.warmupS = num('warmup', v.warmup, 0, 3600);
  if (v.duration !== undefined) o.durationS = num('duration', v.duration, 0.5, 3600);
  if (v.drain !== undefined) o.drainS = num('drain', v.drain, 0, 600);
  if (v['start-rate'] !== undefined) o.startRate = num('start-rate', v['start-rate'], 1);
  if (v['step-factor'] !== undefined) o.stepFactor = num('step-factor', v['step-factor'], 1.01, 10);
  if (v['max-rate'] !== undefined) o.maxRate = num('max-rate', v['max-rate'], 1);
  if (v.bisect !== undefined) o.bisect = Math.round(num('bisect', v.bisect, 0, 10));
  if (v['past-max'] !== undefined) o.pastMax = Math.round(num('past-max', v['past-max'], 0, 10));
  if (v['max-p99'] !== undefined) o.maxP99Ms = num('max-p99', v['max-p99'], 0.1);
  if (v.track !== undefined) o.track = num('track', v.track, 0.5, 1);
  if (v.settle !== undefined) o.settleS = num('settle', v.settle, 0, 600);
  if (v.processes !== undefined) o.processes = Math.round(num('processes', v.processes, 0, 64));
  if (v['conns-per-process'] !== undefined) o.connsPerProcess = Math.round(num('conns-per-process', v['conns-per-process'], 1, 19_000));
  if (v['conns-per-address'] !== undefined) o.connsPerAddress = Math.round(num('conns-per-address', v['conns-per-address'], 1, 28_000));
  if (v['conns-per-worker'] !== undefined) o.connsPerWorker = Math.round(num('conns-per-worker', v['conns-per-worker'], 1, 19_000));
  if (v['connect-concurrency'] !== undefined) o.connectConcurrency = Math.round(num('connect-concurrency', v['connect-concurrency'], 1, 10_000));
  if (v['max-inflight'] !== undefined) o.maxInflight = Math.round(num('max-inflight', v['max-inflight'], 1));
  if (v.port !== undefined) o.port = Math.round(num('port', v.port, 0, 65535));
  if (v['server-arg'] !== undefined) o.serverArgs = v['server-arg'].flatMap((a) => a.split(/\s+/).filter(Boolean));
  if (v.secret !== undefined) o.secret = v.secret;
  if (v.out !== undefined) o.out = v.out;
  if (v.profile !== undefined) o.profile = v.profile;
  if (v.render !== undefined) o.render = v.render;
  if (v['keep-data']) o.keepData = true;
  if (v.quiet) o.quiet = true;
  if (v['kill-worker-at'] !== undefined) {
    try {
      o.killWorkerAtMs = parseDuration('kill-worker-at', v['kill-worker-at']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (v['kill-worker'] !== undefined) {
    if (o.killWorkerAtMs === null) throw new UsageError('--kill-worker needs --kill-worker-at');
    o.killWorker = Math.round(num('kill-worker', v['kill-worker'], 0, 1023));
  }
  if (o.killWorkerAtMs !== null) {
    if (o.target !== 'onprem') throw new UsageError('--kill-worker-at needs --target onprem (it kills one of the workers this run starts)');
    if (o.mode !== 'fixed') throw new UsageError('--kill-worker-at needs --mode fixed (one phase at one rate)');
    if (o.killWorkerAtMs >= o.durationS * 1000) throw new UsageError(`--kill-worker-at ${o.killWorkerAtMs / 1000} s is not inside the ${o.durationS} s window (--duration)`);
    if (o.workers.some((w) => o.killWorker >= w)) throw new UsageError(`--kill-worker ${o.killWorker}: there are only ${Math.min(...o.workers)} worker(s)`);
    // The figure is recovery inside one run (before vs after the kill), not a ratio: no baseline unless asked.
    if (v.baseline === undefined) o.baseline = 'none';
  }
  if (o.target === 'url' && o.url === null) throw new UsageError('--target url needs --url ws://host:port/v1/connect');
  if (o.target === 'cloudflare' && o.baseline === 'relay') o.baseline = 'echo';
  if (o.target !== 'cloudflare' && o.baseline === 'echo') throw new UsageError('--baseline echo needs --target cloudflare');
  if (o.target === 'relay') o.baseline = 'none';
  return { options: o, help: v.help === true };
}

export function helpText(): string {
  const lines = [
    'iris bench — load generator for Iris with a raw baseline in the same run.',
    '',
    'Usage: npm run bench -- [--preset NAME] [options]',
    '       (today: sh scripts/node.sh --import tsx scripts/bench/run.ts [options])',
    '',
    'Presets (command-line options override them; docs/BENCHMARKS.md has the details):',
    ...Object.entries(PRESETS).map(([k, p]) => `  ${k.padEnd(11)} ${p.doc}`),
    '',
    'Target:',
    '  --target onprem|url|relay|cloudflare   onprem: start dist/onprem/main.js (fresh data dir under data/bench);',
    '                             url: an Iris server you started (--url, --server-pid for memory);',
    '                             relay: only the raw relay; cloudflare: wrangler dev on scripts/bench/wrangler.bench.toml',
    '  --baseline relay|echo|none raw relay (onprem/url) or bare echo Durable Object (cloudflare)  [natural one]',
    '  --baseline-order before|after                                                       [before]',
    '  --workers N[,M..]          server worker processes, one run per value (raised to fit --connections) [2]',
    '  --server-arg "--flag v"    extra flags for the on-prem server (repeatable)',
    '  --port N                   server port (0: a free one)                                    [0]',
    '',
    'Load:',
    '  --mode fixed|max|memory    open loop at --rate | step the rate up to the maximum | idle memory [fixed]',
    '  --pattern pairs|hot        1:1 pairs (both directions) | every connection to one hot recipient [pairs]',
    '  --connections N[,M..]      connections (one run per value)                              [200]',
    '  --rate N                   offered messages/s (fixed mode)                               [2000]',
    '  --rate-from FILE           fixed rate = half the maximum found in a result.json',
    '  --size N                   body bytes (>= 16: sender, seq, scheduled time)               [100]',
    '  --warmup S --duration S --drain S   seconds                                          [2, 10, 10]',
    '  --start-rate N --step-factor F --max-rate N --bisect K --past-max K   (max mode)',
    '  --max-p99 MS --track F     a max-mode step passes if delivered >= F x offered and p99 <= MS [50, 0.95]',
    '  --settle S                 memory mode: wait before reading RSS                          [5]',
    '  --processes N              client processes (0: enough for the connections)              [0]',
    '  --conns-per-process N --conns-per-address N --conns-per-worker N      [18000, 20000, 18000]',
    '  --connect-concurrency N --max-inflight N                                       [200, 500000]',
    '',
    'Output:',
    '  --out DIR                  results directory                 [bench-results/<time>-<preset>]',
    '                             (result.json, summary.md, report.html for a browser, SVG plots)',
    '  --profile DIR              node --cpu-prof for server + client processes; top functions and',
    '                             flame graphs (SVG) per process in DIR/profiles.md',
    '  --render DIR               redo summary.md, report.html and the plots of DIR from its result.json',
    '  --keep-data --quiet --secret S',
    '',
    'Worker kill (on-prem, fixed mode; no baseline unless --baseline is given):',
    '  --kill-worker-at T         SIGKILL one server worker T into the measured window (10s, 2.5s, 500ms).',
    '                             The load keeps running; clients of its users reconnect, resume after their',
    '                             cursor and resend unacked sends with the same id. Reports what was in flight',
    '                             at the kill, time until its users were served again, the supervisor restart,',
    '                             throughput before/after. Exit 1 unless 0 lost, 0 duplicated, 0 unanswered.',
    '  --kill-worker N            which worker (index into the pids the server prints)            [0]',
  ];
  return lines.join('\n');
}
