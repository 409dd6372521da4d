import type { KV } from '@nats-io/kv';
import type { Subscription } from '@nats-io/transport-node';
import { Leases, type LostReason } from './lease.js';
import type { ClusterConn } from './nats.js';
import { servePartition } from './rpc.js';
import { ClusterStorage, type ClusterStorageOptions } from './storage.js';

/**
 * One Iris node's side of partition ownership (issue 13): a partition is served only under a lease, and only
 * from a view rebuilt from the log. serve(p) waits for the lease (at once if free, after a lapse otherwise),
 * then rebuilds the partition (snapshot + tail) and claims the log under that lease. When the lease is lost
 * (not renewed in time: NATS unreachable, the process stalled; or taken) the partition's storage is fenced at
 * once: every later commit rejects, and the view is dropped. When the log refuses an append (another owner
 * claimed it) the lease is released, so that owner need not wait.
 *
 * While it serves a partition the node answers calls to it from other nodes (cluster/rpc.ts) with `handler`.
 *
 * Not here yet (the next session's work, docs/ARCHITECTURE.md "Cluster on NATS JetStream"): who decides which
 * partitions to serve (membership + cluster/partition.ts candidates).
 */

export interface ClusterNodeOptions {
  node: string;
  /** Directory of this node's local partition views. */
  dir: string;
  leaseMs: number;
  renewMs?: number;
  /**
   * The lease bucket through another NATS connection than `conn` (default: conn.leases). The server uses its own:
   * a renewal then never queues behind the partitions' appends and rebuild reads in one socket's buffers.
   */
  leaseKv?: KV;
  /** Called when a partition stops being served here, with why. */
  onLost?: (partition: number, reason: LostReason | 'fenced') => void;
  /** Called once a partition is served here (rebuilt and claimed), before its calls are answered. */
  onServed?: (partition: number, storage: ClusterStorage) => void;
  /** Passed to every partition's ClusterStorage (group commit window, snapshots, append retries). */
  storage?: Pick<ClusterStorageOptions, 'windowMs' | 'maxBatch' | 'snapshotEvery' | 'log'>;
  /** Answers other nodes' calls to a partition served here (cluster/rpc.ts callOwner). */
  handler?: (partition: number, storage: ClusterStorage, data: Uint8Array) => Promise<Uint8Array>;
}

export class ClusterNode {
  readonly leases: Leases;
  private readonly serving = new Map<number, ClusterStorage>();
  private readonly subs = new Map<number, Subscription>();
  private readonly taking = new Map<number, Promise<ClusterStorage>>();

  constructor(
    readonly conn: ClusterConn,
    private readonly opts: ClusterNodeOptions,
  ) {
    this.leases = new Leases(opts.leaseKv ?? conn.leases, { node: opts.node, leaseMs: opts.leaseMs, renewMs: opts.renewMs, sessions: () => sessionNodes(conn) });
    this.leases.onLost((p, reason) => {
      const s = this.serving.get(p);
      if (!s) return;
      this.stopServing(p);
      s.fence(`lease ${reason}`);
      opts.onLost?.(p, reason);
    });
  }

  get id(): string {
    return this.opts.node;
  }

  /** The partitions served here now. */
  served(): number[] {
    return [...this.serving.keys()].filter((p) => this.storage(p) !== undefined);
  }

  /** The partition's storage while this node serves it, else undefined (callers answer `unavailable`). */
  storage(partition: number): ClusterStorage | undefined {
    const s = this.serving.get(partition);
    return s && this.leases.holds(partition) && s.fencedBy === null ? s : undefined;
  }

  /**
   * Takes the partition (waiting for a lapse if another node holds it) and serves it from a rebuilt view. Calls
   * for a partition already being taken share that attempt: two rebuilds would claim the log twice, and the
   * second claim would fence the first.
   */
  serve(partition: number, signal?: AbortSignal): Promise<ClusterStorage> {
    const have = this.storage(partition);
    if (have) return Promise.resolve(have);
    let p = this.taking.get(partition);
    if (!p) {
      p = this.take(partition, signal).finally(() => this.taking.delete(partition));
      this.taking.set(partition, p);
    }
    return p;
  }

  private async take(partition: number, signal?: AbortSignal): Promise<ClusterStorage> {
    const held = await this.leases.acquire(partition, signal);
    let s: ClusterStorage;
    try {
      s = await ClusterStorage.open(this.conn, partition, this.opts.dir, {
        ...this.opts.storage,
        node: this.opts.node,
        leaseRevision: held.revision,
        onFenced: () => {
          if (this.serving.get(partition) !== s) return;
          this.stopServing(partition);
          this.opts.onLost?.(partition, 'fenced');
          void this.leases.release(partition).catch(() => undefined);
        },
      });
    } catch (e) {
      await this.leases.release(partition).catch(() => undefined);
      throw e;
    }
    if (!this.leases.holds(partition)) {
      // The rebuild outlasted the lease: serving now could overlap a new owner.
      s.fence('lease ran out during the rebuild');
      throw s.fencedBy;
    }
    this.serving.set(partition, s);
    this.opts.onServed?.(partition, s);
    const handler = this.opts.handler;
    if (handler) {
      const storage = s;
      this.subs.set(partition, servePartition(this.conn.nc, partition, () => this.storage(partition) === storage, (data) => handler(partition, storage, data)));
    }
    return s;
  }

  private stopServing(partition: number): void {
    this.serving.delete(partition);
    this.subs.get(partition)?.unsubscribe();
    this.subs.delete(partition);
  }

  /** Hands a partition over: waits for its appends, closes the view, releases the lease (no lapse to wait for). */
  async release(partition: number): Promise<void> {
    const s = this.serving.get(partition);
    this.stopServing(partition);
    // The server drops what it holds of the partition (shards, sockets) before the view closes under them.
    if (s) this.opts.onLost?.(partition, 'released');
    if (s) await s.close();
    await this.leases.release(partition);
  }

  /** Planned shutdown: every partition handed over. */
  async stop(): Promise<void> {
    for (const p of [...this.serving.keys()]) await this.release(p);
    this.leases.close();
  }

  /** What a kill -9 leaves behind, for tests: nothing appended or renewed any more, nothing released. */
  crash(): void {
    for (const s of this.serving.values()) s.kill();
    for (const p of [...this.serving.keys()]) this.stopServing(p);
    this.leases.close();
  }
}

/** The nodes with a lease session key, from the bucket stream's subjects (no consumer, as cluster/membership.ts). */
async function sessionNodes(conn: ClusterConn): Promise<string[]> {
  const bucket = conn.setup.names.leaseBucket;
  const prefix = `$KV.${bucket}.l.`;
  const info = await conn.jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` });
  return Object.keys(info.state.subjects ?? {}).map((x) => x.slice(prefix.length));
}
