import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { memberConfig, memberDir, removeStaleViews, siblingOf, type ClusterConfig } from '../../onprem/cluster/config.js';

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

  it('removes the views an earlier run with another worker count left, and keeps those of the current workers', () => {
    const d = mkdtempSync(join(tmpdir(), 'iris-members-'));
    try {
      removeStaleViews(d, 2); // no <data>/cluster yet: nothing to do
      const root = join(d, 'cluster');
      for (const w of ['0', '1', '2', '3']) mkdirSync(join(root, w), { recursive: true });
      writeFileSync(join(root, 'p7.sqlite'), ''); // a one-worker run's view
      writeFileSync(join(root, '1', 'p3.sqlite'), '');
      removeStaleViews(d, 2);
      expect(readdirSync(root).sort()).toEqual(['0', '1']);
      expect(existsSync(join(root, '1', 'p3.sqlite'))).toBe(true);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
