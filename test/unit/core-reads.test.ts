import { describe, expect, it } from 'vitest';
import { usersToResume } from '../../core/store.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Read receipts are state (PROTOCOL.md 9.8): a device marks a conversation read up to a message; the reader's
 * devices sync the position by read version (`read_state`, `hello.reads`), and the sender gets ONE read receipt
 * per conversation, coalesced, as the `read` of its receipt state (`receipts`, `hello.receipts`). A user setting
 * stops the receipts, not the sync.
 */

/** A hello from a client that speaks read receipts (hello.reads). */
async function helloReads(c: FakeConn, device: string, reads = 0, receipts = 0): Promise<void> {
  await c.frame({ t: 'hello', device, cursor: 0, receipts, reads });
}

async function read(c: FakeConn, conv: string, msg: string): Promise<void> {
  await c.frame({ t: 'read', conv, msg });
}

/** alice (a1) sends n messages to bob; bob connects as b1 (speaking read receipts) and receives them. */
async function setUp(w: World, n = 3) {
  const alice = w.connect('alice');
  await helloReads(alice, 'a1');
  for (let i = 1; i <= n; i++) await alice.post('bob', `m${i}`, `c${i}`);
  const bob = w.connect('bob');
  await helloReads(bob, 'b1');
  expect(bob.texts()).toHaveLength(n);
  return { alice, bob };
}

describe('read receipts', () => {
  it('a mark reaches the sender as one cumulative read position, which implies delivered', async () => {
    const w = new World();
    const { alice, bob } = await setUp(w);
    // Not acknowledged yet: the read mark alone tells alice both.
    await read(bob, 'alice', 'alice:3');
    const r = alice.receipts();
    expect(r).toEqual([{ peer: 'bob', msg: 'alice:3', ts: w.now, read: 'alice:3', readTs: w.now }]);
    // One row per side: the reader's position and the sender's receipt state.
    expect(w.count('reads', 'bob')).toBe(1);
    expect(w.count('receipts_in', 'alice')).toBe(1);
    // The ack afterwards changes nothing for alice: delivery is already at alice:3.
    await bob.ack(3);
    expect(alice.receipts()).toHaveLength(1);
  });

  it('marks made while the sender is unreachable are coalesced into one', async () => {
    const w = new World();
    const { alice, bob } = await setUp(w);
    w.remote.add('alice');
    w.failForwards.set('alice', 1);
    await read(bob, 'alice', 'alice:1');
    expect(alice.receipts()).toEqual([]);
    await read(bob, 'alice', 'alice:2');
    await read(bob, 'alice', 'alice:3');
    await w.advance(60_000);
    const carried = w.forwardCalls.filter((c) => c.to === 'alice' && c.batch.read !== undefined);
    // The failed call carried the first mark; the retry carries only the newest.
    expect(carried.map((c) => c.batch.read?.msg)).toEqual(['alice:1', 'alice:3']);
    expect(alice.receipts().map((r) => r.read)).toEqual(['alice:3']);
  });

  it("the reader's devices all get the position; a resuming device gets only what changed", async () => {
    const w = new World();
    const { bob } = await setUp(w);
    const carol = w.connect('carol');
    await helloReads(carol, 'c1');
    await carol.post('bob', 'hey', 'x1');
    const laptop = w.connect('bob');
    await helloReads(laptop, 'b2');
    await read(bob, 'alice', 'alice:2');
    expect(bob.of('read_state')).toEqual([{ t: 'read_state', upTo: 1, items: [{ conv: 'alice', msg: 'alice:2', ts: w.now }] }]);
    expect(laptop.of('read_state')).toEqual(bob.of('read_state'));
    // A mark behind the stored one writes nothing and sends nothing.
    await read(bob, 'alice', 'alice:1');
    expect(bob.of('read_state')).toHaveLength(1);
    await laptop.disconnect();
    await read(bob, 'carol', 'carol:1');
    await read(bob, 'alice', 'alice:3');
    const back = w.connect('bob');
    await helloReads(back, 'b2', 1);
    expect(back.of('read_state').flatMap((f) => f.items).map((i) => [i.conv, i.msg])).toEqual([['carol', 'carol:1'], ['alice', 'alice:3']]);
    expect(back.of('read_state').at(-1)?.upTo).toBe(3);
    // A new device gets every position, one per conversation.
    const tablet = w.connect('bob');
    await helloReads(tablet, 'b3');
    expect(tablet.of('read_state').flatMap((f) => f.items).map((i) => i.conv).sort()).toEqual(['alice', 'carol']);
    // The sender's device resumes receipts by version, read positions included.
    const phone = w.connect('alice');
    await helloReads(phone, 'a2');
    expect(phone.receipts()).toEqual([expect.objectContaining({ peer: 'bob', read: 'alice:3' })]);
  });

  it("set_presence reaches every device of the user as settings, and a new connection is told it", async () => {
    const w = new World();
    const phone = w.connect('carol');
    await helloReads(phone, 'c1');
    const legacy = w.connect('carol');
    await legacy.frame({ t: 'hello', device: 'c0', cursor: 0 });
    const laptop = w.connect('carol');
    await helloReads(laptop, 'c2');
    await phone.frame({ t: 'set_presence', visibility: 'contacts' });
    for (const c of [phone, laptop]) expect(c.of('settings').at(-1)).toEqual({ t: 'settings', readReceipts: true, presence: 'contacts' });
    // A client written before read receipts gets no settings frame at all.
    expect(legacy.of('settings')).toEqual([]);
    w.evict('carol');
    const again = w.connect('carol');
    await helloReads(again, 'c3');
    expect(again.of('settings')).toEqual([{ t: 'settings', readReceipts: true, presence: 'contacts' }]);
  });

  it('the setting off stops read positions reaching senders, not the sync or delivery receipts', async () => {
    const w = new World();
    const { alice, bob } = await setUp(w);
    expect(bob.of('settings')).toEqual([{ t: 'settings', readReceipts: true, presence: 'everyone' }]);
    const laptop = w.connect('bob');
    await helloReads(laptop, 'b2');
    await bob.frame({ t: 'set_settings', readReceipts: false });
    expect(bob.of('settings').at(-1)).toEqual({ t: 'settings', readReceipts: false, presence: 'everyone' });
    expect(laptop.of('settings').at(-1)).toEqual({ t: 'settings', readReceipts: false, presence: 'everyone' });
    await read(bob, 'alice', 'alice:2');
    expect(laptop.of('read_state').flatMap((f) => f.items).map((i) => i.msg)).toEqual(['alice:2']);
    await bob.ack(3);
    expect(alice.receipts()).toEqual([{ peer: 'bob', msg: 'alice:3', ts: w.now }]);
    // Stored: a new connection is told, and a restart keeps it off.
    w.evict('bob');
    const again = w.connect('bob');
    await helloReads(again, 'b3');
    expect(again.of('settings')).toEqual([{ t: 'settings', readReceipts: false, presence: 'everyone' }]);
    // On again: the next mark is sent; the one made while off was not.
    await again.frame({ t: 'set_settings', readReceipts: true });
    await read(again, 'alice', 'alice:3');
    expect(alice.receipts().map((r) => r.read)).toEqual([undefined, 'alice:3']);
  });

  it('refuses what was not delivered, and ids that are not the conversation', async () => {
    const w = new World({ sendWindow: 1 });
    const alice = w.connect('alice');
    await helloReads(alice, 'a1');
    for (const i of [1, 2]) await alice.post('bob', `m${i}`, `c${i}`);
    const bob = w.connect('bob');
    await helloReads(bob, 'b1');
    expect(bob.texts()).toEqual(['m1']); // the window holds m2 back
    await read(bob, 'alice', 'alice:2');
    await read(bob, 'alice', 'alice:9');
    await read(bob, 'alice', 'carol:1');
    await read(bob, 'alice', 'alice:0');
    expect(bob.of('error').map((e) => e.code)).toEqual(['bad_ack', 'bad_ack', 'invalid_field', 'invalid_field']);
    expect(w.count('reads', 'bob')).toBe(0);
    await read(bob, 'alice', 'alice:1');
    expect(bob.of('read_state')).toHaveLength(1);
    expect(alice.receipts().map((r) => r.read)).toEqual(['alice:1']);
  });

  it('read marks and settings changes draw from the user\'s rate bucket', async () => {
    const w = new World({ ratePerSec: 1, rateBurst: 3 });
    const { bob } = await setUp(w);
    await read(bob, 'alice', 'alice:1');
    await bob.frame({ t: 'set_settings', readReceipts: false });
    await read(bob, 'alice', 'alice:2');
    await read(bob, 'alice', 'alice:3');
    const refused = bob.of('error');
    expect(refused.map((e) => e.code)).toEqual(['rate_limited']);
    expect(refused[0]!.retryAfter).toBeGreaterThan(0);
    // Nothing was done for the refused mark: the position stays where the last accepted one put it.
    expect(bob.of('read_state').flatMap((f) => f.items).map((i) => i.msg)).toEqual(['alice:1', 'alice:2']);
    await w.advance(1_000);
    await read(bob, 'alice', 'alice:3');
    expect(bob.of('read_state').at(-1)?.items[0]?.msg).toBe('alice:3');
  });

  it('a client without hello.reads gets receipts as it knew them and no new frames', async () => {
    const w = new World();
    const alice = w.connect('alice');
    await alice.hello('a1');
    await alice.post('bob', 'hi', 'c1');
    const bob = w.connect('bob');
    await helloReads(bob, 'b1');
    const oldBob = w.connect('bob');
    await oldBob.hello('b2');
    await read(bob, 'alice', 'alice:1');
    expect(alice.receipts()).toEqual([{ peer: 'bob', msg: 'alice:1', ts: w.now }]);
    expect(oldBob.of('read_state')).toEqual([]);
    expect(oldBob.of('settings')).toEqual([]);
    expect(alice.of('settings')).toEqual([]);
  });

  it('an owed read receipt survives a restart of the reader before it was carried', async () => {
    const w = new World();
    const { alice, bob } = await setUp(w);
    w.remote.add('alice');
    w.failForwards.set('alice', 1);
    await read(bob, 'alice', 'alice:2');
    expect(alice.receipts()).toEqual([]);
    w.evict('bob');
    await w.advance(60_000);
    expect(alice.receipts().map((r) => r.read)).toEqual(['alice:2']);
  });

  it('a restarted on-prem worker resumes a reader that still owes a read receipt, and not once it was carried', async () => {
    const w = new World();
    const { alice, bob } = await setUp(w);
    w.remote.add('alice');
    w.failForwards.set('alice', 1);
    await read(bob, 'alice', 'alice:3');
    expect(usersToResume(w.sql)).toContain('bob');
    await w.advance(60_000);
    expect(alice.receipts().map((r) => r.read)).toEqual(['alice:3']);
    // The floor that says so is written with the users row (here at disconnect), not as a row of its own.
    await bob.disconnect();
    expect(usersToResume(w.sql)).not.toContain('bob');
  });

  it('reading one\'s own conversation syncs but sends no receipt', async () => {
    const w = new World();
    const me = w.connect('alice');
    await helloReads(me, 'a1');
    await me.post('alice', 'note', 'n1');
    await read(me, 'alice', 'alice:1');
    expect(me.of('read_state').flatMap((f) => f.items).map((i) => i.msg)).toEqual(['alice:1']);
    expect(me.receipts()).toEqual([]);
  });
});
