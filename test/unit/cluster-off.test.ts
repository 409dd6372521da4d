import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Cluster mode is off by default and costs a one-box server nothing (issue 13): no module reachable by static
 * imports from the on-prem entry points imports a NATS package. The worker loads onprem/cluster/host.ts (and
 * with it @nats-io/*) with a dynamic import() only when IRIS_CLUSTER_NATS is set.
 */

const ROOT = resolve(import.meta.dirname, '../..');
// `import ... from '...'` and `export ... from '...'`, not `import type` (erased) and not import() (dynamic).
const STATIC = /^\s*(?:import|export)\s+(?!type\b)[^'";]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm;

function reachable(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    if (!f.endsWith('.ts')) continue;
    for (const m of readFileSync(f, 'utf8').matchAll(STATIC)) {
      const spec = m[1] ?? m[2]!;
      if (!spec.startsWith('.')) {
        seen.add(spec);
        continue;
      }
      const ts = join(dirname(f), spec.replace(/\.js$/, '.ts'));
      if (existsSync(ts)) todo.push(ts);
    }
  }
  return seen;
}

describe('cluster mode off: no NATS on the one-box path', () => {
  it.each(['onprem/main.ts', 'onprem/worker-main.ts'])('%s reaches no @nats-io module by static imports', (entry) => {
    const mods = [...reachable(join(ROOT, entry))];
    expect(mods.filter((m) => m.startsWith('@nats-io/'))).toEqual([]);
    // The walk did reach the worker (the test would be vacuous otherwise).
    expect(mods.some((m) => m.endsWith('onprem/worker/worker.ts')) || entry === 'onprem/main.ts').toBe(true);
  });
});
