import { DurableObject } from 'cloudflare:workers';
import { configFromEnv, type Config } from '../core/config.js';
import { GroupShard as CoreGroupShard } from '../core/group/group-shard.js';
import { visible, type GroupCall, type GroupPush, type GroupResult } from '../core/group/types.js';
import type { LogLevel, Peers } from '../core/ports.js';
import { readString } from '../core/settings.js';
import { pushSettingsFromEnv } from '../core/push.js';
import { migrate } from '../core/schema.js';
import type { Env } from './env.js';
import { consoleLogger } from './log.js';
import { groupRpcIn, type GroupShardStats } from './group-stats.js';
import { statsSnapshot } from './stats.js';
import { doStorage, sqlCounters, type StatementTally } from './storage.js';

/** RPCs to member shards in flight at once: a Worker invocation has at most 6 simultaneous outgoing connections. */
const PUSH_CONCURRENCY = 6;
/**
 * Member shards called per event. A bigger fan-out continues from the alarm, so a 1,024-member group never makes
 * its whole fan-out in one event (and each event stays far from the subrequest limit).
 */
const PUSHES_PER_EVENT = 64;

interface QueuedPush {
  user: string;
  push: GroupPush;
  entries: GroupPush['entries'];
  resolve: (wanted: boolean) => void;
  reject: (e: unknown) => void;
}

/**
 * One group's shard on Cloudflare (docs/ARCHITECTURE.md "Groups"): a SQLite-backed Durable Object per group
 * (`idFromName(group id)`), a thin adapter over core/group/group-shard.ts. Calls come from members' UserShards
 * (RPC `call`); the fan-out calls UserShard.groupPush once per online member, at most PUSH_CONCURRENCY at a time
 * and PUSHES_PER_EVENT per event, the rest from the alarm. The alarm also runs the core's wake-ups (membership
 * news retried, members that were behind nudged).
 */
export class GroupShard extends DurableObject<Env> {
  /** Billing-relevant counters (group-stats.ts): a few integer adds per event, always on, as in UserShard. */
  private readonly counts: Omit<GroupShardStats, 'databaseBytes' | 'statements'> = {
    instance: crypto.randomUUID(),
    sql: sqlCounters(),
    rpcIn: groupRpcIn(),
    rpcOut: { push: 0, news: 0, note: 0, typing: 0 },
    alarms: 0,
    handlerMs: 0,
  };
  /** Rows per statement text: only with IRIS_SQL_TALLY=1 (measurement runs), as it costs a map lookup per statement. */
  private readonly tally: Map<string, StatementTally> | null = this.env['IRIS_SQL_TALLY'] === '1' ? new Map() : null;
  private readonly storage = doStorage(this.ctx.storage, this.counts.sql, this.tally);
  private readonly config: Config;
  private readonly log = consoleLogger((readString(this.env, 'IRIS_LOG') ?? 'info') as LogLevel, () => (this.shard ? { shard: `group:${this.shard.group}` } : {}));
  private shard: CoreGroupShard | null = null;
  private readonly queue: QueuedPush[] = [];
  private running = 0;
  private budget = PUSHES_PER_EVENT;
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = configFromEnv(env);
    void ctx.blockConcurrencyWhile(async () => {
      this.alarmAt = await this.ctx.storage.getAlarm();
    });
  }

  /** Peers.group: one call of a member's shard, made for call.from. */
  async call(group: string, call: GroupCall): Promise<GroupResult> {
    this.counts.rpcIn[call.op]++;
    return this.timed(() => {
      this.budget = PUSHES_PER_EVENT;
      return this.shardFor(group).call(call);
    });
  }

  override async alarm(): Promise<void> {
    this.counts.alarms++;
    return this.timed(async () => {
      this.alarmAt = null;
      this.budget = PUSHES_PER_EVENT;
      this.pump();
      // Through the port, so the bench counts this row too.
      const group = this.shard?.group ?? this.storage.sql.all<{ grp: string }>(`SELECT grp FROM groups LIMIT 1`)[0]?.grp;
      if (group !== undefined) await this.shardFor(group).onWake();
    });
  }

  /**
   * The counters of group-stats.ts, for tests and measurement (scripts/bench/cf-rows.ts --scenarios group). Reads
   * nothing from SQL and creates no storage; not counted in rpcIn, so polling it does not disturb what it reports.
   */
  async stats(): Promise<GroupShardStats> {
    return statsSnapshot<GroupShardStats>(this.counts, this.ctx.storage.sql.databaseSize, this.tally);
  }

  /** Adds the wall time of one event handler to handlerMs (a lower bound: see ShardStats.handlerMs). */
  private async timed<T>(run: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    try {
      return await run();
    } finally {
      this.counts.handlerMs += Date.now() - t0;
    }
  }

  private wakeAt(ms: number): void {
    if (this.alarmAt !== null && this.alarmAt <= ms) return;
    this.alarmAt = ms;
    void this.ctx.storage.setAlarm(ms);
  }

  private groupPush(push: GroupPush): Promise<boolean>[] {
    const out = push.targets.map(
      (t) =>
        new Promise<boolean>((resolve, reject) => {
          this.queue.push({ user: t.user, push, entries: visible(push.entries, t.ranges), resolve, reject });
        }),
    );
    this.pump();
    return out;
  }

  /** Starts queued pushes within the concurrency and the event's budget; what is left waits for the alarm. */
  private pump(): void {
    while (this.running < PUSH_CONCURRENCY && this.budget > 0 && this.queue.length > 0) {
      const q = this.queue.shift()!;
      this.running++;
      this.budget--;
      this.counts.rpcOut.push++;
      this.env.USERS.get(this.env.USERS.idFromName(q.user))
        .groupPush(q.user, q.push.group, q.push.after, q.push.upTo, q.entries)
        .then(q.resolve, q.reject)
        .finally(() => {
          this.running--;
          this.pump();
        });
    }
    if (this.queue.length > 0 && this.budget <= 0) this.wakeAt(Date.now());
  }

  private shardFor(group: string): CoreGroupShard {
    if (this.shard) {
      if (this.shard.group !== group) throw new Error(`shard of group ${this.shard.group} addressed as ${group}`);
      return this.shard;
    }
    this.ctx.storage.transactionSync(() => migrate(this.storage.sql, Date.now()));
    const env = this.env;
    const peers: Peers = {
      forward: () => Promise.reject(new Error('a group shard does not forward')),
      presence: () => Promise.reject(new Error('a group shard has no presence')),
      groupPush: (push) => this.groupPush(push),
      // Every call below is a billed request on the member's object: counted for the bench.
      groupNews: (user, news) => {
        this.counts.rpcOut.news++;
        return env.USERS.get(env.USERS.idFromName(user)).groupNews(user, news);
      },
      // Push webhooks for offline members (core/group/push-notes.ts): one RPC per member per coalescing window.
      groupNote: (user, note) => {
        this.counts.rpcOut.note++;
        return env.USERS.get(env.USERS.idFromName(user)).groupNote(user, note);
      },
      // Typing in the group (core/group/group-shard.ts): only online members' shards are called.
      typing: (to, from, conv, on) => {
        this.counts.rpcOut.typing++;
        return env.USERS.get(env.USERS.idFromName(to)).typing(to, from, conv, on);
      },
    };
    this.shard = new CoreGroupShard({
      group,
      storage: this.storage,
      peers,
      scheduler: { wakeAt: (ms) => this.wakeAt(ms) },
      clock: { now: () => Date.now() },
      config: this.config,
      log: this.log,
      push: pushSettingsFromEnv(env),
    });
    return this.shard;
  }
}
