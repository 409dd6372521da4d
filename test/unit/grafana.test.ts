import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WorkerMetrics } from '../../onprem/metrics.js';

/**
 * The Grafana dashboard and the example alert rules (docs/grafana/) name metrics in PromQL strings nothing
 * else checks: a renamed metric would leave a panel silently empty or an alert that never fires. Every name
 * they use must be one the server registers.
 */

const read = (p: string): string => readFileSync(join(import.meta.dirname, '../..', p), 'utf8');

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

/** Names the on-prem server exports: a worker's registry, instantiated, plus the supervisor's own few. */
async function exported(): Promise<{ names: Set<string>; histograms: Set<string> }> {
  const m = new WorkerMetrics(0);
  const json = await m.registry.getMetricsAsJSON();
  const names = new Set(json.map((x) => x.name));
  const histograms = new Set(json.filter((x) => String(x.type) === 'histogram').map((x) => x.name));
  // The supervisor's registry needs a running supervisor; its metric names are read from its source.
  for (const [, name] of read('onprem/supervisor.ts').matchAll(/name: '(iris_[a-z0-9_]+)'/g)) names.add(name!);
  return { names, histograms };
}

/** Metric names in a PromQL expression: every iris_ identifier (label values never start with it here). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(iris_[a-z0-9_]+)\b/g)].map((x) => x[1]!);
}

function unknown(exprs: string[], ex: { names: Set<string>; histograms: Set<string> }): string[] {
  const bad: string[] = [];
  for (const expr of exprs) {
    for (const n of metricNames(expr)) {
      if (ex.names.has(n)) continue;
      const base = n.replace(/_(bucket|sum|count)$/, '');
      if (base !== n && ex.histograms.has(base)) continue;
      bad.push(`${n} in ${expr}`);
    }
  }
  return bad;
}

function dashboardExprs(): string[] {
  const dash = JSON.parse(read('docs/grafana/iris-onprem.json')) as { panels: Panel[]; templating: { list: { query?: unknown }[] } };
  const out: string[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const t of p.targets ?? []) out.push(t.expr);
      walk(p.panels ?? []);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating.list) if (typeof v.query === 'string' && v.query.includes('iris_')) out.push(v.query);
  return out;
}

function alertExprs(): string[] {
  return [...read('docs/grafana/alerts.yml').matchAll(/^\s+expr:\s*(.+)$/gm)].map((x) => x[1]!.trim());
}

describe('Grafana dashboard and alert rules (docs/grafana/)', () => {
  it('the dashboard is JSON with panels that query the server, each with a title', () => {
    const exprs = dashboardExprs();
    expect(exprs.length).toBeGreaterThan(20);
    for (const e of exprs) expect(metricNames(e).length, e).toBeGreaterThan(0);
  });

  it('every metric the dashboard queries is registered by the server', async () => {
    expect(unknown(dashboardExprs(), await exported())).toEqual([]);
  });

  it('every metric the alert rules use is registered by the server', async () => {
    const exprs = alertExprs();
    const rules = read('docs/grafana/alerts.yml').match(/^\s+- alert: /gm) ?? [];
    expect(exprs.length).toBe(rules.length);
    expect(exprs.length).toBeGreaterThan(5);
    expect(unknown(exprs, await exported())).toEqual([]);
  });

  it('the check catches a misspelt name and allows only real histograms their suffixes', async () => {
    const ex = await exported();
    expect(unknown(['rate(iris_mesages_accepted_total[5m])'], ex)).toHaveLength(1);
    expect(unknown(['rate(iris_commit_seconds_bucket[5m])'], ex)).toEqual([]);
    expect(unknown(['rate(iris_connections_bucket[5m])'], ex)).toHaveLength(1);
  });

  it('covers what the issue asks: connections, message rates, errors, commit latency, links, memory, CPU', () => {
    const all = dashboardExprs().join('\n');
    for (const n of ['iris_connections', 'iris_messages_accepted_total', 'iris_entries_delivered_total', 'iris_deliver_acks_total', 'iris_errors_total', 'iris_commit_seconds_bucket', 'iris_peer_call_seconds_bucket', 'iris_peer_calls_total', 'iris_process_resident_memory_bytes', 'iris_process_cpu_seconds_total']) {
      expect(all, n).toContain(n);
    }
  });
});
