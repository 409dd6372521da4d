import type { Sql, SqlValue, Storage } from '../core/ports.js';

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
export function doStorage(storage: DurableObjectStorage, counters: SqlCounters = sqlCounters(), tally: Map<string, StatementTally> | null = null): Storage {
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
        return Promise.resolve(storage.transactionSync(fn));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}
