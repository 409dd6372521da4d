import { describe, expect, it } from 'vitest';
import { MarkReporter, REPORT_MS } from '../../core/group/marks.js';
import type { GroupResult } from '../../core/group/types.js';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { World } from './core-harness.js';

/**
 * A member's coalesced delivered / read marks (PROTOCOL.md 9.11 "Receipts, aggregated"; core/group/marks.ts): the
 * first mark in a quiet second goes at once from its ack (leading edge), what follows within the second goes from
 * the shard's wake-up at its end (trailing edge). On Cloudflare the shard has ONE alarm (durable-objects/user-shard.ts
 * wakeAt keeps the earliest), so a wake-up for the liveness sweep that comes before the marks are due must not lose
 * them: the web chat's ✓✓ / read on wrangler dev waited for the next sweep (a minute) without this.
 */

async function twoMembers() {
  const w = new World();
  const a = w.connect('a');
  const b = w.connect('b');
  await a.helloWith('phone', HELLO_FEATURES.groups);
  await b.helloWith('phone', HELLO_FEATURES.groups);
  await a.frame({ t: 'group_create', id: 'c1', group: 'g', name: 'g', members: ['b'] });
  await w.settle();
  let n = 0;
  /** a sends; b got it (every entry up to it); its seq. */
  const send = async (): Promise<number> => {
    const id = `s${++n}`;
    await a.frame({ t: 'group_send', id, group: 'g', body: new TextEncoder().encode(id) });
    await w.settle();
    const seq = a.of('group_send_ack').find((f) => f.id === id)!.seq;
    expect(Math.max(...b.of('group_deliver').flatMap((f) => f.entries.map((e) => e.seq)))).toBe(seq);
    return seq;
  };
  const marksOfB = (from: number) => w.groupCalls.slice(from).flatMap((x) => (x.call.op === 'mark' && x.call.from === 'b' ? [[x.call.delivered, x.call.read]] : []));
  const stateOfB = async (ref: string, seq: number) => {
    await a.frame({ t: 'group_receipts_query', ref, group: 'g', seq });
    return a.of('group_receipts').find((f) => f.ref === ref)!.members.find((m) => m.user === 'b')!.state;
  };
  return { w, a, b, send, marksOfB, stateOfB };
}

describe('groups: marks, leading and trailing edge', () => {
  it('a message alone in its second: its ack tells the group at once, with no wake-up of the shard for it', async () => {
    const { w, b, send, marksOfB, stateOfB } = await twoMembers();
    await w.advance(2 * REPORT_MS); // the creation's marks are told and their second is over
    for (let i = 0; i < 3; i++) {
      const seq = await send();
      const calls = w.groupCalls.length;
      w.wakes.delete('b');
      await b.frame({ t: 'group_ack', group: 'g', seq, read: seq });
      expect(marksOfB(calls)).toEqual([[seq, seq]]);
      expect(w.wakes.get('b')).toBeUndefined();
      expect(await stateOfB(`q${i}`, seq)).toBe('read');
      await w.advance(1_500); // a sparse chat: the next message comes 1.5 s later
      expect(marksOfB(calls)).toEqual([[seq, seq]]); // and nothing more went for this one
    }
  });

  it('a burst: one call at once, one at the end of the second with the highest marks, then the next second coalesces too', async () => {
    const { w, b, send, marksOfB, stateOfB } = await twoMembers();
    await w.advance(2 * REPORT_MS);
    const calls = w.groupCalls.length;
    const first = await send();
    await b.frame({ t: 'group_ack', group: 'g', seq: first });
    let last = first;
    for (let i = 0; i < 4; i++) {
      last = await send();
      await b.frame({ t: 'group_ack', group: 'g', seq: last, read: last - 1 });
    }
    expect(marksOfB(calls)).toEqual([[first, 0]]);
    expect(w.wakes.get('b')).toBe(w.now + REPORT_MS);
    await w.advance(REPORT_MS);
    expect(marksOfB(calls)).toEqual([[first, 0], [last, last - 1]]);
    // The trailing call opened a new second: an ack within it waits for its end, not sent at once.
    await w.advance(REPORT_MS / 2);
    await b.frame({ t: 'group_ack', group: 'g', seq: last, read: last });
    expect(marksOfB(calls)).toHaveLength(2);
    await w.advance(REPORT_MS / 2);
    expect(marksOfB(calls)).toEqual([[first, 0], [last, last - 1], [last, last]]);
    expect(await stateOfB('q', last)).toBe('read');
    // Nothing moved since: the next wake-up calls nobody.
    await w.advance(10 * REPORT_MS);
    expect(marksOfB(calls)).toHaveLength(3);
  });

  it('are told at their own time when the shard wakes before they are due', async () => {
    const { w, b, send, stateOfB } = await twoMembers();
    await w.advance(2 * REPORT_MS);
    const one = await send();
    await b.frame({ t: 'group_ack', group: 'g', seq: one });
    const seq = await send();
    await b.frame({ t: 'group_ack', group: 'g', seq, read: seq });
    expect(w.wakes.get('b')).toBeDefined();
    // The alarm fires now for another reason (the sweep), before the marks are due.
    w.wakes.delete('b');
    await w.mailbox('b').onWake();
    expect(w.wakes.get('b')).toBeDefined();
    await w.advance(REPORT_MS);
    expect(await stateOfB('q', seq)).toBe('read');
  });
});

/** MarkReporter alone: a clock, an alarm and a group that answers when the test says. */
function reporter(readReceipts = true) {
  let now = 10_000;
  let wake: number | null = null;
  const calls: { group: string; d: number; r: number; answer: (res: GroupResult | null) => void }[] = [];
  const marks = new MarkReporter({
    clock: { now: () => now },
    scheduler: { wakeAt: (ms) => void (wake = Math.min(ms, wake ?? Infinity)) },
    readReceiptsOn: () => readReceipts,
    send: (group, d, r) => new Promise((answer) => calls.push({ group, d, r, answer })),
  });
  const ok: GroupResult = { ok: true, head: 1_000 };
  return {
    marks,
    calls,
    ok,
    at: (t: number) => void (now = t),
    /** The alarm, when due: cleared and ticked (the platform's one alarm). */
    fire: async () => {
      if (wake === null || wake > now) return;
      wake = null;
      await marks.tick();
    },
    get wake() {
      return wake;
    },
  };
}

describe('MarkReporter', () => {
  it('a group that cannot be reached is told again by the next wake-up, a second later, never at once in a loop', async () => {
    const t = reporter();
    const sent = t.marks.note('g', 5, 0);
    expect(sent).toBeInstanceOf(Promise);
    t.at(12_500); // the call took longer than the window
    t.calls[0]!.answer(null);
    await sent;
    expect(t.calls).toHaveLength(1);
    expect(t.wake).toBe(13_500);
    t.at(13_500);
    await Promise.all([t.fire(), Promise.resolve().then(() => t.calls[1]?.answer(t.ok))]);
    expect(t.calls.map((c) => [c.group, c.d, c.r])).toEqual([['g', 5, 0], ['g', 5, 0]]);
  });

  it('a call that fails while the trailing round waits pushes that round a window past the failure', async () => {
    const t = reporter();
    const sent = t.marks.note('g', 5, 0);
    t.at(10_100);
    expect(t.marks.note('g', 6, 0)).toBeUndefined();
    expect(t.wake).toBe(11_000);
    t.at(10_900);
    t.calls[0]!.answer(null);
    await sent;
    t.at(11_000);
    await t.fire(); // due by the first alarm, but the failure moved the window: asked again, no call yet
    expect(t.calls).toHaveLength(1);
    expect(t.wake).toBe(11_900);
    t.at(11_900);
    const round = t.fire();
    t.calls[1]!.answer(t.ok);
    await round;
    expect(t.calls.map((c) => c.d)).toEqual([5, 6]);
  });

  it('marks only move forward, a late answer included; read receipts off send no read; one call per group per round', async () => {
    const t = reporter(false);
    const first = t.marks.note('g', 5, 5);
    expect(t.marks.note('g', 3, 0)).toBeUndefined(); // lower, and within the window: nothing
    expect(t.marks.note('h', 7, 7)).toBeUndefined(); // another group in the same second: the trailing round
    expect(t.marks.note('g', 9, 9)).toBeUndefined();
    t.at(11_000);
    const trailing = t.marks.tick();
    expect(t.calls.map((c) => [c.group, c.d, c.r])).toEqual([['g', 5, 0], ['g', 9, 0], ['h', 7, 0]]);
    // The trailing answers first, the leading one late: what was told stays the highest.
    t.calls[1]!.answer(t.ok);
    t.calls[2]!.answer(t.ok);
    await trailing;
    t.calls[0]!.answer(t.ok);
    await first;
    t.at(20_000);
    expect(t.marks.note('g', 9, 9)).toBeUndefined(); // told already: no call, no alarm
    expect(t.calls).toHaveLength(3);
    expect(t.wake).toBe(11_000); // only the one armed by the burst (a fake alarm keeps the earliest)
  });
});
