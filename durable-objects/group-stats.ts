import type { GroupCall } from '../core/group/types.js';
import type { SqlCounters, StatementTally } from './storage.js';

/**
 * What one GroupShard did since it was constructed, in the units Cloudflare bills (the GroupShard's share of
 * durable-objects/stats.ts, which is the UserShard's): SQL rows read and written, RPC calls received (by op) and
 * alarms, plus the calls it made to members' UserShards, each a billed request on the member's object. In memory
 * only: an evicted object starts again from zero with a new `instance`, so a reader comparing two snapshots can
 * tell a restart from a quiet object.
 *
 * Read with GroupShard.stats() over RPC (tests, and the bench-only route /bench/stats?group=G of
 * scripts/bench/cf-bench.ts); the production edge Worker has no route to it.
 */
export interface GroupShardStats {
  /** Random per construction. */
  instance: string;
  sql: SqlCounters;
  /** RPC calls received from members' shards (Peers.group), by op (stats() itself not counted). */
  rpcIn: Record<GroupCall['op'], number>;
  /** RPC calls made to members' UserShards: fan-out rounds, membership news, push notes, typing. */
  rpcOut: { push: number; news: number; note: number; typing: number };
  /** alarm() invocations (fan-out beyond one event's budget, news retries, receipts row, nudges). */
  alarms: number;
  /** Wall time in event handlers (ms); a lower bound of the billed duration (see ShardStats.handlerMs). */
  handlerMs: number;
  /** ctx.storage.sql.databaseSize (bytes) when read. */
  databaseBytes: number;
  /** Per statement text, when the object runs with IRIS_SQL_TALLY=1; otherwise absent. */
  statements?: Record<string, StatementTally>;
}

export function groupRpcIn(): GroupShardStats['rpcIn'] {
  return { send: 0, change: 0, roster: 0, read: 0, watch: 0, mark: 0, receipts: 0, typing: 0 };
}
