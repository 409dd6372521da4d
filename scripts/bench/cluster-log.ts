/**
 * Cluster mode on NATS JetStream (issue 13), measured on a loopback 3-server cluster started here
 * (test/cluster/nats-harness.ts; Debian's nats-server 2.9):
 *
 *   sh scripts/node.sh --import tsx scripts/bench/cluster-log.ts [--appends 3000] [--partitions 64]
 *     [--commits 20000] [--inflight 256] [--tail 2000] [--body 100] [--lease-ms 2000]
 *
 *   1. append latency: one writer appends records of --body bytes to one partition's subject, one at a time,
 *      each with Nats-Msg-Id and the expected last subject sequence (what an owner does): p50/p99/p999, on an R3
 *      stream and, for the cost of replication, on an R1 stream in the same run.
 *   2. appends/s across partitions: --partitions writers, one per partition, each appending one at a time.
 *   3. commits/s with batching: the cluster Storage adapter (cluster/storage.ts) on one partition, --inflight
 *      commits kept in flight (each an INSERT of a --body byte row); every turn's commits share ONE record.
 *      Commit latency (call to resolution) p50/p99, records appended, commits per record.
 *      The same workload on the one-box group commit (fsync per group, onprem/storage.ts) as the baseline.
 *   4. takeover: a new owner rebuilding a partition whose tail is --tail records (no snapshot), and one that
 *      restores a snapshot of the same data: the rebuild part of the failover time (the lapse wait is leaseMs).
 *   5. failover: an owner node (cluster/node.ts) crashes without releasing; another node takes the partition
 *      (waiting for the lease of --lease-ms to lapse), rebuilds it and commits: the time until it serves again.
 *   6. owner calls: another node calls the partition's owner over request/reply (cluster/rpc.ts), the owner
 *      commits one row per call before answering: one at a time (latency), then 64 in flight (calls/s).
 * Prints one JSON object per measurement and a summary table.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PartitionLog } from '../../cluster/log.js';
import { connectCluster, DEFAULT_NAMES, type ClusterConn } from '../../cluster/nats.js';
import { ClusterNode } from '../../cluster/node.js';
import { callOwner } from '../../cluster/rpc.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { GroupCommitStorage } from '../../onprem/storage.js';
import type { Storage } from '../../core/ports.js';
import { NatsCluster, natsServerVersion } from '../../test/cluster/nats-harness.js';

const { values } = parseArgs({
  options: {
    appends: { type: 'string', default: '3000' },
    partitions: { type: 'string', default: '64' },
    commits: { type: 'string', default: '20000' },
    inflight: { type: 'string', default: '256' },
    tail: { type: 'string', default: '2000' },
    body: { type: 'string', default: '100' },
    'lease-ms': { type: 'string', default: '2000' },
  },
});
const APPENDS = Number(values.appends);
const PARTITIONS = Number(values.partitions);
const COMMITS = Number(values.commits);
const INFLIGHT = Number(values.inflight);
const TAIL = Number(values.tail);
const BODY = Number(values.body);
const LEASE_MS = Number(values['lease-ms']);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return Number((s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0).toFixed(3));
}

function body(): Uint8Array {
  const b = new Uint8Array(BODY);
  crypto.getRandomValues(b);
  return b;
}

const results: Record<string, unknown>[] = [];
function report(r: Record<string, unknown>): void {
  results.push(r);
  console.log(JSON.stringify(r));
}

async function appendLatency(conn: ClusterConn, label: string, partition: number): Promise<void> {
  const log = new PartitionLog(conn, partition);
  await log.replay(0, () => undefined);
  const lat: number[] = [];
  for (let i = 0; i < 200; i++) await log.append(body(), `warm.${label}.${i}`);
  const t0 = performance.now();
  for (let i = 0; i < APPENDS; i++) {
    const t = performance.now();
    await log.append(body(), `lat.${label}.${i}`);
    lat.push(performance.now() - t);
  }
  const secs = (performance.now() - t0) / 1000;
  report({ test: 'append-latency', stream: label, appends: APPENDS, bodyBytes: BODY, p50ms: pct(lat, 50), p99ms: pct(lat, 99), p999ms: pct(lat, 99.9), perSec: Math.round(APPENDS / secs) });
}

async function parallelAppends(conns: ClusterConn[]): Promise<void> {
  const per = Math.max(1, Math.floor(APPENDS * 4 / PARTITIONS));
  const lat: number[] = [];
  const logs = Array.from({ length: PARTITIONS }, (_, p) => new PartitionLog(conns[p % conns.length]!, 1000 + p));
  await Promise.all(logs.map((l) => l.replay(0, () => undefined)));
  const t0 = performance.now();
  await Promise.all(
    logs.map(async (log, p) => {
      for (let i = 0; i < per; i++) {
        const t = performance.now();
        await log.append(body(), `par.${p}.${i}`);
        lat.push(performance.now() - t);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  report({ test: 'parallel-appends', partitions: PARTITIONS, connections: conns.length, appends: per * PARTITIONS, perSec: Math.round((per * PARTITIONS) / secs), p50ms: pct(lat, 50), p99ms: pct(lat, 99) });
}

/** COMMITS one-row commits on `s`, INFLIGHT at a time (a new one as each resolves): their latencies and the run's seconds. */
async function insertLoad(s: Storage): Promise<{ lat: number[]; secs: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let done = 0;
    const one = (): void => {
      const k = next++;
      const t = performance.now();
      s.commit(() => void s.sql.all('INSERT INTO m (k, body) VALUES (?, ?)', k, body())).then(() => {
        lat.push(performance.now() - t);
        if (++done === COMMITS) resolve();
        else if (next < COMMITS) one();
      }, reject);
    };
    for (let i = 0; i < Math.min(INFLIGHT, COMMITS); i++) one();
  });
  return { lat, secs: (performance.now() - t0) / 1000 };
}

async function batchedCommits(conn: ClusterConn, dir: string): Promise<void> {
  const s = await ClusterStorage.open(conn, 2000, dir, { node: 'bench' });
  await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS m (k INTEGER PRIMARY KEY, body BLOB NOT NULL)'));
  let recordsBefore = 0;
  await s.log.replay(0, () => recordsBefore++);
  const { lat, secs } = await insertLoad(s);
  let records = 0;
  await new PartitionLog(conn, 2000).replay(0, () => records++);
  records -= recordsBefore;
  report({ test: 'batched-commits', commits: COMMITS, inflight: INFLIGHT, bodyBytes: BODY, perSec: Math.round(COMMITS / secs), p50ms: pct(lat, 50), p99ms: pct(lat, 99), records, commitsPerRecord: Number((COMMITS / records).toFixed(1)) });
  s.kill();
}

/** The same workload on the one-box group commit (onprem/storage.ts, fsync per group): the baseline. */
async function singleBoxCommits(dir: string): Promise<void> {
  const s = new GroupCommitStorage(join(dir, 'single.sqlite'), { windowMs: 0, maxBatch: 1024, sync: 'commit' });
  await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS m (k INTEGER PRIMARY KEY, body BLOB NOT NULL)'));
  const { lat, secs } = await insertLoad(s);
  report({ test: 'single-box-commits', commits: COMMITS, inflight: INFLIGHT, bodyBytes: BODY, perSec: Math.round(COMMITS / secs), p50ms: pct(lat, 50), p99ms: pct(lat, 99) });
  s.close();
}

async function takeover(conn: ClusterConn, dir: string): Promise<void> {
  const p = 3000;
  const s = await ClusterStorage.open(conn, p, dir, { node: 'writer' });
  await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS m (k INTEGER PRIMARY KEY, body BLOB NOT NULL)'));
  for (let i = 0; i < TAIL; i++) await s.commit(() => void s.sql.all('INSERT INTO m (k, body) VALUES (?, ?)', i, body()));
  s.kill();
  let t = performance.now();
  const fromLog = await ClusterStorage.open(conn, p, dir, { node: 'new-owner' });
  const tailMs = performance.now() - t;
  const snap = await fromLog.snapshot();
  await fromLog.close();
  t = performance.now();
  const fromSnap = await ClusterStorage.open(conn, p, dir, { node: 'new-owner-2' });
  const snapMs = performance.now() - t;
  const rows = await fromSnap.commit(() => fromSnap.sql.all('SELECT count(*) AS n FROM m')[0]!['n']);
  fromSnap.kill();
  report({ test: 'takeover-rebuild', tailRecords: TAIL, rebuildFromTailMs: Math.round(tailMs), snapshotBytes: snap.bytes, rebuildFromSnapshotMs: Math.round(snapMs), rows });
}

/** A whole failover: the owner node crashes (no release), another waits for the lapse, rebuilds, serves. */
async function failover(conn: ClusterConn, other: ClusterConn, dir: string): Promise<void> {
  const a = new ClusterNode(conn, { node: 'fo-a', dir: join(dir, 'a'), leaseMs: LEASE_MS });
  const b = new ClusterNode(other, { node: 'fo-b', dir: join(dir, 'b'), leaseMs: LEASE_MS });
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b'));
  const s = await a.serve(4000);
  await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS m (k INTEGER PRIMARY KEY, body BLOB NOT NULL)'));
  for (let i = 0; i < 200; i++) await s.commit(() => void s.sql.all('INSERT INTO m (k, body) VALUES (?, ?)', i, body()));
  a.crash();
  const t = performance.now();
  const sb = await b.serve(4000);
  const ms = performance.now() - t;
  await sb.commit(() => void sb.sql.all('INSERT INTO m (k, body) VALUES (?, ?)', 1000, body()));
  report({ test: 'failover', leaseMs: LEASE_MS, tailRecords: 200, servedAgainAfterMs: Math.round(ms) });
  b.crash();
}

/**
 * A call from another node to a partition's owner over request/reply (cluster/rpc.ts), the owner committing one
 * row per call through the cluster Storage before it answers: what a cross-node send would cost.
 */
async function ownerCalls(owner: ClusterConn, caller: ClusterConn, dir: string): Promise<void> {
  mkdirSync(join(dir, 'rpc'));
  const handler = async (_p: number, s: ClusterStorage, data: Uint8Array): Promise<Uint8Array> => {
    await s.commit(() => void s.sql.all('INSERT INTO m (k, body) VALUES (?, ?)', Number(new TextDecoder().decode(data.subarray(0, 12))), data));
    return new Uint8Array([1]);
  };
  const node = new ClusterNode(owner, { node: 'rpc-owner', dir: join(dir, 'rpc'), leaseMs: 10_000, handler });
  const s = await node.serve(5000);
  await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS m (k INTEGER PRIMARY KEY, body BLOB NOT NULL)'));
  const payload = (k: number) => {
    const b = body();
    const id = new TextEncoder().encode(String(k).padStart(12, '0'));
    const out = new Uint8Array(12 + b.length);
    out.set(id);
    out.set(b, 12);
    return out;
  };
  let k = 0;
  const seq: number[] = [];
  for (let i = 0; i < Math.min(APPENDS, 2000); i++) {
    const t = performance.now();
    await callOwner(caller.nc, 5000, payload(k++), { deadlineMs: 10_000 });
    seq.push(performance.now() - t);
  }
  const lat: number[] = [];
  const n = Math.min(COMMITS, 20_000);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (k < 2_000_000 && lat.length < n) {
        const t = performance.now();
        await callOwner(caller.nc, 5000, payload(k++), { deadlineMs: 10_000 });
        lat.push(performance.now() - t);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  report({ test: 'owner-call', oneAtATimeP50ms: pct(seq, 50), oneAtATimeP99ms: pct(seq, 99), inflight: 64, calls: lat.length, perSec: Math.round(lat.length / secs), p50ms: pct(lat, 50), p99ms: pct(lat, 99) });
  node.crash();
}

const version = natsServerVersion();
const nats = await NatsCluster.start(3);
const dir = mkdtempSync(join(tmpdir(), 'iris-bench-cluster-'));
const conns: ClusterConn[] = [];
try {
  for (let i = 0; i < 3; i++) conns.push(await connectCluster([nats.urls()[i]!], undefined, `bench${i}`));
  const r1 = await connectCluster(nats.urls(), { replicas: 1, dedupWindowMs: 120_000, names: { ...DEFAULT_NAMES, logStream: 'IRIS_LOG_R1', logSubject: 'iris.r1', snapStream: 'IRIS_SNAP_R1', snapSubject: 'iris.r1s', leaseBucket: 'iris_leases_r1' } }, 'bench-r1');
  conns.push(r1);
  console.log(`# ${version}, 3 servers on loopback, ${(await import('node:os')).cpus().length} cores`);
  await appendLatency(conns[0]!, 'R3', 1);
  await appendLatency(r1, 'R1', 1);
  await parallelAppends(conns.slice(0, 3));
  await batchedCommits(conns[0]!, dir);
  await singleBoxCommits(dir);
  await takeover(conns[0]!, dir);
  await failover(conns[0]!, conns[1]!, dir);
  await ownerCalls(conns[0]!, conns[1]!, dir);
  console.table(results);
} finally {
  for (const c of conns) await c.nc.close().catch(() => undefined);
  nats.stop();
  rmSync(dir, { recursive: true, force: true });
}
