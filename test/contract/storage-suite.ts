import { describe, expect, it } from 'vitest';
import { StorageFullError, type Row, type SqlValue, type Storage } from '../../core/ports.js';
import { SCHEMA_VERSION, migrate } from '../../core/schema.js';

/**
 * The contract of the Storage port (core/ports.ts), as one suite that every adapter runs: the Durable Object
 * storage inside workerd (test/workers/storage-contract.test.ts) and the on-prem group commit over node:sqlite
 * (test/onprem/storage-contract.test.ts). Like the conformance suite (test/conformance/suite.ts), a profile
 * supplies a target and calls the function; the cases know only the port.
 *
 * What the port promises, and so what is tested here:
 * - commit(fn) runs fn synchronously and atomically: all of its writes or none; a fn that throws rejects the
 *   commit with what it threw and leaves nothing behind, and the storage goes on working.
 * - commit resolves once fn's writes and every write before them are durable: nothing that leaves after the
 *   await (an ack) can outrun the data. Each target defines "leaves" and "durable" the way its platform does.
 * - Reads done in fn see fn's own writes, and only data that is durable by the time the commit resolves.
 * - Sql.all returns rows; blobs come back as Uint8Array, byte for byte.
 * - StorageFullError when the storage is full: nothing of fn kept, a retry hint, reads still served.
 * Nothing else (batch sizes, how many fsyncs, when a COMMIT runs) is the port's business: the adapters' own
 * tests cover those (test/onprem/units.test.ts, test/workers/stats.test.ts).
 */
export interface StorageTarget {
  /**
   * Runs fn against the database `db` (created and migrated with core/schema.ts the way the profile does it, the
   * first time a name is used; every test uses its own names). Resolves with fn's result once that result has
   * left the storage's process the way an ack would: Cloudflare: the callback's answer passes the output gate;
   * on-prem: the target notes, the moment fn's promise resolves, what is durable then (see crash).
   */
  use<T>(db: string, fn: (s: Storage) => Promise<T>): Promise<T>;
  /**
   * The process holding `db` dies. The next use(db) sees only what was durable when the previous use(db)
   * returned its result: Cloudflare: the object is evicted; on-prem: the storage is reopened from a copy of
   * the files as they stood on disk at that moment.
   */
  crash(db: string): Promise<void>;
  /**
   * Makes the database full (no page can be added) or gives it room again; called inside use() with the
   * Storage of that use. Absent where a full database cannot be produced, or the port's promise cannot be kept:
   * the Cloudflare test file says why for Durable Objects. The StorageFullError case is then not registered.
   */
  setFull?(s: Storage, full: boolean): void;
}

/**
 * Every table the migrations create: what the schema case expects on each platform (a migration that adds a table
 * adds it here, so that both profiles are shown to run it).
 */
const TABLES = ['dedup', 'device_keys', 'devices', 'group_cursors', 'group_dedup', 'group_log', 'group_members', 'group_push', 'groups', 'inbox', 'iris_migrations', 'one_time_prekeys', 'outbox', 'peers', 'push_pending', 'reads', 'receipts_in', 'receipts_out', 'revocations', 'revoked_before', 'user_groups', 'users'];

/** The suite's own table: the contract is about the port, not about the core's schema. */
const CREATE = `CREATE TABLE IF NOT EXISTS contract_kv (k INTEGER PRIMARY KEY, v)`;

function put(s: Storage, k: number, v: SqlValue = `v${k}`): void {
  s.sql.all(`INSERT INTO contract_kv (k, v) VALUES (?, ?)`, k, v);
}

function keys(s: Storage): number[] {
  return s.sql.all<{ k: number } & Row>(`SELECT k FROM contract_kv ORDER BY k`).map((r) => r.k);
}

/** The keys stored, read the way the core reads: through commit. */
function readKeys(s: Storage): Promise<number[]> {
  return s.commit(() => keys(s));
}

/** A fresh database with the suite's table committed (and so durable) before the case begins. */
async function withTable(target: StorageTarget, db: string): Promise<void> {
  await target.use(db, (s) => s.commit(() => void s.sql.all(CREATE)));
}

export function storageContract(name: string, target: StorageTarget): void {
  let n = 0;
  /** A database name no other case of this run uses (a target's storage may outlive one case). */
  const fresh = (label: string) => `${name.replace(/[^a-z0-9]+/gi, '-')}-${label}-${++n}`;

  describe(`Storage contract: ${name}`, () => {
    it('runs fn synchronously, before commit returns, and resolves with its result', async () => {
      const db = fresh('sync');
      await withTable(target, db);
      const out = await target.use(db, async (s) => {
        let ran = false;
        const p = s.commit(() => {
          ran = true;
          put(s, 1);
          return { answer: 42 };
        });
        // Synchronous: the core relies on fn having run (its caches updated) when commit() returns.
        const ranBeforeReturn = ran;
        return { ranBeforeReturn, value: await p };
      });
      expect(out).toEqual({ ranBeforeReturn: true, value: { answer: 42 } });
    });

    it('keeps a resolved commit across a crash', async () => {
      const db = fresh('durable');
      await withTable(target, db);
      await target.use(db, (s) => s.commit(() => put(s, 1, 'kept')));
      await target.crash(db);
      const rows = await target.use(db, (s) => s.commit(() => s.sql.all(`SELECT k, v FROM contract_kv`)));
      expect(rows).toEqual([{ k: 1, v: 'kept' }]);
    });

    it('commits every transaction started in one turn, each resolving with its own value, all durable', async () => {
      const db = fresh('group');
      await withTable(target, db);
      const values = await target.use(db, (s) =>
        Promise.all(
          [1, 2, 3, 4, 5].map((k) =>
            s.commit(() => {
              put(s, k);
              return k * 10;
            }),
          ),
        ),
      );
      expect(values).toEqual([10, 20, 30, 40, 50]);
      await target.crash(db);
      expect(await target.use(db, readKeys)).toEqual([1, 2, 3, 4, 5]);
    });

    it('resolves a commit only once its writes and every write before it are durable', async () => {
      // Three transactions in one turn; the ack goes out after the SECOND resolves, without waiting for the
      // third. Whatever the batching, at that moment the first two must survive a crash.
      const db = fresh('before');
      await withTable(target, db);
      await target.use(db, async (s) => {
        void s.commit(() => put(s, 1));
        const second = s.commit(() => put(s, 2));
        void s.commit(() => put(s, 3));
        await second;
      });
      await target.crash(db);
      const after = await target.use(db, readKeys);
      expect(after.slice(0, 2)).toEqual([1, 2]);
    });

    it('counts a write made outside commit among the writes before the next commit', async () => {
      // "every write before them" includes statements run straight through Sql: a commit resolving after one
      // vouches for it too.
      const db = fresh('outside');
      await withTable(target, db);
      await target.use(db, async (s) => {
        put(s, 1, 'outside');
        await s.commit(() => put(s, 2));
      });
      await target.crash(db);
      expect(await target.use(db, readKeys)).toEqual([1, 2]);
    });

    it('hands out from a read only data that is durable once the read resolves', async () => {
      // A write whose commit nobody awaits, then a read that sees it: answering with what was read (e.g. a
      // delivery) must not outrun that write's durability.
      const db = fresh('read');
      await withTable(target, db);
      const seen = await target.use(db, (s) => {
        void s.commit(() => put(s, 7, 'pending'));
        return s.commit(() => s.sql.all(`SELECT k, v FROM contract_kv`));
      });
      expect(seen).toEqual([{ k: 7, v: 'pending' }]);
      await target.crash(db);
      expect(await target.use(db, readKeys)).toEqual([7]);
    });

    it("sees fn's own writes inside fn", async () => {
      const db = fresh('own');
      await withTable(target, db);
      const inside = await target.use(db, (s) =>
        s.commit(() => {
          put(s, 1, 'a');
          put(s, 2, 'b');
          s.sql.all(`UPDATE contract_kv SET v = ? WHERE k = ?`, 'b2', 2);
          s.sql.all(`DELETE FROM contract_kv WHERE k = ?`, 1);
          return s.sql.all(`SELECT k, v FROM contract_kv ORDER BY k`);
        }),
      );
      expect(inside).toEqual([{ k: 2, v: 'b2' }]);
    });

    it('rolls back every write of a fn that throws, rejects with what it threw, and keeps the others of its turn', async () => {
      const db = fresh('throw');
      await withTable(target, db);
      await target.use(db, (s) => s.commit(() => put(s, 1, 'original')));
      const boom = new Error('boom');
      const outcome = await target.use(db, async (s) => {
        const before = s.commit(() => put(s, 2));
        const failing = s.commit(() => {
          put(s, 3);
          s.sql.all(`UPDATE contract_kv SET v = 'changed' WHERE k = 1`);
          s.sql.all(`DELETE FROM contract_kv WHERE k = 2`);
          throw boom;
        });
        const after = s.commit(() => put(s, 4));
        const error = await failing.then(
          () => null,
          (e: unknown) => e,
        );
        await Promise.all([before, after]);
        // Nothing of the failed fn is visible, not even to the next transaction of the same turn.
        const rows = await s.commit(() => s.sql.all(`SELECT k, v FROM contract_kv ORDER BY k`));
        return { sameError: error === boom, rows };
      });
      const expected = [
        { k: 1, v: 'original' },
        { k: 2, v: 'v2' },
        { k: 4, v: 'v4' },
      ];
      expect(outcome).toEqual({ sameError: true, rows: expected });
      await target.crash(db);
      // Nor did it reach the disk, and the storage goes on committing.
      const later = await target.use(db, async (s) => {
        const rows = await s.commit(() => s.sql.all(`SELECT k, v FROM contract_kv ORDER BY k`));
        await s.commit(() => put(s, 5));
        return rows;
      });
      expect(later).toEqual(expected);
      await target.crash(db);
      expect(await target.use(db, readKeys)).toEqual([1, 2, 4, 5]);
    });

    it('rolls back the earlier writes of a fn whose statement fails, and goes on working', async () => {
      const db = fresh('stmt');
      await withTable(target, db);
      await target.use(db, (s) => s.commit(() => put(s, 1)));
      const outcome = await target.use(db, async (s) => {
        const failing = s.commit(() => {
          put(s, 2);
          put(s, 1); // PRIMARY KEY conflict: SQLite refuses the statement
        });
        const error = await failing.then(
          () => null,
          (e: unknown) => e,
        );
        await s.commit(() => put(s, 3));
        return { isError: error instanceof Error, keys: await readKeys(s) };
      });
      expect(outcome).toEqual({ isError: true, keys: [1, 3] });
      await target.crash(db);
      expect(await target.use(db, readKeys)).toEqual([1, 3]);
    });

    it('round-trips NULL, numbers, strings and blobs (as Uint8Array, byte-exact)', async () => {
      const db = fresh('values');
      await withTable(target, db);
      const every = new Uint8Array(256).map((_, i) => i);
      // A view into the middle of a larger buffer: only its own bytes may be stored.
      const view = new Uint8Array([9, 9, 1, 2, 3, 9, 9]).subarray(2, 5);
      const values: SqlValue[] = [null, 0, -1, 2 ** 53 - 1, 1.5, '', 'héllo ✉ 👋', 'NUL\u0000inside', every, view];
      await target.use(db, (s) => s.commit(() => values.forEach((v, k) => put(s, k, v))));
      await target.crash(db);
      const rows = await target.use(db, (s) => s.commit(() => s.sql.all<{ k: number; v: SqlValue } & Row>(`SELECT k, v FROM contract_kv ORDER BY k`)));
      expect(rows.map((r) => r.k)).toEqual(values.map((_, k) => k));
      for (const [k, v] of values.entries()) {
        const got = rows[k]!.v;
        if (v instanceof Uint8Array) {
          // The core takes blobs as Uint8Array (Durable Objects hand out ArrayBuffer; the adapter converts).
          expect(got, `row ${k}`).toBeInstanceOf(Uint8Array);
          expect(Array.from(got as Uint8Array), `row ${k}`).toEqual(Array.from(v));
        } else {
          expect(got, `row ${k}`).toStrictEqual(v);
        }
      }
    });

    it('round-trips an empty blob as an empty Uint8Array, not NULL', async () => {
      // The core stores empty bodies (a receipt's body is empty) in NOT NULL BLOB columns.
      const db = fresh('empty-blob');
      await withTable(target, db);
      const got = await target.use(db, (s) =>
        s.commit(() => {
          put(s, 1, new Uint8Array(0));
          return s.sql.all<{ v: SqlValue; t: SqlValue } & Row>(`SELECT v, typeof(v) AS t FROM contract_kv`)[0]!;
        }),
      );
      expect(got.t).toBe('blob');
      expect(got.v).toBeInstanceOf(Uint8Array);
      expect((got.v as Uint8Array).byteLength).toBe(0);
    });

    it('carries the schema of core/schema.ts, migrated to the latest version, and migrating again changes nothing', async () => {
      const db = fresh('schema');
      const out = await target.use(db, (s) =>
        s.commit(() => ({
          // Not SQLite's own tables (sqlite_sequence, ...) nor workerd's (_cf_KV, _cf_METADATA).
          tables: s.sql
            .all<{ name: string } & Row>(`SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' AND substr(name, 1, 4) <> '_cf_' ORDER BY name`)
            .map((r) => r.name),
          version: s.sql.all<{ v: number } & Row>(`SELECT max(version) AS v FROM iris_migrations`)[0]!.v,
          again: migrate(s.sql, 0),
          recorded: s.sql.all<{ c: number } & Row>(`SELECT count(*) AS c FROM iris_migrations`)[0]!.c,
        })),
      );
      expect(out).toEqual({ tables: TABLES, version: SCHEMA_VERSION, again: SCHEMA_VERSION, recorded: SCHEMA_VERSION });
    });

    const { setFull } = target;
    if (setFull) {
      it('refuses a write with StorageFullError when full: nothing of fn kept, a retry hint, reads served, then writes again', async () => {
        const db = fresh('full');
        await withTable(target, db);
        await target.use(db, (s) => s.commit(() => put(s, 1)));
        const big = new Uint8Array(256 * 1024).fill(7);
        const outcome = await target.use(db, async (s) => {
          setFull(s, true);
          const error = await s
            .commit(() => {
              put(s, 2);
              put(s, 3, big);
            })
            .then(
              () => null,
              (e: unknown) => e,
            );
          // What needs no write is still served while full.
          const readWhileFull = await readKeys(s);
          setFull(s, false);
          if (!(error instanceof StorageFullError)) return { error, readWhileFull, retryAfterMs: null };
          // Room again: a caller that waits as long as it was told gets its write through. The wait is the
          // port's own hint, not a guess; a storage may still say "full" once more (it probes), so a few tries.
          let hint: StorageFullError = error;
          for (let attempt = 1; ; attempt++) {
            await new Promise((r) => setTimeout(r, hint.retryAfterMs));
            const again = await s.commit(() => put(s, 4, big)).then(
              () => null,
              (e: unknown) => e,
            );
            if (again === null) break;
            if (!(again instanceof StorageFullError) || attempt === 3) throw again;
            hint = again;
          }
          return { error: 'StorageFullError', readWhileFull, retryAfterMs: error.retryAfterMs };
        });
        expect(outcome).toMatchObject({ error: 'StorageFullError', readWhileFull: [1] });
        expect(outcome.retryAfterMs).toBeGreaterThan(0);
        await target.crash(db);
        expect(await target.use(db, readKeys)).toEqual([1, 4]);
      });
    }
  });
}
