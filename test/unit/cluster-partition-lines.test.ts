import { describe, expect, it } from 'vitest';
import { PartitionLines, ranges } from '../../onprem/cluster/partition-lines.js';

describe('cluster partition log lines', () => {
  it('lists partitions as ranges', () => {
    expect(ranges([8, 0, 2, 1, 5, 7, 1])).toBe('0-2, 5, 7-8');
    expect(ranges([3])).toBe('3');
  });

  it('writes one line per kind for the events of one turn (a lost session is one warning, not hundreds)', async () => {
    const out: string[] = [];
    const lines = new PartitionLines((level, m) => out.push(`${level} ${m}`));
    for (let p = 0; p < 300; p++) lines.add('warn', 'lost (expired); their users reconnect to the new owner', p);
    lines.add('info', 'served here now', 400);
    await new Promise((r) => setImmediate(r));
    expect(out).toEqual(['warn cluster: 300 partitions 0-299 lost (expired); their users reconnect to the new owner', 'info cluster: partition 400 served here now']);
  });
});
