import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { ClusterStorage } from '../../cluster/storage.js';
import type { Row } from '../../core/ports.js';
import { NatsCluster } from './nats-harness.js';

/**
 * The cluster Storage adapter (cluster/storage.ts) when the NATS cluster loses its quorum (two of three servers
 * killed, then restarted): its own file, because the servers' recovery takes most of its time.
 */

let nats: NatsCluster;
const conns: ClusterConn[] = [];
const dirs: string[] = [];
const open: ClusterStorage[] = [];

async function conn(name: string): Promise<ClusterConn> {
  const c = await connectCluster(nats.urls(), undefined, name);
  conns.push(c);
  return c;
}

function dir(): string {
  const d = mkdtempSync(join(tmpdir(), 'iris-cluster-'));
  dirs.push(d);
  return d;
}

async function take(c: ClusterConn, p: number, node: string, onFenced?: (e: unknown) => void, retryForMs?: number): Promise<ClusterStorage> {
  const s = await ClusterStorage.open(c, p, dir(), { node, onFenced, ...(retryForMs !== undefined && { log: { retryForMs, timeoutMs: 500 } }) });
  open.push(s);
  return s;
}

const CREATE = 'CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)';
const put = (s: ClusterStorage, k: number, v: string) => s.commit(() => void s.sql.all('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)', k, v));
const rows = (s: ClusterStorage) => s.commit(() => s.sql.all<Row>('SELECT k, v FROM kv ORDER BY k').map((r) => `${r['k']}=${r['v']}`));

beforeAll(async () => {
  nats = await NatsCluster.start(3);
});

afterAll(async () => {
  for (const s of open) s.kill();
  for (const c of conns) await c.nc.close().catch(() => undefined);
  nats?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('cluster Storage without a NATS quorum', () => {
  it('two of three NATS servers lost: nothing is acked, the partition stops; with the quorum back a new owner has every acked commit', async () => {
    const a = await conn('a');
    let fenced: unknown = null;
    const sa = await take(a, 12, 'a', (e) => (fenced = e), 1500);
    await sa.commit(() => void sa.sql.all(CREATE));
    await put(sa, 1, 'acked');
    await Promise.all([nats.kill(1), nats.kill(2)]);
    try {
      // No quorum: the append cannot be committed, so the commit is never acked; its outcome is unknown.
      await expect(put(sa, 2, 'unknown')).rejects.toThrow();
      expect(fenced).not.toBeNull();
      await expect(put(sa, 3, 'refused')).rejects.toThrow();
    } finally {
      await Promise.all([nats.restart(1), nats.restart(2)]);
    }
    const b = await conn('b');
    const sb = await take(b, 12, 'b');
    const got = await rows(sb);
    // The acked row is there; the unknown one may be (a leader may still commit it once followers return); the
    // one refused after the partition stopped never is.
    expect(got[0]).toBe('1=acked');
    expect(got.filter((r) => r !== '1=acked' && r !== '2=unknown')).toEqual([]);
    await put(sb, 4, 'after');
  });
});
