import { describe, expect, it } from 'vitest';
import { Assigner } from '../../cluster/assign.js';
import type { Membership } from '../../cluster/membership.js';
import type { ClusterNode } from '../../cluster/node.js';

/**
 * The assigner runs at most maxTakeovers takeovers at once and starts the next as one finishes (cluster/assign.ts):
 * a node taking its third of 1,024 partitions at once flooded NATS and let its own lease renewal run out.
 */

describe('cluster assigner: bounded takeovers', () => {
  it('runs at most maxTakeovers at once, starts the next as one ends, and serves every partition in the end', async () => {
    const served = new Set<number>();
    const running = new Map<number, () => void>();
    let peak = 0;
    let changed: () => void = () => undefined;
    const node = {
      id: 'me',
      storage: (p: number) => (served.has(p) ? {} : undefined),
      serve: (p: number) =>
        new Promise<void>((resolve) => {
          running.set(p, () => {
            running.delete(p);
            served.add(p);
            resolve();
          });
          peak = Math.max(peak, running.size);
          changed();
        }),
      release: () => Promise.resolve(),
    } as unknown as ClusterNode;
    const membership = { live: () => Promise.resolve(['me']) } as unknown as Membership;
    const a = new Assigner(node, membership, { partitions: 20, tickMs: 60_000, maxTakeovers: 3 });
    const started = () => new Promise<void>((r) => (changed = r));
    let next = started();
    await a.tick();
    expect(running.size).toBe(3);
    // Finishing one starts exactly one more, without waiting for a tick.
    while (served.size < 20) {
      if (running.size === 0) {
        await next;
        next = started();
      }
      const [first] = running.values();
      first!();
      await Promise.resolve();
      await Promise.resolve();
      expect(running.size).toBeLessThanOrEqual(3);
    }
    expect(peak).toBe(3);
    expect(served.size).toBe(20);
    a.stop();
  });
});
