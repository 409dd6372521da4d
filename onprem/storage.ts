import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { StorageFullError, type CommitOptions, type Sql, type SqlValue, type Storage } from '../core/ports.js';
import { migrate } from '../core/schema.js';

// Over 400 lines on purpose: the group commit is one state machine (open batch, savepoints, COMMIT, the async
// fsync in flight, full-disk probing) whose transitions must be read together to see that nothing resolves
// before it is durable; test/contract/storage-suite.ts holds it to the port's contract.

/**
 * The core's Storage port over one node:sqlite file per worker process, with group commit.
 *
 * commit(fn) runs fn synchronously inside the worker's currently open transaction (BEGIN on first use), each
 * fn inside its own SAVEPOINT so a throwing fn rolls back only its own writes. Everything that arrives until
 * the batch closes shares one COMMIT, and the batch's promises resolve only once that COMMIT is on disk. The
 * core sends acks, forwards and deliveries after awaiting commit(), so nothing leaves this process before the
 * writes it depends on are durable.
 *
 * Group commit without blocking (sync 'async'; the default is 'commit', see below): COMMIT writes the WAL frames
 * into the page cache
 * (journal_mode=WAL, synchronous=NORMAL: SQLite itself does not fsync on commit, only around checkpoints), and
 * the fsync of the WAL file runs on libuv's thread pool. While it runs the event loop goes on reading frames and
 * committing further batches; those wait for the next fsync, which starts as soon as this one ends (the classic
 * scheme: the next group is whatever arrived while the previous fsync ran). fsync of the WAL file makes every
 * frame written to it before the call durable, which is exactly what synchronous=FULL's fsync at COMMIT did, so
 * the guarantee is the same; only the thread that waits differs. sync 'commit' (the default) is synchronous=FULL,
 * the fsync inside COMMIT on the event loop: measured cheaper on a disk whose fsync takes ~0.1 ms (the handoff to
 * the thread pool and the smaller groups cost more CPU than the blocked loop; docs/ARCHITECTURE.onprem.md).
 * In 'async' mode a failed fsync is fatal (onFatal): the kernel may have dropped the dirty pages, so what SQLite
 * shows may not be on disk (PostgreSQL's "fsyncgate").
 *
 * A batch closes at the end of the current event-loop turn (windowMs = 0) or windowMs after its first write, or
 * as soon as it holds maxBatch functions, whichever comes first.
 *
 * A fn that wrote nothing resolves at once when nothing it could have read is still waiting for a COMMIT or an
 * fsync: the core runs its reads (inbox pages, outbox batches) through commit() too, and they must neither pay
 * for an fsync nor hand out data that is not yet durable.
 *
 * Lazy commits (CommitOptions.lazy, 'async' mode only; 'commit' mode fsyncs inside every COMMIT anyway): a batch
 * whose only writes are lazy is COMMITted without an fsync and its promises resolve at the COMMIT. The WAL keeps
 * the order, so the next fsync (of a later durable batch, or lazyFlushMs later at the latest) makes them durable.
 * In cluster mode the fsync is the partition log's append (cluster/storage.ts): a lazy-only batch is no record.
 */

export interface CommitObserver {
  /** One durable group: how many commit() calls it made durable, rows changed, and how long its fsync took. */
  committed(fns: number, rows: number, seconds: number): void;
  failed?(error: unknown): void;
  /** The storage went full (error: the SQLite error that said so), or accepts writes again (error null). */
  full?(isFull: boolean, error: unknown): void;
}

export interface GroupCommitOptions {
  /** 0: close the batch at the end of the event-loop turn. > 0: at most this many ms after its first write. */
  windowMs: number;
  /** Close the batch as soon as it holds this many commit() calls. */
  maxBatch: number;
  /** 'commit' (default): fsync inside COMMIT. 'async': fsync of the WAL off the event loop, overlapping the next batch. */
  sync?: 'async' | 'commit';
  /** The WAL fsync failed: nothing committed since the last good fsync may be on disk. Default: throw (crash). */
  onFatal?: (error: unknown) => void;
  /**
   * node:fs fdatasync (what SQLite itself calls on Linux at a synchronous=FULL commit: the data and the file size,
   * not the timestamps); replaceable so tests can hold an fsync in flight or fail it.
   */
  fsync?: (fd: number, done: (err: Error | null) => void) => void;
  observer?: CommitObserver;
  /** While full, writes are refused up front and one batch every this many ms tries for real. Default 1000. */
  fullRetryMs?: number;
  /** Lazy writes not followed by a durable batch get an fsync of their own this many ms later. Default 1000. */
  lazyFlushMs?: number;
}

/** SQLITE_FULL: the disk (ENOSPC on a write) or max_page_count. */
const SQLITE_FULL = 13;

export function isFullError(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const code = (e as { errcode?: unknown }).errcode;
  // The primary code is the low byte of an extended one.
  if (typeof code === 'number' && (code & 0xff) === SQLITE_FULL) return true;
  return e instanceof Error && /database or disk is full/i.test(e.message);
}

interface Prepared {
  stmt: StatementSync;
  /** True for statements that only read (SELECT/WITH/PRAGMA/...): run with all() and never mark the batch dirty. */
  reader: boolean;
  /** A write that returns rows (RETURNING): run with all() and always mark the batch dirty. */
  returning: boolean;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
  /** A lazy commit's waiter: resolved at the COMMIT, not at the fsync. */
  lazy?: boolean;
}

const NOOP_WAITER: Waiter = { resolve: () => undefined, reject: () => undefined };

const READ_ONLY = /^\s*(SELECT|WITH|PRAGMA|EXPLAIN|VALUES)\b/i;

export class StorageClosedError extends Error {
  override readonly name = 'StorageClosedError';
}

export class GroupCommitStorage implements Storage {
  readonly db: DatabaseSync;
  readonly sql: Sql;
  private readonly stmts = new Map<string, Prepared>();
  private inTx = false;
  /** Rows changed in the open transaction: a nonzero value means a COMMIT (fsync) is owed. */
  private rows = 0;
  /** Of those, rows written by lazy commits: only rows - lazyRows are owed an fsync now. */
  private lazyRows = 0;
  /** Lazy rows COMMITted and not yet covered by an fsync that started after them. */
  private lazyUnsynced = 0;
  private lazyTimer: ReturnType<typeof setTimeout> | null = null;
  private waiting: Waiter[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private immediate: ReturnType<typeof setImmediate> | null = null;
  private closed = false;
  private depth = 0;
  private readonly savepoint: StatementSync;
  private readonly release: StatementSync;
  /**
   * Disk full: null when writes go through. Otherwise the time of the next probe: until then a fn that writes
   * is rolled back and refused at once (no doomed COMMIT, and readers never share a batch with a write that
   * will fail); the first write after it goes through as a probe, and a COMMIT that succeeds ends the state.
   */
  private fullProbeAt: number | null = null;
  private readonly fullRetryMs: number;
  private readonly asyncSync: boolean;
  /** The WAL file, for fsync ('async' mode). */
  private walFd = -1;
  /** Committed, waiting for the next fsync to start; rows they changed. */
  private unsynced: Waiter[] = [];
  private unsyncedRows = 0;
  /** Covered by the fsync in flight (null: none in flight). */
  private syncing: Waiter[] | null = null;

  constructor(
    readonly path: string,
    private readonly opts: GroupCommitOptions,
  ) {
    this.fullRetryMs = opts.fullRetryMs ?? 1000;
    this.db = new DatabaseSync(path);
    this.asyncSync = opts.sync === 'async';
    this.db.exec('PRAGMA journal_mode = WAL');
    this.db.exec(this.asyncSync ? 'PRAGMA synchronous = NORMAL' : 'PRAGMA synchronous = FULL');
    // One connection per file (this process owns it), so locking never waits; keep a generous page cache.
    this.db.exec('PRAGMA cache_size = -65536');
    this.db.exec('PRAGMA temp_store = MEMORY');
    this.sql = { all: (q, ...p) => this.run(q, p) };
    this.db.exec('BEGIN IMMEDIATE');
    this.inTx = true;
    this.depth = 1;
    try {
      migrate(this.sql, Date.now());
      this.db.exec('COMMIT');
    } catch (e) {
      this.db.exec('ROLLBACK');
      this.db.close();
      throw e;
    } finally {
      this.inTx = false;
      this.depth = 0;
      this.rows = 0;
    }
    // Every commit() opens and releases a savepoint: prepared once, they skip SQLite's parser (~7% of the
    // worker's CPU under load when run through exec()).
    this.savepoint = this.db.prepare('SAVEPOINT iris_fn');
    this.release = this.db.prepare('RELEASE iris_fn');
    if (this.asyncSync) {
      // The WAL exists from the migration's COMMIT on and SQLite keeps it (same inode) while the connection is
      // open. Make it and its directory entry durable once; from here on every group's fsync covers it.
      this.walFd = openSync(`${path}-wal`, 'r');
      fsyncSync(this.walFd);
      const dir = openSync(dirname(path), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    }
  }

  private prepared(query: string): Prepared {
    let p = this.stmts.get(query);
    if (!p) {
      const stmt = this.db.prepare(query);
      const reader = READ_ONLY.test(query) && !/\bRETURNING\b/i.test(query);
      p = { stmt, reader, returning: !reader && stmt.columns().length > 0 };
      this.stmts.set(query, p);
    }
    return p;
  }

  private run<T>(query: string, params: SqlValue[]): T[] {
    if (this.closed) throw new StorageClosedError('storage is closed');
    const p = this.prepared(query);
    if (p.reader) return p.stmt.all(...params) as T[];
    // A write outside commit() joins the open batch, so it shares the next fsync instead of paying for its
    // own. Nothing waits on it; every later commit() does.
    if (this.depth === 0) this.begin();
    if (p.returning) {
      const out = p.stmt.all(...params) as T[];
      this.rows += Math.max(1, out.length);
      if (this.depth === 0) this.schedule();
      return out;
    }
    const r = p.stmt.run(...params);
    this.rows += Number(r.changes);
    if (this.depth === 0) this.settle();
    return [];
  }

  private begin(): void {
    if (this.inTx) return;
    this.db.exec('BEGIN');
    this.inTx = true;
  }

  commit<T>(fn: () => T, opts?: CommitOptions): Promise<T> {
    if (this.closed) return Promise.reject(new StorageClosedError('storage is closed'));
    if (this.depth > 0) {
      // Nested commit (fn calling commit): it is part of the outer fn's atomic unit.
      try {
        return Promise.resolve(fn());
      } catch (e) {
        return Promise.reject(e);
      }
    }
    this.begin();
    const before = this.rows;
    this.savepoint.run();
    let out: T;
    this.depth++;
    try {
      out = fn();
      if (this.fullProbeAt !== null && this.rows > before) {
        if (Date.now() < this.fullProbeAt) throw this.fullError(null);
        this.fullProbeAt = Date.now() + this.fullRetryMs; // this one is the probe; the next in fullRetryMs
      }
    } catch (e) {
      this.depth--;
      if (isFullError(e)) this.becameFull(e);
      const err = isFullError(e) ? this.fullError(e) : e;
      try {
        this.db.exec('ROLLBACK TO iris_fn');
        this.db.exec('RELEASE iris_fn');
      } catch {
        // Some errors (I/O, disk full) make SQLite roll back the whole transaction: the batch is lost.
        this.abort(e);
        return Promise.reject(err);
      }
      this.rows = before;
      this.settle();
      return Promise.reject(err);
    }
    this.depth--;
    this.release.run();
    const lazy = opts?.lazy === true && this.asyncSync;
    if (lazy) this.lazyRows += this.rows - before;
    if (this.rows === this.lazyRows) {
      // Nothing uncommitted, neither from fn nor from anything before it. End the (read-only) transaction now;
      // that COMMIT writes nothing. What fn read is durable unless a committed group still waits for its fsync.
      // Nothing in the open transaction is owed an fsync (lazy rows are not): COMMIT it now.
      this.flush();
      if (lazy) return Promise.resolve(out);
      const group = this.unsynced.length > 0 ? this.unsynced : this.syncing;
      if (group === null) return Promise.resolve(out);
      const value = out;
      return new Promise<T>((resolve, reject) => group.push({ resolve: () => resolve(value), reject }));
    }
    const value = out;
    const p = new Promise<T>((resolve, reject) => {
      this.waiting.push({ resolve: () => resolve(value), reject, ...(lazy && { lazy: true }) });
    });
    if (this.waiting.length >= this.opts.maxBatch) this.flush();
    else this.schedule();
    return p;
  }

  /** True while writes are refused for lack of space. */
  get full(): boolean {
    return this.fullProbeAt !== null;
  }

  private fullError(cause: unknown): StorageFullError {
    // Retry when the next probe may run (never sooner than 250 ms: a client loop must not spin).
    const wait = this.fullProbeAt === null ? this.fullRetryMs : this.fullProbeAt - Date.now();
    return new StorageFullError('storage is full; nothing was written', Math.max(250, wait), cause === null ? undefined : { cause });
  }

  private becameFull(e: unknown): void {
    const was = this.fullProbeAt !== null;
    this.fullProbeAt = Date.now() + this.fullRetryMs;
    if (!was) this.opts.observer?.full?.(true, e);
  }

  /** After a rolled-back fn: close an empty transaction at once, else keep waiting for the batch. */
  private settle(): void {
    if (this.rows === 0 && this.waiting.length === 0) this.flush();
    else this.schedule();
  }

  private schedule(): void {
    if (this.timer !== null || this.immediate !== null) return;
    if (this.opts.windowMs > 0) this.timer = setTimeout(() => this.closeBatch(), this.opts.windowMs);
    else this.immediate = setImmediate(() => this.closeBatch());
  }

  /**
   * The batch's time is up. While an fsync is in flight its waiters could not be resolved before the next fsync
   * anyway, so the transaction stays open and keeps collecting until that fsync ends (then one COMMIT, one
   * fsync): fewer, larger COMMITs, each hot page written to the WAL once per group instead of once per turn.
   */
  private closeBatch(): void {
    this.timer = null;
    this.immediate = null;
    if (this.asyncSync && this.syncing !== null) return;
    this.flush();
  }

  /** Commits the open transaction now (one fsync if anything was written) and releases its waiters. */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
    if (!this.inTx) return;
    const waiting = this.waiting;
    const rows = this.rows;
    const lazyRows = this.lazyRows;
    this.waiting = [];
    this.rows = 0;
    this.lazyRows = 0;
    const t0 = process.hrtime.bigint();
    try {
      this.db.exec('COMMIT');
    } catch (e) {
      this.waiting = waiting;
      this.abort(e);
      return;
    }
    this.inTx = false;
    if (rows > 0 && this.fullProbeAt !== null) {
      this.fullProbeAt = null;
      this.opts.observer?.full?.(false, null);
    }
    if (!this.asyncSync) {
      if (rows > 0 || waiting.length > 0) this.opts.observer?.committed(waiting.length, rows, Number(process.hrtime.bigint() - t0) / 1e9);
      for (const w of waiting) w.resolve();
      return;
    }
    if (rows === 0 && waiting.length === 0) return;
    if (rows === lazyRows && lazyRows > 0) {
      // Only lazy writes: no fsync now. Their waiters are done; a reader joins whatever fsync is still owed.
      this.lazyUnsynced += lazyRows;
      this.armLazyFlush();
      const group = this.unsynced.length > 0 ? this.unsynced : this.syncing;
      for (const w of waiting) {
        if (w.lazy || group === null) w.resolve();
        else group.push(w);
      }
      return;
    }
    for (const w of waiting) this.unsynced.push(w);
    this.unsyncedRows += rows;
    this.startSync();
  }

  /** Lazy rows committed and not yet made durable by an fsync (ClusterStorage.snapshot waits for none). */
  get lazyPending(): number {
    return this.lazyUnsynced;
  }

  private armLazyFlush(): void {
    if (this.lazyTimer !== null) return;
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = null;
      if (this.lazyUnsynced === 0 || this.closed) return;
      this.unsynced.push(NOOP_WAITER);
      this.startSync();
    }, this.opts.lazyFlushMs ?? 1000);
  }

  /** Commits the open batch and starts an fsync now, even if nothing waits for one (ClusterStorage.snapshot). */
  sync(): void {
    this.flush();
    if (this.closed) return;
    this.unsynced.push(NOOP_WAITER);
    this.startSync();
  }

  /** Commits the open batch and resolves once everything committed so far (lazy writes too) is on disk. */
  settled(): Promise<void> {
    this.flush();
    if (this.lazyUnsynced > 0 && this.unsynced.length === 0) {
      this.unsynced.push(NOOP_WAITER);
      this.startSync();
    }
    const group = this.unsynced.length > 0 ? this.unsynced : this.syncing;
    if (group === null) return Promise.resolve();
    return new Promise<void>((resolve) => group.push({ resolve, reject: () => resolve() }));
  }

  /** Starts an fsync of the WAL for every group committed so far, unless one is running (it restarts when done). */
  private startSync(): void {
    if (this.syncing !== null || this.unsynced.length === 0 || this.walFd < 0) return;
    const group = this.unsynced;
    const rows = this.unsyncedRows;
    this.unsynced = [];
    this.unsyncedRows = 0;
    // An fsync of the WAL (or the log append of everything since the last) covers every lazy row before it.
    this.lazyUnsynced = 0;
    if (this.lazyTimer !== null) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.syncing = group;
    const t0 = process.hrtime.bigint();
    (this.opts.fsync ?? fdatasync)(this.walFd, (err) => {
      this.syncing = null;
      if (err) {
        for (const w of group) w.reject(err);
        this.fatal(err);
        return;
      }
      this.opts.observer?.committed(group.length, rows, Number(process.hrtime.bigint() - t0) / 1e9);
      for (const w of group) w.resolve();
      if (this.closed) this.closeWal();
      // What arrived while this fsync ran is the next group (closeBatch left it open).
      else if (this.inTx && (this.rows > 0 || this.waiting.length > 0)) this.flush();
      else this.startSync();
    });
  }

  private fatal(err: unknown): void {
    // Nothing more is promised from this connection: committed-but-unsynced groups and the open batch fail too.
    const rest = [...this.unsynced, ...this.waiting];
    this.unsynced = [];
    this.waiting = [];
    this.rows = 0;
    this.lazyRows = 0;
    this.closed = true;
    try {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
    } catch {
      // Already rolled back.
    }
    for (const w of rest) w.reject(err);
    this.opts.observer?.failed?.(err);
    if (this.opts.onFatal) this.opts.onFatal(err);
    else throw err;
  }

  private closeWal(): void {
    if (this.walFd < 0) return;
    closeSync(this.walFd);
    this.walFd = -1;
  }

  /** The open transaction is lost as a whole (e.g. disk full, I/O error): nobody was acked, every waiter gets the error. */
  private abort(e: unknown): void {
    if (isFullError(e)) {
      this.becameFull(e);
      e = this.fullError(e);
    }
    const waiting = this.waiting;
    this.waiting = [];
    this.rows = 0;
    this.lazyRows = 0;
    this.inTx = false;
    try {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
    } catch {
      // Already rolled back by SQLite.
    }
    this.opts.observer?.failed?.(e);
    for (const w of waiting) w.reject(e);
  }

  /** Flushes and closes. Later commit() calls reject with StorageClosedError. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.lazyTimer !== null) clearTimeout(this.lazyTimer);
    this.stmts.clear();
    if (this.asyncSync && this.walFd >= 0) {
      // Whatever waits for an fsync gets one now; one still in flight resolves its own group and closes the fd.
      fsyncSync(this.walFd);
      const rest = this.unsynced;
      this.unsynced = [];
      for (const w of rest) w.resolve();
      if (this.syncing === null) this.closeWal();
    }
    try {
      this.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    } catch {
      // Best effort: the WAL is replayed on the next open anyway.
    }
    this.db.close();
  }
}
