import { userHash } from '../onprem/owner.js';

/**
 * The partition map of the cluster (issue 13). Users map to a FIXED number of virtual partitions by hash (the
 * same FNV-1a as onprem/owner.ts), so a user's partition never changes while nodes come and go; only the owner of
 * a partition moves. The count is fixed when the cluster is created (it names the log subjects iris.p.<n> and the
 * lease keys), like the worker count of a one-box data directory.
 *
 * Which node should own a partition is decided by rendezvous (highest random weight) hashing over the live
 * nodes: every node computes the same ranking from the same inputs with no coordination, and when a node leaves
 * only its own partitions move (each to its next-ranked node), when one joins it takes about 1/N of them. The
 * ranking names CANDIDATES only: the lease in the KV bucket (cluster/lease.ts) decides who actually owns a
 * partition, and the log's compare-and-set (cluster/log.ts) fences anyone who is wrong about it.
 */

export const DEFAULT_PARTITIONS = 1024;

export function partitionOf(user: string, partitions: number = DEFAULT_PARTITIONS): number {
  if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partition count must be a positive integer, got ${partitions}`);
  return userHash(user) % partitions;
}

/** A 32-bit mix of (node, partition): murmur3's finalizer over FNV-1a of the node id, so close ids spread. */
export function weight(node: string, partition: number): number {
  let h = userHash(node) ^ Math.imul(partition + 1, 0x9e3779b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The live nodes ranked for a partition, best first (ties, which need equal weights, broken by id). */
export function candidates(partition: number, nodes: readonly string[]): string[] {
  return [...new Set(nodes)]
    .map((n) => ({ n, w: weight(n, partition) }))
    .sort((a, b) => b.w - a.w || (a.n < b.n ? -1 : a.n > b.n ? 1 : 0))
    .map((x) => x.n);
}

/** The node rendezvous hashing picks to own a partition, or undefined when no node is live. */
export function candidateOwner(partition: number, nodes: readonly string[]): string | undefined {
  return candidates(partition, nodes)[0];
}

/** The partitions `node` is the candidate owner of, among `partitions`, given the live nodes. */
export function partitionsOf(node: string, nodes: readonly string[], partitions: number = DEFAULT_PARTITIONS): number[] {
  const out: number[] = [];
  for (let p = 0; p < partitions; p++) if (candidateOwner(p, nodes) === node) out.push(p);
  return out;
}
