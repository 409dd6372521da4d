import type { ClusterConn } from './nats.js';
import { withRetry } from './retry.js';

/**
 * Which Iris nodes are alive (issue 13), for the rendezvous ranking (cluster/partition.ts). Each node writes
 * its key `n.<node>` in the lease bucket every heartbeatMs; a reader lists the keys through the bucket stream's
 * info (subjects filter: no consumer, so nothing to place on a dead peer) and reads each one's revision. Like the
 * leases, no wall clocks are compared: a node counts as alive while the revision of its key was seen to change
 * within deadAfterMs of the reader's own clock (a node seen for the first time counts as alive until then). A
 * node that stops gracefully deletes its key.
 *
 * Membership only ranks candidates: a wrong view (a slow heartbeat, a reader that lags) can make two nodes both
 * want a partition, and then the lease decides, and the log fences whoever is wrong about the lease.
 */

export interface MembershipOptions {
  node: string;
  heartbeatMs: number;
  /** A node whose key did not change for this long is taken for dead (default 3 heartbeats). */
  deadAfterMs?: number;
  now?: () => number;
}

export function memberKey(node: string): string {
  return `n.${node}`;
}

export class Membership {
  private readonly seen = new Map<string, { revision: number; at: number }>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private readonly now: () => number;
  private beats = 0;

  constructor(
    private readonly conn: ClusterConn,
    private readonly opts: MembershipOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
  }

  /** Writes the first heartbeat and keeps writing. */
  async start(): Promise<void> {
    await this.beat();
    const loop = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => void this.beat().catch(() => undefined).finally(loop), this.opts.heartbeatMs);
    };
    loop();
  }

  private async beat(): Promise<void> {
    const beat = String(++this.beats);
    await withRetry(() => this.conn.leases.put(memberKey(this.opts.node), beat), this.opts.heartbeatMs * 2);
  }

  /** Reads the members' keys now; resolves with the nodes taken for alive (always including this one). */
  async live(): Promise<string[]> {
    const bucket = this.conn.setup.names.leaseBucket;
    const stream = `KV_${bucket}`;
    const prefix = `$KV.${bucket}.n.`;
    const info = await withRetry(() => this.conn.jsm.streams.info(stream, { subjects_filter: `${prefix}>` }), 5000);
    const names = Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
    const at = this.now();
    const dead = this.opts.deadAfterMs ?? this.opts.heartbeatMs * 3;
    const out = new Set<string>([this.opts.node]);
    for (const n of names) {
      const e = await withRetry(() => this.conn.leases.get(memberKey(n)), 5000);
      if (!e || e.operation !== 'PUT') {
        this.seen.delete(n);
        continue;
      }
      const s = this.seen.get(n);
      if (!s || s.revision !== e.revision) this.seen.set(n, { revision: e.revision, at });
      if (at - this.seen.get(n)!.at < dead) out.add(n);
    }
    return [...out].sort();
  }

  /** Stops the heartbeat; graceful (default) also deletes the key so the others need not wait. */
  async stop(graceful = true): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (graceful) await this.conn.leases.delete(memberKey(this.opts.node)).catch(() => undefined);
  }
}
