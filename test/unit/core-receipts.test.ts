import { describe, expect, it } from 'vitest';
import { World } from './core-harness.js';

/**
 * Receipts are cumulative state (PROTOCOL.md 9.6): one acknowledgement that covers several messages of one sender
 * gives that sender ONE receipt naming its newest message covered, and a receipt is a row per conversation that
 * devices sync by version (`receipts` frames, `hello.receipts`), not an inbox entry with its own delivery and ack.
 */
/** alice sends `texts` to bob; bob connects (device b1) and, if `ack`, acks them all. */
async function oneConversation(w: World, texts: string[], ack = true) {
  const alice = w.connect('alice');
  await alice.hello('a1');
  for (const [i, t] of texts.entries()) await alice.post('bob', t, `m${i + 1}`);
  const bob = w.connect('bob');
  await bob.hello('b1');
  if (ack) await bob.ack(texts.length);
  return { alice, bob };
}

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

    expect(alice.receipts().map((r) => [r.msg, r.peer])).toEqual([[aliceAcks[2], 'bob']]);
    expect(carol.receipts().map((r) => [r.msg, r.peer])).toEqual([[carolAcks[1], 'bob']]);
    // Not inbox entries: nothing for the senders to deliver or acknowledge.
    expect(alice.entries()).toEqual([]);
    expect(carol.entries()).toEqual([]);
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
    expect(alice.receipts().map((r) => r.msg)).toEqual([acks[0], acks[2], acks[3]]);
    // Versions count changes: each frame brings the device one further.
    expect(alice.of('receipts').map((f) => f.upTo)).toEqual([1, 2, 3]);
  });

  it('an offline device gets the receipt state on hello, and only what changed after its version', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    await alice.post('bob', 'to bob', 'm1');
    await alice.post('carol', 'to carol', 'm2');
    await alice.disconnect();
    const [toBob, toCarol] = alice.of('send_ack').map((a) => a.msg);

    const bob = w.connect('bob');
    await bob.hello('b1');
    await bob.ack(1);
    const carol = w.connect('carol');
    await carol.hello('c1');
    await carol.ack(1);

    // A second device of alice that never saw a receipt gets both states at once.
    const laptop = w.connect('alice');
    await laptop.hello('a2');
    expect(laptop.receipts().map((r) => [r.peer, r.msg])).toEqual([['bob', toBob], ['carol', toCarol]]);
    expect(laptop.receiptVersion()).toBe(2);

    // The phone comes back having seen version 1 (bob's): it is sent carol's only.
    const phone = w.connect('alice');
    await phone.hello('a1', 0, 1);
    expect(phone.receipts().map((r) => r.peer)).toEqual(['carol']);
    // Up to date: nothing.
    const again = w.connect('alice');
    await again.hello('a3', 0, 2);
    expect(again.receipts()).toEqual([]);
  });

  it('a receipt version from a store the server no longer has gets every receipt again', async () => {
    const w = new World();
    await oneConversation(w, ['x']);
    const other = w.connect('alice');
    await other.hello('a2', 0, 999);
    expect(other.receipts().map((r) => r.peer)).toEqual(['bob']);
  });

  it('a receipt lost in transit is forwarded again until the sender has it, and applied once', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    await alice.post('bob', 'x', 'm1');
    const bob = w.connect('bob');
    await bob.hello('b1');
    w.failForwards.set('alice', 1);
    await bob.ack(1);
    expect(alice.receipts()).toEqual([]);
    // Bob's shard restarts meanwhile. The owed receipt was never written: it is derived again from the acked,
    // untrimmed inbox entry.
    expect(w.count('receipts_out', 'bob')).toBe(0);
    w.evict('bob');
    await w.advance(60_000);
    expect(alice.receipts().map((r) => r.msg)).toEqual([alice.of('send_ack')[0]!.msg]);
    await w.advance(60_000);
    expect(alice.receipts()).toHaveLength(1);
    expect(w.sql.all(`SELECT count(*) AS c FROM receipts_out`)[0]!['c']).toBe(0);
  });

  it('a receipt still owed when its entries are trimmed is written, and survives a restart', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (let i = 1; i <= 70; i++) await alice.post('bob', `m${i}`, `c${i}`);
    w.remote.add('alice');
    w.failForwards.set('alice', 1_000); // alice's shard does not answer bob's
    const bob = w.connect('bob');
    await bob.hello('b1');
    await bob.ack(70); // one device: every entry is trimmed with this ack
    expect(w.count('inbox', 'bob')).toBe(0);
    expect(w.sql.all(`SELECT n FROM receipts_out WHERE user = 'bob'`)).toEqual([{ n: 70 }]);
    w.evict('bob');
    w.failForwards.delete('alice');
    await w.advance(60_000);
    expect(alice.receipts().map((r) => r.msg)).toEqual(['alice:70']);
    expect(w.count('receipts_out', 'bob')).toBe(0);
  });

  it('a client cursor ahead of every acknowledgement counts as one: the entries it skips are receipted', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    await alice.post('bob', 'x', 'm1');
    await alice.post('bob', 'y', 'm2');
    const bob = w.connect('bob');
    await bob.hello('b1');
    expect(bob.texts()).toEqual(['x', 'y']);
    // The ack was lost with the connection; the client processed both and says so in its next hello.
    await bob.disconnect();
    const bob2 = w.connect('bob');
    await bob2.hello('b1', 2);
    expect(alice.receipts().map((r) => r.msg)).toEqual([alice.of('send_ack')[1]!.msg]);
  });

  it('receipts queued as outbox items before migration 4 still reach the sender, as legacy entries', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    w.sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('bob', 1, 2, 0, 0, 0)`);
    w.sql.all(`INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES ('bob', 1, 'alice', 2, 'alice:1', 5, x'')`);
    await w.mailbox('bob').onWake();
    await w.settle();
    expect(alice.entries().map((e) => [e.kind, e.msg, e.peer])).toEqual([['delivered', 'alice:1', 'bob']]);
    expect(w.count('outbox', 'bob')).toBe(0);
  });

  it('costs no inbox row, deliver frame or ack on the sender side', async () => {
    const w = new World();
    const { alice } = await oneConversation(w, ['x']);
    expect(alice.receipts()).toHaveLength(1);
    expect(w.sql.all(`SELECT count(*) AS c FROM inbox WHERE user = 'alice'`)[0]!['c']).toBe(0);
    expect(w.sql.all(`SELECT count(*) AS c FROM outbox`)[0]!['c']).toBe(0);
    expect(w.sql.all(`SELECT n, v FROM receipts_in WHERE user = 'alice'`)).toEqual([{ n: 1, v: 1 }]);
  });
});
