import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Prometheus } from './prometheus.js';
import { ROOT } from './server.js';

/**
 * The Grafana dashboard (docs/grafana/iris-onprem.json) read as Grafana reads it: its panels and their PromQL
 * targets, its query variables resolved against a Prometheus, and its expressions interpolated as Grafana's
 * Prometheus data source does before it sends them. Shared by the test that runs every target against a real
 * Prometheus and by the preview that renders the panels (scripts/dashboard-preview.ts).
 */

export const DASHBOARD_FILE = join(ROOT, 'docs/grafana/iris-onprem.json');

export interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  fieldConfig?: { defaults?: { unit?: string; decimals?: number } };
  options?: { reduceOptions?: { calcs?: string[] } };
  targets?: Target[];
  panels?: Panel[];
}

export interface Variable {
  name: string;
  type: string;
  query?: string;
  multi?: boolean;
  includeAll?: boolean;
}

export interface Dashboard {
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

export function loadDashboard(file = DASHBOARD_FILE): Dashboard {
  return JSON.parse(readFileSync(file, 'utf8')) as Dashboard;
}

/** Panels in layout order (top to bottom, left to right), rows included, collapsed rows' children after them. */
export function flatPanels(d: Dashboard): Panel[] {
  const out: Panel[] = [];
  const sorted = [...d.panels].sort((a, b) => a.gridPos.y - b.gridPos.y || a.gridPos.x - b.gridPos.x);
  for (const p of sorted) {
    out.push(p);
    for (const c of p.panels ?? []) out.push(c);
  }
  return out;
}

/** Panels that query: every one but rows. */
export function queryPanels(d: Dashboard): Panel[] {
  return flatPanels(d).filter((p) => p.type !== 'row' && (p.targets?.length ?? 0) > 0);
}

/** Grafana's prometheusSpecialRegexEscape: a variable's value inside a =~ matcher. */
function regexEscape(v: string): string {
  return v.replace(/\\/g, '\\\\\\\\').replace(/[$^*{}[\]'+?.()|]/g, '\\\\$&');
}

/**
 * A variable's value as Grafana writes it into PromQL: a multi-value or include-all variable becomes
 * `(a|b)` of its regex-escaped values (with "All" selected and no custom all value, every value), one value
 * itself. An empty list cannot be written and is an error here (Grafana would send a query matching nothing).
 */
export function formatValues(v: Variable, values: string[]): string {
  if (values.length === 0) throw new Error(`variable $${v.name} has no values`);
  const esc = values.map(regexEscape);
  return esc.length === 1 ? esc[0]! : `(${esc.join('|')})`;
}

export interface Interpolation {
  vars: Map<string, string>;
  /** Grafana's $__interval: the step between points, in seconds. */
  intervalS: number;
  /** The data source's scrape interval, in seconds (Grafana's "Scrape interval" setting). */
  scrapeS: number;
  /** Dashboard time range, in seconds ($__range). */
  rangeS: number;
}

/** $__rate_interval as Grafana computes it: max($__interval + scrape interval, 4 × scrape interval). */
export function rateIntervalS(i: Pick<Interpolation, 'intervalS' | 'scrapeS'>): number {
  return Math.max(i.intervalS + i.scrapeS, 4 * i.scrapeS);
}

/** Replaces Grafana's built-in and dashboard variables in a PromQL expression; unknown ones are an error. */
export function interpolate(expr: string, i: Interpolation): string {
  const builtins: Record<string, string> = {
    __rate_interval: `${rateIntervalS(i)}s`,
    __interval: `${i.intervalS}s`,
    __range: `${Math.max(1, Math.round(i.rangeS))}s`,
  };
  return expr.replace(/\$\{?(\w+)\}?/g, (m, name: string) => {
    const v = builtins[name] ?? i.vars.get(name);
    if (v === undefined) throw new Error(`unknown variable ${m} in ${expr}`);
    return v;
  });
}

/**
 * Resolves the dashboard's query variables in order (each may use the ones before it), as Grafana does on
 * load with "All" selected: `label_values(selector, label)` through the label-values API.
 */
export async function resolveVariables(d: Dashboard, prom: Prometheus): Promise<Map<string, string>> {
  const vars = new Map<string, string>();
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(v.query ?? '');
    if (!m) throw new Error(`variable $${v.name}: only label_values(selector, label) is supported, got ${v.query}`);
    const selector = interpolate(m[1]!, { vars, intervalS: 1, scrapeS: 1, rangeS: 1 });
    vars.set(v.name, formatValues(v, await prom.labelValues(m[2]!, selector)));
  }
  return vars;
}

/** A series' legend as Grafana draws it from legendFormat ({{label}} replaced; the series' labels otherwise). */
export function legend(format: string | undefined, metric: Record<string, string>): string {
  if (format) return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_m, l: string) => metric[l] ?? '');
  const labels = Object.entries(metric).filter(([k]) => k !== '__name__');
  return labels.length ? `{${labels.map(([k, v]) => `${k}="${v}"`).join(', ')}}` : (metric['__name__'] ?? 'value');
}
