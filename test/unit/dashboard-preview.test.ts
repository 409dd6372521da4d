import { describe, expect, it } from 'vitest';
import { flatPanels, formatValues, interpolate, legend, loadDashboard, queryPanels, rateIntervalS } from '../../scripts/lib/dashboard.js';
import { formatUnit, renderPage } from '../../scripts/lib/dashboard-render.js';

/**
 * The pieces of scripts/dashboard-preview.ts and test/onprem/dashboard-prometheus.test.ts that need no
 * Prometheus: Grafana's variable interpolation, legends, units, and the page the panels are drawn into.
 */

describe('Grafana interpolation as the Prometheus data source does it', () => {
  it('$__rate_interval is max(interval + scrape, 4 × scrape); $__range and $__interval in seconds', () => {
    expect(rateIntervalS({ intervalS: 1, scrapeS: 1 })).toBe(4);
    expect(rateIntervalS({ intervalS: 30, scrapeS: 15 })).toBe(60);
    const vars = new Map([['job', 'iris']]);
    expect(interpolate('rate(x{job=~"$job"}[$__rate_interval]) + increase(y[$__range]) + z[${__interval}]', { vars, intervalS: 2, scrapeS: 1, rangeS: 99.6 })).toBe(
      'rate(x{job=~"iris"}[4s]) + increase(y[100s]) + z[2s]',
    );
    expect(() => interpolate('x{a="$nope"}', { vars, intervalS: 1, scrapeS: 1, rangeS: 1 })).toThrow(/unknown variable/);
  });

  it('a multi-value variable with All becomes (a|b), regex-escaped; one value stays itself', () => {
    const v = { name: 'worker', type: 'query', multi: true, includeAll: true };
    expect(formatValues(v, ['0', '1'])).toBe('(0|1)');
    expect(formatValues(v, ['iris'])).toBe('iris');
    expect(formatValues(v, ['a.b'])).toBe('a\\\\.b');
    expect(() => formatValues(v, [])).toThrow(/no values/);
  });

  it('legends replace {{label}}; without a format the labels are listed', () => {
    expect(legend('p99 {{op}}', { op: 'forward' })).toBe('p99 forward');
    expect(legend(undefined, { __name__: 'x', worker: '1' })).toBe('{worker="1"}');
  });

  it('reads the repository dashboard: query panels all have targets, rows are kept in layout order', () => {
    const d = loadDashboard();
    const flat = flatPanels(d);
    expect(flat[0]!.type).toBe('row');
    expect(queryPanels(d).every((p) => (p.targets?.length ?? 0) > 0)).toBe(true);
    expect(queryPanels(d).some((p) => p.type === 'stat')).toBe(true);
  });
});

describe('dashboard preview rendering', () => {
  it('formats the units the dashboard uses', () => {
    expect(formatUnit(0.00042, 's')).toBe('420 µs');
    expect(formatUnit(0.0123, 's')).toBe('12.3 ms');
    expect(formatUnit(1536, 'bytes')).toBe('1.5 KiB');
    expect(formatUnit(0.048, 'percentunit')).toBe('4.8%');
    expect(formatUnit(1800, 'ops')).toBe('1.8 K ops/s');
    expect(formatUnit(21, 'short')).toBe('21');
    expect(formatUnit(Number.NaN, 's')).toBe('NaN');
  });

  it('draws every panel with its title, a legend per series, "No data" without series, escaped text', () => {
    const d = loadDashboard();
    const panels = flatPanels(d).map((panel, i) => ({
      panel,
      series: i % 3 === 0 ? [] : [{ name: `s<${i}>`, points: [[100, 1], [101, Number.NaN], [102, 3]] as [number, number][] }],
    }));
    const html = renderPage({ title: 'T', subtitle: 'S', caption: 'not Grafana', from: 100, to: 102, panels });
    for (const p of flatPanels(d)) expect(html).toContain(p.title.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'));
    expect(html).toContain('No data');
    expect(html).toMatch(/s&lt;\d+&gt;/);
    expect(html).not.toMatch(/s<\d+>/);
    // The NaN point is a gap: the path lifts its pen (two M commands, no L across the gap).
    expect(html).toMatch(/<path d="M[\d.,]+M[\d.,]+"/);
  });
});
