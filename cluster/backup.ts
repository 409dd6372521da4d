import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { SqlValue } from '../core/ports.js';
import { migrate, SCHEMA_VERSION } from '../core/schema.js';
import type { RecordKind } from './log.js';
import type { ClusterConn } from './nats.js';
import { withRetry } from './retry.js';
import { readSnapshot, snapshotSubjects, type Manifest } from './snapshot.js';
import { applyRecord } from './storage.js';

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
 * `dir`/p<n>.sqlite exactly as a new owner rebuilds its view (cluster/storage.ts). Owners keep snapshotting and
 * purging their logs meanwhile: see backupPartition for how that race is detected and retried.
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
  /** How many cuts were tried: more than 1 when snapshots taken meanwhile replaced records an earlier cut needed. */
  cuts: number;
}

export interface BackupOptions {
  /** How many times a new cut is tried when a snapshot newer than it replaced a partition's log (default 5). */
  attempts?: number;
  /** Called once per partition written (for progress lines), with the cut it was written at; awaited. */
  onPartition?: (partition: number, bytes: number, records: number, cut: number) => void | Promise<void>;
}

/** The race with a concurrent snapshot lost for this cut: a new S is needed. */
class CutTooOld extends Error {}

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
  migrate(
    {
      all: <T>(q: string, ...p: SqlValue[]): T[] => {
        const st = db.prepare(q);
        if (st.columns().length > 0) return st.all(...p) as T[];
        st.run(...p);
        return [];
      },
    },
    Date.now(),
  );
  return db;
}

/**
 * Writes partition p as of cut S into `file`; resolves with the record count, or null when the partition has
 * nothing at all (no snapshot, no record up to S).
 *
 * The race: an owner that snapshots writes a new manifest and THEN purges its log below the new logSeq. So if the
 * manifest read after the replay is still the one the replay started from, no purge above its logSeq can have
 * happened before the replay ended, and the replay read every record it needed. Otherwise the partition is done
 * again from the newer snapshot if it is still within the cut (logSeq <= S), or the whole cut is taken again.
 */
async function backupPartition(conn: ClusterConn, p: number, cut: number, file: string): Promise<number | null> {
  const stream = conn.setup.names.logStream;
  const subject = `${conn.setup.names.logSubject}.${p}`;
  // Each retry follows a newer snapshot that is still within the cut; a handful is plenty, more means a chunk that
  // stays missing (a damaged stream), which must fail rather than loop.
  for (let tries = 0; ; tries++) {
    if (tries >= 10) throw new Error(`partition ${p}: its snapshot could not be read consistently in ${tries} tries`);
    for (const f of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) rmSync(f, { force: true });
    const before = await latestManifest(conn, p);
    if (before && before.manifest.logSeq > cut) throw new CutTooOld(`partition ${p}: snapshot at ${before.manifest.logSeq} is past the cut ${cut}`);
    let manifest: Manifest | null = null;
    if (before) {
      try {
        manifest = await readSnapshot(conn, p, file);
      } catch {
        continue; // its chunks were purged by a newer snapshot while being read: look again
      }
      // readSnapshot read the latest manifest again: it must be the one checked above.
      if (!manifest || manifest.logSeq !== before.manifest.logSeq || manifest.chunks[0] !== before.manifest.chunks[0]) continue;
    }
    const from = manifest?.logSeq ?? 0;
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
    const after = await latestManifest(conn, p);
    if ((after?.seq ?? 0) === (before?.seq ?? 0)) return records;
    // A newer snapshot (and maybe a purge of what was just read) came meanwhile: done again from it.
    if (after && after.manifest.logSeq > cut) throw new CutTooOld(`partition ${p}: snapshot at ${after.manifest.logSeq} is past the cut ${cut}`);
  }
}

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
  const attempts = opts.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    // Every manifest read from now on was written after S or names a logSeq <= S (a snapshot covers records
    // already in the stream). One written after S with logSeq > S replaced the records this cut needs:
    // backupPartition reports it as CutTooOld and the whole cut is taken again at a newer S.
    const cut = await logHead(conn);
    const files: BackupFile[] = [];
    const empty: number[] = [];
    try {
      for (let p = 0; p < partitions; p++) {
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
    } catch (e) {
      if (!(e instanceof CutTooOld) || attempt >= attempts) throw e;
      continue;
    }
    const info: BackupInfo = { partitions, logSeq: cut, created: new Date().toISOString(), schemaVersion: SCHEMA_VERSION, files, empty, cuts: attempt };
    // Written last: a directory without backup.json is an unfinished backup, and restore refuses it.
    writeFileSync(join(dir, BACKUP_FILE), JSON.stringify(info, null, 2) + '\n');
    return info;
  }
}
