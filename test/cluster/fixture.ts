import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { ClusterStorage } from '../../cluster/storage.js';
import type { Row } from '../../core/ports.js';
import { NatsCluster } from './nats-harness.js';

/**
 * One real three-server NATS cluster for a test file (started in beforeAll), and everything its tests open on it
 * (connections, temp dirs, cluster storages) closed or removed in afterAll, whatever the tests left behind.
 */
export class ClusterFixture {
  private cluster: NatsCluster | null = null;
  private readonly conns: ClusterConn[] = [];
  private readonly dirs: string[] = [];
  private readonly storages: ClusterStorage[] = [];

  constructor() {
    beforeAll(async () => {
      this.cluster = await NatsCluster.start(3);
    });
    afterAll(async () => {
      for (const s of this.storages) s.kill();
      for (const c of this.conns) await c.nc.close().catch(() => undefined);
      this.cluster?.stop();
      for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
    });
  }

  get nats(): NatsCluster {
    if (!this.cluster) throw new Error('the NATS cluster is started in beforeAll');
    return this.cluster;
  }

  async conn(name: string): Promise<ClusterConn> {
    const c = await connectCluster(this.nats.urls(), undefined, name);
    this.conns.push(c);
    return c;
  }

  dir(): string {
    const d = mkdtempSync(join(tmpdir(), 'iris-cluster-'));
    this.dirs.push(d);
    return d;
  }

  /** Closes c in afterAll (a connection opened by the test itself, e.g. to other servers). */
  adopt(c: ClusterConn): ClusterConn {
    this.conns.push(c);
    return c;
  }

  /** Kills s in afterAll (a storage opened by the test itself, with options take() does not pass). */
  keep(s: ClusterStorage): ClusterStorage {
    this.storages.push(s);
    return s;
  }

  /** Opens partition p's storage as `node` (taking it over from whoever held it). */
  async take(c: ClusterConn, p: number, node: string, onFenced?: (e: unknown) => void, retryForMs?: number): Promise<ClusterStorage> {
    const s = await ClusterStorage.open(c, p, this.dir(), { node, onFenced, ...(retryForMs !== undefined && { log: { retryForMs, timeoutMs: 500 } }) });
    return this.keep(s);
  }
}

/** A one-table schema for storage tests, with a write and a read through commit(). */
export const CREATE = 'CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)';
export const put = (s: ClusterStorage, k: number, v: string) => s.commit(() => void s.sql.all('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)', k, v));
export const rows = (s: ClusterStorage) => s.commit(() => s.sql.all<Row>('SELECT k, v FROM kv ORDER BY k').map((r) => `${r['k']}=${r['v']}`));
