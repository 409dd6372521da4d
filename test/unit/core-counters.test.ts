import { describe, expect, it } from 'vitest';
import { World } from './core-harness.js';

/**
 * The inbox seq and the outbox number are derived from the rows that carry them instead of being rewritten on
 * every message. A number handed out twice would be a loss (a recipient drops an outbox number it has seen) or
 * a hole in a device's stream, so every case here restarts the shards (evict: memory gone, SQL kept) at the
 * moments where the rows carrying the highest number are gone.
 */
describe('sequence counters survive restarts without being rewritten per message', () => {
  it('a receipt takes no outbox number, and numbers continue after a restart', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    await alice.post('bob', 'hi', 'c1');
    const bob = w.connect('bob');
    await bob.hello('b1');
    await bob.ack(1); // bob's receipt to alice is a receipts_out row, not an outbox item
    expect(w.count('outbox', 'bob')).toBe(0);
    expect(w.count('receipts_out', 'bob')).toBe(0); // handed over and deleted
    await bob.post('alice', 'first', 'b-c1');
    w.evict('bob');
    w.evict('alice');
    await bob.post('alice', 'after restart', 'b-c2');
    expect(bob.of('send_ack').map((a) => a.msg)).toEqual(['bob:1', 'bob:2']);
    expect(alice.texts()).toEqual(['first', 'after restart']); // not dropped as a repeat of number 1
  });

  it('the inbox seq continues after a restart, also when every stored entry was trimmed', async () => {
    const w = new World();
    const alice = w.connect('alice');
    const bob = w.connect('bob');
    await alice.hello('a1');
    await bob.hello('b1');
    for (let i = 1; i <= 70; i++) await alice.post('bob', `m${i}`, `c${i}`);
    const last = bob.entries().at(-1)!.seq;
    expect(last).toBe(70);
    await bob.ack(last); // one device: everything acked is trimmed (in steps of 64)
    expect(w.count('inbox', 'bob')).toBe(0);
    w.evict('bob');
    await alice.post('bob', 'next', 'c71');
    expect(bob.entries().at(-1)).toMatchObject({ seq: 71 });
    expect(bob.texts().at(-1)).toBe('next');
    w.evict('alice');
    await alice.post('bob', 'and again', 'c72');
    expect(alice.of('send_ack').at(-1)!.msg).toBe('alice:72');
  });

  it("a sender's dedup mark survives a restart without being written per batch: a retried forward is not stored twice", async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (let i = 1; i <= 3; i++) await alice.post('bob', `m${i}`, `c${i}`);
    const item = (n: number) => ({ n, kind: 'message' as const, msg: `alice:${n}`, ts: w.now, body: new TextEncoder().encode(`m${n}`) });
    // Entries still stored: the mark comes from their numbers.
    w.evict('bob');
    expect(await w.mailbox('bob').receive({ from: 'alice', items: [item(2), item(3)] })).toEqual({ acceptedUpTo: 3 });
    expect(w.count('inbox', 'bob')).toBe(3);
    // Entries trimmed away: the mark comes from the floor the trim wrote.
    const bob = w.connect('bob');
    await bob.hello('b1');
    for (let i = 4; i <= 70; i++) await alice.post('bob', `m${i}`, `c${i}`);
    await bob.ack(bob.entries().at(-1)!.seq);
    expect(w.count('inbox', 'bob')).toBe(0);
    w.evict('bob');
    expect(await w.mailbox('bob').receive({ from: 'alice', items: [item(69), item(70)] })).toEqual({ acceptedUpTo: 70 });
    expect(w.count('inbox', 'bob')).toBe(0);
    expect(bob.texts()).toHaveLength(70);
    await alice.post('bob', 'm71', 'c71');
    expect(bob.texts().at(-1)).toBe('m71');
  });
});

describe('device cursors are written lazily', () => {
  const cursorRow = (w: World, device: string) =>
    w.sql.all<{ cursor: number }>(`SELECT cursor FROM devices WHERE user = 'bob' AND device = ?`, device)[0]?.cursor;

  it('an ack writes no row; the trim, a close and a hello write the cursor', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (let i = 1; i <= 3; i++) await alice.post('bob', `m${i}`, `c${i}`);
    const bob = w.connect('bob');
    await bob.hello('b1');
    expect(cursorRow(w, 'b1')).toBe(0);
    await bob.ack(2);
    expect(cursorRow(w, 'b1')).toBe(0); // not written...
    expect(alice.receipts().map((r) => r.msg)).toEqual(['alice:2']); // ...but acted on
    await bob.disconnect();
    expect(cursorRow(w, 'b1')).toBe(2);
    const again = w.connect('bob');
    await again.hello('b1');
    expect(again.of('welcome')[0]!.cursor).toBe(2);
    expect(again.texts()).toEqual(['m3']);
  });

  it('after a crash the device gets at most the entries since the last write again, and its own cursor wins', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (let i = 1; i <= 5; i++) await alice.post('bob', `m${i}`, `c${i}`);
    const bob = w.connect('bob');
    await bob.hello('b1');
    await bob.ack(4);
    // The process dies: memory (the shard, the socket) is gone, SQL stays.
    w.sockets('bob').clear();
    w.evict('bob');
    const fresh = w.connect('bob');
    await fresh.hello('b1'); // a client that kept no cursor: the server's written one (0) counts
    expect(fresh.texts()).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
    w.sockets('bob').clear();
    w.evict('bob');
    const durable = w.connect('bob');
    await durable.hello('b1', 4); // a client that kept its cursor: nothing twice
    expect(durable.texts()).toEqual(['m5']);
  });

  it('a shard woken from hibernation takes the acked positions from its open sockets', async () => {
    const w = new World({ ratePerSec: 1000, rateBurst: 1000 });
    const alice = w.connect('alice');
    await alice.hello('a1');
    for (let i = 1; i <= 300; i++) await alice.post('bob', `m${i}`, `c${i}`);
    const bob = w.connect('bob');
    await bob.hello('b1');
    expect(bob.texts()).toHaveLength(256); // the send window
    await bob.ack(256);
    // Evicted with the socket open (Durable Object hibernation): the window must count from 256, not from the
    // last written cursor, or the device would wait for entries it never gets.
    w.evict('bob');
    await alice.post('bob', 'm301', 'c301');
    expect(bob.texts()).toHaveLength(301);
  });
});
