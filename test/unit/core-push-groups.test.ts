import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { pushSettingsFromEnv, type PushPayload, type PushSettings } from '../../core/push.js';
import type { PushHttp } from '../../core/ports.js';
import { SCHEMA_VERSION } from '../../core/schema.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Push webhooks for group messages (core/group/push-notes.ts) and pending pushes that survive a restart
 * (push_pending, core/push.ts), over the core harness: a fake PushHttp records calls; the harness clock drives the
 * group's coalescing window, the member's, and the retries.
 */

const te = new TextEncoder();

function fakeHttp(statuses: number[] = []): PushHttp & { calls: PushPayload[] } {
  const calls: PushPayload[] = [];
  return {
    calls,
    post(_url: string, body: string): Promise<number> {
      calls.push(JSON.parse(body) as PushPayload);
      return Promise.resolve(statuses.shift() ?? 200);
    },
  };
}

function world(http: PushHttp, over: Partial<PushSettings> = {}): { w: World; counts: { sent: number; failed: number; dead: number } } {
  const w = new World();
  const counts = { sent: 0, failed: 0, dead: 0 };
  w.push = { settings: { ...pushSettingsFromEnv({ IRIS_PUSH_URL: 'http://127.0.0.1:1/push', IRIS_PUSH_SECRET: 's' }), ...over }, http };
  w.metrics = { pushSent: () => counts.sent++, pushFailed: () => counts.failed++, pushDeadLettered: () => counts.dead++ };
  return { w, counts };
}

/** WebCrypto signs on the thread pool: a call leaves some turns after the wake that started it. */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !ok(); i++) await new Promise((r) => setImmediate(r));
  if (!ok()) throw new Error('condition never held');
}

async function device(w: World, user: string, id: string): Promise<FakeConn> {
  const c = w.connect(user);
  await c.helloWith(id, HELLO_FEATURES.groups);
  return c;
}

function rows(w: World, user: string): { device: string; count: number; attempts: number }[] {
  return w.db.prepare(`SELECT device, count, attempts FROM push_pending WHERE user = ? ORDER BY device`).all(user) as { device: string; count: number; attempts: number }[];
}

/** alice creates g1 with bob and carol; bob registers b1 and goes offline; carol stays online. */
async function groupWorld(http: PushHttp): Promise<{ w: World; alice: FakeConn; carol: FakeConn; counts: { sent: number } }> {
  const { w, counts } = world(http);
  const bob = await device(w, 'bob', 'b1');
  const alice = await device(w, 'alice', 'a1');
  const carol = await device(w, 'carol', 'c1');
  await alice.frame({ t: 'group_create', id: 'create', group: 'g1', name: 'g1', members: ['bob', 'carol'] });
  await w.settle();
  await bob.disconnect();
  await w.settle();
  return { w, alice, carol, counts };
}

async function groupSend(c: FakeConn, text: string): Promise<void> {
  await c.frame({ t: 'group_send', id: text, group: 'g1', body: te.encode(text) });
}

describe('push webhooks for group messages', () => {
  it('an offline member gets one call per burst, conversation = the group; an online member and the sender none', async () => {
    const http = fakeHttp();
    const { w, alice, counts } = await groupWorld(http);
    for (let i = 0; i < 3; i++) await groupSend(alice, `m${i}`);
    expect(alice.of('group_send_ack').length).toBe(4);
    await w.advance(1_000); // the group's window: one note to bob's shard
    expect(w.groupNotes.map((n) => [n.user, n.note.count])).toEqual([['bob', 3]]);
    expect(http.calls).toEqual([]);
    await w.advance(1_000); // bob's device window
    await until(() => counts.sent === 1);
    const seq = alice.of('group_send_ack').at(-1)!.seq;
    expect(http.calls).toEqual([{ user: 'bob', device: 'b1', sender: 'alice', conversation: 'g1', msg: `g1:${seq}`, count: 3, ts: expect.any(Number), group: true }]);
    await w.advance(10_000);
    expect(http.calls.length).toBe(1);
    expect(rows(w, 'bob')).toEqual([]);
  });

  it('coalesces a group burst with 1:1 messages for the same device into one call', async () => {
    const http = fakeHttp();
    const { w, alice, counts } = await groupWorld(http);
    await groupSend(alice, 'grouped');
    await w.advance(1_000); // the group's note opens b1's window
    await w.advance(500);
    await alice.post('bob', 'direct', 'd1'); // joins it
    await w.advance(500);
    await until(() => counts.sent === 1);
    await w.advance(5_000);
    expect(http.calls.length).toBe(1);
    // The call names the latest message (the 1:1 one) and counts both.
    expect(http.calls[0]).toMatchObject({ device: 'b1', count: 2, conversation: 'alice', msg: 'alice:1' });
    expect(http.calls[0]!.group).toBeUndefined();
  });

  it("a member with one device online pushes to its offline device only; a device that acknowledged in the group gets nothing", async () => {
    const http = fakeHttp();
    const { w, alice, counts } = await groupWorld(http);
    const b2 = await device(w, 'bob', 'b2'); // bob is online again (b2): the fan-out reaches his shard
    await w.settle();
    await groupSend(alice, 'hello');
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    expect(w.groupNotes).toEqual([]);
    expect(http.calls.map((c) => [c.device, c.conversation, c.count])).toEqual([['b1', 'g1', 1]]);
    // b2 acknowledges and goes offline: its cursor in g1 is stored at close, so a note for what it saw pushes nothing.
    const seq = b2.of('group_deliver').at(-1)!.entries.at(-1)!.seq;
    await b2.frame({ t: 'group_ack', group: 'g1', seq });
    await b2.disconnect();
    await w.settle();
    await w.mailbox('bob').groupNote({ group: 'g1', sender: 'alice', seq, ts: 0, count: 1 });
    await w.advance(1_000);
    await until(() => counts.sent === 2);
    expect(http.calls.slice(1).map((c) => c.device)).toEqual(['b1']);
  });

  it('a note that fails is retried from the group wake-up, its count kept', async () => {
    const http = fakeHttp();
    const { w, alice, counts } = await groupWorld(http);
    w.failNotes.add('bob');
    await groupSend(alice, 'one');
    await w.advance(1_000);
    await groupSend(alice, 'two');
    w.failNotes.clear();
    await w.advance(1_000); // retry (retryBaseMs 1000)
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    expect(http.calls[0]).toMatchObject({ device: 'b1', count: 2 });
  });

  it("a group shard restarted inside its window resumes the notes from its stored cursor", async () => {
    const http = fakeHttp();
    const { w, alice, counts } = await groupWorld(http);
    await groupSend(alice, 'one');
    await w.advance(1_000);
    await until(() => w.groupNotes.length === 1);
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    const upto = () => (w.db.prepare(`SELECT upto FROM group_push WHERE grp = 'g1'`).get() as { upto: number }).upto;
    const first = alice.of('group_send_ack').at(-1)!.seq;
    expect(upto()).toBe(first); // one row per group, moved once the window's notes were handed over
    await groupSend(alice, 'two');
    await groupSend(alice, 'three');
    expect(upto()).toBe(first); // nothing written per message
    w.evictGroup('g1'); // restarted before its window ended: the notes in memory are gone
    await w.advance(1_000); // the wake asked for before (the alarm) reads the group again
    await until(() => w.groupNotes.length === 2);
    expect(w.groupNotes[1]).toMatchObject({ user: 'bob', note: { group: 'g1', count: 2, seq: first + 2 } });
    await w.advance(1_000);
    await until(() => counts.sent === 2);
    expect(http.calls[1]).toMatchObject({ device: 'b1', conversation: 'g1', count: 2, msg: `g1:${first + 2}` });
    await w.settle();
    expect(upto()).toBe(first + 2);
  });

  it('writes nothing and calls nobody while IRIS_PUSH_URL is unset', async () => {
    const w = new World();
    const bob = await device(w, 'bob', 'b1');
    const alice = await device(w, 'alice', 'a1');
    await alice.frame({ t: 'group_create', id: 'create', group: 'g1', name: 'g1', members: ['bob'] });
    await bob.disconnect();
    await groupSend(alice, 'x');
    await alice.post('bob', 'y', 'y');
    await w.advance(5_000);
    expect(w.groupNotes).toEqual([]);
    expect(w.count('push_pending', 'bob')).toBe(0);
    expect(w.db.prepare(`SELECT count(*) AS c FROM group_push`).get()).toEqual({ c: 0 });
  });
});

describe('pending pushes survive a restart', () => {
  async function offlineBob(w: World): Promise<FakeConn> {
    const b = w.connect('bob');
    await b.hello('b1');
    await b.disconnect();
    const a = w.connect('alice');
    await a.hello('a1');
    return a;
  }

  it('one row per window, written with the message that opens it; none per message in the window; gone once sent', async () => {
    const http = fakeHttp();
    const { w, counts } = world(http);
    const a = await offlineBob(w);
    expect(SCHEMA_VERSION).toBeGreaterThan(0);
    await a.post('bob', 'one', 'c1');
    expect(rows(w, 'bob')).toEqual([{ device: 'b1', count: 1, attempts: 0 }]);
    await a.post('bob', 'two', 'c2');
    expect(rows(w, 'bob')).toEqual([{ device: 'b1', count: 1, attempts: 0 }]); // no write for a message in an open window
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    await w.settle();
    expect(rows(w, 'bob')).toEqual([]);
  });

  it('a push waiting its window is sent by a fresh Mailbox over the same storage', async () => {
    const http = fakeHttp();
    const { w, counts } = world(http);
    const a = await offlineBob(w);
    await a.post('bob', 'one', 'c1');
    w.evict('bob'); // the shard restarts: its memory is gone, the row is not
    w.wakes.delete('bob');
    await w.mailbox('bob').onWake(); // on-prem: recover() wakes the users with rows; Cloudflare: the alarm
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    expect(http.calls[0]).toMatchObject({ user: 'bob', device: 'b1', sender: 'alice', msg: 'alice:1', count: 1 });
  });

  it('a push being retried after a 500 is retried by a fresh Mailbox, with its count and attempts', async () => {
    const http = fakeHttp([500, 500]);
    const { w, counts } = world(http, { maxAttempts: 3, retryBaseMs: 1_000 });
    const a = await offlineBob(w);
    await a.post('bob', 'one', 'c1');
    await w.advance(1_000);
    await until(() => counts.failed === 1);
    await a.post('bob', 'two', 'c2'); // joins the retry (memory), then the row with the next write
    await w.settle();
    expect(rows(w, 'bob')).toEqual([{ device: 'b1', count: 1, attempts: 1 }]);
    w.evict('bob');
    await w.advance(1_000); // the wake the old shard asked for (the alarm) runs the fresh one
    await until(() => counts.failed === 2);
    await w.settle();
    expect(rows(w, 'bob')).toEqual([{ device: 'b1', count: 1, attempts: 2 }]);
    w.evict('bob');
    await w.advance(2_000);
    await until(() => counts.sent === 1);
    expect(http.calls.length).toBe(3);
    expect(counts).toEqual({ sent: 1, failed: 2, dead: 0 });
    await w.settle();
    expect(rows(w, 'bob')).toEqual([]);
  });

  it('the dead-letter bound counts attempts across restarts', async () => {
    const http = fakeHttp([500, 500, 500]);
    const { w, counts } = world(http, { maxAttempts: 2, retryBaseMs: 1_000 });
    const a = await offlineBob(w);
    await a.post('bob', 'one', 'c1');
    await w.advance(1_000);
    await until(() => counts.failed === 1);
    await w.settle();
    w.evict('bob');
    await w.advance(1_000);
    await until(() => counts.dead === 1);
    await w.advance(10_000);
    expect(http.calls.length).toBe(2);
    await w.settle();
    expect(rows(w, 'bob')).toEqual([]);
  });

  it('a device that connects before the call leaves gets none, and its row goes', async () => {
    const http = fakeHttp();
    const { w } = world(http);
    const a = await offlineBob(w);
    await a.post('bob', 'one', 'c1');
    w.evict('bob');
    const b = w.connect('bob');
    await b.hello('b1');
    await w.advance(1_000);
    await w.settle();
    expect(http.calls).toEqual([]);
    expect(rows(w, 'bob')).toEqual([]);
  });
});
