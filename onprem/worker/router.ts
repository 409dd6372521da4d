import { join } from 'node:path';
import type { ForwardBatch, ForwardResult, LocalShard, Peers } from '../../core/ports.js';
import type { KeyBundleEntry, PresenceInfo } from '../../protocol/index.js';
import { visible, type GroupCall, type GroupNews, type GroupPush, type GroupResult } from '../../core/group/types.js';
import { fromWire, toWire, type GroupLinkMessage } from '../group-link.js';
import type { GroupPushNote } from '../../core/group/push-notes.js';
import { GroupShards } from './groups.js';
import { LinkClient, LinkServer } from '../links.js';
import { owns, workerFor, type WorkerContext } from './context.js';
import type { Shards } from './shards.js';

/**
 * The router: the core's Peers port in a worker. A call for another user's shard goes to the shard itself
 * when this worker owns the user, else over the unix socket to the worker that does (onprem/links.ts); calls
 * from other workers come in the same way and land on this worker's shards.
 *
 *   mailbox A -> Peers.forward(B) -> same worker: B.receive() directly; other worker: unix socket (links.ts)
 */

/**
 * One hop, one commit for users of the same worker (Peers.local). IRIS_ONE_HOP=0 turns it off, only to measure
 * the difference (docs/BENCHMARKS.md); every guarantee holds either way.
 */
const ONE_HOP = process.env['IRIS_ONE_HOP'] !== '0';

export class Router implements Peers {
  private readonly clients: (LinkClient | null)[] = [];
  private linkServer: LinkServer | null = null;
  /** The groups this worker owns (onprem/worker/groups.ts). */
  readonly groups: GroupShards;
  /** The admin API's handler of calls from other workers (worker/admin.ts), set by the Worker. */
  adminHandler: ((call: string) => Promise<string>) | null = null;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly shards: Shards,
  ) {
    this.groups = new GroupShards(ctx, (group) => shards.mailboxEnv(group));
  }

  /** Listens for the other workers' calls, and prepares (lazy) connections to each of them. */
  async listen(): Promise<void> {
    const { cfg, id, workers } = this.ctx;
    for (let i = 0; i < workers; i++) {
      this.clients.push(i === id ? null : new LinkClient(i, join(cfg.runDir, `peer-${i}.sock`), cfg.linkTimeoutMs));
    }
    this.linkServer = new LinkServer(join(cfg.runDir, `peer-${id}.sock`), {
      forward: (to, batch) => this.receiveFromLink(to, batch),
      presence: (user, asker) => this.presenceLocal(user, asker),
      watch: (subject, watcher, on) => this.watchLocal(subject, watcher, on),
      presenceChanged: (watcher, info) => this.pushLocal(watcher, info),
      typing: (to, from, conv, on) => this.typingLocal(to, from, conv, on),
      group: (json) => this.groupFromLink(json),
      fetchKeys: (owner, requester) => this.fetchKeysLocal(owner, requester),
      keyDevices: (owner) => this.keyDevicesLocal(owner),
      admin: (call) => (this.adminHandler ? this.adminHandler(call) : Promise.reject(new Error('no admin handler'))),
    });
    try {
      await this.linkServer.listen();
    } catch (e) {
      throw new Error(`cannot listen on ${this.linkServer.path}: ${(e as Error).message}`, { cause: e });
    }
  }

  close(): void {
    for (const c of this.clients) c?.close();
    this.linkServer?.close();
  }

  forward(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    const owner = workerFor(this.ctx, to);
    if (owner === this.ctx.id) {
      const s = this.shards.get(to);
      return this.shards.track(s, s.mailbox.receive(batch));
    }
    return this.timed('forward', this.client(owner).forward(to, batch));
  }

  presence(user: string, asker: string): Promise<PresenceInfo> {
    const owner = workerFor(this.ctx, user);
    if (owner === this.ctx.id) return this.presenceLocal(user, asker);
    return this.timed('presence', this.client(owner).presence(user, asker));
  }

  /** Presence subscriptions: a local call, or one link message per subject (counted as op "watch"). */
  watch(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined> {
    const owner = workerFor(this.ctx, subject);
    if (owner === this.ctx.id) return this.watchLocal(subject, watcher, on);
    return this.timed('watch', this.client(owner).watch(subject, watcher, on));
  }

  /** One best-effort push to a watcher's shard (counted as op "push"). */
  presenceChanged(watcher: string, info: PresenceInfo): Promise<boolean> {
    const owner = workerFor(this.ctx, watcher);
    if (owner === this.ctx.id) return this.pushLocal(watcher, info);
    return this.timed('push', this.client(owner).presenceChanged(watcher, info));
  }

  /** Typing (core/typing.ts): a local call, or one link message to the recipient's owner (counted as op "typing"). */
  typing(to: string, from: string, conv: string, on: boolean): Promise<boolean> {
    const owner = workerFor(this.ctx, to);
    if (owner === this.ctx.id) return this.typingLocal(to, from, conv, on);
    return this.timed('typing', this.client(owner).typing(to, from, conv, on));
  }

  /** A call to a group's shard: here, or one link message to the worker that owns the group (op "group"). */
  group(group: string, call: GroupCall): Promise<GroupResult> {
    const owner = workerFor(this.ctx, group);
    if (owner === this.ctx.id) return this.groupLocal(group, call);
    const msg: GroupLinkMessage = { k: 'call', group, call };
    return this.timed('group', this.client(owner).group(toWire(msg))).then((s) => fromWire<GroupResult>(s));
  }

  /** A fan-out round: members of this worker directly, and ONE link message per other worker listing its members. */
  groupPush(push: GroupPush): Promise<boolean>[] {
    const byOwner = new Map<number, number[]>();
    push.targets.forEach((t, i) => {
      const o = workerFor(this.ctx, t.user);
      const list = byOwner.get(o);
      if (list) list.push(i);
      else byOwner.set(o, [i]);
    });
    const out = new Array<Promise<boolean>>(push.targets.length);
    for (const [owner, idx] of byOwner) {
      const targets = idx.map((i) => push.targets[i]!);
      if (owner === this.ctx.id) {
        idx.forEach((i) => (out[i] = Promise.resolve().then(() => this.pushGroupLocal(push, push.targets[i]!.user, push.targets[i]!.ranges))));
        continue;
      }
      // Entries outside every listed member's ranges are not sent at all.
      const entries = push.entries.filter((e) => targets.some((t) => visible([e], t.ranges).length > 0));
      const msg: GroupLinkMessage = { k: 'push', push: { ...push, entries, targets } };
      const call = this.timed('gpush', this.client(owner).group(toWire(msg))).then((s) => fromWire<boolean[]>(s));
      idx.forEach((i, j) => (out[i] = call.then((r) => r[j] === true)));
    }
    return out;
  }

  /** A group tells a member's shard its membership changed (op "gnews"). */
  groupNews(user: string, news: GroupNews): Promise<void> {
    const owner = workerFor(this.ctx, user);
    if (owner === this.ctx.id) return this.newsLocal(user, news);
    const msg: GroupLinkMessage = { k: 'news', user, news };
    return this.timed('gnews', this.client(owner).group(toWire(msg))).then(() => undefined);
  }

  /** A group's push note for an offline member (core/group/push-notes.ts; op "gnote"). */
  groupNote(user: string, note: GroupPushNote): Promise<void> {
    const owner = workerFor(this.ctx, user);
    if (owner === this.ctx.id) return this.noteLocal(user, note);
    const msg: GroupLinkMessage = { k: 'note', user, note };
    return this.timed('gnote', this.client(owner).group(toWire(msg))).then(() => undefined);
  }

  /** Loads the member's shard: its devices and push_pending rows are there (a user with no device pushes nothing). */
  private noteLocal(user: string, note: GroupPushNote): Promise<void> {
    if (!owns(this.ctx, user)) return Promise.reject(new Error(`user ${user} is not owned by worker ${this.ctx.id}`));
    const s = this.shards.get(user);
    return this.shards.track(s, s.mailbox.groupNote(note));
  }

  private groupLocal(group: string, call: GroupCall): Promise<GroupResult> {
    if (this.ctx.draining) return Promise.reject(new Error('worker is shutting down'));
    try {
      return this.groups.track(group, this.groups.get(group).call(call));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A member that is not loaded has no socket: answered false, not loaded for it. */
  private pushGroupLocal(push: GroupPush, user: string, ranges: [number, number][]): boolean {
    if (!owns(this.ctx, user)) throw new Error(`user ${user} is not owned by worker ${this.ctx.id}`);
    const s = this.shards.loaded(user);
    return s ? s.mailbox.groupPush(push.group, push.after, push.upTo, visible(push.entries, ranges)) : false;
  }

  private newsLocal(user: string, news: GroupNews): Promise<void> {
    if (!owns(this.ctx, user)) return Promise.reject(new Error(`user ${user} is not owned by worker ${this.ctx.id}`));
    const s = this.shards.get(user);
    return this.shards.track(s, s.mailbox.groupNews(news));
  }

  private async groupFromLink(json: string): Promise<string> {
    const m = fromWire<GroupLinkMessage>(json);
    switch (m.k) {
      case 'call':
        return toWire(await this.groupLocal(m.group, m.call));
      case 'push':
        return toWire(m.push.targets.map((t) => this.pushGroupLocal(m.push, t.user, t.ranges)));
      case 'news':
        await this.newsLocal(m.user, m.news);
        return toWire(null);
      case 'note':
        await this.noteLocal(m.user, m.note);
        return toWire(null);
    }
  }

  /**
   * The key directory (core/keys.ts): the owner's shard takes one prekey per device in its own commit and answers
   * after it; a local call, or one link message to the owner's worker (counted as op "keys").
   */
  fetchKeys(owner: string, requester: string): Promise<KeyBundleEntry[]> {
    const o = workerFor(this.ctx, owner);
    if (o === this.ctx.id) return this.fetchKeysLocal(owner, requester);
    return this.timed('keys', this.client(o).fetchKeys(owner, requester));
  }

  keyDevices(owner: string): Promise<string[]> {
    const o = workerFor(this.ctx, owner);
    if (o === this.ctx.id) return this.keyDevicesLocal(owner);
    return this.timed('keys', this.client(o).keyDevices(owner));
  }

  /** A recipient in this worker's file: its writes join the sender's commit (one hop, one commit). */
  local(user: string): LocalShard | undefined {
    // Cluster mode: users of one node may live in different partitions (different storages): no shared commit.
    if (!ONE_HOP || this.ctx.clusterOwns || !owns(this.ctx, user)) return undefined;
    const s = this.shards.get(user);
    return {
      handOver: (batch) => {
        const h = s.mailbox.handOver(batch);
        return { ...h, deliver: () => this.shards.track(s, h.deliver()) };
      },
    };
  }

  /** An admin API call (JSON, worker/admin.ts) to another worker. */
  adminCall(worker: number, call: string): Promise<string> {
    return this.client(worker).admin(call);
  }

  private client(owner: number): LinkClient {
    const c = this.clients[owner];
    if (!c) throw new Error(`no link to worker ${owner}`);
    return c;
  }

  private timed<T>(op: 'forward' | 'presence' | 'watch' | 'push' | 'typing' | 'group' | 'gpush' | 'gnews' | 'gnote' | 'keys', p: Promise<T>): Promise<T> {
    const end = this.ctx.metrics.linkLatency.startTimer({ op });
    return p.then(
      (v) => {
        end();
        this.ctx.metrics.linkCalls.inc({ op, result: 'ok' });
        return v;
      },
      (e: unknown) => {
        this.ctx.metrics.linkCalls.inc({ op, result: 'error' });
        throw e;
      },
    );
  }

  private receiveFromLink(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    if (this.ctx.draining) return Promise.reject(new Error('worker is shutting down'));
    if (!owns(this.ctx, to)) return Promise.reject(new Error(`user ${to} is not owned by worker ${this.ctx.id}`));
    const s = this.shards.get(to);
    return this.shards.track(s, s.mailbox.receive(batch));
  }

  private presenceLocal(user: string, asker: string): Promise<PresenceInfo> {
    if (!owns(this.ctx, user)) return Promise.reject(new Error(`user ${user} is not owned by worker ${this.ctx.id}`));
    try {
      return Promise.resolve(this.shards.presence(user, asker));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The subject's shard is loaded to hold the watcher (memory only; nothing is written). */
  private watchLocal(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined> {
    if (!owns(this.ctx, subject)) return Promise.reject(new Error(`user ${subject} is not owned by worker ${this.ctx.id}`));
    try {
      return Promise.resolve(this.shards.get(subject).mailbox.watchPresence(watcher, on));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * A recipient that is not loaded has no connection: "not online", and not loaded for it (no shard is created
   * only to drop a typing push).
   */
  private typingLocal(to: string, from: string, conv: string, on: boolean): Promise<boolean> {
    if (!owns(this.ctx, to)) return Promise.reject(new Error(`user ${to} is not owned by worker ${this.ctx.id}`));
    return Promise.resolve(this.shards.loaded(to)?.mailbox.typingFrom(from, conv, on) ?? false);
  }

  /** The owner's shard is loaded (its keys are rows of this worker's file); its work is tracked like a receive. */
  private fetchKeysLocal(owner: string, requester: string): Promise<KeyBundleEntry[]> {
    if (this.ctx.draining) return Promise.reject(new Error('worker is shutting down'));
    if (!owns(this.ctx, owner)) return Promise.reject(new Error(`user ${owner} is not owned by worker ${this.ctx.id}`));
    const s = this.shards.get(owner);
    return this.shards.track(s, s.mailbox.keys.take(requester));
  }

  private keyDevicesLocal(owner: string): Promise<string[]> {
    if (!owns(this.ctx, owner)) return Promise.reject(new Error(`user ${owner} is not owned by worker ${this.ctx.id}`));
    const s = this.shards.get(owner);
    return this.shards.track(s, s.mailbox.keys.deviceIds());
  }

  /** A watcher that is not loaded has no subscribed connection: not wanted, and not loaded for it. */
  private pushLocal(watcher: string, info: PresenceInfo): Promise<boolean> {
    if (!owns(this.ctx, watcher)) return Promise.reject(new Error(`user ${watcher} is not owned by worker ${this.ctx.id}`));
    return Promise.resolve(this.shards.loaded(watcher)?.mailbox.presenceChanged(info) ?? false);
  }
}
