import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES, type TypingState } from '../../protocol/index.js';
import { TYPING_BURST, TYPING_OFFLINE_TRUST_MS, pushTyping } from '../../core/typing.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Typing indicators (PROTOCOL.md 8.8): pushed to the other party's online devices only, coalesced, rate-limited
 * in a bucket of their own, stopped when the typing connection closes, never stored, and never sent to a peer
 * known to have no online device (the "never wakes anything asleep only to drop it" rule, asserted on the calls).
 */

const TTL = 5_000;

/** A connection whose hello names HELLO_FEATURES.typing (the SDK's does); `legacy`: one written before typing. */
async function online(w: World, user: string, device = `${user}-d`, legacy = false): Promise<FakeConn> {
  const c = w.connect(user);
  if (legacy) await c.hello(device);
  else await c.frame({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.typing });
  return c;
}

const typing = (c: FakeConn, conv: string, on = true) => c.frame({ t: 'typing', conv, on });
const states = (c: FakeConn): TypingState[] => c.of('typing_state');
const changes = (w: World): number => (w.db.prepare('SELECT total_changes() AS c').get() as { c: number }).c;

describe('typing', () => {
  it('goes only to connections whose hello named the typing feature; with none, the peer counts as offline', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a1 = await online(w, 'alice', 'a1');
    const old = await online(w, 'bob', 'b-old', true);
    await typing(a1, 'bob');
    expect(states(old)).toEqual([]);
    const calls = w.typingCalls.length;
    await typing(a1, 'bob', false);
    await typing(a1, 'bob');
    // The push found no connection that reads typing: the typer's shard does not call again for a while.
    expect(w.typingCalls.length).toBe(calls);
    const b1 = await online(w, 'bob', 'b1');
    w.now += TTL; // past the coalescing of alice's earlier "on"
    await typing(a1, 'bob');
    expect(states(b1).map((s) => s.on)).toEqual([true]);
    expect(states(old)).toEqual([]);
  });

  it('reaches every online device of the peer, none of the typer, with the TTL, and writes nothing', async () => {
    const w = new World({ typingTtlMs: TTL });
    const [a1, a2] = [await online(w, 'alice', 'a1'), await online(w, 'alice', 'a2')];
    const [b1, b2] = [await online(w, 'bob', 'b1'), await online(w, 'bob', 'b2')];
    const before = changes(w);
    await typing(a1, 'bob');
    await typing(a1, 'bob', false);
    expect(changes(w)).toBe(before);
    for (const b of [b1, b2]) {
      expect(states(b)).toEqual([
        { t: 'typing_state', conv: 'alice', from: 'alice', on: true, ttl: TTL },
        { t: 'typing_state', conv: 'alice', from: 'alice', on: false, ttl: 0 },
      ]);
    }
    expect(states(a1)).toEqual([]);
    expect(states(a2)).toEqual([]);
    expect(w.typingCalls.map((c) => [c.to, c.from, c.conv, c.on, c.online])).toEqual([
      ['bob', 'alice', 'alice', true, true],
      ['bob', 'alice', 'alice', false, true],
    ]);
  });

  it('coalesces renewals inside half the TTL; an off without an on shown costs nothing', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    const b = await online(w, 'bob');
    await typing(a, 'bob', false);
    expect(w.typingCalls).toHaveLength(0);
    await typing(a, 'bob');
    for (let i = 0; i < 10; i++) {
      w.now += 200;
      await typing(a, 'bob');
    }
    expect(w.typingCalls).toHaveLength(1);
    w.now += TTL / 2;
    await typing(a, 'bob');
    expect(w.typingCalls).toHaveLength(2);
    expect(states(b).map((s) => s.on)).toEqual([true, true]);
    expect(w.mailbox('alice').typing.counts).toMatchObject({ calls: 2, coalesced: 11, dropped: 0 });
  });

  it('a typing connection that closes stops it; an expired on needs no stop; another connection closing changes nothing', async () => {
    const w = new World({ typingTtlMs: TTL });
    const [a1, a2] = [await online(w, 'alice', 'a1'), await online(w, 'alice', 'a2')];
    const b = await online(w, 'bob');
    await typing(a1, 'bob');
    await a2.disconnect();
    expect(states(b).map((s) => s.on)).toEqual([true]);
    await a1.disconnect();
    expect(states(b).map((s) => s.on)).toEqual([true, false]);

    const a3 = await online(w, 'alice', 'a3');
    await typing(a3, 'bob');
    w.now += TTL;
    await a3.disconnect();
    // Expired at the recipient already (the SDK turned it off): no call, no frame.
    expect(states(b).map((s) => s.on)).toEqual([true, false, true]);
    expect(w.typingCalls.filter((c) => !c.on)).toHaveLength(1);
  });

  it('the recipient writes an off only over an on it showed that has not expired (or when too young to know)', async () => {
    const w = new World({ typingTtlMs: TTL });
    const b = await online(w, 'bob');
    const mb = w.mailbox('bob');
    // A hub younger than the TTL cannot know what an evicted one showed: it writes the off.
    expect(mb.typingFrom('alice', 'alice', false)).toBe(true);
    expect(states(b).map((s) => s.on)).toEqual([false]);
    w.now += TTL;
    expect(mb.typingFrom('alice', 'alice', false)).toBe(true);
    expect(mb.typingFrom('alice', 'alice', true)).toBe(true);
    w.now += TTL;
    expect(mb.typingFrom('alice', 'alice', false)).toBe(true);
    expect(states(b).map((s) => s.on)).toEqual([false, true]);
  });

  it('is rate-limited in its own bucket: excess frames are dropped, sends are untouched', async () => {
    const w = new World({ typingTtlMs: TTL, ratePerSec: 1, rateBurst: 1 });
    const a = await online(w, 'alice');
    for (let i = 0; i < TYPING_BURST + 5; i++) await online(w, `u${i}`);
    for (let i = 0; i < TYPING_BURST + 5; i++) await typing(a, `u${i}`);
    expect(w.typingCalls).toHaveLength(TYPING_BURST);
    expect(w.mailbox('alice').typing.counts.dropped).toBe(5);
    // No error frame for a dropped typing frame, and the send bucket (1 token) was not spent by typing.
    expect(a.of('error')).toEqual([]);
    await a.post('u0', 'hi', 'm1');
    expect(a.of('send_ack')).toHaveLength(1);
  });

  it('typing to oneself or to an invalid id is a typed error', async () => {
    const w = new World();
    const a = await online(w, 'alice');
    await typing(a, 'alice');
    await a.frame({ t: 'typing', conv: 'bad id', on: true });
    expect(a.of('error').map((e) => e.code)).toEqual(['invalid_field', 'invalid_field']);
    expect(w.typingCalls).toHaveLength(0);
  });

  it('never calls a peer known to be offline; its next hello tells the typer, and typing flows again', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    const b0 = await online(w, 'bob');
    await b0.disconnect();
    await typing(a, 'bob');
    expect(w.typingCalls.map((c) => [c.to, c.online])).toEqual([['bob', false]]);
    // Renewals, an off and a new on while bob is known offline: no call at all.
    for (let i = 0; i < 5; i++) {
      w.now += TTL;
      await typing(a, 'bob');
      await typing(a, 'bob', false);
    }
    expect(w.typingCalls).toHaveLength(1);
    expect(w.mailbox('alice').typing.counts.skipped).toBeGreaterThanOrEqual(5);
    // Bob comes online: one notice to alice (nothing shown to her for it), then alice's typing reaches him.
    const b = await online(w, 'bob', 'b2');
    expect(w.typingCalls.at(-1)).toMatchObject({ to: 'alice', from: 'bob', conv: 'bob', on: false, online: true });
    expect(states(a)).toEqual([]);
    await typing(a, 'bob');
    expect(states(b).map((s) => s.on)).toEqual([true]);
  });

  it('a shard not in memory is not created for a push; the peer is asked again only after the trust time', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    await typing(a, 'carol');
    expect(w.typingCalls.map((c) => [c.to, c.online])).toEqual([['carol', false]]);
    w.now += TYPING_OFFLINE_TRUST_MS - 1;
    await typing(a, 'carol');
    expect(w.typingCalls).toHaveLength(1);
    w.now += TTL;
    await typing(a, 'carol');
    expect(w.typingCalls).toHaveLength(2);
  });

  it('a message handed over from a peer known offline makes the typer ask again', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    await typing(a, 'bob');
    expect(w.typingCalls).toHaveLength(1);
    // Bob's shard is not in memory, so no notice comes; but bob sends alice a message from a new connection.
    const b = await online(w, 'bob');
    w.typingCalls.length = 0;
    await b.post('alice', 'hi', 'm1');
    w.now += TTL;
    await typing(a, 'bob');
    expect(w.typingCalls.map((c) => [c.to, c.online])).toEqual([['bob', true]]);
  });

  it('pushTyping, the fan-out a group will use: every recipient but the typer, conv the group, answers per recipient', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    const b = await online(w, 'bob');
    const c = await online(w, 'carol');
    w.mailbox('dave');
    const answers = new Map<string, boolean | undefined>();
    const peers = { typing: (to: string, from: string, conv: string, on: boolean) => Promise.resolve(w.mailbox(to).typingFrom(from, conv, on)), forward: () => Promise.reject(new Error('unused')), presence: () => Promise.reject(new Error('unused')) };
    await pushTyping(peers, ['alice', 'bob', 'carol', 'dave'], 'alice', 'grp.1', true, (to, online) => answers.set(to, online));
    expect(Object.fromEntries(answers)).toEqual({ bob: true, carol: true, dave: false });
    for (const x of [b, c]) expect(states(x)).toEqual([{ t: 'typing_state', conv: 'grp.1', from: 'alice', on: true, ttl: TTL }]);
    expect(states(a)).toEqual([]);
  });
});
