import { describe, expect, it } from 'vitest';
import { candidateOwner, candidates, DEFAULT_PARTITIONS, partitionOf, partitionsOf } from '../../cluster/partition.js';
import { decodeChange, encodeChange } from '../../cluster/storage.js';

/** The cluster's partition map (issue 13): users to fixed virtual partitions, rendezvous hashing for owners. */
describe('cluster partition map', () => {
  it('maps a user to the same partition every time, within the configured count', () => {
    expect(partitionOf('alice')).toBe(partitionOf('alice'));
    for (const u of ['alice', 'bob', 'carol', 'x'.repeat(200)]) {
      const p = partitionOf(u);
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThan(DEFAULT_PARTITIONS);
      expect(partitionOf(u, 16)).toBeLessThan(16);
    }
    expect(() => partitionOf('alice', 0)).toThrow(RangeError);
  });

  it('spreads users evenly over the partitions', () => {
    const counts = new Array<number>(64).fill(0);
    for (let i = 0; i < 64_000; i++) counts[partitionOf(`user${i}`, 64)]!++;
    expect(Math.min(...counts)).toBeGreaterThan(800);
    expect(Math.max(...counts)).toBeLessThan(1200);
  });

  it('ranks the same candidates whatever the order the nodes are listed in', () => {
    const nodes = ['n1', 'n2', 'n3'];
    for (let p = 0; p < 100; p++) {
      expect(candidates(p, nodes)).toEqual(candidates(p, [...nodes].reverse()));
      expect(candidates(p, nodes).sort()).toEqual(nodes);
    }
    expect(candidateOwner(0, [])).toBeUndefined();
  });

  it('gives each node about a third of 1,024 partitions, and moves only the leaving node’s partitions', () => {
    const nodes = ['node-a', 'node-b', 'node-c'];
    const shares = nodes.map((n) => partitionsOf(n, nodes).length);
    expect(shares.reduce((a, b) => a + b)).toBe(DEFAULT_PARTITIONS);
    for (const s of shares) expect(s).toBeGreaterThan(280);
    const after = ['node-a', 'node-b'];
    for (let p = 0; p < DEFAULT_PARTITIONS; p++) {
      const before = candidateOwner(p, nodes)!;
      if (before !== 'node-c') expect(candidateOwner(p, after)).toBe(before);
      else expect(after).toContain(candidateOwner(p, after));
    }
    // A node joining takes about a quarter, only from the others.
    const joined = [...nodes, 'node-d'];
    const moved = Array.from({ length: DEFAULT_PARTITIONS }, (_, p) => p).filter((p) => candidateOwner(p, joined) !== candidateOwner(p, nodes));
    for (const p of moved) expect(candidateOwner(p, joined)).toBe('node-d');
    expect(moved.length).toBeGreaterThan(200);
    expect(moved.length).toBeLessThan(320);
  });

  it('encodes a change record (DDL + changeset) and decodes it back', () => {
    const cs = new Uint8Array([1, 2, 3, 250]);
    expect(decodeChange(encodeChange([], cs))).toEqual({ ddl: [], changeset: cs });
    const back = decodeChange(encodeChange(['CREATE TABLE t (k PRIMARY KEY)'], cs));
    expect(back.ddl).toEqual(['CREATE TABLE t (k PRIMARY KEY)']);
    expect([...back.changeset]).toEqual([1, 2, 3, 250]);
  });
});
