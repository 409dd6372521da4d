import type { Membership } from './membership.js';
import type { ClusterNode } from './node.js';
import { candidateOwner } from './partition.js';

/**
 * The loop that makes a node serve the partitions rendezvous hashing gives it (issue 13): every tickMs it reads
 * the live members, starts serving each partition it is now the candidate for (ClusterNode.serve: at once if the
 * lease is free or released, after the lapse if its last owner died), and hands over (release: no lapse for the
 * new candidate) each partition it serves but is no longer the candidate for, e.g. because a node joined.
 * A node that died simply stops renewing: its partitions are taken after one lease.
 */

export interface AssignOptions {
  /** The partition count of the cluster (partitions 0 .. count-1). */
  partitions: number;
  tickMs: number;
  /**
   * Takeovers (lease, rebuild, claim) running at once; the rest queue and start as these finish. Default 8. A node
   * that starts takes ~1/N of all partitions: all at once were thousands of NATS requests in flight, which delayed
   * the node's own lease renewal past its expiry (measured at 1,024 partitions: the node lost everything it had
   * just taken, and rebuilt it again).
   */
  maxTakeovers?: number;
}

export class Assigner {
  private readonly starting = new Map<number, AbortController>();
  /** Partitions this node is the candidate for, waiting for a takeover slot (in partition order). */
  private readonly queued = new Set<number>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private readonly tickListeners: (() => void)[] = [];

  constructor(
    private readonly node: ClusterNode,
    private readonly membership: Membership,
    private readonly opts: AssignOptions,
  ) {}

  /** Called after every tick (tests wait on it instead of sleeping). */
  onTick(fn: () => void): void {
    this.tickListeners.push(fn);
  }

  start(): void {
    const loop = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => void this.tick().finally(loop), this.opts.tickMs);
    };
    void this.tick().finally(loop);
  }

  /** One round: read the members, start what is ours, hand over what is not. */
  async tick(): Promise<void> {
    let live: string[];
    try {
      live = await this.membership.live();
    } catch {
      return; // NATS unreachable: keep what we hold (the leases decide how long) and try again next tick
    }
    const me = this.node.id;
    const handOver: Promise<void>[] = [];
    for (let p = 0; p < this.opts.partitions; p++) {
      const mine = candidateOwner(p, live) === me;
      if (mine && !this.node.storage(p) && !this.starting.has(p)) {
        this.queued.add(p);
      } else if (!mine) {
        this.queued.delete(p);
        this.starting.get(p)?.abort(new Error('no longer the candidate'));
        if (this.node.storage(p)) handOver.push(this.node.release(p).catch(() => undefined));
      }
    }
    this.pump();
    await Promise.all(handOver);
    for (const fn of this.tickListeners) fn();
  }

  /** Starts queued takeovers while fewer than maxTakeovers run; each one finishing starts the next. */
  private pump(): void {
    const max = this.opts.maxTakeovers ?? 8;
    for (const p of this.queued) {
      if (this.stopped || this.starting.size >= max) return;
      this.queued.delete(p);
      if (this.node.storage(p)) continue;
      const ctl = new AbortController();
      this.starting.set(p, ctl);
      const done = () => {
        this.starting.delete(p);
        this.pump();
      };
      this.node.serve(p, ctl.signal).then(done, done);
    }
  }

  stop(): void {
    this.stopped = true;
    this.queued.clear();
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.starting.values()) c.abort(new Error('stopped'));
  }
}
