import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type Session } from 'node:sqlite';
import type { CommitOptions, Sql, SqlValue, Storage } from '../core/ports.js';
import { migrate } from '../core/schema.js';
import { GroupCommitStorage } from '../onprem/storage.js';
import { FencedError } from './errors.js';
import { PartitionLog, type LogOptions, type LogRecord } from './log.js';
import type { ClusterConn } from './nats.js';
import { copyDatabase, purgesHeld, readSnapshot, storeSnapshot, type Manifest } from './snapshot.js';

/**
 * The core's Storage port for one PARTITION in cluster mode (issue 13): the on-prem group commit
 * (onprem/storage.ts, sync 'async') over the partition's local SQLite file, with "durable" redefined as
 * "appended to the partition's log and acked by JetStream" instead of "fsynced".
 *
 * How a group becomes a log record: a SQLite session (node:sqlite createSession) records every row the
 * partition's transactions change. Where the group commit would fsync the WAL (after COMMIT, one at a time, the
 * next group collecting meanwhile), this adapter takes the session's changeset (exactly the groups committed
 * since the last record: a rolled-back savepoint nets out of it), starts a new session, and appends the changeset
 * (with any DDL run through sql.all, which sessions do not record) as ONE record; the group's commit() promises
 * resolve on the ack. So the core acks nothing before it is replicated, and one append carries every commit of
 * an event-loop turn (or of the time the previous append was in flight).
 *
 * The local file is only a materialized view (synchronous=NORMAL, its own fsyncs are irrelevant): open() always
 * rebuilds it from the latest snapshot and the log's tail, then appends a claim that fences any older writer.
 * An append that is refused (FencedError) or unanswered fails the group and every later commit: the view
 * holds writes the log does not, so it is dropped, never served again.
 */

export interface ClusterStorageOptions {
  /** This node's id: part of every record's Nats-Msg-Id, and named in the claim. */
  node: string;
  /** The lease revision this node holds the partition under (0 when none, e.g. tests of the storage alone). */
  leaseRevision?: number;
  windowMs?: number;
  maxBatch?: number;
  /** Lazy writes with no durable commit after them are appended this many ms later (GroupCommitOptions). */
  lazyFlushMs?: number;
  /** The partition is lost (fenced, or an append's outcome is unknown): stop serving it. */
  onFenced?: (error: unknown) => void;
  /** Append timeouts and how long an unanswered append is retried (cluster/log.ts). */
  log?: LogOptions;
  /**
   * Take a snapshot (in the background) once this many records were appended since the last one, so that a
   * takeover replays at most about this many records (~0.45 ms each). 0: only when snapshot() is called.
   */
  snapshotEvery?: number;
}

const DDL = /^\s*(CREATE|ALTER|DROP)\b/i;

/** A change record: u32 length of the DDL (JSON array of statements), the DDL, then the changeset. */
export function encodeChange(ddl: readonly string[], changeset: Uint8Array): Uint8Array {
  const d = new TextEncoder().encode(ddl.length > 0 ? JSON.stringify(ddl) : '');
  const out = new Uint8Array(4 + d.length + changeset.length);
  new DataView(out.buffer).setUint32(0, d.length);
  out.set(d, 4);
  out.set(changeset, 4 + d.length);
  return out;
}

export function decodeChange(data: Uint8Array): { ddl: string[]; changeset: Uint8Array } {
  const n = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0);
  const ddl = n > 0 ? (JSON.parse(new TextDecoder().decode(data.subarray(4, 4 + n))) as string[]) : [];
  return { ddl, changeset: data.subarray(4 + n) };
}

/**
 * Brings a local view being rebuilt to this build's schema, inside the caller's transaction: before any record is
 * applied, since the schema's DDL is never in the log (ClusterStorage.open, and cluster/backup.ts the same way).
 */
export function migrateView(db: DatabaseSync): void {
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
}

/** Applies one record to a local view (inside the caller's transaction). Throws if the view diverged. */
export function applyRecord(db: DatabaseSync, r: LogRecord): void {
  if (r.kind !== 'change') return;
  const { ddl, changeset } = decodeChange(r.data);
  for (const stmt of ddl) db.exec(stmt);
  if (changeset.length > 0 && !db.applyChangeset(changeset)) throw new Error(`log record ${r.seq} conflicts with the local view`);
}

export class ClusterStorage implements Storage {
  readonly sql: Sql;
  private session: Session;
  private ddl: string[] = [];
  private counter = 0;
  private dead = false;
  /** Appends sent and not yet answered: while one is, the view holds commits the log may not have yet. */
  private shipping = 0;
  private sinceSnapshot = 0;
  /** A snapshot is being stored (its copy was taken): no other copy until it is done. */
  private snapshotting = false;
  /** snapshotEvery records were appended since the last copy: take one at the next append point. */
  private snapDue = false;
  /** Callers of snapshot() waiting for the next copy to be stored. */
  private snapWaiters: { resolve: (m: Manifest) => void; reject: (e: unknown) => void }[] = [];
  private fenced: unknown = null;

  private constructor(
    private readonly inner: GroupCommitStorage,
    readonly log: PartitionLog,
    private readonly opts: ClusterStorageOptions,
    /** Prefix of this ownership term's message ids: node, partition and the sequence of its claim. */
    private readonly term: string,
  ) {
    this.session = inner.db.createSession();
    this.sql = {
      all: <T extends Record<string, SqlValue>>(q: string, ...p: SqlValue[]): T[] => {
        if (this.fenced) throw this.fenced;
        if (DDL.test(q)) this.ddl.push(q);
        return inner.sql.all<T>(q, ...p);
      },
    };
  }

  /**
   * Takes the partition over on this node: rebuilds the local view at `dir`/p<partition>.sqlite from the latest
   * snapshot plus the log's tail, appends a claim (fencing any older writer), and returns the storage. Rejects
   * with FencedError if another writer appended between the replay and the claim.
   */
  static async open(conn: ClusterConn, partition: number, dir: string, opts: ClusterStorageOptions): Promise<ClusterStorage> {
    const file = join(dir, `p${partition}.sqlite`);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    const manifest: Manifest | null = await readSnapshot(conn, partition, file);
    const log = new PartitionLog(conn, partition, opts.log);
    const db = new DatabaseSync(file);
    try {
      db.exec('BEGIN');
      migrateView(db);
      await log.replay(manifest?.logSeq ?? 0, (r) => applyRecord(db, r));
      db.exec('COMMIT');
    } catch (e) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw e;
    } finally {
      db.close();
    }
    const claimSeq = await log.claim(opts.node, opts.leaseRevision ?? 0);
    let self: ClusterStorage | null = null;
    const inner = new GroupCommitStorage(file, {
      windowMs: opts.windowMs ?? 0,
      maxBatch: opts.maxBatch ?? 1024,
      sync: 'async',
      ...(opts.lazyFlushMs !== undefined && { lazyFlushMs: opts.lazyFlushMs }),
      fsync: (_fd, done) => self!.ship(done),
      onFatal: (e) => self!.lose(e),
    });
    self = new ClusterStorage(inner, log, opts, `${opts.node}.${partition}.${claimSeq}`);
    return self;
  }

  get partition(): number {
    return this.log.partition;
  }

  /** The error that ended this partition's service here, or null while it serves. */
  get fencedBy(): unknown {
    return this.fenced;
  }

  /**
   * A lazy commit (CommitOptions.lazy) is no record of its own: the group commit skips the "fsync" of a group that
   * holds only lazy writes, so the session keeps them and the partition's next record carries them (or an append
   * of their own after lazyFlushMs). A takeover may lose them, which their callers repair (core/ports.ts).
   */
  commit<T>(fn: () => T, opts?: CommitOptions): Promise<T> {
    if (this.fenced) return Promise.reject(this.fenced);
    const mark = this.ddl.length;
    return this.inner.commit(() => {
      try {
        return fn();
      } catch (e) {
        this.ddl.length = mark; // the savepoint rolled its DDL back too
        throw e;
      }
    }, opts);
  }

  /** The group commit's "fsync": append everything committed since the last record, answer on the ack. */
  private ship(done: (err: Error | null) => void): void {
    if (this.dead) return; // a crashed process answers nothing
    if (this.fenced) return done(this.fenced instanceof Error ? this.fenced : new Error(String(this.fenced)));
    const changeset = this.session.changeset();
    this.session.close();
    this.session = this.inner.db.createSession();
    const ddl = this.ddl;
    this.ddl = [];
    // The one point where the view is exactly the log plus this record: every earlier append acked, no
    // transaction open, everything committed is in this changeset. A snapshot copied here is the state as of
    // this record, however busy the partition (waiting for a quiet moment never came under steady writes).
    const copy = (this.snapDue || this.snapWaiters.length > 0) && !this.snapshotting && !this.inner.db.isTransaction ? copyDatabase(this.inner.db) : null;
    if (copy) {
      this.snapDue = false;
      this.sinceSnapshot = 0;
    }
    if (changeset.length === 0 && ddl.length === 0) {
      done(null);
      if (copy) this.storeCopy(copy, this.log.lastSeq);
      return;
    }
    this.shipping++;
    this.log.append(encodeChange(ddl, changeset), `${this.term}.${++this.counter}`).then(
      (seq) => {
        this.shipping--;
        done(null);
        if (copy) this.storeCopy(copy, seq);
        else this.maybeSnapshot();
      },
      (e: unknown) => {
        this.shipping--;
        done(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  private lose(e: unknown): void {
    if (this.fenced) return;
    this.fenced = e instanceof FencedError ? e : new FencedError(`partition ${this.partition}: lost`, this.partition, { cause: e });
    for (const w of this.snapWaiters.splice(0)) w.reject(this.fenced);
    this.opts.onFenced?.(e);
  }

  /**
   * Stores a snapshot of the view and purges the log below it: the copy is taken at the next append point (ship),
   * which this starts at once. Resolves with the manifest once stored.
   */
  snapshot(): Promise<Manifest> {
    if (this.fenced) return Promise.reject(this.fenced);
    return new Promise<Manifest>((resolve, reject) => {
      this.snapWaiters.push({ resolve, reject });
      this.inner.sync();
    });
  }

  /** After an append: a snapshot is due every snapshotEvery records (the copy is taken at the next ship). */
  private maybeSnapshot(): void {
    const every = this.opts.snapshotEvery ?? 0;
    if (every > 0 && ++this.sinceSnapshot >= every && !this.fenced) this.snapDue = true;
  }

  /** Stores a copy taken in ship() as the snapshot at `logSeq`, in the background; appends go on meanwhile. */
  private storeCopy(copy: Buffer, logSeq: number): void {
    this.snapshotting = true;
    const waiters = this.snapWaiters.splice(0);
    storeSnapshot(this.log.conn, this.partition, copy, logSeq)
      .then(async (m) => {
        // A backup reading meanwhile needs the records above the snapshot it saw at its cut: the next one purges.
        if (!(await purgesHeld(this.log.conn))) await this.log.purgeBefore(m.logSeq);
        return m;
      })
      .then(
        (m) => waiters.forEach((w) => w.resolve(m)),
        (e: unknown) => waiters.forEach((w) => w.reject(e)),
      )
      .finally(() => {
        this.snapshotting = false;
        // Asked for while this one was being stored: they need a copy of their own, from now.
        if (this.snapWaiters.length > 0 && !this.fenced) this.inner.sync();
      });
  }

  /** Waits until every commit so far is appended, then closes the local view. */
  async close(): Promise<void> {
    if (!this.fenced) await this.inner.settled();
    this.session.close();
    this.inner.close();
  }

  /**
   * Stops serving at once (the lease was lost): every later commit rejects with FencedError. Commits whose record
   * is already on its way may still land in the log (they are then durable, just not acked here: a client's retry
   * with its idempotency key finds them); nothing is acked from now on.
   */
  fence(reason: string): void {
    this.lose(new FencedError(`partition ${this.partition}: ${reason}`, this.partition));
    // Groups committed locally and not yet shipped fail at their "fsync" (ship), which closes the view.
    this.inner.flush();
  }

  /** Simulates a crash: from now on nothing is appended and no pending commit resolves. The view is left as is. */
  kill(): void {
    this.dead = true;
  }
}
