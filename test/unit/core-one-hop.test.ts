/**
 * The core suites again, with every recipient in the sender's storage (World.defaultOneHop): sends and receipts
 * are handed over inside the sender's commit (Peers.local), as between users of one on-prem worker. Every
 * guarantee those suites check must hold on both paths.
 */
import { World } from './core-harness.js';

World.defaultOneHop = true;
await import('./core-mailbox.test.js');
await import('./core-receipts.test.js');
await import('./core-counters.test.js');
await import('./core-send-barrier.test.js');
await import('./core-reads.test.js');
await import('./core-sync.test.js');

const { describe, expect, it } = await import('vitest');
const { StorageFullError } = await import('../../core/ports.js');

describe('one hop, one commit (Peers.local)', () => {
  it('a send to a user in the same storage is in the inbox in the commit that acks it: no outbox row, no forward', async () => {
    const w = new World({}, false, true);
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    await a.post('bob', 'hi', 'c1');
    expect(a.of('send_ack')).toHaveLength(1);
    expect(b.texts()).toEqual(['hi']);
    expect(w.forwardCalls).toEqual([]);
    expect(w.count('outbox', 'alice')).toBe(0);
    // The receipt goes back the same way: no receipts_out row, no forward.
    await b.ack(1);
    expect(a.receipts().map((r) => r.msg)).toEqual(['alice:1']);
    expect(w.count('receipts_out', 'bob')).toBe(0);
    expect(w.forwardCalls).toEqual([]);
  });

  it('a full inbox queues the send in the outbox; later sends never overtake it', async () => {
    const w = new World({ inboxCap: 2, fullRetryMs: 1000 }, false, true);
    const a = w.connect('alice');
    await a.hello('a1');
    for (const i of [1, 2, 3]) await a.post('bob', `m${i}`, `c${i}`);
    // m3 did not fit: accepted (acked) and queued, as if a forward had been answered "full".
    expect(a.of('send_ack').map((x) => x.id)).toEqual(['c1', 'c2', 'c3']);
    expect(w.count('outbox', 'alice')).toBe(1);
    await a.post('bob', 'm4', 'c4');
    expect(a.of('error')[0]).toMatchObject({ code: 'inbox_full', ref: 'c4' });
    const b = w.connect('bob');
    await b.hello('b1');
    await b.ack(2);
    await w.advance(1000);
    await a.post('bob', 'm4', 'c4');
    await a.post('bob', 'm5', 'c5'); // full again (m3, m4 unacked): queued behind nothing, acked
    expect(a.of('send_ack').map((x) => x.id)).toEqual(['c1', 'c2', 'c3', 'c4', 'c5']);
    await b.ack(4);
    await w.advance(1000);
    expect(b.texts()).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
    expect(w.count('outbox', 'alice')).toBe(0);
  });

  it('a commit that fails takes the hand-over with it, and the recipient does not keep stale counters', async () => {
    const w = new World({}, true, true);
    const a = w.connect('alice');
    await w.drain(a.hello('a1'));
    const sent = a.post('bob', 'lost', 'c1');
    await w.settle();
    w.failNextFlush(new StorageFullError('disk full', 500));
    await w.drain(sent);
    expect(a.of('send_ack')).toEqual([]);
    expect(a.of('error')[0]).toMatchObject({ code: 'unavailable', ref: 'c1' });
    expect(w.count('inbox', 'bob')).toBe(0);
    w.now += 1000;
    await w.drain(a.post('bob', 'kept', 'c1'));
    const b = w.connect('bob');
    await w.drain(b.hello('b1'));
    expect(b.entries().map((e) => [e.seq, new TextDecoder().decode(e.body)])).toEqual([[1, 'kept']]);
  });
});
