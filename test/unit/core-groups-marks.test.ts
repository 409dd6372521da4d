import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { World } from './core-harness.js';

/**
 * A member's coalesced delivered / read marks (PROTOCOL.md 9.11 "Receipts, aggregated") when the user's shard
 * wakes early for something else. On Cloudflare the shard has ONE alarm (durable-objects/user-shard.ts wakeAt
 * keeps the earliest), so a wake-up for the liveness sweep that comes before the marks are due must not lose
 * them: the web chat's ✓✓ / read on wrangler dev waited for the next sweep (a minute) without this.
 */
describe('groups: marks when the shard wakes before they are due', () => {
  it('are told to the group at their own time', async () => {
    const w = new World();
    const a = w.connect('a');
    const b = w.connect('b');
    await a.helloWith('phone', HELLO_FEATURES.groups);
    await b.helloWith('phone', HELLO_FEATURES.groups);
    await a.frame({ t: 'group_create', id: 'c1', group: 'g', name: 'g', members: ['b'] });
    await a.frame({ t: 'group_send', id: 's1', group: 'g', body: new TextEncoder().encode('hi') });
    await w.settle();
    const seq = a.of('group_send_ack').find((f) => f.id === 's1')!.seq;
    const last = Math.max(...b.of('group_deliver').flatMap((f) => f.entries.map((e) => e.seq)));
    expect(last).toBe(seq);
    await b.frame({ t: 'group_ack', group: 'g', seq, read: seq });
    expect(w.wakes.get('b')).toBeDefined();
    // The alarm fires now for another reason (the sweep), before the marks are due.
    w.wakes.delete('b');
    await w.mailbox('b').onWake();
    await w.advance(1_000);
    await a.frame({ t: 'group_receipts_query', ref: 'q', group: 'g', seq });
    expect(a.of('group_receipts').find((f) => f.ref === 'q')!.members).toEqual([{ user: 'b', state: 'read' }]);
  });
});
