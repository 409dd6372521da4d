import type { Socket } from 'node:net';
import { owns, type WorkerContext } from './context.js';
import type { PipeMeta, PipeRoute } from './pipe.js';

/** Cluster mode: where the owner of a user's partition takes relayed sockets (onprem/cluster/host.ts). */
export interface OwnerLookup {
  /** `sibling`: the owner is another worker of this node (its index), which a hand-off reaches without the pipe. */
  ownerAddress(user: string): Promise<{ host: string; port: number; sibling?: number } | null>;
}

/**
 * Cluster mode, the accepting node's side of a relay, for every kind of connection (a WebSocket upgrade from
 * listener.ts, a logged-in v1 connection from gateway/v1/gateway.ts): the user's partition is served by another
 * node, whose pipe port (PipeRoute.listenTcp) gets the socket's bytes after a header saying what it is.
 */
export class NodeRelay {
  constructor(
    private readonly ctx: WorkerContext,
    private readonly pipe: PipeRoute,
    private readonly cluster: OwnerLookup,
  ) {}

  /**
   * Relays `socket` to the owner of `meta.user`'s partition, with `head` (bytes already read) after the header.
   * `local` serves it here instead (the partition came here meanwhile); `refuse` answers `unavailable` in the
   * connection's own protocol when no owner appears in time (a failover) or the owner cannot be reached;
   * `leave` lets go of the socket here (whoever read it until now reads no more: its bytes go to the owner);
   * `sibling`, when given, takes a socket whose owner is another worker of this node instead of the pipe (false:
   * that worker is not up, e.g. restarting: the pipe route below waits for an owner it can reach, bounded).
   */
  async relay(socket: Socket, head: Buffer, meta: PipeMeta, how: { local(): void; refuse(): void; leave?(): void; sibling?(worker: number): boolean }): Promise<void> {
    // A partition between owners (taken over, or being rebuilt here) usually has one again within a lease: the
    // connection waits for it (bounded) rather than refusing a client whose first attempt would then fail.
    const until = Date.now() + Math.min(5000, 2 * (this.ctx.cfg.cluster?.leaseMs ?? 1000));
    const attempt = async (): Promise<void> => {
      let addr: { host: string; port: number; sibling?: number } | null = null;
      for (;;) {
        if (owns(this.ctx, meta.user)) return how.local();
        addr = await this.cluster.ownerAddress(meta.user).catch(() => null);
        if (socket.destroyed) return;
        if (addr || Date.now() > until) break;
        await pause();
      }
      if (!addr) return how.refuse();
      if (addr.sibling !== undefined && how.sibling?.(addr.sibling)) return;
      this.pipe.pipeTo(addr, socket, head, meta, {
        // The owner named by its lease died and the lease has not lapsed yet: look again until the deadline.
        unreachable: () => {
          if (Date.now() > until || socket.destroyed) return how.refuse();
          void pause().then(attempt);
        },
        connected: () => how.leave?.(),
      });
    };
    return attempt();
  }
}

const pause = (): Promise<void> => new Promise((r) => setTimeout(r, 100));
