import { mkdirSync, rmSync } from 'node:fs';
import { Assigner } from '../../cluster/assign.js';
import type { LostReason } from '../../cluster/lease.js';
import { Membership } from '../../cluster/membership.js';
import { DEFAULT_SETUP, connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { ClusterNode } from '../../cluster/node.js';
import { partitionOf } from '../../cluster/partition.js';
import { callOwner } from '../../cluster/rpc.js';
import { withRetry } from '../../cluster/retry.js';
import type { ClusterStorage } from '../../cluster/storage.js';
import { AppendUnknownError, FencedError, PartitionUnavailableError } from '../../cluster/errors.js';
import type { CommitOptions, Storage } from '../../core/ports.js';
import type { ClusterConfig } from './config.js';

/**
 * A node's membership of the cluster (issue 13), as the on-prem worker uses it: the NATS connection, the
 * ClusterNode that serves partitions under leases (one ClusterStorage each), the heartbeat and the assignment
 * loop, and the two ways to reach another node: calls to a partition's owner (cluster/rpc.ts) and the address
 * of its pipe port (onprem/cluster/pipe.ts), published as key `a.<node>` of the lease bucket.
 *
 * This module (and through it every @nats-io package) is imported dynamically by the worker only when
 * IRIS_CLUSTER_NATS is set: a one-box server never loads it.
 */

export interface HostEvents {
  served(partition: number, storage: ClusterStorage): void;
  lost(partition: number, reason: LostReason | 'fenced'): void;
  /** A call from another node for a partition served here (onprem/cluster/peers.ts wire format). */
  handle(data: Uint8Array): Promise<Uint8Array>;
}

export interface NodeAddress {
  host: string;
  port: number;
  /** The member that listens there (ownerAddress: the partition's owner), e.g. `<node>.<i>`. */
  member?: string;
}

/** The user's partition has no owner this node can name right now (failover in progress). */
export class ClusterUnavailableError extends Error {
  override readonly name = 'ClusterUnavailableError';
}

export function addressKey(node: string): string {
  return `a.${node}`;
}

export class ClusterHost {
  private readonly facades = new WeakMap<ClusterStorage, Storage>();

  private constructor(
    readonly cfg: ClusterConfig,
    readonly conn: ClusterConn,
    readonly node: ClusterNode,
    private readonly membership: Membership,
    private readonly assigner: Assigner,
    private readonly callTimeoutMs: number,
    private readonly leaseConn: ClusterConn,
  ) {}

  static async start(cfg: ClusterConfig, dir: string, callTimeoutMs: number, ev: HostEvents): Promise<ClusterHost> {
    // Local views are rebuilt from the log on every takeover: whatever a previous run left here is stale.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const conn = await connectCluster(cfg.servers, DEFAULT_SETUP, `iris-${cfg.node}`);
    const leaseConn = await connectCluster(cfg.servers, DEFAULT_SETUP, `iris-${cfg.node}-leases`);
    const address: NodeAddress = { host: cfg.pipeHost, port: cfg.pipePort };
    await withRetry(() => conn.leases.put(addressKey(cfg.node), JSON.stringify(address)));
    const node = new ClusterNode(conn, {
      node: cfg.node,
      dir,
      leaseMs: cfg.leaseMs,
      leaseKv: leaseConn.leases,
      onLost: (p, reason) => ev.lost(p, reason),
      onServed: (p, s) => ev.served(p, s),
      // A takeover replays at most ~2,000 records (~1 s) after the last snapshot (docs/ARCHITECTURE.md numbers).
      storage: { snapshotEvery: 2000 },
      handler: (_p, _s, data) => ev.handle(data),
    });
    // Three heartbeats per lease: a dead node is noticed within about 3/4 of a lease, then its leases lapse.
    const membership = new Membership(conn, { node: cfg.node, heartbeatMs: Math.max(100, Math.floor(cfg.leaseMs / 4)) });
    await membership.start();
    const assigner = new Assigner(node, membership, { partitions: cfg.partitions, tickMs: Math.max(100, Math.floor(cfg.leaseMs / 6)) });
    assigner.start();
    return new ClusterHost(cfg, conn, node, membership, assigner, callTimeoutMs, leaseConn);
  }

  partition(key: string): number {
    return partitionOf(key, this.cfg.partitions);
  }

  /** Whether this node serves the partition of `key` (a user or a group id) now. */
  owns(key: string): boolean {
    return this.node.storage(this.partition(key)) !== undefined;
  }

  /** The Storage of the partition of `key`; throws ClusterUnavailableError when it is not served here. */
  storageOf(key: string): Storage {
    const p = this.partition(key);
    const s = this.node.storage(p);
    if (!s) throw new ClusterUnavailableError(`partition ${p} is not served by node ${this.cfg.node}`);
    let f = this.facades.get(s);
    if (!f) {
      // A commit refused because the partition was lost answers the client `unavailable` + retry-after (the core's
      // StorageFullError path), never `internal`: nothing is acked, the client retries with its idempotency key.
      f = {
        sql: s.sql,
        commit: <T>(fn: () => T, opts?: CommitOptions): Promise<T> =>
          s.commit(fn, opts).catch((e: unknown) => {
            if (s.fencedBy !== null || e instanceof FencedError || e instanceof AppendUnknownError) throw new PartitionUnavailableError(p, { cause: e });
            throw e;
          }),
      };
      this.facades.set(s, f);
    }
    return f;
  }

  /** Calls the owner of the partition of `key`, wherever it is (waits through a failover up to the deadline). */
  call(key: string, data: Uint8Array, idempotent = false): Promise<Uint8Array> {
    // An idempotent call (a forward) gives each attempt about a lease: a new owner answers by then, so a request
    // lost with a dead owner is sent again after ~a lease, not after the whole IRIS_PEER_TIMEOUT_MS.
    const timeoutMs = idempotent ? Math.min(this.callTimeoutMs, Math.max(1000, this.cfg.leaseMs)) : this.callTimeoutMs;
    return callOwner(this.conn.nc, this.partition(key), data, { deadlineMs: this.callTimeoutMs, timeoutMs, idempotent });
  }

  /** Where the current owner of `key`'s partition takes relayed sockets; null while it has none. */
  async ownerAddress(key: string): Promise<NodeAddress | null> {
    const e = await this.conn.leases.get(`p.${this.partition(key)}`);
    const owner = e && e.operation === 'PUT' && e.length > 0 ? e.json<{ node: string }>().node : '';
    // None, or this node (it holds the lease and is still rebuilding the partition): nowhere to relay to yet.
    if (!owner || owner === this.cfg.node) return null;
    // Read every time (not cached): a node restarted under the same id may listen elsewhere.
    const a = await this.conn.leases.get(addressKey(owner));
    if (!a || a.operation !== 'PUT' || a.length === 0) return null;
    return { ...a.json<NodeAddress>(), member: owner };
  }

  served(): number[] {
    return this.node.served();
  }

  /** Planned stop: every partition handed over (no lapse for the others), the heartbeat key deleted. */
  async stop(): Promise<void> {
    this.assigner.stop();
    await this.membership.stop(true);
    await this.node.stop().catch(() => undefined);
    await this.conn.nc.drain().catch(() => undefined);
    await this.leaseConn.nc.drain().catch(() => undefined);
  }
}
