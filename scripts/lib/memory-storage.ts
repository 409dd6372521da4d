import { DatabaseSync } from 'node:sqlite';
import type { Sql, SqlValue, Storage } from '../../core/ports.js';
import { migrate } from '../../core/schema.js';

/**
 * An in-memory SQLite database behind the core's Storage port, migrated, for benchmarks that count what the core
 * writes without timing a disk: `changes()` is SQLite's total_changes(), the rows Cloudflare would bill. Commits
 * are synchronous (nothing to wait for in memory).
 */
export function memoryStorage(): { db: DatabaseSync; storage: Storage; changes(): number } {
  const db = new DatabaseSync(':memory:');
  const stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();
  const sql: Sql = {
    all: <T>(q: string, ...p: SqlValue[]): T[] => {
      let s = stmts.get(q);
      if (!s) stmts.set(q, (s = db.prepare(q)));
      return s.all(...p) as T[];
    },
  };
  const storage: Storage = {
    sql,
    commit: <T>(fn: () => T): Promise<T> => {
      db.exec('BEGIN');
      try {
        const out = fn();
        db.exec('COMMIT');
        return Promise.resolve(out);
      } catch (e) {
        db.exec('ROLLBACK');
        return Promise.reject(e);
      }
    },
  };
  db.exec('BEGIN');
  migrate(sql, 0);
  db.exec('COMMIT');
  return { db, storage, changes: () => (db.prepare('SELECT total_changes() AS c').get() as { c: number }).c };
}
