import type { Sql, SqlValue, Storage } from '../core/ports.js';

/**
 * The core's storage port over a Durable Object's SQLite. Blobs travel as ArrayBuffer in the DO API and as
 * Uint8Array in the core. Durability needs no waiting here: the output gate holds every outgoing message
 * (WebSocket sends, RPC calls) until the writes before it are confirmed, so `commit` resolves at once.
 */
export function doStorage(storage: DurableObjectStorage): Storage {
  const sql: Sql = {
    all<T>(query: string, ...params: SqlValue[]): T[] {
      const bound = params.map((p) => (p instanceof Uint8Array ? p.slice().buffer : p));
      const rows = storage.sql.exec(query, ...bound).toArray();
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
      try {
        return Promise.resolve(storage.transactionSync(fn));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}
