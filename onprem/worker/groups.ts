import { GroupShard } from '../../core/group/group-shard.js';
import { describeError } from '../log.js';
import type { WorkerContext } from './context.js';
import { ownerOf } from '../owner.js';
import type { MailboxEnv } from './shards.js';

/**
 * The group shards a worker owns (core/group/group-shard.ts): a group is owned by hash like a user
 * (ownerOf(group id)), its rows in this worker's SQLite file under the same group commit. Group ids are their own
 * namespace: a group and a user may share an id (their tables and this map are apart). One timer per group for
 * its wake-ups (retries of membership news, nudges of members that were behind).
 */
export class GroupShards {
  private readonly byGroup = new Map<string, GroupShard>();
  private readonly timers = new Map<string, { at: number; timer: ReturnType<typeof setTimeout> }>();
  /** Calls in flight per group (a busy group is never evicted). */
  private readonly busy = new Map<string, number>();
  private readonly lastUsed = new Map<string, number>();

  constructor(
    private readonly ctx: WorkerContext,
    private readonly env: (group?: string) => MailboxEnv | null,
  ) {}

  owns(group: string): boolean {
    if (this.ctx.clusterOwns) return this.ctx.clusterOwns(group);
    return ownerOf(group, this.ctx.workers) === this.ctx.id;
  }

  get(group: string): GroupShard {
    let g = this.byGroup.get(group);
    if (g) return g;
    if (!this.owns(group)) throw new Error(`group ${group} is not owned by worker ${this.ctx.id}`);
    const env = this.env(group);
    if (!env) throw new Error('storage is not open yet');
    g = new GroupShard({ group, storage: env.storage, peers: env.peers, clock: env.clock, config: env.config, log: env.log, push: env.push?.settings, scheduler: { wakeAt: (ms) => this.wakeAt(group, ms) } });
    this.byGroup.set(group, g);
    return g;
  }

  track<T>(group: string, p: Promise<T>): Promise<T> {
    this.busy.set(group, (this.busy.get(group) ?? 0) + 1);
    const done = () => {
      this.busy.set(group, this.busy.get(group)! - 1);
      this.lastUsed.set(group, Date.now());
    };
    p.then(done, done);
    return p;
  }

  private wakeAt(group: string, ms: number): void {
    if (this.ctx.draining) return;
    const t = this.timers.get(group);
    if (t && t.at <= ms) return;
    if (t) clearTimeout(t.timer);
    const timer = setTimeout(() => {
      this.timers.delete(group);
      if (this.ctx.draining) return;
      this.track(group, this.get(group).onWake()).catch((e: unknown) => this.ctx.log('warn', `wake of group ${group} failed: ${describeError(e)}`));
    }, Math.max(0, ms - Date.now()));
    this.timers.set(group, { at: ms, timer });
  }

  /**
   * Forgets group shards idle for IRIS_MAILBOX_IDLE_MS with nothing in flight and no wake-up pending. Their online
   * members are stored (group_members.online), so a group read again pushes to the same members.
   */
  evictIdle(): void {
    const cutoff = Date.now() - this.ctx.cfg.mailboxIdleMs;
    for (const group of this.byGroup.keys()) {
      if ((this.busy.get(group) ?? 0) === 0 && !this.timers.has(group) && (this.lastUsed.get(group) ?? 0) < cutoff) {
        this.byGroup.delete(group);
        this.busy.delete(group);
        this.lastUsed.delete(group);
      }
    }
  }

  /**
   * After a restart: groups whose offline members were not all told of their messages (core/group/push-notes.ts,
   * group_push behind the log's head) are read again, which resumes their push notes from the next wake-up.
   */
  recover(storage?: MailboxEnv['storage']): void {
    const env = this.env();
    if (!env?.push) return;
    const groups = (storage ?? env.storage).sql.all<{ grp: string }>(`SELECT p.grp FROM group_push p WHERE p.upto < (SELECT max(seq) FROM group_log l WHERE l.grp = p.grp)`);
    for (const { grp } of groups) {
      if (!this.owns(grp)) continue;
      this.track(grp, this.get(grp).onWake()).catch((e: unknown) => this.ctx.log('warn', `resume of group ${grp} failed: ${describeError(e)}`));
    }
  }

  /** Cluster mode: the partition of these groups moved away; their shards (over a fenced storage) go. */
  dropWhere(gone: (group: string) => boolean): void {
    for (const group of [...this.byGroup.keys()]) {
      if (!gone(group)) continue;
      this.byGroup.delete(group);
      const t = this.timers.get(group);
      if (t) clearTimeout(t.timer);
      this.timers.delete(group);
    }
  }

  stopWakes(): void {
    for (const t of this.timers.values()) clearTimeout(t.timer);
  }
}
