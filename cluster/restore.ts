import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { headers } from '@nats-io/transport-node';
import { SCHEMA_VERSION } from '../core/schema.js';
import { BACKUP_FILE, partitionFile, sha256, type BackupInfo } from './backup.js';
import type { ClusterConn } from './nats.js';
import { withRetry } from './retry.js';
import { snapshotSubjects, writeSnapshot } from './snapshot.js';

/**
 * Restore of a cluster backup (cluster/backup.ts) into a cluster where NO Iris node runs (issue 13).
 *
 * Why only then: a running owner holds its partition's view in memory and appends with the expected last
 * sequence it knows; a restore purges the log under it. Its next append would be refused (fenced), but what it
 * acked in between would be silently replaced, and a contender could take a lapsed partition half-way through.
 * So the restore first checks that nobody is alive in the lease bucket, and nodes are started only after it.
 *
 * Each partition becomes: its log subject purged, then ONE `restore` marker record (applyRecord ignores it), and
 * the backed-up file stored as its snapshot with manifest.logSeq = the marker's sequence. That logSeq must be a
 * real sequence of the partition's subject: a new owner replays from it (PartitionLog.replay sets lastSeq =
 * max(head, logSeq)) and its claim expects exactly that last subject sequence. A partition with no file is left
 * with an empty log and no snapshot. Every check (format, partition count, schema, sha256) runs before the first
 * write; a restore interrupted half-way leaves a mix of old and restored partitions, and running it again redoes
 * every partition.
 */

export class RestoreRefused extends Error {
  override name = 'RestoreRefused';
}

export interface RestoreOptions {
  /**
   * How long the lease bucket is watched for a live node when stale keys are found (a node killed without its
   * graceful stop leaves its heartbeat and leases behind). Default: the longest lease named in the bucket, at
   * least 3000 ms, plus 500 ms; a running node renews within a third of its lease and beats every quarter.
   */
  watchMs?: number;
  onPartition?: (partition: number, bytes: number) => void;
}

export interface RestoreResult {
  restored: number[];
  emptied: number[];
  /** Keys of nodes that were not running (killed, never stopped gracefully): released or deleted. */
  staleKeys: string[];
}

/** Reads and checks the backup in `dir` without touching the cluster; throws RestoreRefused with what is wrong. */
export function checkBackup(dir: string, partitions: number): BackupInfo {
  const path = join(dir, BACKUP_FILE);
  if (!existsSync(path)) throw new RestoreRefused(`${dir} has no ${BACKUP_FILE} (not a cluster backup, or an unfinished one)`);
  const info = JSON.parse(readFileSync(path, 'utf8')) as BackupInfo;
  if (info.partitions !== partitions) throw new RestoreRefused(`the backup has ${info.partitions} partitions, the cluster is configured with ${partitions}: the count is fixed when a cluster is created`);
  if (!(info.schemaVersion <= SCHEMA_VERSION)) throw new RestoreRefused(`the backup's schema version ${info.schemaVersion} is newer than this build's (${SCHEMA_VERSION}): restore it with the build that wrote it or a newer one`);
  for (const f of info.files) {
    if (!Number.isInteger(f.partition) || f.partition < 0 || f.partition >= partitions) throw new RestoreRefused(`the backup names partition ${f.partition}, outside 0..${partitions - 1}`);
    const file = join(dir, partitionFile(f.partition));
    if (!existsSync(file)) throw new RestoreRefused(`${file} is missing`);
    const bytes = readFileSync(file);
    if (bytes.length !== f.bytes || sha256(bytes) !== f.sha256) throw new RestoreRefused(`${file} does not match the backup's sha256 (corrupted or changed): nothing was restored`);
    const db = new DatabaseSync(file, { readOnly: true });
    try {
      const v = (db.prepare('SELECT max(version) AS v FROM iris_migrations').get() as { v: number | null } | undefined)?.v ?? 0;
      if (v > SCHEMA_VERSION) throw new RestoreRefused(`${file} has schema version ${v}, newer than this build's (${SCHEMA_VERSION})`);
    } finally {
      db.close();
    }
  }
  return info;
}

interface KeyState {
  key: string;
  revision: number;
  /** A lease held by a node (its value names one), or a heartbeat key: what counts as "someone may be alive". */
  live: boolean;
  ms: number;
}

/** The lease bucket's node heartbeats and held partition leases, listed without a consumer (like cluster/membership.ts). */
async function bucketState(conn: ClusterConn): Promise<KeyState[]> {
  const bucket = conn.setup.names.leaseBucket;
  const prefix = `$KV.${bucket}.`;
  const info = await withRetry(() => conn.jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` }));
  const out: KeyState[] = [];
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const key = subject.slice(prefix.length);
    if (!/^[npl]\./.test(key)) continue;
    const e = await withRetry(() => conn.leases.get(key));
    if (!e || e.operation !== 'PUT' || e.length === 0) continue;
    if (key.startsWith('n.')) {
      out.push({ key, revision: e.revision, live: true, ms: 0 });
      continue;
    }
    if (key.startsWith('l.')) {
      // A node's lease session (cluster/lease.ts): renewed every third of its lease while the node runs.
      const v = e.json<{ ms: number; dead?: true }>();
      if (v.dead !== true) out.push({ key, revision: e.revision, live: true, ms: v.ms });
      continue;
    }
    const v = e.json<{ node: string; ms: number }>();
    if (v.node !== '') out.push({ key, revision: e.revision, live: true, ms: v.ms });
  }
  return out;
}

/**
 * Refuses (RestoreRefused) while any node is alive. Keys left by nodes that did not stop gracefully are told from
 * live ones by watching them: a live node rewrites its heartbeat every quarter lease and its lease session
 * (`l.<node>`) every third.
 * Unchanged for a whole lease: dead, and their leases are released (compare-and-set on the revision seen, so a
 * node that came up meanwhile is not overwritten) and heartbeats deleted, so that nodes started afterwards
 * need not wait for lapses.
 */
async function ensureNoNode(conn: ClusterConn, watchMs?: number): Promise<string[]> {
  const first = await bucketState(conn);
  if (first.length === 0) return [];
  const wait = watchMs ?? Math.max(3000, ...first.map((k) => k.ms)) + 500;
  await new Promise((r) => setTimeout(r, wait));
  const second = await bucketState(conn);
  const was = new Map(first.map((k) => [k.key, k.revision]));
  const changed = second.filter((k) => was.get(k.key) !== k.revision).map((k) => k.key);
  if (changed.length > 0) throw new RestoreRefused(`Iris nodes are running (${changed.slice(0, 5).join(', ')}${changed.length > 5 ? ', ...' : ''} changed within ${wait} ms): stop every node before restoring; nothing was restored`);
  for (const k of second) {
    if (k.key.startsWith('n.') || k.key.startsWith('l.')) await withRetry(() => conn.leases.delete(k.key, { previousSeq: k.revision }));
    else await withRetry(() => conn.leases.update(k.key, JSON.stringify({ node: '', ms: 0 }), k.revision));
  }
  return second.map((k) => k.key);
}

/** Restores the backup in `dir` into the cluster; see the module comment for what is checked and written. */
export async function restoreCluster(conn: ClusterConn, partitions: number, dir: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
  const info = checkBackup(dir, partitions);
  const staleKeys = await ensureNoNode(conn, opts.watchMs);
  const byPartition = new Map(info.files.map((f) => [f.partition, f]));
  const id = randomUUID();
  const names = conn.setup.names;
  const result: RestoreResult = { restored: [], emptied: [], staleKeys };
  for (let p = 0; p < partitions; p++) {
    const subject = `${names.logSubject}.${p}`;
    const snap = snapshotSubjects(conn, p);
    await withRetry(() => conn.jsm.streams.purge(names.logStream, { filter: subject }));
    for (const s of [snap.manifest, snap.chunk]) await withRetry(() => conn.jsm.streams.purge(names.snapStream, { filter: s }));
    const f = byPartition.get(p);
    if (!f) {
      result.emptied.push(p);
      continue;
    }
    const h = headers();
    h.set('Iris-Kind', 'restore');
    const marker = new TextEncoder().encode(JSON.stringify({ restore: id, logSeq: info.logSeq, created: info.created }));
    // The subject was just purged: nothing may have been appended since (a node started during the restore).
    const ack = await withRetry(() => conn.js.publish(subject, marker, { msgID: `restore.${id}.${p}`, expect: { lastSubjectSequence: 0 }, headers: h }));
    const db = new DatabaseSync(join(dir, partitionFile(p)), { readOnly: true });
    try {
      await writeSnapshot(conn, p, db, ack.seq);
    } finally {
      db.close();
    }
    result.restored.push(p);
    opts.onPartition?.(p, f.bytes);
  }
  return result;
}
