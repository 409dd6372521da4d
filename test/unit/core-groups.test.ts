import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES, type GroupEntry } from '../../protocol/index.js';
import { FakeConn, World } from './core-harness.js';

/**
 * Groups in the core (design B, docs/ARCHITECTURE.md "Groups"): the group shard's log and roster, the push to
 * online members, the pull from a device's cursor, membership as entries. Every check compares what devices
 * received as an application would see it (core-groups-app.ts: a per-group cursor drops what was processed).
 */

const te = new TextEncoder();
const td = new TextDecoder();

/** A device as the SDK runs it: a cursor per group, entries below it dropped, everything acknowledged. */
class App {
  readonly seen = new Map<string, GroupEntry[]>();
  readonly cursor = new Map<string, number>();
  raw = 0;
  private taken = 0;
  conn: FakeConn;

  constructor(
    readonly world: World,
    readonly user: string,
    readonly device: string,
  ) {
    this.conn = world.connect(user);
  }

  async hello(): Promise<void> {
    await this.conn.helloWith(this.device, HELLO_FEATURES.groups);
    await this.sync();
  }

  /** Takes every group_deliver frame not yet processed, and acknowledges per group (what the SDK does). */
  async sync(): Promise<void> {
    for (let round = 0; round < 1000; round++) {
      const frames = this.conn.of('group_deliver').slice(this.taken);
      this.taken += frames.length;
      if (frames.length === 0) return;
      const acks = new Map<string, number>();
      for (const f of frames) {
        for (const e of f.entries) {
          this.raw++;
          const c = this.cursor.get(f.group) ?? 0;
          if (e.seq <= c) continue;
          this.cursor.set(f.group, e.seq);
          const list = this.seen.get(f.group) ?? [];
          list.push(e);
          this.seen.set(f.group, list);
        }
        acks.set(f.group, Math.max(acks.get(f.group) ?? 0, f.entries.at(-1)?.seq ?? 0));
      }
      for (const [group, seq] of acks) await this.conn.frame({ t: 'group_ack', group, seq });
    }
  }

  async reconnect(): Promise<void> {
    await this.conn.disconnect();
    this.conn = this.world.connect(this.user);
    this.taken = 0;
    await this.hello();
  }

  messages(group: string): string[] {
    return (this.seen.get(group) ?? []).filter((e) => e.kind === 'message').map((e) => `${e.from}:${td.decode(e.body)}`);
  }

  seqs(group: string): number[] {
    return (this.seen.get(group) ?? []).map((e) => e.seq);
  }
}

async function create(app: App, group: string, members: string[], id = `create-${group}`): Promise<void> {
  await app.conn.frame({ t: 'group_create', id, group, name: group, members });
  await app.sync();
}

async function send(app: App, group: string, text: string, id = `${app.user}-${text}`): Promise<void> {
  await app.conn.frame({ t: 'group_send', id, group, body: te.encode(text) });
}

async function syncAll(apps: App[]): Promise<void> {
  for (let i = 0; i < 5; i++) for (const a of apps) await a.sync();
}

describe('groups: send, roster, refusals', () => {
  it('a group message reaches every member, the sender\'s other device included, once, acked after durable', async () => {
    const w = new World();
    const alice = new App(w, 'alice', 'phone');
    const alice2 = new App(w, 'alice', 'laptop');
    const bob = new App(w, 'bob', 'phone');
    const carol = new App(w, 'carol', 'phone');
    const all = [alice, alice2, bob, carol];
    for (const a of all) await a.hello();
    await create(alice, 'g1', ['bob', 'carol']);
    const ack = alice.conn.of('group_send_ack')[0]!;
    expect(ack).toMatchObject({ t: 'group_send_ack', id: 'create-g1', group: 'g1', dup: false });
    await send(alice, 'g1', 'hello');
    await syncAll(all);
    for (const a of all) expect(a.messages('g1')).toEqual(['alice:hello']);
    // Everyone saw the same membership entries before it: create, then two joins.
    for (const a of all) expect((a.seen.get('g1') ?? []).map((e) => e.kind)).toEqual(['create', 'join', 'join', 'message']);
    const sendAck = alice.conn.of('group_send_ack').find((f) => f.id === 'alice-hello')!;
    expect(sendAck.seq).toBe(4);
  });

  it('a retried send (same client id) gets the same seq with dup, and nothing new is stored', async () => {
    const w = new World();
    const alice = new App(w, 'alice', 'phone');
    const bob = new App(w, 'bob', 'phone');
    await alice.hello();
    await bob.hello();
    await create(alice, 'g', ['bob']);
    await send(alice, 'g', 'once', 'cid-1');
    await send(alice, 'g', 'once', 'cid-1');
    await syncAll([alice, bob]);
    const acks = alice.conn.of('group_send_ack').filter((f) => f.id === 'cid-1');
    expect(acks.map((a) => [a.seq, a.dup])).toEqual([
      [3, false],
      [3, true],
    ]);
    expect(bob.messages('g')).toEqual(['alice:once']);
    expect((w.db.prepare(`SELECT count(*) AS c FROM group_log WHERE grp = 'g' AND kind = 1`).get() as { c: number }).c).toBe(1);
  });

  it('a non-member is refused (not_member) and learns nothing: no entry, no roster', async () => {
    const w = new World();
    const alice = new App(w, 'alice', 'phone');
    const eve = new App(w, 'eve', 'phone');
    await alice.hello();
    await eve.hello();
    await create(alice, 'g', []);
    await send(alice, 'g', 'secret');
    await send(eve, 'g', 'let me in', 'e1');
    await eve.conn.frame({ t: 'group_roster_query', ref: 'r1', group: 'g' });
    await eve.conn.frame({ t: 'group_add', id: 'e2', group: 'g', members: ['eve'] });
    // A group that does not exist looks the same as one eve is not in.
    await eve.conn.frame({ t: 'group_roster_query', ref: 'r2', group: 'nope' });
    await syncAll([alice, eve]);
    expect(eve.conn.of('error').map((e) => [e.code, e.ref])).toEqual([
      ['not_member', 'e1'],
      ['not_member', 'r1'],
      ['not_member', 'e2'],
      ['not_member', 'r2'],
    ]);
    expect(eve.conn.of('group_deliver')).toEqual([]);
    expect(eve.conn.of('group_roster')).toEqual([]);
    expect(alice.messages('g')).toEqual(['alice:secret']);
  });

  it('roster: members with their roles, to members only; admins add, remove, promote, rename', async () => {
    const w = new World();
    const alice = new App(w, 'alice', 'phone');
    const bob = new App(w, 'bob', 'phone');
    await alice.hello();
    await bob.hello();
    await create(alice, 'g', ['bob']);
    await bob.conn.frame({ t: 'group_add', id: 'b1', group: 'g', members: ['carol'] });
    expect(bob.conn.of('error').map((e) => e.code)).toEqual(['not_admin']);
    await alice.conn.frame({ t: 'group_role', id: 'a1', group: 'g', member: 'bob', admin: true });
    await bob.conn.frame({ t: 'group_add', id: 'b2', group: 'g', members: ['carol'] });
    await bob.conn.frame({ t: 'group_update', id: 'b3', group: 'g', name: 'The G', meta: Uint8Array.of(7) });
    await bob.conn.frame({ t: 'group_roster_query', ref: 'r', group: 'g' });
    const roster = bob.conn.of('group_roster')[0]!;
    expect(roster).toMatchObject({ name: 'The G', meta: Uint8Array.of(7), done: true });
    expect(roster.members.sort((a, b) => a.user.localeCompare(b.user))).toEqual([
      { user: 'alice', admin: true },
      { user: 'bob', admin: true },
      { user: 'carol', admin: false },
    ]);
    await syncAll([alice, bob]);
    expect((bob.seen.get('g') ?? []).map((e) => e.kind)).toEqual(['create', 'join', 'role', 'join', 'update']);
  });

  it('the member cap: a create or add past it is refused with group_full, and nothing is added', async () => {
    const w = new World({ groupMemberCap: 3 });
    const alice = new App(w, 'alice', 'phone');
    await alice.hello();
    await alice.conn.frame({ t: 'group_create', id: 'c1', group: 'big', name: 'big', members: ['b', 'c', 'd'] });
    await create(alice, 'g', ['b', 'c']);
    await alice.conn.frame({ t: 'group_add', id: 'a1', group: 'g', members: ['d'] });
    expect(alice.conn.of('error').map((e) => [e.code, e.ref])).toEqual([
      ['group_full', 'c1'],
      ['group_full', 'a1'],
    ]);
    await alice.conn.frame({ t: 'group_roster_query', ref: 'r', group: 'g' });
    expect(alice.conn.of('group_roster')[0]!.members).toHaveLength(3);
  });
});

describe('groups: one order, membership as entries', () => {
  it('5 members see the same order across concurrent senders and membership changes; a removed member nothing after its removal; a re-added one only its ranges', async () => {
    const w = new World();
    const names = ['m0', 'm1', 'm2', 'm3', 'm4'];
    const apps = names.map((n) => new App(w, n, 'phone'));
    for (const a of apps) await a.hello();
    await create(apps[0]!, 'g', names.slice(1));
    for (let round = 0; round < 30; round++) {
      // Concurrent senders: every member's frame is in flight at once.
      await Promise.all(apps.map((a, i) => a.conn.world.mailbox(a.user).onMessage(a.conn, encodeSend(`r${round}-${i}`, 'g'))));
      if (round === 10) await apps[0]!.conn.frame({ t: 'group_remove', id: 'rm', group: 'g', member: 'm4' });
      if (round === 20) await apps[0]!.conn.frame({ t: 'group_add', id: 'readd', group: 'g', members: ['m4'] });
      await w.settle();
      await syncAll(apps);
    }
    await syncAll(apps);
    const full = apps[0]!.seqs('g');
    for (const a of apps.slice(1, 4)) expect(a.seqs('g')).toEqual(full);
    // Every member's history is in the same order: the same (seq -> entry) everywhere.
    const bySeq = new Map(apps[0]!.seen.get('g')!.map((e) => [e.seq, `${e.kind}:${e.from}:${td.decode(e.body)}`]));
    for (const a of apps) for (const e of a.seen.get('g')!) expect(`${e.kind}:${e.from}:${td.decode(e.body)}`).toBe(bySeq.get(e.seq));
    // m4: up to and including its removal, then nothing until its re-adding's join, then everything.
    const m4 = apps[4]!.seen.get('g')!;
    const removal = apps[0]!.seen.get('g')!.find((e) => e.kind === 'leave' && e.subject === 'm4')!.seq;
    const rejoin = apps[0]!.seen.get('g')!.filter((e) => e.kind === 'join' && e.subject === 'm4').at(-1)!.seq;
    expect(m4.some((e) => e.seq > removal && e.seq < rejoin)).toBe(false);
    expect(m4.map((e) => e.seq)).toEqual(full.filter((s) => s <= removal || s >= rejoin));
    // m4's sends while removed were refused, its others accepted.
    expect(apps[4]!.conn.of('error').every((e) => e.code === 'not_member')).toBe(true);
    expect(apps[4]!.conn.of('error').length).toBeGreaterThan(0);
  });

  it('a member\'s device offline for the whole run catches up exactly once, in order, after the others', async () => {
    const w = new World();
    const alice = new App(w, 'alice', 'phone');
    const bob = new App(w, 'bob', 'phone');
    await alice.hello();
    await bob.hello();
    await create(alice, 'g', ['bob', 'carol']);
    for (let i = 0; i < 300; i++) {
      await send(i % 2 ? alice : bob, 'g', `m${i}`);
      if (i % 50 === 0) await syncAll([alice, bob]);
    }
    await syncAll([alice, bob]);
    const carol = new App(w, 'carol', 'tablet');
    await carol.hello();
    await syncAll([carol]);
    expect(carol.seqs('g')).toEqual(alice.seqs('g'));
    expect(carol.raw).toBe(carol.seqs('g').length);
    expect(carol.messages('g')).toHaveLength(300);
    // A reconnect in the middle of nothing new brings nothing twice to the app.
    await carol.reconnect();
    await syncAll([carol]);
    expect(carol.messages('g')).toHaveLength(300);
  });

  it('a slow member (its pushes fail) costs the others nothing and catches up by pull once reachable', async () => {
    const w = new World();
    const apps = ['a', 'b', 'c'].map((u) => new App(w, u, 'phone'));
    for (const a of apps) await a.hello();
    await create(apps[0]!, 'g', ['b', 'c']);
    w.failPushes.add('c');
    for (let i = 0; i < 20; i++) await send(apps[i % 2]!, 'g', `x${i}`);
    await syncAll(apps);
    expect(apps[1]!.messages('g')).toHaveLength(20);
    expect(apps[2]!.messages('g')).toHaveLength(0);
    w.failPushes.delete('c');
    await w.advance(60_000);
    await syncAll(apps);
    expect(apps[2]!.seqs('g')).toEqual(apps[0]!.seqs('g'));
  });
});

describe('groups: receipts, aggregated', () => {
  it('the sender asks who received and who read its message: one frame, from marks coalesced per member', async () => {
    const w = new World();
    const [a, b, c] = ['a', 'b', 'c'].map((u) => new App(w, u, 'phone')) as [App, App, App];
    for (const x of [a, b, c]) await x.hello();
    await create(a, 'g', ['b', 'c', 'd']);
    await send(a, 'g', 'read me', 'msg');
    const seq = a.conn.of('group_send_ack').find((f) => f.id === 'msg')!.seq;
    const calls = w.groupCalls.length;
    await syncAll([a, b, c]);
    const marks = (from: number) => w.groupCalls.slice(from).map((x) => (x.call.op === 'mark' ? `${x.call.from}:${x.call.delivered}/${x.call.read}` : x.call.op));
    // b's and c's first acks in a quiet second are told at once (leading edge), no wake-up needed; a told the
    // group its mark of the creation this second (the clock has not moved), so its ack waits for the second's end.
    expect(marks(calls).sort()).toEqual([`b:${seq}/0`, `c:${seq}/0`]);
    // b reads it (an ack carrying read); c only got it; d never connected.
    const later = w.groupCalls.length;
    await b.conn.frame({ t: 'group_ack', group: 'g', seq, read: seq });
    expect(marks(later)).toEqual([]);
    await w.advance(1_000);
    // What moved within the second goes at its end, one call per member (the trailing edge), not one per ack.
    expect(marks(later).sort()).toEqual([`a:${seq}/0`, `b:${seq}/${seq}`]);
    await a.conn.frame({ t: 'group_receipts_query', ref: 'q', group: 'g', seq });
    const r = a.conn.of('group_receipts')[0]!;
    expect(r).toMatchObject({ ref: 'q', group: 'g', seq, done: true });
    expect(r.members.sort((x, y) => x.user.localeCompare(y.user))).toEqual([
      { user: 'b', state: 'read' },
      { user: 'c', state: 'delivered' },
      { user: 'd', state: 'sent' },
    ]);
    // Only the sender asks; a read beyond the ack is refused.
    await b.conn.frame({ t: 'group_receipts_query', ref: 'q2', group: 'g', seq });
    expect(b.conn.of('error').map((e) => [e.code, e.ref])).toEqual([['bad_state', 'q2']]);
    await c.conn.frame({ t: 'group_ack', group: 'g', seq: 1, read: 2 });
    expect(c.conn.of('error').map((e) => e.code)).toEqual(['bad_ack']);
    // The aggregate survives a restart of the group's shard: the packed row is written within a second.
    await w.advance(1_000);
    w.evictGroup('g');
    await a.conn.frame({ t: 'group_receipts_query', ref: 'q3', group: 'g', seq });
    expect(a.conn.of('group_receipts').find((f) => f.ref === 'q3')!.members.find((m) => m.user === 'b')!.state).toBe('read');
  });
});

describe('groups: read position on every device, and the read-receipt setting', () => {
  it("a mark reaches the user's other devices as group_read, a new connection is told it, and with read receipts off the group never learns it", async () => {
    const w = new World();
    const a = new App(w, 'a', 'phone');
    const b = new App(w, 'b', 'phone');
    const b2 = new App(w, 'b', 'laptop');
    for (const x of [a, b, b2]) await x.hello();
    await create(a, 'g', ['b']);
    await send(a, 'g', 'one', 'm1');
    await send(a, 'g', 'two', 'm2');
    await syncAll([a, b, b2]);
    const seq = a.conn.of('group_send_ack').find((f) => f.id === 'm2')!.seq;
    await b.conn.frame({ t: 'group_ack', group: 'g', seq, read: seq - 1 });
    for (const x of [b, b2]) expect(x.conn.of('group_read')).toEqual([{ t: 'group_read', group: 'g', seq: seq - 1 }]);
    // Not moved: nothing written, nothing sent.
    await b2.conn.frame({ t: 'group_ack', group: 'g', seq, read: seq - 1 });
    expect(b.conn.of('group_read')).toHaveLength(1);
    // A connection that comes later is told where the user is, after welcome.
    await b2.reconnect();
    expect(b2.conn.of('group_read')).toEqual([{ t: 'group_read', group: 'g', seq: seq - 1 }]);
    // Read receipts off: the devices still share the position, the group learns only what was delivered.
    await b.conn.frame({ t: 'set_settings', readReceipts: false });
    await b.conn.frame({ t: 'group_ack', group: 'g', seq, read: seq });
    expect(b2.conn.of('group_read').at(-1)).toEqual({ t: 'group_read', group: 'g', seq });
    await w.advance(1_000);
    await a.conn.frame({ t: 'group_receipts_query', ref: 'q', group: 'g', seq });
    expect(a.conn.of('group_receipts')[0]!.members).toEqual([{ user: 'b', state: 'delivered' }]);
  });
});

describe('groups: retention', () => {
  it('entries past IRIS_GROUP_RETENTION_MS are deleted; a device behind them gets history_gap, then what is kept', async () => {
    const w = new World({ groupRetentionMs: 3_600_000 });
    const a = new App(w, 'a', 'phone');
    await a.hello();
    await create(a, 'g', ['b']);
    for (let i = 0; i < 10; i++) await send(a, 'g', `old${i}`);
    await w.advance(2 * 3_600_000);
    await send(a, 'g', 'new');
    await syncAll([a]);
    expect((w.db.prepare(`SELECT count(*) AS c FROM group_log WHERE grp = 'g'`).get() as { c: number }).c).toBe(1);
    // b was offline since the group was made: its cursor is behind what is kept.
    const b = new App(w, 'b', 'phone');
    await b.hello();
    await syncAll([b]);
    expect(b.conn.of('error').map((e) => [e.code, e.ref])).toEqual([['history_gap', 'g']]);
    expect(b.messages('g')).toEqual(['a:new']);
    // A member that joins now has lost nothing of its range: no gap.
    await a.conn.frame({ t: 'group_add', id: 'add-c', group: 'g', members: ['c'] });
    const c = new App(w, 'c', 'phone');
    await c.hello();
    await syncAll([c]);
    expect(c.conn.of('error')).toEqual([]);
    expect((c.seen.get('g') ?? []).map((e) => e.kind)).toEqual(['join']);
  });
});

describe('groups: restarts', () => {
  it('a group shard restarted from storage still pushes to the members that were online, and knows their ranges', async () => {
    const w = new World();
    const apps = ['a', 'b', 'c'].map((u) => new App(w, u, 'phone'));
    for (const a of apps) await a.hello();
    await create(apps[0]!, 'g', ['b', 'c']);
    await send(apps[1]!, 'g', 'before');
    await syncAll(apps);
    w.evictGroup('g');
    const pushes = w.groupPushes.length;
    await send(apps[2]!, 'g', 'after');
    await syncAll(apps);
    expect(w.groupPushes.length).toBeGreaterThan(pushes);
    for (const a of apps) expect(a.messages('g')).toEqual(['b:before', 'c:after']);
    await apps[0]!.conn.frame({ t: 'group_send', id: 'x', group: 'g', body: te.encode('dup?') });
    w.evictGroup('g');
    await apps[0]!.conn.frame({ t: 'group_send', id: 'x', group: 'g', body: te.encode('dup?') });
    const acks = apps[0]!.conn.of('group_send_ack').filter((f) => f.id === 'x');
    expect(acks.map((f) => f.dup)).toEqual([false, true]);
    expect(acks[0]!.seq).toBe(acks[1]!.seq);
  });

  it('a member shard restarted (its memory gone) catches its devices up on their next hello', async () => {
    const w = new World();
    const a = new App(w, 'a', 'phone');
    const b = new App(w, 'b', 'phone');
    await a.hello();
    await b.hello();
    await create(a, 'g', ['b']);
    for (let i = 0; i < 100; i++) await send(a, 'g', `m${i}`);
    await syncAll([a, b]);
    await b.conn.disconnect();
    w.evict('b');
    for (let i = 100; i < 150; i++) await send(a, 'g', `m${i}`);
    await b.reconnect();
    await syncAll([a, b]);
    expect(b.messages('g')).toHaveLength(150);
    expect(b.seqs('g')).toEqual(a.seqs('g'));
  });
});

function encodeSend(id: string, group: string): Uint8Array {
  // Sent as raw bytes so several members' frames can be in flight at once (FakeConn.frame settles after each).
  return encodeGroupSend(id, group);
}

import { encodeBinary } from '../../protocol/index.js';
function encodeGroupSend(id: string, group: string): Uint8Array {
  return encodeBinary({ t: 'group_send', id, group, body: te.encode(id) });
}
