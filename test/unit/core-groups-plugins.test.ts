import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES, type GroupEntry, type TypingState } from '../../protocol/index.js';
import { FakeConn, World } from './core-harness.js';

/**
 * What the 1:1 features plug into groups (issue 10): typing in a group goes through the group's shard to its
 * online members only (ARCHITECTURE.md "Typing"), and a device new to its user starts each group by the history
 * depth (ARCHITECTURE.md "Multi-device sync").
 */

const TTL = 5_000;
const FEATURES = HELLO_FEATURES.groups | HELLO_FEATURES.typing;
const te = new TextEncoder();
const changes = (w: World): number => (w.db.prepare('SELECT total_changes() AS c').get() as { c: number }).c;

async function online(w: World, user: string, device = `${user}-d`): Promise<FakeConn> {
  const c = w.connect(user);
  await c.helloWith(device, FEATURES);
  return c;
}

/** Every group entry the connection was given, acknowledged as the SDK does (cumulatively, per frame). */
async function drain(c: FakeConn, group: string): Promise<GroupEntry[]> {
  const out: GroupEntry[] = [];
  for (let taken = 0, round = 0; round < 100; round++) {
    const frames = c.of('group_deliver').slice(taken);
    if (frames.length === 0) break;
    taken += frames.length;
    for (const f of frames) {
      out.push(...f.entries);
      if (f.entries.length > 0) await c.frame({ t: 'group_ack', group: f.group, seq: f.entries.at(-1)!.seq });
    }
  }
  return out;
}

const states = (c: FakeConn): TypingState[] => c.of('typing_state');

describe('groups: typing', () => {
  it('goes through the group to its online members but the typer, is never stored, and never wakes an offline member', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a1 = await online(w, 'alice', 'a1');
    const a2 = await online(w, 'alice', 'a2');
    const bob = await online(w, 'bob');
    const carol = await online(w, 'carol');
    await a1.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob', 'carol', 'dave'] });
    await w.settle();
    w.evict('dave'); // dave has no device: its shard is not in memory
    const before = changes(w);
    const calls = w.typingCalls.length;
    await a1.frame({ t: 'typing', conv: 'g', on: true });
    for (const c of [bob, carol]) expect(states(c)).toEqual([{ t: 'typing_state', conv: 'g', from: 'alice', on: true, ttl: TTL }]);
    expect(states(a1)).toEqual([]);
    expect(states(a2)).toEqual([]);
    // One call per online member but the typer: none to dave, none to alice.
    expect(w.typingCalls.slice(calls).map((c) => c.to).sort()).toEqual(['bob', 'carol']);
    // A renewal inside the window is coalesced by the typer's shard: no call to the group at all.
    const groupCalls = w.groupCalls.length;
    await a1.frame({ t: 'typing', conv: 'g', on: true });
    expect(w.groupCalls.length).toBe(groupCalls);
    expect(changes(w)).toBe(before);
    // The typing connection goes: the server sends the off itself.
    await a1.disconnect();
    for (const c of [bob, carol]) expect(states(c).map((s) => s.on)).toEqual([true, false]);
    expect(w.typingCalls.some((c) => c.to === 'dave')).toBe(false);
  });

  it('an off stops it at once; an on expires by its ttl at the client', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    const b = await online(w, 'bob');
    await a.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob'] });
    await a.frame({ t: 'typing', conv: 'g', on: true });
    await a.frame({ t: 'typing', conv: 'g', on: false });
    expect(states(b).map((s) => [s.on, s.ttl])).toEqual([
      [true, TTL],
      [false, 0],
    ]);
    // An off after the on expired (the client cleared it by its ttl) is not sent again.
    await a.frame({ t: 'typing', conv: 'g', on: true });
    w.now += TTL + 1;
    await a.frame({ t: 'typing', conv: 'g', on: false });
    expect(states(b).map((s) => s.on)).toEqual([true, false, true]);
  });

  it('a non-member reaches nobody; a former member is refused not_member with the group as ref', async () => {
    const w = new World({ typingTtlMs: TTL });
    const a = await online(w, 'alice');
    const b = await online(w, 'bob');
    const eve = await online(w, 'eve');
    await a.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob', 'eve'] });
    const mallory = await online(w, 'mallory');
    await mallory.frame({ t: 'typing', conv: 'g', on: true });
    await a.frame({ t: 'group_remove', id: 'r', group: 'g', member: 'eve' });
    await w.settle();
    await eve.frame({ t: 'typing', conv: 'g', on: true });
    expect(eve.of('error').map((e) => [e.code, e.ref])).toEqual([['not_member', 'g']]);
    for (const c of [a, b]) expect(states(c)).toEqual([]);
    expect(mallory.of('group_deliver')).toEqual([]);
  });
});

describe('groups: a new device\'s history (IRIS_HISTORY_DEPTH)', () => {
  async function setup(depth: number, retention?: number): Promise<{ w: World; a: FakeConn; head: number }> {
    const w = new World({ historyDepth: depth, ...(retention !== undefined && { groupRetentionMs: retention }) });
    const a = await online(w, 'alice', 'phone');
    const b = await online(w, 'bob', 'phone');
    await a.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob'] });
    for (let i = 0; i < 20; i++) await b.frame({ t: 'group_send', id: `m${i}`, group: 'g', body: te.encode(`m${i}`) });
    const got = await drain(a, 'g');
    await a.disconnect(); // its cursor is stored at close
    return { w, a, head: got.at(-1)!.seq };
  }

  it('starts depth entries back when the user\'s known devices got everything', async () => {
    const { w, head } = await setup(5);
    const laptop = await online(w, 'alice', 'laptop');
    expect((await drain(laptop, 'g')).map((e) => e.seq)).toEqual([head - 4, head - 3, head - 2, head - 1, head]);
    expect(laptop.of('error')).toEqual([]);
    // Known now: a reconnect resumes at its cursor, nothing again.
    await laptop.disconnect();
    const again = await online(w, 'alice', 'laptop');
    expect(await drain(again, 'g')).toEqual([]);
  });

  it('depth 0: only what no known device of the user acknowledged (nothing here)', async () => {
    const { w } = await setup(0);
    const laptop = await online(w, 'alice', 'laptop');
    expect(await drain(laptop, 'g')).toEqual([]);
  });

  it('the first device of a user in a group gets everything of its range, whatever the depth', async () => {
    const w = new World({ historyDepth: 3 });
    const a = await online(w, 'alice', 'phone');
    await a.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob'] });
    for (let i = 0; i < 10; i++) await a.frame({ t: 'group_send', id: `m${i}`, group: 'g', body: te.encode(`m${i}`) });
    const bob = await online(w, 'bob', 'tablet');
    expect((await drain(bob, 'g')).filter((e) => e.kind === 'message')).toHaveLength(10);
  });

  it('the log trimmed past the start: the new device starts at the oldest kept, with no history_gap', async () => {
    const { w, head } = await setup(15, 3_600_000);
    w.now += 2 * 3_600_000;
    const b = await online(w, 'bob', 'phone');
    await b.frame({ t: 'group_send', id: 'late', group: 'g', body: te.encode('late') }); // the trim runs on a write
    const laptop = await online(w, 'alice', 'laptop');
    const got = await drain(laptop, 'g');
    expect(got.map((e) => e.seq)).toEqual([head + 1]);
    expect(laptop.of('error')).toEqual([]);
  });
});

describe('groups: message references', () => {
  async function group(w: World) {
    const a = w.connect('alice');
    await a.helloWith('a', FEATURES | HELLO_FEATURES.refs);
    const b = w.connect('bob');
    await b.helloWith('b', FEATURES | HELLO_FEATURES.refs);
    const old = w.connect('carol');
    await old.helloWith('c', FEATURES); // a client written before references
    await a.frame({ t: 'group_create', id: 'c', group: 'g', name: 'g', members: ['bob', 'carol'] });
    await a.frame({ t: 'group_send', id: 'm1', group: 'g', body: te.encode('hello') });
    const seq = a.of('group_send_ack').find((x) => x.id === 'm1')!.seq;
    return { a, b, old, seq };
  }
  const lastError = (c: FakeConn) => c.of('error').at(-1);

  it('reply, react, edit, delete: checked in the group shard, stored in the log, delivered with their ref', async () => {
    const w = new World({ editWindowS: 60, deleteWindowS: 60 });
    const { a, b, seq } = await group(w);
    const m = String(seq);
    await b.frame({ t: 'group_send', id: 'r', group: 'g', body: te.encode('hi!'), ref: { kind: 'reply', msg: m } });
    await b.frame({ t: 'group_send', id: 'x', group: 'g', body: te.encode('👍'), ref: { kind: 'react', msg: m } });
    await a.frame({ t: 'group_send', id: 'e', group: 'g', body: te.encode('hello (edited)'), ref: { kind: 'edit', msg: m } });
    await a.frame({ t: 'group_send', id: 'd', group: 'g', body: new Uint8Array(0), ref: { kind: 'delete', msg: m } });
    expect(b.of('error')).toEqual([]);
    expect(a.of('error')).toEqual([]);
    const got = (await drain(b, 'g')).filter((e) => e.ref !== undefined).map((e) => [e.from, e.ref!.kind, e.ref!.msg]);
    expect(got).toEqual([
      ['bob', 'reply', m],
      ['bob', 'react', m],
      ['alice', 'edit', m],
      ['alice', 'delete', m],
    ]);
    // Stored as two columns of the log row, as the inbox's references are.
    const rows = w.db.prepare(`SELECT ref_kind, ref_msg FROM group_log WHERE grp = 'g' AND ref_kind <> 0`).all();
    expect(rows).toHaveLength(4);
  });

  it('the same refusals as 1:1: only the sender edits or deletes, within the window; unknown or unseen targets are bad_ref; nothing is stored', async () => {
    const w = new World({ editWindowS: 60, deleteWindowS: 0 });
    const { a, b, seq } = await group(w);
    const m = String(seq);
    const before = (w.db.prepare(`SELECT count(*) AS c FROM group_log`).get() as { c: number }).c;
    await b.frame({ t: 'group_send', id: 'e', group: 'g', body: te.encode('x'), ref: { kind: 'edit', msg: m } });
    expect(lastError(b)).toMatchObject({ code: 'ref_not_allowed', ref: 'e' });
    await a.frame({ t: 'group_send', id: 'd', group: 'g', body: te.encode(''), ref: { kind: 'delete', msg: m } });
    expect(lastError(a)).toMatchObject({ code: 'ref_expired', ref: 'd' });
    await a.frame({ t: 'group_send', id: 'n', group: 'g', body: te.encode('x'), ref: { kind: 'reply', msg: '999' } });
    expect(lastError(a)).toMatchObject({ code: 'bad_ref', ref: 'n' });
    await a.frame({ t: 'group_send', id: 'j', group: 'g', body: te.encode('x'), ref: { kind: 'reply', msg: '1' } }); // the create entry
    expect(lastError(a)).toMatchObject({ code: 'bad_ref', ref: 'j' });
    w.now += 61_000;
    await a.frame({ t: 'group_send', id: 'late', group: 'g', body: te.encode('x'), ref: { kind: 'edit', msg: m } });
    expect(lastError(a)).toMatchObject({ code: 'ref_expired', ref: 'late' });
    // A member added later never saw the message: it cannot refer to it.
    await a.frame({ t: 'group_add', id: 'add', group: 'g', members: ['dave'] });
    const dave = w.connect('dave');
    await dave.helloWith('d', FEATURES | HELLO_FEATURES.refs);
    await dave.frame({ t: 'group_send', id: 'r', group: 'g', body: te.encode('x'), ref: { kind: 'react', msg: m } });
    expect(lastError(dave)).toMatchObject({ code: 'bad_ref', ref: 'r' });
    const after = (w.db.prepare(`SELECT count(*) AS c FROM group_log`).get() as { c: number }).c;
    expect(after).toBe(before + 1); // dave's join only
  });

  it('a client without refs gets a reply as a plain message, no edit or reaction, and its ack covers what it skipped', async () => {
    const w = new World({ editWindowS: 60 });
    const { a, b, old, seq } = await group(w);
    const m = String(seq);
    await b.frame({ t: 'group_send', id: 'r', group: 'g', body: te.encode('re'), ref: { kind: 'reply', msg: m } });
    await b.frame({ t: 'group_send', id: 'x', group: 'g', body: te.encode('+1'), ref: { kind: 'react', msg: m } });
    await a.frame({ t: 'group_send', id: 'e', group: 'g', body: te.encode('edited'), ref: { kind: 'edit', msg: m } });
    const got = await drain(old, 'g');
    const msgs = got.filter((e) => e.kind === 'message');
    expect(msgs.map((e) => new TextDecoder().decode(e.body))).toEqual(['hello', 're']);
    expect(msgs.every((e) => e.ref === undefined)).toBe(true);
    // The ack of the reply covered the reaction and the edit after it: the stored cursor is the head.
    const head = a.of('group_send_ack').find((x) => x.id === 'e')!.seq;
    await old.disconnect();
    expect((w.db.prepare(`SELECT cursor FROM group_cursors WHERE user = 'carol' AND grp = 'g'`).get() as { cursor: number }).cursor).toBe(head);
  });
});
