import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { migrate } from '../../core/schema.js';
import type { Storage } from '../../core/ports.js';
import { DEFAULT_DO_LIMITS, doStorage, type DoStorageLimits } from '../../durable-objects/storage.js';
import { storageContract } from '../contract/storage-suite.js';
import { userShard } from './helpers.js';

/**
 * The Storage contract (test/contract/storage-suite.ts) against durable-objects/storage.ts over a real Durable
 * Object's SQLite storage in workerd. Each database is its own object (a UserShard that never gets a request,
 * so only the suite touches its storage); the suite runs inside it through runInDurableObject, and the schema
 * is migrated the way UserShard.mailboxFor does it (core/schema.ts migrate in one transactionSync).
 *
 * "Durable" is the output gate's promise: the callback's result leaves the object only once the writes before
 * it are confirmed. A crash is an eviction; the next use() is a new instance over the same storage.
 *
 * Full: a Durable Object cannot be let run into SQLITE_FULL. That is a critical error in workerd
 * (actor-sqlite.c++, seen with the `experimental` flag's `sql.setMaxPageCountForTest`): the output gate breaks, the
 * object is reset, and nothing it sends afterwards leaves it, so an `unavailable` reply could not get out. Local
 * workerd sets no size limit at all (10 GB written into one object without an error), and the SQL authorizer
 * refuses `PRAGMA max_page_count`. So the adapter refuses growth past its own cap (IRIS_DO_MAX_BYTES, below the
 * platform's 10 GB) with StorageFullError, and setFull here puts that cap at the database's current size.
 */

const stub = (db: string) => userShard(env, `storage-contract/${db}`);

/** The cap of each Storage under test and its database's size: setFull caps it at that size, and lifts it. */
const caps = new WeakMap<Storage, { limits: DoStorageLimits; size: () => number }>();

storageContract('Durable Object storage', {
  use: (db, fn) =>
    runInDurableObject(stub(db), (_instance, state) => {
      const l: DoStorageLimits = { ...DEFAULT_DO_LIMITS, fullRetryMs: 50 };
      const s = doStorage(state.storage, undefined, null, l);
      caps.set(s, { limits: l, size: () => state.storage.sql.databaseSize });
      state.storage.transactionSync(() => migrate(s.sql, Date.now()));
      return fn(s);
    }),
  crash: (db) => evictDurableObject(stub(db)),
  // Full = no growth past today's size (IRIS_DO_MAX_BYTES reached), as on-prem's max_page_count does.
  setFull(s, full) {
    const c = caps.get(s)!;
    c.limits.maxBytes = full ? c.size() : DEFAULT_DO_LIMITS.maxBytes;
  },
});
