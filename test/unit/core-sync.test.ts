import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Multi-device sync and history for new devices (PROTOCOL.md 9.10, core/history.ts): a send leaves a `sent`
 * entry in the sender's own inbox in the commit that accepts it, so the user's other devices see it in the
 * user's order; with historyDepth N, a device new to the user starts with the newest N entries.
 */

const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A client that names every entry feature (the SDK's hello). */
const ALL = HELLO_FEATURES.refs | HELLO_FEATURES.typing | HELLO_FEATURES.sync;
const hello = (c: FakeConn, device: string) => c.frame({ t: 'hello', device, cursor: 0, features: ALL }, 'json');

/** What a device saw, in order: "<- from: text" for messages, "-> to: text" for sent entries. */
function timeline(c: FakeConn): string[] {
  return c.entries().map((e) => (e.kind === 'sent' ? `-> ${e.peer}: ${text(e.body)}` : `<- ${e.peer}: ${text(e.body)}`));
}

/** Acks everything delivered on c, until nothing more comes (the send window holds back the rest). */
async function ackAll(c: FakeConn): Promise<void> {
  let acked = 0;
  for (let last = c.entries().at(-1); last && last.seq > acked; last = c.entries().at(-1)) {
    acked = last.seq;
    await c.ack(acked);
  }
}

describe('multi-device sync: sent entries', () => {
  it("d1's send reaches d2 as a sent entry, between the messages received before and after", async () => {
    const w = new World();
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await hello(d2, 'd2');
    await hello(bob, 'b1');
    await bob.post('alice', 'before', 'b-1');
    await d1.post('bob', 'mine', 'a-1');
    await bob.post('alice', 'after', 'b-2');
    expect(timeline(d2)).toEqual(['<- bob: before', '-> bob: mine', '<- bob: after']);
    const sent = d2.entries()[1]!;
    const ack = d1.of('send_ack')[0]!;
    expect(sent).toMatchObject({ kind: 'sent', msg: ack.msg, peer: 'bob', ts: ack.ts });
    // The sending device gets it too, in the same order, and always after its send_ack.
    expect(timeline(d1)).toEqual(timeline(d2));
    const i = d1.frames.findIndex((f) => f.t === 'send_ack');
    const j = d1.frames.findIndex((f) => f.t === 'deliver' && f.entries.some((e) => e.kind === 'sent'));
    expect(i).toBeGreaterThanOrEqual(0);
    expect(j).toBeGreaterThan(i);
    // bob's side is exactly what it was: one message each way, no sent entry.
    expect(timeline(bob)).toEqual(['<- alice: mine']);
  });

  it('the sending socket gets its send_ack before the sent entry, even when a pump of that socket shares the commit', async () => {
    const w = new World({}, true);
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    await w.drain(hello(d1, 'd1'));
    await w.drain(hello(d2, 'd2'));
    const body = new TextEncoder().encode('from bob');
    await w.drain(w.mailbox('alice').receive({ from: 'bob', items: [{ n: 1, kind: 'message', msg: 'bob:1', ts: w.now, body }] }).then(() => undefined));
    // d1's ack commits; before its continuation pumps d1 (reading the inbox in the NEXT commit), d1's send
    // appends its sent entry to that same commit. Both resolve together; the pump's continuation has fewer
    // promise hops than the send's, so without the hold its deliver would overtake the send_ack.
    const ack = d1.ack(1);
    w.flush();
    const send = d1.post('bob', 'mine', 'a-1');
    await w.settle(); // the ack's continuation starts the pump, whose read joins the send's open commit
    await w.drain(Promise.all([ack, send]).then(() => undefined));
    const order = d1.frames.flatMap((f) => (f.t === 'send_ack' ? ['ack'] : f.t === 'deliver' ? f.entries.map((e) => e.kind) : []));
    expect(order).toEqual(['message', 'ack', 'sent']);
    expect(timeline(d2)).toEqual(['<- bob: from bob', '-> bob: mine']);
  });

  it('a device offline during the send gets the sent entry on resume, exactly once', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    await hello(d1, 'd1');
    await hello(d2, 'd2');
    await d2.disconnect();
    await d1.post('bob', 'while away', 'a-1');
    const d2b = w.connect('alice');
    await hello(d2b, 'd2');
    expect(timeline(d2b)).toEqual(['-> bob: while away']);
    await ackAll(d2b);
    await d2b.disconnect();
    const d2c = w.connect('alice');
    await hello(d2c, 'd2');
    expect(d2c.entries()).toEqual([]);
  });

  it('owes no delivery receipt for a sent entry: the recipient sees exactly what it saw before', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await hello(d2, 'd2');
    await hello(bob, 'b1');
    await d1.post('bob', 'm1', 'a-1');
    await d1.post('bob', 'm2', 'a-2');
    await ackAll(d1);
    await ackAll(d2);
    await w.advance(10_000);
    // alice's devices acking her sent entries sends nothing to bob; bob got his messages, and no receipts.
    expect(bob.receipts()).toEqual([]);
    expect(bob.texts()).toEqual(['m1', 'm2']);
    expect(w.forwardCalls.filter((c) => c.to === 'bob' && c.batch.receipt !== undefined)).toEqual([]);
    expect(w.count('receipts_out', 'alice')).toBe(0);
    // bob's ack still gives alice her receipt.
    await ackAll(bob);
    expect(d1.receipts().at(-1)).toMatchObject({ peer: 'bob', msg: 'alice:2' });
  });

  it('a sent entry is no dedup mark: messages from its recipient are still accepted, and survive a trim', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await hello(d2, 'd2');
    await hello(bob, 'b1');
    for (let i = 1; i <= 70; i++) await d1.post('bob', `m${i}`, `a-${i}`);
    await ackAll(d1);
    await ackAll(d2);
    w.evict('alice');
    await bob.post('alice', 'reply', 'b-1');
    expect(timeline(d2).at(-1)).toBe('<- bob: reply');
    expect(w.db.prepare(`SELECT count(*) AS c FROM peers WHERE user = 'alice' AND peer = 'bob'`).get()).toEqual({ c: 0 });
  });

  it('a user with one device and no history writes no sent rows', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    await hello(d1, 'd1');
    for (let i = 1; i <= 5; i++) await d1.post('bob', `m${i}`, `a-${i}`);
    expect(w.count('inbox', 'alice')).toBe(0);
    expect(d1.entries()).toEqual([]);
    // A message to oneself is in the inbox as a message; no sent entry beside it, even with two devices.
    const d2 = w.connect('alice');
    await hello(d2, 'd2');
    await d1.post('alice', 'note', 'a-self');
    expect(d2.entries().map((e) => e.kind)).toEqual(['message']);
  });

  it('read marks still validate: a sent entry is not a message from its recipient', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    const bob = w.connect('bob');
    await d1.frame({ t: 'hello', device: 'd1', cursor: 0, reads: 0, features: ALL });
    await d2.frame({ t: 'hello', device: 'd2', cursor: 0, reads: 0, features: ALL });
    await hello(bob, 'b1');
    await bob.post('alice', 'hi', 'b-1');
    await d1.post('bob', 'mine', 'a-1');
    await d1.post('bob', 'mine too', 'a-2');
    // bob:1 exists and was delivered: fine. bob:2 does not (alice's sends to bob are not bob's messages).
    await d2.frame({ t: 'read', conv: 'bob', msg: 'bob:1' });
    expect(d2.of('error')).toEqual([]);
    await d2.frame({ t: 'read', conv: 'bob', msg: 'bob:2' });
    expect(d2.of('error').at(-1)).toMatchObject({ code: 'bad_ack' });
    // Reading her own sends is not a read mark of bob's conversation either.
    await d2.frame({ t: 'read', conv: 'alice', msg: 'alice:2' });
    expect(d2.of('error').at(-1)).toMatchObject({ code: 'bad_ack' });
  });

  it('sent entries are never refused, and count towards the inbox cap only until every device acked them', async () => {
    const w = new World({ inboxCap: 3 });
    const d1 = w.connect('alice');
    const d2 = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await hello(d2, 'd2');
    await hello(bob, 'b1');
    await d2.disconnect();
    for (let i = 1; i <= 3; i++) await d1.post('bob', `m${i}`, `a-${i}`);
    expect(d1.of('send_ack')).toHaveLength(3);
    // d2 has not acked them: alice's inbox is full for bob, whose message waits.
    await ackAll(d1);
    await bob.post('alice', 'hi', 'b-1');
    expect(d1.texts()).toEqual([]);
    const d2b = w.connect('alice');
    await hello(d2b, 'd2');
    await ackAll(d2b);
    await w.advance(w.config.fullRetryMs);
    expect(d1.texts()).toEqual(['hi']);
  });
});

describe('clients written before sent entries (hello.features without sync)', () => {
  it('are not shown them, and do not stall behind them: nothing shown is unacked, so they are acked for it', async () => {
    const w = new World({ sendWindow: 4 });
    const d1 = w.connect('alice');
    const old = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await old.hello('old'); // the harness's hello has no `sync`: an older client
    await hello(bob, 'b1');
    for (let i = 1; i <= 10; i++) await d1.post('bob', `m${i}`, `a-${i}`);
    expect(old.entries()).toEqual([]);
    await bob.post('alice', 'hi', 'b-1');
    expect(timeline(old)).toEqual(['<- bob: hi']);
    expect(old.entries()[0]!.seq).toBe(11);
    await old.ack(11);
    await old.disconnect();
    expect(w.db.prepare(`SELECT cursor FROM devices WHERE user = 'alice' AND device = 'old'`).get()).toEqual({ cursor: 11 });
  });

  it('an ack of everything shown covers the sent entries skipped after it', async () => {
    const w = new World({ sendWindow: 4 });
    const d1 = w.connect('alice');
    const old = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await old.hello('old');
    await hello(bob, 'b1');
    await bob.post('alice', 'first', 'b-1');
    for (let i = 1; i <= 6; i++) await d1.post('bob', `m${i}`, `a-${i}`);
    await bob.post('alice', 'second', 'b-2');
    // Shown: seq 1; seqs 2-4 skipped; the window (4 from the ack at 0) is full until seq 1 is acked.
    expect(timeline(old)).toEqual(['<- bob: first']);
    await old.ack(1);
    expect(timeline(old)).toEqual(['<- bob: first', '<- bob: second']);
    expect(old.entries().map((e) => e.seq)).toEqual([1, 8]);
    expect(old.of('error')).toEqual([]);
  });

  it('a client that names sync but not refs is shown sent entries, and no edit (partial: its acks cover what it skips)', async () => {
    const w = new World();
    const d1 = w.connect('alice');
    await hello(d1, 'd1');
    const d2 = w.connect('alice');
    await d2.frame({ t: 'hello', device: 'd2', cursor: 0, features: HELLO_FEATURES.sync }, 'json');
    const bob = w.connect('bob');
    await hello(bob, 'b1');
    await d1.post('bob', 'one', 'c1');
    await d1.frame({ t: 'send', id: 'c2', to: 'bob', body: new TextEncoder().encode('uno'), ref: { kind: 'edit', msg: 'alice:1' } });
    await bob.post('alice', 'two', 'c3');
    expect(d2.entries().map((e) => [e.kind, e.ref])).toEqual([['sent', undefined], ['message', undefined]]);
    const seqs = d2.entries().map((e) => e.seq);
    await d2.ack(seqs[1]!);
    expect(d2.of('error')).toEqual([]);
  });
});

describe('history for a new device', () => {
  /** alice (d1) and bob talk: 2k messages, alternating directions; everything acked. */
  async function talk(w: World, k: number) {
    const d1 = w.connect('alice');
    const bob = w.connect('bob');
    await hello(d1, 'd1');
    await hello(bob, 'b1');
    for (let i = 1; i <= k; i++) {
      await bob.post('alice', `b${i}`, `b-${i}`);
      await d1.post('bob', `a${i}`, `a-${i}`);
      await ackAll(d1);
      await ackAll(bob);
    }
    return { d1, bob };
  }

  it('a new device gets the newest N entries, both directions, and no more', async () => {
    const w = new World({ historyDepth: 5 });
    const { d1 } = await talk(w, 40);
    // One device and history on: the sends left sent entries.
    expect(timeline(d1).slice(-2)).toEqual(['<- bob: b40', '-> bob: a40']);
    const d3 = w.connect('alice');
    await hello(d3, 'd3');
    expect(timeline(d3)).toEqual(['-> bob: a38', '<- bob: b39', '-> bob: a39', '<- bob: b40', '-> bob: a40']);
    // Storage: the trim kept the history, no more than N plus one trim step of acked entries.
    expect(w.count('inbox', 'alice')).toBeLessThanOrEqual(5 + 64);
    // The devices it knows resume at their cursor: nothing again for d1.
    await d1.disconnect();
    const d1b = w.connect('alice');
    await hello(d1b, 'd1');
    expect(d1b.entries()).toEqual([]);
  });

  it('the newest N stay after many trims, and the inbox stays bounded', async () => {
    const w = new World({ historyDepth: 10 });
    await talk(w, 200);
    expect(w.count('inbox', 'alice')).toBeLessThanOrEqual(10 + 64);
    expect(w.count('inbox', 'alice')).toBeGreaterThanOrEqual(10);
    const d3 = w.connect('alice');
    await hello(d3, 'd3');
    expect(d3.entries()).toHaveLength(10);
    expect(timeline(d3).at(-1)).toBe('-> bob: a200');
    // Kept history is not "unacknowledged": the trim point moved past it (receipts, the inbox cap and the restart
    // scan count from there), only the deletion stops N short.
    const { trimmed } = w.db.prepare(`SELECT trimmed FROM users WHERE user = 'alice'`).get() as { trimmed: number };
    const { lowest } = w.db.prepare(`SELECT min(seq) AS lowest FROM inbox WHERE user = 'alice'`).get() as { lowest: number };
    expect(trimmed).toBeGreaterThanOrEqual(400 - 64);
    expect(lowest).toBeLessThanOrEqual(400 - 10 + 1);
  });

  it('history depth 0: a new device starts at the head once the other devices acked everything', async () => {
    const w = new World({ historyDepth: 0 });
    await talk(w, 10);
    const d3 = w.connect('alice');
    await hello(d3, 'd3');
    expect(d3.entries()).toEqual([]);
    expect(d3.of('welcome')[0]).toMatchObject({ cursor: 10, head: 10 });
  });

  it('a new device still gets what a known device has not acked yet, and the history before it', async () => {
    const w = new World({ historyDepth: 6 });
    const { d1, bob } = await talk(w, 3);
    await d1.disconnect();
    for (let i = 1; i <= 4; i++) await bob.post('alice', `late${i}`, `late-${i}`);
    const d3 = w.connect('alice');
    await hello(d3, 'd3');
    expect(timeline(d3)).toEqual(['<- bob: b3', '-> bob: a3', '<- bob: late1', '<- bob: late2', '<- bob: late3', '<- bob: late4']);
  });

  it('kept history does not fill the inbox', async () => {
    const w = new World({ historyDepth: 50, inboxCap: 20 });
    const { bob } = await talk(w, 30);
    await bob.post('alice', 'still room', 'b-x');
    expect(bob.of('error')).toEqual([]);
  });

  it('a device forgotten past maxDevices comes back as a new one: history, not its old backlog', async () => {
    const w = new World({ historyDepth: 3, maxDevices: 2 });
    const { d1, bob } = await talk(w, 5);
    const d2 = w.connect('alice');
    await hello(d2, 'd2');
    await ackAll(d2);
    await d2.disconnect();
    await d1.disconnect();
    w.now += 1000;
    const d1b = w.connect('alice');
    await hello(d1b, 'd1');
    await bob.post('alice', 'new', 'b-new');
    await ackAll(d1b);
    // d3 is new: the least recently seen offline device (d2) is forgotten.
    const d3 = w.connect('alice');
    await hello(d3, 'd3');
    await d3.disconnect();
    const d2b = w.connect('alice');
    await hello(d2b, 'd2');
    expect(d2b.entries().length).toBeLessThanOrEqual(3);
    expect(timeline(d2b).at(-1)).toBe('<- bob: new');
  });
});
