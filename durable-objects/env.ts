import type { GroupShard } from './group-shard.js';
import type { UserShard } from './user-shard.js';

/** Bindings and variables of the Worker and its Durable Object (wrangler.toml). */
export interface Env {
  USERS: DurableObjectNamespace<UserShard>;
  /** One Durable Object per group (docs/ARCHITECTURE.md "Groups"). Optional so a config without it still runs (groups: unavailable). */
  GROUPS?: DurableObjectNamespace<GroupShard>;
  /** Workers Rate Limiting binding: per-IP connect attempts. Optional so a config without it still runs. */
  CONNECT_LIMITER?: RateLimit;
  /** Workers Analytics Engine dataset: counters and histograms (durable-objects/analytics.ts). Optional: absent, nothing is written. */
  METRICS?: AnalyticsEngineDataset;
  [key: string]: unknown;
}
