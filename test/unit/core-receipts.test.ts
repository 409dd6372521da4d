import { describe, expect, it } from 'vitest';
import { World } from './core-harness.js';

/**
 * Receipts are cumulative (PROTOCOL.md 9.6): one acknowledgement that covers several messages of one sender
 * produces ONE receipt to that sender, naming its newest message covered. Before, every message cost a receipt
 * of its own — a second message path per message.
 */
describe('cumulative delivery receipts', () => {
  it('one ack over a burst from two senders: one receipt each, naming the newest message covered', async () => {
    const w = new World();
    const alice = w.connect('alice');
    const carol = w.connect('carol');
    await alice.hello('a1');
    await carol.hello('c1');
    for (const i of [1, 2, 3]) await alice.post('bob', `a${i}`, `a${i}`);
    for (const i of [1, 2]) await carol.post('bob', `c${i}`, `c${i}`);
    const aliceAcks = alice.of('send_ack').map((a) => a.msg);
    const carolAcks = carol.of('send_ack').map((a) => a.msg);

    const bob = w.connect('bob');
    await bob.hello('b1');
    expect(bob.texts()).toEqual(['a1', 'a2', 'a3', 'c1', 'c2']);
    await bob.ack(5);

    const receipts = (c: typeof alice) => c.entries().filter((e) => e.kind === 'delivered');
    expect(receipts(alice).map((r) => [r.msg, r.peer])).toEqual([[aliceAcks[2], 'bob']]);
    expect(receipts(carol).map((r) => [r.msg, r.peer])).toEqual([[carolAcks[1], 'bob']]);
  });

  it('acks in steps give one receipt per step, each covering what is new', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (const i of [1, 2, 3, 4]) await alice.post('bob', `m${i}`, `m${i}`);
    const acks = alice.of('send_ack').map((a) => a.msg);
    const bob = w.connect('bob');
    await bob.hello('b1');
    await bob.ack(1);
    await bob.ack(3);
    await bob.ack(3); // nothing new: no receipt
    await bob.ack(4);
    expect(alice.entries().filter((e) => e.kind === 'delivered').map((r) => r.msg)).toEqual([acks[0], acks[2], acks[3]]);
  });
});
