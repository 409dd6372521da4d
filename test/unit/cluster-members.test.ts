import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { memberConfig, memberDir, siblingOf, type ClusterConfig } from '../../onprem/cluster/config.js';

/** Cluster mode with N workers per node (issue 13): each worker's member id, pipe port and data dir, and sibling look-up. */
const CC: ClusterConfig = { servers: ['nats://127.0.0.1:4222'], node: 'iris1', partitions: 1024, leaseMs: 3000, pipeHost: '10.0.0.1', pipePort: 8891 };

describe('cluster members per worker', () => {
  it('one worker is the node itself: the plain id, the base pipe port, <data>/cluster', () => {
    expect(memberConfig(CC, 0, 1)).toBe(CC);
    expect(memberDir('/d', 0, 1)).toBe(join('/d', 'cluster'));
  });

  it('worker i of N > 1 is member <node>.<i> on pipe port base + i, with <data>/cluster/<i>', () => {
    expect(memberConfig(CC, 0, 4)).toEqual({ ...CC, node: 'iris1.0', pipePort: 8891 });
    expect(memberConfig(CC, 3, 4)).toEqual({ ...CC, node: 'iris1.3', pipePort: 8894 });
    expect(memberDir('/d', 3, 4)).toBe(join('/d', 'cluster', '3'));
  });

  it('names the sibling worker that owns a partition, and nothing else', () => {
    expect(siblingOf(CC, 'iris1.2', 0, 4)).toBe(2);
    expect(siblingOf(CC, 'iris1.0', 0, 4)).toBeNull(); // itself
    expect(siblingOf(CC, 'iris1.4', 0, 4)).toBeNull(); // no such worker here
    expect(siblingOf(CC, 'iris2.1', 0, 4)).toBeNull(); // another node
    expect(siblingOf(CC, 'iris12.1', 0, 4)).toBeNull(); // a node whose id only starts the same
    expect(siblingOf(CC, 'iris1.x', 0, 4)).toBeNull();
    expect(siblingOf(CC, undefined, 0, 4)).toBeNull();
    expect(siblingOf(CC, 'iris1.1', 0, 1)).toBeNull(); // one worker: no siblings
  });
});
