import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { migrate } from '../../core/schema.js';
import { doStorage } from '../../durable-objects/storage.js';
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
 * The StorageFullError case is not registered here (setFull is absent), because a Durable Object cannot keep
 * that promise, and local workerd cannot be made full in this project:
 * - local workerd sets no size limit (measured: 10 GB written into one object without an error), and the SQL
 *   authorizer refuses `PRAGMA max_page_count` (SQLITE_AUTH);
 * - with the `experimental` compatibility flag, `sql.setMaxPageCountForTest` does make it full, and then SQLITE_FULL
 *   is a critical error in workerd (actor-sqlite.c++): the output gate breaks, the object is reset, the writes
 *   since the last confirmed flush are rolled back, and nothing the object sends afterwards leaves it. So an
 *   `unavailable` reply cannot get out, whatever the adapter throws. See docs/ARCHITECTURE.md "The core and
 *   its ports".
 */

const stub = (db: string) => userShard(env, `storage-contract/${db}`);

storageContract('Durable Object storage', {
  use: (db, fn) =>
    runInDurableObject(stub(db), (_instance, state) => {
      const s = doStorage(state.storage);
      state.storage.transactionSync(() => migrate(s.sql, Date.now()));
      return fn(s);
    }),
  crash: (db) => evictDurableObject(stub(db)),
});
