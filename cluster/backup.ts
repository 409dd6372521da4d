import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SCHEMA_VERSION } from '../core/schema.js';
import type { RecordKind } from './log.js';
import type { ClusterConn } from './nats.js';
import { withRetry } from './retry.js';
import { PURGE_HOLD_KEY, readSnapshot, snapshotSubjects, type Manifest } from './snapshot.js';
import { applyRecord, migrateView } from './storage.js';

/**
 * Backup of a RUNNING cluster (issue 13) as a consistent cut of every partition at ONE log stream sequence S.
 *
 * Why one S makes the cut consistent: every partition's records are on the same stream, IRIS_LOG, whose
 * sequence orders them all. A message crossing partitions is appended to the recipient's inbox (record at s1)
 * and only after that append was acked does the sender's partition commit the outbox delete (record at s2 > s1).
 * So any S that includes s2 includes s1: a cut at S never has a message gone from the sender's outbox without
 * being in the recipient's inbox, and anything acked to a client before the backup started has its record at a
 * sequence below the stream's last sequence as read by the backup.
 *
 * Each partition at S is its latest snapshot (whose logSeq <= S) plus its records in (logSeq, S], replayed into
 * `dir`/p<n>.sqlite exactly as a new owner rebuilds its view (cluster/storage.ts). Owners keep snapshotting
 * meanwhile, but hold their purges while the backup's hold key is set: see backupPartition.
 */

export const BACKUP_FILE = 'backup.json';

export interface BackupFile {
  partition: number;
  bytes: number;
  sha256: string;
}

export interface BackupInfo {
  partitions: number;
  /** The cut: every partition holds exactly the records with stream sequence <= logSeq. */
  logSeq: number;
  created: string;
  /** core/schema.ts SCHEMA_VERSION of the build that wrote the files (they are migrated to it). */
  schemaVersion: number;
  files: BackupFile[];
  /** Partitions that had neither a snapshot nor a record at the cut: no file, restored empty. */
  empty: number[];
  /** How many cuts were taken (always 1 since purges are held during a backup; kept for older backup.json readers). */
  cuts: number;
}

export interface BackupOptions {
  /** Ignored (a cut no longer needs retrying: purges are held); accepted so older callers still compile. */
  attempts?: number;
  /** Called once per partition written (for progress lines), with the cut it was written at; awaited. */
  onPartition?: (partition: number, bytes: number, records: number, cut: number) => void | Promise<void>;
}

export const partitionFile = (partition: number): string => `p${partition}.sqlite`;

/** The partition's latest snapshot manifest and its message sequence (which identifies it), or null. */
async function latestManifest(conn: ClusterConn, partition: number): Promise<{ seq: number; manifest: Manifest } | null> {
  const m = await withRetry(() => conn.jsm.streams.getMessage(conn.setup.names.snapStream, { last_by_subj: snapshotSubjects(conn, partition).manifest }));
  return m ? { seq: m.seq, manifest: JSON.parse(new TextDecoder().decode(m.data)) as Manifest } : null;
}

/** The log stream's last sequence now: the cut. */
export async function logHead(conn: ClusterConn): Promise<number> {
  const info = await withRetry(() => conn.jsm.streams.info(conn.setup.names.logStream));
  return info.state.last_seq;
}

/** Opens a local view the way ClusterStorage.open does: schema first (its DDL is never in the log), in one transaction. */
function beginView(file: string): DatabaseSync {
  const db = new DatabaseSync(file);
  db.exec('BEGIN');
  migrateView(db);
  return db;
}

/** The newest of the partition's stored snapshots that is within the cut (logSeq <= cut), or null. */
async function manifestWithin(conn: ClusterConn, p: number, cut: number): Promise<Manifest | null> {
  const latest = await latestManifest(conn, p);
  if (!latest) return null;
  if (latest.manifest.logSeq <= cut) return latest.manifest;
  // Taken after the cut: the older ones are still stored (purges are held), walk them from the first.
  const stream = conn.setup.names.snapStream;
  const subject = snapshotSubjects(conn, p).manifest;
  let best: Manifest | null = null;
  for (let seq = 0; ; ) {
    const query = { next_by_subj: subject, seq: seq + 1 };
    const m = await withRetry(() => conn.jsm.streams.getMessage(stream, query as unknown as { seq: number }));
    if (!m) return best;
    const manifest = JSON.parse(new TextDecoder().decode(m.data)) as Manifest;
    if (manifest.logSeq <= cut) best = manifest;
    seq = m.seq;
  }
}

/**
 * Writes partition p as of cut S into `file`; resolves with the record count, or null when the partition has
 * nothing at all (no snapshot, no record up to S).
 *
 * Purges are held (PURGE_HOLD_KEY) from before S was read: the newest snapshot within the cut, and every record
 * of the partition above it, are still stored, whatever the owner snapshots meanwhile. An owner that checked the
 * hold just before it was set purged only below a snapshot written before S, so within the cut too.
 */
async function backupPartition(conn: ClusterConn, p: number, cut: number, file: string): Promise<number | null> {
  const stream = conn.setup.names.logStream;
  const subject = `${conn.setup.names.logSubject}.${p}`;
  for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) rmSync(f, { force: true });
  const within = await manifestWithin(conn, p, cut);
  const manifest = within ? await readSnapshot(conn, p, file, within) : null;
  const from = manifest?.logSeq ?? 0;
  // Gone would mean a purge the hold should have stopped (e.g. it ran out): fail rather than write a gap.
  if (from > 0 && !(await recordExists(conn, subject, from))) throw new Error(`partition ${p}: records after its snapshot at ${from} were purged during the backup`);
  let records = 0;
  let db: DatabaseSync | null = null;
  try {
    for (let seq = from; seq < cut; ) {
      const query = { next_by_subj: subject, seq: seq + 1 };
      // As in PartitionLog.replay: the 2.9 server takes next_by_subj on STREAM.MSG.GET (the client types it for direct gets only).
      const m = await withRetry(() => conn.jsm.streams.getMessage(stream, query as unknown as { seq: number }));
      if (!m || m.seq > cut) break;
      db ??= beginView(file);
      applyRecord(db, { seq: m.seq, kind: (m.header?.get('Iris-Kind') as RecordKind) || 'change', id: m.header?.get('Nats-Msg-Id') ?? '', data: m.data });
      records++;
      seq = m.seq;
    }
    if (!manifest && !db) return null;
    db ??= beginView(file); // a snapshot and no tail: still migrated, like a new owner's view
    db.exec('COMMIT');
  } finally {
    if (db?.isTransaction) db.exec('ROLLBACK');
    db?.close();
  }
  return records;
}

/**
 * Whether the record a snapshot names (its logSeq, on the partition's subject) is still stored. The log keeps a
 * snapshot's own last record when it purges below it (cluster/log.ts purgeBefore); records after it are never
 * purged before a newer snapshot, so a stored record at `seq` means nothing after it is missing.
 */
async function recordExists(conn: ClusterConn, subject: string, seq: number): Promise<boolean> {
  const m = await withRetry(() => conn.jsm.streams.getMessage(conn.setup.names.logStream, { seq })).catch(() => null);
  return m !== null && m.subject === subject;
}

/** How long a backup holds purges without renewing its hold (it renews every 100 partitions). */
const HOLD_MS = 30 * 60_000;

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Takes a consistent backup of partitions 0..partitions-1 into `dir` (created; its p<n>.sqlite files and
 * backup.json are overwritten). Nodes keep serving meanwhile: this only reads the streams.
 */
export async function backupCluster(conn: ClusterConn, partitions: number, dir: string, opts: BackupOptions = {}): Promise<BackupInfo> {
  if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partition count must be a positive integer, got ${partitions}`);
  mkdirSync(dir, { recursive: true });
  const hold = () => withRetry(() => conn.leases.put(PURGE_HOLD_KEY, JSON.stringify({ until: Date.now() + HOLD_MS })));
  // The hold first, then the cut: from now on no snapshot or record a partition needs at S is purged.
  await hold();
  try {
    const cut = await logHead(conn);
    const files: BackupFile[] = [];
    const empty: number[] = [];
    for (let p = 0; p < partitions; p++) {
      if (p > 0 && p % 100 === 0) await hold();
      const file = join(dir, partitionFile(p));
      const records = await backupPartition(conn, p, cut, file);
      if (records === null) {
        empty.push(p);
        continue;
      }
      const bytes = readFileSync(file);
      files.push({ partition: p, bytes: bytes.length, sha256: sha256(bytes) });
      await opts.onPartition?.(p, bytes.length, records, cut);
    }
    const info: BackupInfo = { partitions, logSeq: cut, created: new Date().toISOString(), schemaVersion: SCHEMA_VERSION, files, empty, cuts: 1 };
    // Written last: a directory without backup.json is an unfinished backup, and restore refuses it.
    writeFileSync(join(dir, BACKUP_FILE), JSON.stringify(info, null, 2) + '\n');
    return info;
  } finally {
    // Purges resume with each partition's next snapshot.
    await conn.leases.delete(PURGE_HOLD_KEY).catch(() => undefined);
  }
}
