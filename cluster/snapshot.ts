import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { headers } from '@nats-io/transport-node';
import { withRetry } from './retry.js';
import type { ClusterConn } from './nats.js';

/**
 * Snapshots of a partition's local view (issue 13), so that a new owner replays only the log's tail. A snapshot
 * is the partition's SQLite database as of log sequence S (`VACUUM INTO`: a consistent, compact copy taken
 * inside one read transaction), stored in the replicated snapshot stream as chunks (a message stays far below
 * the server's 1 MB max_payload) on `iris.s.<p>.c`, followed by a manifest on `iris.s.<p>.m` that names S and
 * the chunks' sequences. A snapshot counts only once its manifest is acked, so a writer that dies half-way
 * leaves the previous snapshot in force. After a manifest, older snapshots and the log below S are purged.
 */

const CHUNK = 256 * 1024;

export interface Manifest {
  /** The log sequence the snapshot includes (every record up to it, nothing after). */
  logSeq: number;
  chunks: number[];
  bytes: number;
}

function subjects(conn: ClusterConn, partition: number): { chunk: string; manifest: string } {
  const base = `${conn.setup.names.snapSubject}.${partition}`;
  return { chunk: `${base}.c`, manifest: `${base}.m` };
}

/** The partition's chunk and manifest subjects (cluster/backup.ts reads and restores them). */
export const snapshotSubjects = subjects;

/** A consistent, compact copy of `db` (`VACUUM INTO`, one read transaction): synchronous, so nothing changes meanwhile. */
export function copyDatabase(db: DatabaseSync): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'iris-snap-'));
  try {
    const file = join(dir, 'snap.sqlite');
    db.prepare('VACUUM INTO ?').run(file);
    return readFileSync(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Stores a snapshot of `db` taken as of log sequence `logSeq`; resolves with its manifest once acked. */
export function writeSnapshot(conn: ClusterConn, partition: number, db: DatabaseSync, logSeq: number): Promise<Manifest> {
  return storeSnapshot(conn, partition, copyDatabase(db), logSeq);
}

/** Stores `bytes` (a copyDatabase of the view as of log sequence `logSeq`) as the partition's snapshot. */
export async function storeSnapshot(conn: ClusterConn, partition: number, bytes: Buffer, logSeq: number): Promise<Manifest> {
  const s = subjects(conn, partition);
  const chunks: number[] = [];
  for (let off = 0; off < bytes.length; off += CHUNK) {
    const chunk = bytes.subarray(off, off + CHUNK);
    const ack = await withRetry(() => conn.js.publish(s.chunk, chunk));
    chunks.push(ack.seq);
  }
  const manifest: Manifest = { logSeq, chunks, bytes: bytes.length };
  const h = headers();
  h.set('Iris-Kind', 'manifest');
  const ack = await withRetry(() => conn.js.publish(s.manifest, JSON.stringify(manifest), { headers: h }));
  // Older snapshots are garbage now; best effort (a failed purge only costs space until the next snapshot).
  // Not while a backup holds purges: it reads the snapshot that was current at its cut.
  if (await purgesHeld(conn)) return manifest;
  const stream = conn.setup.names.snapStream;
  // Purge keeps messages from seq on, but a seq of 1 means "no bound" to the 2.9 server (it purged everything
  // in a test), so sequences below 2 are never passed: nothing precedes them anyway.
  await conn.jsm.streams.purge(stream, { filter: s.manifest, seq: ack.seq }).catch(() => undefined);
  const first = chunks[0] ?? 0;
  if (first > 1) await conn.jsm.streams.purge(stream, { filter: s.chunk, seq: first }).catch(() => undefined);
  return manifest;
}

/**
 * The key in the lease bucket by which a backup (cluster/backup.ts) holds every purge, of old snapshots and of
 * the log below a snapshot, while it reads: `{"until": <ms since the epoch>}`. Past `until` it is ignored, so a
 * backup that died does not stop purges for long (wall clocks are compared here, which is fine for a hold that
 * only delays the reclaiming of space).
 */
export const PURGE_HOLD_KEY = 'b.hold';

export async function purgesHeld(conn: ClusterConn): Promise<boolean> {
  const e = await conn.leases.get(PURGE_HOLD_KEY).catch(() => null);
  if (!e || e.operation !== 'PUT' || e.length === 0) return false;
  return (e.json<{ until?: number }>().until ?? 0) > Date.now();
}

/**
 * The partition's latest complete snapshot (or `manifest`, one of its snapshots still stored), written to `file`
 * (a new SQLite database); null when there is none.
 */
export async function readSnapshot(conn: ClusterConn, partition: number, file: string, manifest?: Manifest): Promise<Manifest | null> {
  const stream = conn.setup.names.snapStream;
  if (!manifest) {
    const m = await withRetry(() => conn.jsm.streams.getMessage(stream, { last_by_subj: subjects(conn, partition).manifest }));
    if (!m) return null;
    manifest = JSON.parse(new TextDecoder().decode(m.data)) as Manifest;
  }
  const parts: Uint8Array[] = [];
  for (const seq of manifest.chunks) {
    const c = await withRetry(() => conn.jsm.streams.getMessage(stream, { seq }));
    if (!c) throw new Error(`snapshot of partition ${partition}: chunk ${seq} is missing`);
    parts.push(c.data);
  }
  const bytes = Buffer.concat(parts);
  if (bytes.length !== manifest.bytes) throw new Error(`snapshot of partition ${partition}: ${bytes.length} bytes, manifest says ${manifest.bytes}`);
  writeFileSync(file, bytes);
  return manifest;
}
