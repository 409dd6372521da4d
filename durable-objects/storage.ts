import { StorageFullError, type Sql, type SqlValue, type Storage } from '../core/ports.js';

/**
 * What the SQL port did, per object, since the object was constructed. Rows read and rows written are what
 * Cloudflare bills SQLite-backed Durable Objects for (from each cursor's rowsRead / rowsWritten), so they are
 * counted on every statement, always: two integer adds. Lost on eviction, like everything in memory.
 */
export interface SqlCounters {
  statements: number;
  rowsRead: number;
  rowsWritten: number;
  /** Storage.commit calls (one transactionSync each). */
  commits: number;
}

/** The same counts for one statement text (the optional tally, for finding where the rows go). */
export interface StatementTally {
  calls: number;
  rowsRead: number;
  rowsWritten: number;
}

/**
 * How large a shard's database may grow. At the platform's limit SQLITE_FULL is a critical error in a Durable
 * Object (the output gate breaks and the object resets: nothing it sends afterwards leaves it), so the port's
 * StorageFullError promise (refuse the write, keep serving) is kept by refusing below the limit instead.
 */
export interface DoStorageLimits {
  /** A commit that grows the database past this many bytes is refused (IRIS_DO_MAX_BYTES). */
  maxBytes: number;
  /** The refusal's retryAfterMs: the shard frees room as recipients drain their inboxes. */
  fullRetryMs: number;
}

export const DEFAULT_DO_LIMITS: DoStorageLimits = { maxBytes: 9_500_000_000, fullRetryMs: 5_000 };

export function sqlCounters(): SqlCounters {
  return { statements: 0, rowsRead: 0, rowsWritten: 0, commits: 0 };
}

/**
 * The core's storage port over a Durable Object's SQLite. Blobs travel as ArrayBuffer in the DO API and as
 * Uint8Array in the core. Durability needs no waiting here: the output gate holds every outgoing message
 * (WebSocket sends, RPC calls) until the writes before it are confirmed, so `commit` resolves at once.
 *
 * `counters` receives every statement's billed rows; `tally`, when given, the same per statement text (a map
 * lookup per statement: for measurement runs, see scripts/bench/cf-rows.ts).
 */
export function doStorage(
  storage: DurableObjectStorage,
  counters: SqlCounters = sqlCounters(),
  tally: Map<string, StatementTally> | null = null,
  limits: DoStorageLimits = DEFAULT_DO_LIMITS,
): Storage {
  const sql: Sql = {
    all<T>(query: string, ...params: SqlValue[]): T[] {
      const bound = params.map((p) => (p instanceof Uint8Array ? p.slice().buffer : p));
      const cursor = storage.sql.exec(query, ...bound);
      const rows = cursor.toArray();
      // rowsRead / rowsWritten are final only once the cursor is consumed (toArray above).
      counters.statements++;
      counters.rowsRead += cursor.rowsRead;
      counters.rowsWritten += cursor.rowsWritten;
      if (tally !== null) {
        let t = tally.get(query);
        if (t === undefined) {
          t = { calls: 0, rowsRead: 0, rowsWritten: 0 };
          tally.set(query, t);
        }
        t.calls++;
        t.rowsRead += cursor.rowsRead;
        t.rowsWritten += cursor.rowsWritten;
      }
      for (const row of rows) {
        for (const k in row) {
          const v = row[k];
          if (v instanceof ArrayBuffer) row[k] = new Uint8Array(v) as unknown as ArrayBuffer;
        }
      }
      return rows as T[];
    },
  };
  return {
    sql,
    commit: <T>(fn: () => T): Promise<T> => {
      counters.commits++;
      try {
        return Promise.resolve(
          storage.transactionSync(() => {
            const before = storage.sql.databaseSize;
            const result = fn();
            // Only growth is refused, as SQLITE_FULL would: deletes and writes into freed pages (acks, trims)
            // keep working while the shard is at its cap, and free the room that lets senders in again.
            const after = storage.sql.databaseSize;
            if (after > before && after > limits.maxBytes) {
              throw new StorageFullError(`the shard's database would grow to ${after} bytes, past IRIS_DO_MAX_BYTES (${limits.maxBytes})`, limits.fullRetryMs);
            }
            return result;
          }),
        );
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}
