import type { ForwardBatch, ForwardResult, LocalShard, Peers } from '../../core/ports.js';
import type { GroupCall, GroupNews, GroupPush, GroupResult } from '../../core/group/types.js';
import type { GroupPushNote } from '../../core/group/push-notes.js';
import type { KeyBundleEntry, PresenceInfo } from '../../protocol/index.js';
import { fromWire, toWire } from '../group-link.js';
import type { Router } from '../worker/router.js';

/**
 * The core's Peers port in cluster mode (issue 13): a call for a user or group whose partition this node serves
 * goes to the worker's Router (which answers locally: in cluster mode each worker is its own member); any
 * other goes to the partition's owner over NATS request/reply (cluster/rpc.ts), one request per call, JSON with
 * bytes as base64 (the group links' format, onprem/group-link.ts). A forward already carries a batch (every
 * pending message of one sender for one recipient, up to the core's batch size), so one request moves a batch;
 * a group push is one request per owning partition, listing that partition's members.
 *
 * A call that finds no owner (failover) is retried by callOwner until IRIS_PEER_TIMEOUT_MS, then rejects: the
 * core retries forwards with backoff (they are idempotent: the recipient dedups by the sender's outbox number).
 */

type Call =
  | { op: 'forward'; to: string; batch: ForwardBatch }
  | { op: 'presence'; user: string; asker: string }
  | { op: 'watch'; subject: string; watcher: string; on: boolean }
  | { op: 'presenceChanged'; watcher: string; info: PresenceInfo }
  | { op: 'typing'; to: string; from: string; conv: string; on: boolean }
  | { op: 'group'; group: string; call: GroupCall }
  | { op: 'groupPush'; push: GroupPush }
  | { op: 'groupNews'; user: string; news: GroupNews }
  | { op: 'groupNote'; user: string; note: GroupPushNote }
  | { op: 'fetchKeys'; owner: string; requester: string }
  | { op: 'keyDevices'; owner: string }
  /** The admin API (onprem/worker/admin.ts) for a user of another node: its JSON call, answered by the owner. */
  | { op: 'admin'; user: string; call: string };

export interface OwnerCalls {
  owns(key: string): boolean;
  partition(key: string): number;
  /** idempotent: the owner may run it twice (cluster/rpc.ts CallOptions), so a timed-out attempt is sent again. */
  call(key: string, data: Uint8Array, idempotent?: boolean): Promise<Uint8Array>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class ClusterPeers implements Peers {
  constructor(
    private readonly host: OwnerCalls,
    private readonly router: Router,
  ) {}

  private remote<T>(key: string, call: Call, idempotent = false): Promise<T> {
    return this.host.call(key, enc.encode(toWire(call)), idempotent).then((d) => fromWire<T>(dec.decode(d)));
  }

  forward(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    // Idempotent: the recipient drops items it has by the sender's outbox number, and a receipt is merged as a maximum.
    return this.host.owns(to) ? this.router.forward(to, batch) : this.remote(to, { op: 'forward', to, batch }, true);
  }

  presence(user: string, asker: string): Promise<PresenceInfo> {
    return this.host.owns(user) ? this.router.presence(user, asker) : this.remote(user, { op: 'presence', user, asker });
  }

  watch(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined> {
    if (this.host.owns(subject)) return this.router.watch(subject, watcher, on);
    return this.remote<PresenceInfo | null>(subject, { op: 'watch', subject, watcher, on }).then((x) => x ?? undefined);
  }

  presenceChanged(watcher: string, info: PresenceInfo): Promise<boolean> {
    return this.host.owns(watcher) ? this.router.presenceChanged(watcher, info) : this.remote(watcher, { op: 'presenceChanged', watcher, info });
  }

  typing(to: string, from: string, conv: string, on: boolean): Promise<boolean> {
    return this.host.owns(to) ? this.router.typing(to, from, conv, on) : this.remote(to, { op: 'typing', to, from, conv, on });
  }

  group(group: string, call: GroupCall): Promise<GroupResult> {
    return this.host.owns(group) ? this.router.group(group, call) : this.remote(group, { op: 'group', group, call });
  }

  /** One request per owning partition (its members listed), members of partitions served here directly. */
  groupPush(push: GroupPush): Promise<boolean>[] {
    const byPart = new Map<number, number[]>();
    const local: number[] = [];
    push.targets.forEach((t, i) => {
      if (this.host.owns(t.user)) return void local.push(i);
      const p = this.host.partition(t.user);
      const list = byPart.get(p);
      if (list) list.push(i);
      else byPart.set(p, [i]);
    });
    const out = new Array<Promise<boolean>>(push.targets.length);
    if (local.length > 0) {
      const r = this.router.groupPush({ ...push, targets: local.map((i) => push.targets[i]!) });
      local.forEach((i, j) => (out[i] = r[j]!));
    }
    for (const idx of byPart.values()) {
      const targets = idx.map((i) => push.targets[i]!);
      const call = this.remote<boolean[]>(targets[0]!.user, { op: 'groupPush', push: { ...push, targets } });
      idx.forEach((i, j) => (out[i] = call.then((r) => r[j] === true)));
    }
    return out;
  }

  groupNews(user: string, news: GroupNews): Promise<void> {
    return this.host.owns(user) ? this.router.groupNews(user, news) : this.remote<null>(user, { op: 'groupNews', user, news }).then(() => undefined);
  }

  groupNote(user: string, note: GroupPushNote): Promise<void> {
    return this.host.owns(user) ? this.router.groupNote(user, note) : this.remote<null>(user, { op: 'groupNote', user, note }).then(() => undefined);
  }

  fetchKeys(owner: string, requester: string): Promise<KeyBundleEntry[]> {
    return this.host.owns(owner) ? this.router.fetchKeys(owner, requester) : this.remote(owner, { op: 'fetchKeys', owner, requester });
  }

  keyDevices(owner: string): Promise<string[]> {
    return this.host.owns(owner) ? this.router.keyDevices(owner) : this.remote(owner, { op: 'keyDevices', owner });
  }

  admin(user: string, call: string): Promise<string> {
    return this.remote(user, { op: 'admin', user, call });
  }

  /** No shared commit across partitions (each has its own storage and log). */
  local(): LocalShard | undefined {
    return undefined;
  }
}

/** The owner's side: runs a call from another node on this node's Router (the partition is served here). */
export async function serveCall(router: Router, data: Uint8Array): Promise<Uint8Array> {
  const c = fromWire<Call>(dec.decode(data));
  const answer = async (): Promise<unknown> => {
    switch (c.op) {
      case 'forward':
        return router.forward(c.to, c.batch);
      case 'presence':
        return router.presence(c.user, c.asker);
      case 'watch':
        return (await router.watch(c.subject, c.watcher, c.on)) ?? null;
      case 'presenceChanged':
        return router.presenceChanged(c.watcher, c.info);
      case 'typing':
        return router.typing(c.to, c.from, c.conv, c.on);
      case 'group':
        return router.group(c.group, c.call);
      case 'groupPush':
        return Promise.all(router.groupPush(c.push));
      case 'groupNews':
        await router.groupNews(c.user, c.news);
        return null;
      case 'groupNote':
        await router.groupNote(c.user, c.note);
        return null;
      case 'fetchKeys':
        return router.fetchKeys(c.owner, c.requester);
      case 'keyDevices':
        return router.keyDevices(c.owner);
      case 'admin':
        if (!router.adminHandler) throw new Error('no admin handler');
        return router.adminHandler(c.call);
    }
  };
  return enc.encode(toWire(await answer()));
}
