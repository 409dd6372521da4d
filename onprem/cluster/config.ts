import { readdirSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { readNumber, readOptionalNumber, readString } from '../../core/settings.js';

/**
 * The settings of cluster mode (issue 13), read from the same merged settings as the rest of onprem/config.ts.
 * Null when IRIS_CLUSTER_NATS is unset: the one-box server, with no NATS module ever loaded.
 */
export interface ClusterConfig {
  servers: string[];
  node: string;
  partitions: number;
  leaseMs: number;
  /** Where other nodes relay WebSockets of this node's partitions (onprem/cluster/pipe.ts). */
  pipeHost: string;
  pipePort: number;
}

export function clusterConfig(s: Record<string, string>, port: number): ClusterConfig | null {
  const nats = readString(s, 'IRIS_CLUSTER_NATS');
  if (nats === undefined || nats.trim() === '') return null;
  const servers = nats.split(',').map((x) => x.trim()).filter((x) => x !== '');
  return {
    servers,
    node: readString(s, 'IRIS_CLUSTER_NODE') || hostname(),
    partitions: readNumber(s, 'IRIS_CLUSTER_PARTITIONS'),
    leaseMs: readNumber(s, 'IRIS_CLUSTER_LEASE_MS'),
    pipeHost: readString(s, 'IRIS_CLUSTER_ADVERTISE') ?? '127.0.0.1',
    pipePort: readOptionalNumber(s, 'IRIS_CLUSTER_PIPE_PORT') ?? port + 1,
  };
}

/**
 * One worker's membership of the cluster: with N > 1 workers per node, each worker is its own member (its own
 * NATS connections, heartbeat, lease session and partitions), named `<node>.<i>` and taking relayed sockets on
 * pipe port base + i; with one worker the member is the node itself (`<node>`, the base port), as before.
 */
export function memberConfig(cc: ClusterConfig, worker: number, workers: number): ClusterConfig {
  if (workers === 1) return cc;
  return { ...cc, node: `${cc.node}.${worker}`, pipePort: cc.pipePort + worker };
}

/**
 * The index of the sibling worker (same node, another worker) that `member` names, or null: a socket for a
 * partition a sibling serves is handed to it through the supervisor (SCM_RIGHTS, as on one box) instead of being
 * relayed through its pipe port.
 */
export function siblingOf(cc: ClusterConfig, member: string | undefined, worker: number, workers: number): number | null {
  if (workers === 1 || member === undefined || !member.startsWith(`${cc.node}.`)) return null;
  const rest = member.slice(cc.node.length + 1);
  if (!/^\d+$/.test(rest)) return null;
  const j = Number(rest);
  return j < workers && j !== worker ? j : null;
}

/** The member's local views (rebuilt from the log at every takeover): `<data>/cluster`, or `<data>/cluster/<i>` per worker. */
export function memberDir(dataDir: string, worker: number, workers: number): string {
  return workers === 1 ? join(dataDir, 'cluster') : join(dataDir, 'cluster', String(worker));
}

/**
 * Worker 0 of N > 1, at start: removes what an earlier run with another worker count left in `<data>/cluster`
 * (a one-worker run's partition files there, or the directories of workers >= N). Only caches (views rebuilt
 * from the log), so nothing is lost; without this they would only take disk space.
 */
export function removeStaleViews(dataDir: string, workers: number): void {
  const root = join(dataDir, 'cluster');
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) if (!(/^\d+$/.test(n) && Number(n) < workers)) rmSync(join(root, n), { recursive: true, force: true });
}
