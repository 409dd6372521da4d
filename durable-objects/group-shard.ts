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
import { doStorage } from './storage.js';

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
  private readonly storage = doStorage(this.ctx.storage);
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
    this.budget = PUSHES_PER_EVENT;
    return this.shardFor(group).call(call);
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    this.budget = PUSHES_PER_EVENT;
    this.pump();
    const group = this.shard?.group ?? this.ctx.storage.sql.exec<{ grp: string }>(`SELECT grp FROM groups LIMIT 1`).toArray()[0]?.grp;
    if (group !== undefined) await this.shardFor(group).onWake();
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
      groupNews: (user, news) => env.USERS.get(env.USERS.idFromName(user)).groupNews(user, news),
      // Push webhooks for offline members (core/group/push-notes.ts): one RPC per member per coalescing window.
      groupNote: (user, note) => env.USERS.get(env.USERS.idFromName(user)).groupNote(user, note),
      // Typing in the group (core/group/group-shard.ts): only online members' shards are called.
      typing: (to, from, conv, on) => env.USERS.get(env.USERS.idFromName(to)).typing(to, from, conv, on),
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
