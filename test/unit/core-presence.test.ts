import { describe, expect, it } from 'vitest';
import type { PresenceInfo } from '../../protocol/index.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Presence subscriptions (PROTOCOL.md 8.6): interest of online subscribers, in memory at both ends. Subscribe
 * answers the subjects' current state at once; a subject's change is pushed to its current watchers, offline
 * only after the hold (a flap inside it pushes nothing); the subject's setting hides it; nothing is stored.
 */

const HOLD = 1_000;

async function online(w: World, user: string, device = `${user}-d`): Promise<FakeConn> {
  const c = w.connect(user);
  await c.hello(device);
  return c;
}

async function subscribe(c: FakeConn, users: string[], ref = 's1'): Promise<void> {
  await c.frame({ t: 'presence_subscribe', ref, users });
}

/** Every presence record pushed on c under ref, in arrival order. */
function records(c: FakeConn, ref = 's1'): PresenceInfo[] {
  return c.of('presence').filter((p) => p.ref === ref).flatMap((p) => p.users);
}

describe('presence subscriptions', () => {
  it('subscribe answers the current state at once, one watch call per subject, no rows written', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    await online(w, 'bob');
    const carol = await online(w, 'carol');
    await carol.disconnect();
    const seenCarol = w.now;
    w.now += 10;
    const alice = await online(w, 'alice');
    const before = w.db.prepare(`SELECT total_changes() AS c`).get() as { c: number };
    await subscribe(alice, ['bob', 'carol', 'dave']);
    expect(records(alice)).toEqual([
      { user: 'bob', online: true, lastSeen: w.now },
      { user: 'carol', online: false, lastSeen: seenCarol },
      { user: 'dave', online: false, lastSeen: 0 },
    ]);
    expect(w.watchCalls.filter((c) => c.watcher === 'alice' && c.on)).toHaveLength(3);
    const after = w.db.prepare(`SELECT total_changes() AS c`).get() as { c: number };
    expect(after.c).toBe(before.c);
  });

  it('a subject going online and (after the hold) offline is pushed to an online subscriber', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob']);
    const bob = await online(w, 'bob');
    expect(records(alice).at(-1)).toEqual({ user: 'bob', online: true, lastSeen: w.now });
    await bob.disconnect();
    const seen = w.now;
    // Nothing before the hold is over.
    expect(records(alice)).toHaveLength(2);
    await w.advance(HOLD);
    expect(records(alice).at(-1)).toEqual({ user: 'bob', online: false, lastSeen: seen });
    expect(records(alice)).toHaveLength(3);
  });

  it('a flap within the hold is coalesced: nothing is pushed', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    await online(w, 'bob');
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob']);
    const pushesBefore = w.pushCalls.length;
    for (let i = 0; i < 5; i++) {
      const c = [...w.sockets('bob')][0]!;
      await c.disconnect();
      await w.advance(HOLD / 4);
      await online(w, 'bob', `bob-${i}`);
    }
    await w.advance(HOLD * 2);
    expect(w.pushCalls.length).toBe(pushesBefore);
    expect(records(alice)).toHaveLength(1);
  });

  it('visibility nobody hides the subject: no record, no push, and presence_query reads never seen', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const bob = await online(w, 'bob');
    await bob.frame({ t: 'set_presence', visibility: 'nobody' });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob']);
    expect(records(alice)).toEqual([]);
    await bob.disconnect();
    await w.advance(HOLD);
    const bob2 = await online(w, 'bob', 'bob-2');
    expect(records(alice)).toEqual([]);
    expect(w.pushCalls.filter((p) => p.watcher === 'alice')).toEqual([]);
    await alice.frame({ t: 'presence_query', ref: 'q', users: ['bob'] });
    expect(records(alice, 'q')).toEqual([{ user: 'bob', online: false, lastSeen: 0 }]);
    // The subject itself still sees its own state.
    await bob2.frame({ t: 'presence_query', ref: 'q', users: ['bob'] });
    expect(bob2.of('presence').at(-1)!.users[0]!.online).toBe(true);
  });

  it('visibility contacts shows the subject only to users it exchanged messages with', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const bob = await online(w, 'bob');
    await bob.frame({ t: 'set_presence', visibility: 'contacts' });
    const alice = await online(w, 'alice');
    const carol = await online(w, 'carol');
    await alice.post('bob', 'hi', 'c1');
    await subscribe(alice, ['bob']);
    await subscribe(carol, ['bob']);
    expect(records(alice)).toEqual([{ user: 'bob', online: true, lastSeen: w.now }]);
    expect(records(carol)).toEqual([]);
    await bob.disconnect();
    await w.advance(HOLD);
    expect(records(alice).at(-1)!.online).toBe(false);
    expect(records(carol)).toEqual([]);
    expect(w.pushCalls.filter((p) => p.watcher === 'carol')).toEqual([]);
  });

  it('a list over the cap is refused with invalid_field and the ref; nothing is watched', async () => {
    const w = new World({ presenceSubscriptions: 3 });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['a1', 'a2', 'a3', 'a4'], 'big');
    const e = alice.of('error').at(-1)!;
    expect(e.code).toBe('invalid_field');
    expect(e.ref).toBe('big');
    expect(w.watchCalls).toEqual([]);
  });

  it('the last device going offline unwatches; an offline subscriber is never called; re-subscribe repairs', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob']);
    await alice.disconnect();
    expect(w.watchCalls.filter((c) => c.watcher === 'alice' && !c.on).map((c) => c.subject)).toEqual(['bob']);
    const bob = await online(w, 'bob');
    expect(w.pushCalls.filter((p) => p.watcher === 'alice')).toEqual([]);
    // alice reconnects and subscribes again: she gets bob's current state at once, then his changes.
    const alice2 = await online(w, 'alice', 'alice-2');
    await subscribe(alice2, ['bob'], 's2');
    expect(records(alice2, 's2')).toEqual([{ user: 'bob', online: true, lastSeen: w.now }]);
    await bob.disconnect();
    await w.advance(HOLD);
    expect(records(alice2, 's2').at(-1)!.online).toBe(false);
  });

  it('a subscriber that lost its list (shard evicted) answers "not wanted" and is dropped after one push', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob']);
    // The subscriber's shard restarts and its socket is gone without a close event reaching the core.
    w.sockets('alice').clear();
    w.evict('alice');
    await online(w, 'bob');
    const bob = [...w.sockets('bob')][0]!;
    await bob.disconnect();
    await w.advance(HOLD);
    await online(w, 'bob', 'bob-2');
    expect(w.pushCalls.filter((p) => p.watcher === 'alice')).toHaveLength(1);
  });

  it('leases: a watcher that does not renew is dropped; an online subscriber renews with one call per subject', async () => {
    const w = new World({ presenceHoldMs: HOLD, presenceLeaseMs: 10_000 });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob', 'carol']);
    const calls = w.watchCalls.length;
    await w.advance(5_000);
    expect(w.watchCalls.length).toBe(calls + 2);
    // Still watched after the first lease would have expired.
    await w.advance(6_000);
    await online(w, 'bob');
    expect(records(alice).at(-1)).toMatchObject({ user: 'bob', online: true });
  });

  it('replacing the list unwatches the dropped subjects, and their changes stop', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob', 'carol']);
    await subscribe(alice, ['carol'], 's2');
    expect(w.watchCalls.filter((c) => !c.on).map((c) => c.subject)).toEqual(['bob']);
    await online(w, 'bob');
    await online(w, 'carol');
    expect(w.pushCalls.map((p) => p.info.user)).toEqual(['carol']);
    expect(records(alice, 's2').map((r) => [r.user, r.online])).toEqual([
      ['carol', false],
      ['carol', true],
    ]);
  });

  it('a subject nobody watches arms no wake-up when it goes offline', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const bob = await online(w, 'bob');
    w.wakes.clear();
    await bob.disconnect();
    expect(w.wakes.has('bob')).toBe(false);
  });

  it('a client that never subscribes gets no unasked presence frame', async () => {
    const w = new World({ presenceHoldMs: HOLD });
    const alice = await online(w, 'alice');
    await alice.frame({ t: 'presence_query', ref: 'q', users: ['bob'] });
    await online(w, 'bob');
    expect(alice.of('presence')).toHaveLength(1);
  });

  it('subscribe spends a token from the user bucket', async () => {
    const w = new World({ ratePerSec: 1, rateBurst: 1 });
    const alice = await online(w, 'alice');
    await subscribe(alice, ['bob'], 'a');
    await subscribe(alice, ['bob'], 'b');
    const e = alice.of('error').at(-1)!;
    expect(e.code).toBe('rate_limited');
    expect(e.ref).toBe('b');
  });
});
