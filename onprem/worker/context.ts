import type { Duplex } from 'node:stream';
import type { Logger } from '../../core/ports.js';
import type { OnpremConfig } from '../config.js';
import { refuseSocket, type Refusal } from '../http.js';
import type { WorkerMetrics } from '../metrics.js';
import { ownerOf } from '../owner.js';

/**
 * What the parts of a worker (listener, shards, router) share: who this worker is, its settings, metrics and
 * log, and whether it is draining. The Worker class (worker/worker.ts) is the one implementation; the parts
 * see only this, so each can be read without the others.
 */
export interface WorkerContext extends Logger {
  /** This worker's index, 0 .. workers-1. */
  readonly id: number;
  readonly workers: number;
  readonly cfg: OnpremConfig;
  readonly metrics: WorkerMetrics;
  /** Set once at the start of a drain; from then on nothing new is accepted or scheduled. */
  readonly draining: boolean;
  /** A log line once per key for the life of the process. */
  warnOnce(key: string, msg: string): void;
  /**
   * Cluster mode (onprem/cluster/): whether this node serves the partition of `key` (a user or group id) now.
   * Undefined on one box, where the worker count decides.
   */
  readonly clusterOwns?: (key: string) => boolean;
}

/** Whether `user` is one of this worker's (onprem/owner.ts decides, for every caller). */
export function owns(ctx: WorkerContext, user: string): boolean {
  if (ctx.clusterOwns) return ctx.clusterOwns(user);
  return ownerOf(user, ctx.workers) === ctx.id;
}

/**
 * The worker that runs a call for `key` (a user or group id): on one box its owner by hash; in cluster mode this
 * worker, always: a worker is its own cluster member, and a call reaches its Router only for a partition it serves
 * (ClusterPeers and serveCall decide, onprem/cluster/peers.ts), so nothing is passed to a sibling worker by hash.
 */
export function workerFor(ctx: WorkerContext, key: string): number {
  return ctx.clusterOwns ? ctx.id : ownerOf(key, ctx.workers);
}

/** Answers an upgrade with an HTTP refusal on its raw socket, counted by code (iris_connects_refused_total). */
export function refuse(ctx: WorkerContext, socket: Duplex, r: Refusal): void {
  ctx.metrics.refused.inc({ code: r.code });
  refuseSocket(socket, r);
}
