import { existsSync, fdatasync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import type { Storage } from '../../core/ports.js';
import { GroupCommitStorage, type GroupCommitOptions } from '../../onprem/storage.js';
import { storageContract, type StorageTarget } from '../contract/storage-suite.js';
import { removeDir, tempDir } from './helpers.js';

/**
 * The Storage contract (test/contract/storage-suite.ts) against the on-prem group commit, in both places the
 * WAL fsync can run (IRIS_WAL_SYNC) and with batches closed by size and by a window as well as by the turn.
 *
 * "Durable" is what a crash leaves on disk, and a crash is simulated by copying the files: with sync 'commit'
 * SQLite fsyncs inside COMMIT, so the files as they stand are what survives; with sync 'async' COMMIT only
 * reaches the page cache, so the WAL that survives is the one the last completed fsync covered. The target
 * captures that WAL when an fsync starts (fsync covers every write before the call) and trusts it once the
 * fsync has succeeded: the adapter's own `fsync` seam, still calling the real fdatasync. The disk really
 * filling up (ENOSPC on a tmpfs, through the whole server) is test/onprem/disk-full.test.ts; here the
 * database is made full with max_page_count.
 */

const dirs: string[] = [];
const opened: GroupCommitStorage[] = [];
afterAll(() => {
  for (const s of opened) s.close();
  for (const d of dirs) removeDir(d);
});

interface Db {
  storage: GroupCommitStorage;
  file: string;
  /** The WAL as of the start of the last fsync that succeeded ('async' only). */
  synced: { wal: Buffer | null };
  /** What a crash would leave: captured when use() hands its result out. */
  survivor: { main: Buffer; wal: Buffer | null } | null;
  generation: number;
}

function onpremTarget(opts: Omit<GroupCommitOptions, 'fsync'>): StorageTarget {
  const base = tempDir('iris-storage-contract-');
  dirs.push(base);
  const dbs = new Map<string, Db>();

  function open(name: string, generation: number): Db {
    const dir = join(base, name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `gen-${generation}.sqlite`);
    const synced: { wal: Buffer | null } = { wal: null };
    const fsync: GroupCommitOptions['fsync'] = (fd, done) => {
      const covered = readWal(file);
      fdatasync(fd, (err) => {
        if (!err) synced.wal = covered;
        done(err);
      });
    };
    const storage = new GroupCommitStorage(file, { ...opts, fsync });
    opened.push(storage);
    // The constructor fsyncs the WAL of its migration itself (fsyncSync, not the seam).
    synced.wal = readWal(file);
    return { storage, file, synced, survivor: null, generation };
  }

  function readWal(file: string): Buffer | null {
    return existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`) : null;
  }

  /**
   * The files as a crash now would leave them. The main file is taken as it stands: only a checkpoint writes it,
   * and SQLite checkpoints only frames already synced (the cases stay far below the 1000-page auto-checkpoint).
   */
  function survivor(db: Db): { main: Buffer; wal: Buffer | null } {
    return { main: readFileSync(db.file), wal: opts.sync === 'async' ? db.synced.wal : readWal(db.file) };
  }

  return {
    async use(name, fn) {
      let db = dbs.get(name);
      if (!db) {
        db = open(name, 0);
        dbs.set(name, db);
      }
      const out = await fn(db.storage);
      // Taken in the same microtask chain as fn's last await: no COMMIT or fsync can run in between, so a
      // commit that resolved before its data was durable shows here as data missing after the crash.
      db.survivor = survivor(db);
      return out;
    },
    async crash(name) {
      const db = dbs.get(name);
      if (!db?.survivor) throw new Error(`crash(${name}) before any use(${name})`);
      const next = join(base, name, `gen-${db.generation + 1}.sqlite`);
      writeFileSync(next, db.survivor.main);
      if (db.survivor.wal !== null) writeFileSync(`${next}-wal`, db.survivor.wal);
      // The dead process's storage is closed only to release its files; what it flushes now lands in the old
      // generation's files, which nothing reads again.
      db.storage.close();
      dbs.set(name, open(name, db.generation + 1));
    },
    setFull(s: Storage, full: boolean) {
      const db = (s as GroupCommitStorage).db;
      if (full) {
        const pages = (db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
        db.exec(`PRAGMA max_page_count = ${pages}`);
      } else {
        db.exec('PRAGMA max_page_count = 1073741823');
      }
    },
  };
}

storageContract("on-prem group commit, sync 'commit'", onpremTarget({ windowMs: 0, maxBatch: 1024, sync: 'commit', fullRetryMs: 50 }));
storageContract("on-prem group commit, sync 'async'", onpremTarget({ windowMs: 0, maxBatch: 1024, sync: 'async', fullRetryMs: 50 }));
// Batches closed by size in the middle of a turn and by a timer, with fsyncs overlapping the next COMMIT.
storageContract("on-prem group commit, sync 'async', window 5 ms, batches of 2", onpremTarget({ windowMs: 5, maxBatch: 2, sync: 'async', fullRetryMs: 50 }));
