import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

/**
 * A real Prometheus (Debian's `prometheus` package, 2.42) run as a child of the caller, never the system
 * service: on a free loopback port, with its own temporary config and TSDB directory, stopped by its pid. Used
 * by test/onprem/dashboard-prometheus.test.ts and scripts/dashboard-preview.ts to run the dashboard's PromQL
 * against what the on-prem server really exports.
 */

export const PROMETHEUS_BIN = '/usr/bin/prometheus';
export const PROMTOOL_BIN = '/usr/bin/promtool';
export const INSTALL_HINT = 'install it: apt-get install prometheus (Debian bookworm ships 2.42 with promtool)';

/** An error message when the binaries are missing, null when both are there. */
export function prometheusMissing(): string | null {
  for (const b of [PROMETHEUS_BIN, PROMTOOL_BIN]) if (!existsSync(b)) return `${b} is missing: ${INSTALL_HINT}`;
  return null;
}

/** `promtool check rules FILE`: exit status and output. */
export function checkRules(file: string): { ok: boolean; out: string } {
  const r = spawnSync(PROMTOOL_BIN, ['check', 'rules', file], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}` };
}

export interface PromSample {
  metric: Record<string, string>;
  value?: [number, string];
  values?: [number, string][];
}

interface ApiAnswer<T> {
  status: 'success' | 'error';
  data?: T;
  errorType?: string;
  error?: string;
}

export class PrometheusError extends Error {
  override readonly name = 'PrometheusError';
}

export interface PrometheusOptions {
  /** host:port of the on-prem server whose /metrics is scraped. */
  target: string;
  scrapeIntervalS?: number;
  /** Alert rule files loaded through `rule_files` (evaluated every scrape interval). */
  ruleFiles?: string[];
}

export class Prometheus {
  private output = '';
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
    readonly scrapeIntervalS: number,
  ) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => this.keep(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.keep(d));
  }

  /** The last 8 KB of Prometheus's own log, for error messages. */
  get log(): string {
    return this.output;
  }

  private keep(d: string): void {
    this.output = (this.output + d).slice(-8192);
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Starts Prometheus and resolves once /-/ready answers 200 (bounded). */
  static async start(opts: PrometheusOptions, timeoutMs = 20_000): Promise<Prometheus> {
    const missing = prometheusMissing();
    if (missing) throw new PrometheusError(missing);
    const dir = mkdtempSync(join(tmpdir(), 'iris-prometheus-'));
    const s = opts.scrapeIntervalS ?? 1;
    const rules = (opts.ruleFiles ?? []).map((f) => `  - ${JSON.stringify(f)}`).join('\n');
    // JSON strings are valid YAML scalars, so paths need no further quoting.
    const config = [
      'global:',
      `  scrape_interval: ${s}s`,
      `  evaluation_interval: ${s}s`,
      ...(rules ? ['rule_files:', rules] : []),
      'scrape_configs:',
      '  - job_name: iris',
      '    metrics_path: /metrics',
      `    static_configs: [{ targets: [${JSON.stringify(opts.target)}] }]`,
      '',
    ].join('\n');
    writeFileSync(join(dir, 'prometheus.yml'), config);
    const port = await freePort();
    const child = spawn(
      PROMETHEUS_BIN,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1d',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const p = new Prometheus(child, port, dir, s);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        p.cleanup();
        throw new PrometheusError(`prometheus exited before it was ready (code ${child.exitCode}):\n${p.log}`);
      }
      const ok = await fetch(`${p.base}/-/ready`).then((r) => r.ok, () => false);
      if (ok) return p;
      if (Date.now() > deadline) {
        await p.stop();
        throw new PrometheusError(`prometheus not ready within ${timeoutMs} ms:\n${p.log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async api<T>(path: string, params: Record<string, string | string[]>): Promise<T> {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
    // GET: every endpoint used here accepts it (rules and targets accept nothing else); queries are short.
    const res = await fetch(`${this.base}${path}?${body.toString()}`);
    const a = (await res.json()) as ApiAnswer<T>;
    if (a.status !== 'success') throw new PrometheusError(`${path} ${JSON.stringify(params)}: ${a.errorType}: ${a.error}`);
    return a.data!;
  }

  /** An instant query (/api/v1/query); throws PrometheusError when the PromQL does not parse or evaluate. */
  async query(promql: string, time?: number): Promise<PromSample[]> {
    const d = await this.api<{ resultType: string; result: PromSample[] }>('/api/v1/query', { query: promql, ...(time !== undefined ? { time: String(time) } : {}) });
    if (d.resultType !== 'vector') throw new PrometheusError(`${promql}: expected a vector, got ${d.resultType}`);
    return d.result;
  }

  /** A range query (/api/v1/query_range), seconds since the epoch. */
  async queryRange(promql: string, start: number, end: number, stepS: number): Promise<PromSample[]> {
    const d = await this.api<{ result: PromSample[] }>('/api/v1/query_range', { query: promql, start: String(start), end: String(end), step: String(stepS) });
    return d.result;
  }

  /** Values of a label among series matching `match` (Grafana's label_values(match, label)). */
  labelValues(label: string, match: string): Promise<string[]> {
    return this.api<string[]>(`/api/v1/label/${encodeURIComponent(label)}/values`, { 'match[]': match });
  }

  /**
   * Metric families the scraped targets declare (/api/v1/metadata: their HELP and TYPE lines), including
   * labelled ones that have no series yet. Histogram families are named without _bucket/_sum/_count.
   */
  async metadata(): Promise<Set<string>> {
    return new Set(Object.keys(await this.api<Record<string, unknown>>('/api/v1/metadata', {})));
  }

  /** The loaded rule groups (/api/v1/rules). */
  rules(): Promise<{ groups: { name: string; rules: { name: string; health: string; lastError?: string; type: string }[] }[] }> {
    return this.api('/api/v1/rules', {});
  }

  /** Health of the scrape targets (/api/v1/targets). */
  async targets(): Promise<{ health: string; lastError: string; scrapeUrl: string }[]> {
    const d = await this.api<{ activeTargets: { health: string; lastError: string; scrapeUrl: string }[] }>('/api/v1/targets', {});
    return d.activeTargets;
  }

  /** SIGTERM, SIGKILL after 10 s; then removes its directory. Only the process this object started. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    this.cleanup();
  }

  private cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
