import { describe, expect, it } from 'vitest';
import { World, type FakeConn } from './core-harness.js';

/**
 * The per-connection send barrier (docs/PROTOCOL.md 8.4, 9.3; core/conn-guard.ts SendBarrier). Without it a
 * client that pipelines sends could see m2 accepted before m1: m1 refused by an empty bucket, m2 arriving a
 * moment later after a token refilled.
 */

/** The last frame that is not a delivery: with two devices, sends also come back as `sent` entries (PROTOCOL.md 9.9). */
const last = (c: FakeConn) => c.frames.filter((f) => f.t !== 'deliver').at(-1)!;
const acks = (c: FakeConn) => c.of('send_ack').map((a) => a.id);

describe('send barrier', () => {
  it('refuses a later send after a rate_limited one without spending a token, until the refused send is accepted', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0'); // the one token of the burst
    await a.post('bob', 'm1', 'c1');
    expect(last(a)).toMatchObject({ t: 'error', code: 'rate_limited', ref: 'c1', retryAfter: 100 });
    w.now += 100; // one token refilled
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ t: 'error', code: 'rate_limited', ref: 'c2' });
    expect((last(a) as { retryAfter?: number }).retryAfter).toBeGreaterThan(0);
    // The token is still there: the resend of m1 gets it, and the barrier lifts.
    await a.post('bob', 'm1', 'c1');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c1', dup: false });
    w.now += 100;
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c2', dup: false });
    expect(acks(a)).toEqual(['c0', 'c1', 'c2']);

    const b = w.connect('bob');
    await b.hello('b1');
    expect(b.texts()).toEqual(['m0', 'm1', 'm2']);
  });

  it('holds back sends pipelined right behind a refused one (no await in between)', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0');
    const box = w.mailbox('alice');
    const enc = (id: string) => ({ t: 'send' as const, id, to: 'bob', body: new TextEncoder().encode(id) });
    const { encodeBinary } = await import('../../protocol/index.js');
    const p1 = box.onMessage(a, encodeBinary(enc('c1'))); // refused: the bucket is empty
    w.now += 100; // a token refills while c1's answer is still on its way
    const p2 = box.onMessage(a, encodeBinary(enc('c2')));
    await Promise.all([p1, p2]);
    await w.settle();
    expect(a.of('error').map((e) => [e.ref, e.code])).toEqual([
      ['c1', 'rate_limited'],
      ['c2', 'rate_limited'],
    ]);
    expect(acks(a)).toEqual(['c0']);
  });

  it('renews the barrier when the refused send is refused again', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0');
    await a.post('bob', 'm1', 'c1'); // refused, retryAfter 100
    w.now += 50;
    await a.post('bob', 'm1', 'c1'); // too early: refused again (by the bucket, not the barrier), barrier renewed
    expect(last(a)).toMatchObject({ code: 'rate_limited', ref: 'c1', retryAfter: 50 });
    w.now += 50; // a token refilled, but the renewed barrier still waits for c1
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ code: 'rate_limited', ref: 'c2' });
    await a.post('bob', 'm1', 'c1');
    w.now += 100;
    await a.post('bob', 'm2', 'c2');
    expect(acks(a)).toEqual(['c0', 'c1', 'c2']);
  });

  it('lifts at retryAfter plus the grace when the refused send never comes back', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0');
    await a.post('bob', 'm1', 'c1'); // refused, retryAfter 100: the barrier lifts 100 + max(1000, 100) ms later
    w.now += 1_099;
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ code: 'rate_limited', ref: 'c2', retryAfter: 1 });
    w.now += 1;
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c2' });
    expect(acks(a)).toEqual(['c0', 'c2']);
  });

  it('is per connection, and goes with the connection', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    const a2 = w.connect('alice');
    await a.hello('a1');
    await a2.hello('a2');
    await a.post('bob', 'm0', 'c0');
    await a.post('bob', 'm1', 'c1'); // refused: barrier on a
    w.now += 100; // one token
    await a2.post('bob', 'x1', 'd1'); // another connection: only the bucket applies
    expect(last(a2)).toMatchObject({ t: 'send_ack', id: 'd1' });
    w.now += 100; // one token
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ code: 'rate_limited', ref: 'c2' });
    await a.disconnect();
    const a3 = w.connect('alice');
    await a3.hello('a1');
    await a3.post('bob', 'm2', 'c2'); // the token a's barrier did not spend
    expect(last(a3)).toMatchObject({ t: 'send_ack', id: 'c2' });
  });

  it('an inbox_full barrier holds back only that recipient', async () => {
    const w = new World({ inboxCap: 2, fullRetryMs: 1000 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 3; i++) await a.post('bob', `m${i}`, `c${i}`); // the third one finds the inbox full
    await a.post('bob', 'm4', 'c4');
    expect(last(a)).toMatchObject({ code: 'inbox_full', ref: 'c4', retryAfter: 1000 });
    await a.post('carol', 'k1', 'k1');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'k1' });
    // bob drains; the server learns it is no longer full; the barrier still holds bob's later sends.
    const b = w.connect('bob');
    await b.hello('b1');
    await b.ack(2);
    await w.advance(1000);
    expect(w.count('outbox', 'alice')).toBe(0);
    await a.post('bob', 'm5', 'c5');
    expect(last(a)).toMatchObject({ code: 'inbox_full', ref: 'c5' });
    await a.post('carol', 'k2', 'k2');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'k2' });
    await a.post('bob', 'm4', 'c4');
    await a.post('bob', 'm5', 'c5');
    expect(acks(a)).toEqual(['c1', 'c2', 'c3', 'k1', 'k2', 'c4', 'c5']);
    for (let i = 0; i < 5 && b.texts().length < 5; i++) {
      await b.ack(b.entries().at(-1)!.seq);
      await w.advance(1000);
    }
    expect(b.texts()).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
  });

  it('answers duplicates with their original ack while a barrier is up', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0');
    const first = last(a);
    await a.post('bob', 'm1', 'c1'); // refused: barrier
    w.now += 100; // one token
    await a.post('bob', 'm0', 'c0'); // a resend of an accepted send
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c0', dup: true, msg: (first as { msg: string }).msg });
    await a.post('bob', 'm2', 'c2'); // the duplicate neither lifted the barrier nor spent the token
    expect(last(a)).toMatchObject({ code: 'rate_limited', ref: 'c2' });
    await a.post('bob', 'm1', 'c1');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c1', dup: false });
  });

  it('never closes a connection with 4002 for barrier refusals', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 1, maxErrorsInRow: 3 });
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'm0', 'c0');
    await a.post('bob', 'm1', 'c1');
    for (let i = 2; i < 40; i++) {
      w.now += 10; // tokens refill meanwhile: only the barrier refuses these
      await a.post('bob', `m${i}`, `c${i}`);
    }
    expect(a.closed).toBeNull();
    expect(a.of('error').filter((e) => e.code === 'rate_limited')).toHaveLength(39);
    await a.post('bob', 'm1', 'c1');
    expect(last(a)).toMatchObject({ t: 'send_ack', id: 'c1' });
  });
});

describe('send barrier: storage full', () => {
  it('an unavailable refusal (disk full) raises it too', async () => {
    const { StorageFullError } = await import('../../core/ports.js');
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    const commit = w.storage.commit.bind(w.storage);
    let full = true;
    // Refused the way on-prem refuses writes while full: nothing of fn is kept.
    (w.storage as { commit: typeof commit }).commit = <T>(fn: () => T): Promise<T> =>
      commit(() => {
        const v = fn();
        if (full) throw new StorageFullError('disk full', 500);
        return v;
      });
    await a.post('bob', 'm1', 'c1');
    expect(last(a)).toMatchObject({ code: 'unavailable', ref: 'c1', retryAfter: 500 });
    full = false; // space came back at once
    await a.post('bob', 'm2', 'c2');
    expect(last(a)).toMatchObject({ code: 'unavailable', ref: 'c2' });
    await a.post('bob', 'm1', 'c1');
    await a.post('bob', 'm2', 'c2');
    expect(acks(a)).toEqual(['c1', 'c2']);
  });
});
