import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Heap snapshots for the connection-memory benches (conns.ts, v1-conns.ts): the server runs with
 * --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=<snapDir>, and a diff of two snapshots divided by the connections
 * opened between them says what one connection keeps alive.
 */

export type HeapSummary = Map<string, { n: number; bytes: number }>;

/** Heap snapshot of pid (SIGUSR2; V8 runs a full GC first), summarized by node type and constructor name. */
export async function snapshot(pid: number, snapDir: string): Promise<HeapSummary> {
  const before = new Set(readdirSync(snapDir));
  process.kill(pid, 'SIGUSR2');
  let file: string | undefined;
  for (let i = 0; i < 1200 && !file; i++) {
    await sleep(100);
    file = readdirSync(snapDir).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
  }
  if (!file) throw new Error('no heap snapshot written');
  // Written when the size stops changing.
  let size = -1;
  for (;;) {
    await sleep(300);
    const s = readFileSync(join(snapDir, file)).length;
    if (s === size && s > 0) break;
    size = s;
  }
  const snap = JSON.parse(readFileSync(join(snapDir, file), 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  rmSync(join(snapDir, file));
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size')];
  const out = new Map<string, { n: number; bytes: number }>();
  for (let i = 0; i < snap.nodes.length; i += f.length) {
    const type = types[snap.nodes[i + iType]!]!;
    let name = snap.strings[snap.nodes[i + iName]!]!;
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '';
    if (type === 'code') name = '';
    if (name.length > 60) name = name.slice(0, 57) + '...';
    const key = `${type}${name ? ` ${name}` : ''}`;
    const e = out.get(key) ?? { n: 0, bytes: 0 };
    e.n++;
    e.bytes += snap.nodes[i + iSize]!;
    out.set(key, e);
  }
  return out;
}

export function heapDiff(a: HeapSummary, b: HeapSummary, per: number): string {
  const rows: { key: string; n: number; bytes: number }[] = [];
  let total = 0;
  for (const [key, e] of b) {
    const p = a.get(key) ?? { n: 0, bytes: 0 };
    const d = { key, n: (e.n - p.n) / per, bytes: (e.bytes - p.bytes) / per };
    total += d.bytes;
    if (d.bytes > 8) rows.push(d);
  }
  rows.sort((x, y) => y.bytes - x.bytes);
  const lines = rows.slice(0, 30).map((r) => `  ${r.bytes.toFixed(0).padStart(6)} B  ${r.n.toFixed(2).padStart(6)} x  ${r.key}`);
  return [`live JS heap gained per connection: ${total.toFixed(0)} B (top entries: bytes, objects, what)`, ...lines].join('\n');
}
