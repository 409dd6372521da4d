import type { GroupCall } from '../core/group/types.js';
import { PeerOverloadedError, type Peers } from '../core/ports.js';
import type { Env } from './env.js';
import { isOverloaded } from './log.js';
import type { ShardStats } from './stats.js';

/**
 * The core's Peers port on Cloudflare: every call to another user's (or a group's) shard is one Durable Object
 * RPC, counted in the calling shard's stats (`rpcOut`) for the benchmarks. A Durable Object never shares storage
 * with another user's, so there is no `local` (one hop, one commit is an on-prem optimisation).
 */
export function doPeers(env: Env, counts: ShardStats['rpcOut']): Peers {
  const user = (id: string) => env.USERS.get(env.USERS.idFromName(id));
  return {
    forward: (to, batch) => {
      counts.forward++;
      return user(to)
        .receive(to, batch)
        .catch((e: unknown) => {
          throw isOverloaded(e) ? new PeerOverloadedError(`the shard of ${to} is overloaded`, { cause: e }) : e;
        });
    },
    presence: (u, asker) => {
      counts.presence++;
      return user(u).presence(u, asker);
    },
    // One RPC per subject (a Durable Object per user has no batching point): counted for the benchmark.
    watch: (subject, watcher, on) => {
      counts.watch++;
      return user(subject).watch(subject, watcher, on);
    },
    presenceChanged: (watcher, info) => {
      counts.push++;
      return user(watcher).presenceChanged(watcher, info);
    },
    // One RPC per push; the core calls only recipients it does not know to be offline.
    typing: (to, from, conv, on) => {
      counts.typing++;
      return user(to).typing(to, from, conv, on);
    },
    // Groups: one RPC to the group's Durable Object per call (docs/ARCHITECTURE.md "Groups").
    ...(env.GROUPS && { group: (group: string, call: GroupCall) => env.GROUPS!.get(env.GROUPS!.idFromName(group)).call(group, call) }),
    // The key directory: one RPC to the owner's object, which takes the prekey in its own transaction.
    fetchKeys: (owner, requester) => {
      counts.keys++;
      return user(owner).fetchKeys(owner, requester);
    },
    keyDevices: (owner) => {
      counts.keys++;
      return user(owner).keyDevices(owner);
    },
  };
}
