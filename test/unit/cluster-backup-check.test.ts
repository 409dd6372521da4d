import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKUP_FILE, partitionFile, sha256, type BackupInfo } from '../../cluster/backup.js';
import { checkBackup, RestoreRefused } from '../../cluster/restore.js';
import type { SqlValue } from '../../core/ports.js';
import { migrate, SCHEMA_VERSION } from '../../core/schema.js';

/**
 * What a cluster restore checks before it writes anything (cluster/restore.ts checkBackup), without NATS: the
 * backup's own file, the partition count, the schema version (of the backup and of each file) and each sha256.
 */

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A backup of 4 partitions: partition 1 has a migrated file (with `extraVersion` recorded, if given), the rest are empty. */
function backup(over: Partial<BackupInfo> = {}, extraVersion?: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'iris-backup-check-'));
  dirs.push(dir);
  const file = join(dir, partitionFile(1));
  const db = new DatabaseSync(file);
  const sql = {
    all: <T>(q: string, ...p: SqlValue[]): T[] => {
      const st = db.prepare(q);
      if (st.columns().length > 0) return st.all(...p) as T[];
      st.run(...p);
      return [];
    },
  };
  migrate(sql, 1);
  if (extraVersion !== undefined) sql.all('INSERT INTO iris_migrations (version, applied_at) VALUES (?, 1)', extraVersion);
  db.close();
  const bytes = readFileSync(file);
  const info: BackupInfo = { partitions: 4, logSeq: 10, created: new Date(0).toISOString(), schemaVersion: SCHEMA_VERSION, files: [{ partition: 1, bytes: bytes.length, sha256: sha256(bytes) }], empty: [0, 2, 3], cuts: 1, ...over };
  writeFileSync(join(dir, BACKUP_FILE), JSON.stringify(info));
  return dir;
}

describe('cluster restore: the checks before anything is written', () => {
  it('accepts a sound backup', () => {
    expect(checkBackup(backup(), 4).files.map((f) => f.partition)).toEqual([1]);
  });

  it('refuses a directory without backup.json, another partition count, a newer schema', () => {
    const empty = mkdtempSync(join(tmpdir(), 'iris-backup-check-'));
    dirs.push(empty);
    expect(() => checkBackup(empty, 4)).toThrow(RestoreRefused);
    expect(() => checkBackup(backup(), 8)).toThrow(/has 4 partitions, the cluster is configured with 8/);
    expect(() => checkBackup(backup({ schemaVersion: SCHEMA_VERSION + 1 }), 4)).toThrow(/schema version .* is newer than this build's/);
    expect(() => checkBackup(backup({}, SCHEMA_VERSION + 1), 4)).toThrow(/has schema version \d+, newer than this build's/);
  });

  it('refuses a file whose bytes do not match its sha256, or a partition outside the count', () => {
    const dir = backup();
    const file = join(dir, partitionFile(1));
    const bytes = readFileSync(file);
    bytes.writeUInt8(bytes.readUInt8(200) ^ 1, 200);
    writeFileSync(file, bytes);
    expect(() => checkBackup(dir, 4)).toThrow(/does not match the backup's sha256/);
    const info = JSON.parse(readFileSync(join(backup(), BACKUP_FILE), 'utf8')) as BackupInfo;
    const far = backup({ files: [{ ...info.files[0]!, partition: 9 }] });
    expect(() => checkBackup(far, 4)).toThrow(/outside 0..3/);
  });
});
