import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedError } from '../../cluster/errors.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { ClusterNode } from '../../cluster/node.js';
import { callOwner, rpcSubject, RpcUnavailableError } from '../../cluster/rpc.js';
import type { ClusterStorage } from '../../cluster/storage.js';
import type { Row } from '../../core/ports.js';
import { NatsCluster } from './nats-harness.js';

/**
 * Partition ownership on a node (cluster/node.ts) on a real three-server NATS cluster: a lease plus a view rebuilt
 * from the log. A node cut off from NATS stops serving by itself; a crashed node's partition is served again by
 * another after the lease lapses, with every acked commit and none twice; a planned hand-over needs no lapse.
 */

let nats: NatsCluster;
const conns: ClusterConn[] = [];
const nodes: ClusterNode[] = [];
const dirs: string[] = [];

async function node(name: string, leaseMs: number, onLost?: (p: number, reason: string) => void): Promise<ClusterNode> {
  const c = await connectCluster(nats.urls(), undefined, name);
  conns.push(c);
  const d = mkdtempSync(join(tmpdir(), 'iris-cluster-node-'));
  dirs.push(d);
  // A call stores its key in the partition and answers who stored it.
  const handler = async (_p: number, s: ClusterStorage, data: Uint8Array): Promise<Uint8Array> => {
    await put(s, Number(new TextDecoder().decode(data)));
    return new TextEncoder().encode(name);
  };
  const n = new ClusterNode(c, { node: name, dir: d, leaseMs, onLost, handler });
  nodes.push(n);
  return n;
}

const CREATE = 'CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)';
const put = (s: ClusterStorage, k: number) => s.commit(() => void s.sql.all('INSERT INTO kv (k, v) VALUES (?, ?)', k, `v${k}`));
const keys = (s: ClusterStorage) => s.commit(() => s.sql.all<Row>('SELECT k FROM kv ORDER BY k').map((r) => r['k'] as number));

beforeAll(async () => {
  nats = await NatsCluster.start(3);
});

afterAll(async () => {
  for (const n of nodes) n.crash();
  for (const c of conns) await c.nc.close().catch(() => undefined);
  nats?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('a node serves a partition only under its lease', () => {
  it('cut off from NATS, a node stops serving when its lease runs out; another takes over with every acked commit', async () => {
    let lostReason: (reason: string) => void = () => undefined;
    const lost = new Promise<string>((resolve) => (lostReason = resolve));
    const a = await node('a1', 1000, (p, reason) => p === 1 && lostReason(reason));
    const s = await a.serve(1);
    await s.commit(() => void s.sql.all(CREATE));
    await Promise.all(Array.from({ length: 20 }, (_, i) => put(s, i)));
    expect(a.storage(1)).toBe(s);
    await a.conn.nc.close(); // partitioned away from every NATS server
    expect(await lost).toBe('expired');
    expect(a.storage(1)).toBeUndefined();
    await expect(put(s, 99)).rejects.toBeInstanceOf(FencedError);
    const b = await node('b1', 1000);
    const t0 = performance.now();
    const sb = await b.serve(1);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(await keys(sb)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('kill -9 of the owner under load: the next owner has every acked commit, none twice, and goes on', async () => {
    const a = await node('a2', 800);
    const s = await a.serve(2);
    await s.commit(() => void s.sql.all(CREATE));
    const acked: number[] = [];
    let k = 0;
    // Keep 20 commits in flight; crash after 200 acks.
    await new Promise<void>((resolve) => {
      const next = (): void => {
        const key = k++;
        put(s, key).then(() => {
          acked.push(key);
          if (acked.length === 200) {
            a.crash();
            resolve();
          } else next();
        }, () => undefined);
      };
      for (let i = 0; i < 20; i++) next();
    });
    const b = await node('b2', 800);
    const t0 = performance.now();
    const sb = await b.serve(2);
    const failoverMs = performance.now() - t0;
    const got = await keys(sb);
    for (const key of acked) expect(got).toContain(key);
    expect(new Set(got).size).toBe(got.length);
    // What was in flight at the crash is either there or not: never more than was sent.
    expect(got.length).toBeLessThanOrEqual(k);
    await put(sb, 10_000);
    expect(failoverMs).toBeGreaterThanOrEqual(800); // a crash is noticed only by the lapse
    expect(failoverMs).toBeLessThan(5000);
  });

  it('two serve() calls for one partition share one takeover (a second claim would fence the first)', async () => {
    const a = await node('a5', 30_000);
    const [s1, s2] = await Promise.all([a.serve(5), a.serve(5)]);
    expect(s1).toBe(s2);
    await s1.commit(() => void s1.sql.all(CREATE));
    await put(s1, 1);
    expect(a.storage(5)).toBe(s1);
  });

  it('a planned hand-over (release) is taken at once, without waiting for a lapse', async () => {
    const a = await node('a3', 30_000);
    const s = await a.serve(3);
    await s.commit(() => void s.sql.all(CREATE));
    await put(s, 1);
    await a.release(3);
    const b = await node('b3', 30_000);
    const t0 = performance.now();
    const sb = await b.serve(3);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(await keys(sb)).toEqual([1]);
  });

  it('any node reaches the owner of a partition over request/reply, and the next owner after a crash', async () => {
    const caller = await connectCluster(nats.urls(), undefined, 'caller');
    conns.push(caller);
    const call = (k: number, deadlineMs = 10_000) => callOwner(caller.nc, 4, new TextEncoder().encode(String(k)), { deadlineMs }).then((r) => new TextDecoder().decode(r));
    // Nobody serves partition 4 yet: the caller gives up at its deadline.
    await expect(call(0, 300)).rejects.toBeInstanceOf(RpcUnavailableError);
    const a = await node('a4', 800);
    await a.serve(4).then((s) => s.commit(() => void s.sql.all(CREATE)));
    expect(await call(1)).toBe('a4');
    a.crash();
    const b = await node('b4', 800);
    const taking = b.serve(4);
    // The call waits (no responders) through the lapse until b serves, then b answers.
    expect(await call(2)).toBe('b4');
    expect(await keys(await taking)).toEqual([1, 2]);
  });

  it('an idempotent call whose request died with its owner is sent again after the attempt timeout; any other call fails', async () => {
    const caller = await connectCluster(nats.urls(), undefined, 'caller-idem');
    const owner = await connectCluster(nats.urls(), undefined, 'owner-idem');
    conns.push(caller, owner);
    // The first request reaches an owner that never answers (it died holding it); the next one is answered.
    let seen = 0;
    const sub = owner.nc.subscribe(rpcSubject(77), { callback: (_e, m) => void (++seen > 1 && m.respond(new TextEncoder().encode('second'))) });
    await owner.nc.flush();
    try {
      const data = new TextEncoder().encode('x');
      const r = await callOwner(caller.nc, 77, data, { deadlineMs: 10_000, timeoutMs: 300, idempotent: true });
      expect(new TextDecoder().decode(r)).toBe('second');
      expect(seen).toBe(2);
      seen = 0;
      await expect(callOwner(caller.nc, 77, data, { deadlineMs: 10_000, timeoutMs: 300 })).rejects.toThrow(/timeout/i);
      expect(seen).toBe(1);
    } finally {
      sub.unsubscribe();
    }
  });
});
