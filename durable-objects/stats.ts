import type { SqlCounters, StatementTally } from './storage.js';

/**
 * What one UserShard did since it was constructed: the events Cloudflare bills (requests: RPC calls received,
 * WebSocket messages received, alarms, upgrades; SQL rows read and written) and what the object caused
 * elsewhere (RPC calls it made, frames it sent). In memory only: an evicted object starts again from zero, with
 * a new `instance`, so a reader comparing two snapshots can tell a restart from a quiet object.
 *
 * Read with UserShard.stats() over RPC (tests, and the bench-only route in scripts/bench/cf-bench.ts); the
 * production edge Worker has no route to it.
 */
export interface ShardStats {
  /** Random per construction. */
  instance: string;
  sql: SqlCounters;
  /** RPC calls this object made to other shards. */
  rpcOut: { forward: number; presence: number; watch: number; push: number; typing: number; keys: number };
  /** RPC calls this object received (stats() itself not counted). */
  rpcIn: { receive: number; presence: number; watch: number; push: number; typing: number; keys: number };
  /** WebSocket messages that reached webSocketMessage (heartbeats answered by the auto-response never do). */
  wsIn: number;
  /** Frames handed to a socket's send(). */
  wsOut: number;
  /** WebSocket upgrades accepted (stub.fetch from the edge). */
  upgrades: number;
  /** Push webhook calls (core/push.ts): answered 2xx, failed (retried by the alarm), dropped after the last attempt. */
  pushes: { sent: number; failed: number; deadLettered: number };
  /** alarm() invocations (forward retries, the forward safety net, the liveness sweep). */
  alarms: number;
  /**
   * Wall time spent in event handlers (ms). workerd's clock does not advance during synchronous code, only
   * across I/O, so this is a lower bound of the billed duration, not a measurement of it.
   */
  handlerMs: number;
  /** ctx.storage.sql.databaseSize (bytes) when read. */
  databaseBytes: number;
  /** Per statement text, when the object runs with IRIS_SQL_TALLY=1; otherwise absent. */
  statements?: Record<string, StatementTally>;
}

/** What both shards' stats() report beyond their counters. */
export interface StatsExtras {
  databaseBytes: number;
  statements?: Record<string, StatementTally>;
}

/**
 * A shard's counters as stats() returns them: a copy (each group of counters copied too, so the caller's snapshot
 * does not move on), with the database size and, when tallying, the statement tally.
 */
export function statsSnapshot<S extends StatsExtras>(
  counts: Omit<S, keyof StatsExtras>,
  databaseBytes: number,
  tally: Map<string, StatementTally> | null,
): S {
  const copy: Record<string, unknown> = { databaseBytes };
  for (const [k, v] of Object.entries(counts)) copy[k] = typeof v === 'object' && v !== null ? { ...v } : v;
  if (tally !== null) copy['statements'] = Object.fromEntries([...tally].map(([q, t]) => [q, { ...t }]));
  // The copy has every key of counts plus the extras: S's shape, which TypeScript cannot follow through entries().
  return copy as S;
}
