import { describe, expect, it } from 'vitest';
import { CLOSE_CODES, LIMITS } from '../../protocol/index.js';
import { World } from './core-harness.js';

/** The per-user shard logic, with no platform: one in-memory SQLite, fake sockets, a manual clock. */

describe('send and ack', () => {
  it('acks only after the commit, with a server id', async () => {
    const w = new World({}, true);
    const a = w.connect('alice');
    const hello = a.hello('a1');
    await w.settle();
    expect(a.of('welcome')).toHaveLength(0);
    await w.drain(hello);
    expect(a.of('welcome')).toHaveLength(1);

    const sent = a.post('bob', 'hi', 'c1');
    await w.settle();
    expect(a.of('send_ack')).toHaveLength(0); // written, not yet durable: no ack
    expect(w.count('dedup', 'alice')).toBe(1);
    // Queued in alice's outbox, or (one hop) already in bob's inbox in the same transaction.
    expect(w.count('outbox', 'alice') + w.count('inbox', 'bob')).toBe(1);
    await w.drain(sent);
    expect(a.of('send_ack')).toEqual([{ t: 'send_ack', id: 'c1', msg: 'alice:1', ts: w.now, dup: false }]);
  });

  it('a retry with the same client id returns the original ack and stores nothing new', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    w.now += 1000;
    await a.post('bob', 'hi again?', 'c1');
    const acks = a.of('send_ack');
    expect(acks).toHaveLength(2);
    expect(acks[1]).toEqual({ ...acks[0], dup: true });
    expect(w.count('inbox', 'bob')).toBe(1);
    const b = w.connect('bob');
    await b.hello('b1');
    expect(b.texts()).toEqual(['hi']);
  });

  it('forgets client ids beyond the dedup window', async () => {
    const w = new World({ dedupWindow: 10, rateBurst: 1000 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 300; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(w.count('dedup', 'alice')).toBeLessThan(300);
    await a.post('bob', 'again', 'c300'); // recent: still deduped
    expect(a.of('send_ack').at(-1)?.dup).toBe(true);
    await a.post('bob', 'again', 'c1'); // long gone: accepted as new
    expect(a.of('send_ack').at(-1)?.dup).toBe(false);
  });

  it('refuses frames before hello and a second hello', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.post('bob', 'x', 'c1');
    expect(a.of('error')[0]).toMatchObject({ code: 'hello_required', ref: 'c1' });
    await a.hello('a1');
    await a.hello('a1');
    expect(a.of('error')[1]).toMatchObject({ code: 'bad_state' });
    expect(w.count('outbox', 'alice') + w.count('inbox', 'bob')).toBe(0);
  });

  it('answers garbage with an error frame on that socket only', async () => {
    const w = new World();
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    await a.raw(new Uint8Array([0xff, 1, 2]));
    await a.raw('{not json');
    expect(a.of('error').map((e) => e.code)).toEqual(['unknown_type', 'bad_frame']);
    expect(b.of('error')).toHaveLength(0);
    await a.post('bob', 'still works', 'c1');
    expect(b.texts()).toEqual(['still works']);
  });

  it('replies in the encoding of the frame it answers', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.frame({ t: 'hello', device: 'a1', cursor: 0 }, 'json');
    expect(a.state?.enc).toBe('json');
    await a.frame({ t: 'ping' });
    expect(a.state?.enc).toBe('json'); // ping does not change the session encoding
    await a.post('bob', 'x', 'c1');
    expect(a.state?.enc).toBe('binary');
  });
});

describe('delivery', () => {
  it('delivers live, and offline messages on connect, in order', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'one', 'c1');
    await a.post('bob', 'two', 'c2');
    const b = w.connect('bob');
    await b.hello('b1');
    expect(b.texts()).toEqual(['one', 'two']);
    await a.post('bob', 'three', 'c3');
    expect(b.texts()).toEqual(['one', 'two', 'three']);
    expect(b.entries().map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(b.entries()[0]).toMatchObject({ kind: 'message', peer: 'alice', msg: 'alice:1' });
  });

  it('resumes after the acked cursor with no loss and no duplicate', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 10; i++) await a.post('bob', `m${i}`, `c${i}`);
    const b1 = w.connect('bob');
    await b1.hello('b1');
    expect(b1.texts()).toHaveLength(10);
    await b1.ack(6);
    await b1.disconnect();
    for (let i = 11; i <= 12; i++) await a.post('bob', `m${i}`, `c${i}`);
    const b2 = w.connect('bob');
    await b2.hello('b1');
    expect(b2.of('welcome')[0]?.cursor).toBe(6);
    expect(b2.texts()).toEqual(['m7', 'm8', 'm9', 'm10', 'm11', 'm12']);
  });

  it('believes a client cursor ahead of its lost ack, but never past the head', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 5; i++) await a.post('bob', `m${i}`, `c${i}`);
    const b = w.connect('bob');
    await b.hello('b1', 3);
    expect(b.texts()).toEqual(['m4', 'm5']);
    const b2 = w.connect('bob');
    await b2.hello('b2', 99);
    expect(b2.of('welcome')[0]?.cursor).toBe(5);
  });

  it('keeps at most sendWindow entries unacked on a socket', async () => {
    const w = new World({ sendWindow: 8 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 20; i++) await a.post('bob', `m${i}`, `c${i}`);
    const b = w.connect('bob');
    await b.hello('b1');
    expect(b.entries()).toHaveLength(8);
    await b.ack(5);
    expect(b.entries()).toHaveLength(13);
    await b.ack(13);
    expect(b.entries()).toHaveLength(20);
    expect(b.texts()).toEqual(Array.from({ length: 20 }, (_, i) => `m${i + 1}`));
  });

  it('splits deliveries so no frame exceeds maxFrameBytes, in either encoding', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    const big = 'x'.repeat(LIMITS.maxBodyBytes);
    for (let i = 1; i <= 3; i++) await a.post('bob', big, `c${i}`);
    for (const enc of ['binary', 'json'] as const) {
      const b = w.connect('bob');
      const sizes: number[] = [];
      const send = b.send.bind(b);
      b.send = (data) => {
        sizes.push(typeof data === 'string' ? data.length : data.byteLength);
        send(data);
      };
      await b.frame({ t: 'hello', device: `b-${enc}`, cursor: 0 }, enc);
      expect(b.texts()).toEqual([big, big, big]);
      expect(Math.max(...sizes)).toBeLessThanOrEqual(LIMITS.maxFrameBytes);
      await b.disconnect();
    }
  });

  it('refuses an ack beyond what was delivered', async () => {
    const w = new World();
    const b = w.connect('bob');
    await b.hello('b1');
    await b.ack(5);
    expect(b.of('error')[0]).toMatchObject({ code: 'bad_ack' });
  });

  it('1,000 messages arrive in order exactly once', async () => {
    const w = new World({ rateBurst: 2000 });
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    for (let i = 0; i < 1000; i++) {
      await a.post('bob', `m${i}`, `c${i}`);
      const last = b.entries().at(-1);
      if (last && i % 50 === 0) await b.ack(last.seq);
    }
    let last = b.entries().at(-1)?.seq ?? 0;
    while (b.texts().length < 1000) {
      await b.ack(last);
      const next = b.entries().at(-1)?.seq ?? 0;
      if (next === last) break;
      last = next;
    }
    expect(b.texts()).toEqual(Array.from({ length: 1000 }, (_, i) => `m${i}`));
  });

  it('sends a delivery receipt to the sender when a device acks', async () => {
    const w = new World();
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    await a.post('bob', 'hi', 'c1');
    expect(a.receipts()).toHaveLength(0);
    await b.ack(1);
    expect(a.of('receipts')).toEqual([{ t: 'receipts', upTo: 1, items: [{ msg: 'alice:1', peer: 'bob', ts: w.now }] }]);
    // A second device acking the same message sends no second receipt.
    const b2 = w.connect('bob');
    await b2.hello('b2');
    await b2.ack(1);
    expect(a.receipts()).toHaveLength(1);
  });
});

describe('devices', () => {
  it('delivers to every device and trims the inbox only when all have acked', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    const p = w.connect('bob');
    const l = w.connect('bob');
    await p.hello('phone');
    await l.hello('laptop');
    // Trimming runs in steps of 64 acked entries: send more than one step.
    for (let i = 1; i <= 70; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(p.texts()).toHaveLength(70);
    expect(l.texts()).toHaveLength(70);
    await p.ack(70);
    expect(w.count('inbox', 'bob')).toBe(70);
    await l.ack(70);
    expect(w.count('inbox', 'bob')).toBe(0);
  });

  it('closes the older socket of a device that connects again', async () => {
    const w = new World();
    const old = w.connect('bob');
    await old.hello('b1');
    const fresh = w.connect('bob');
    await fresh.hello('b1');
    expect(old.closed?.code).toBe(CLOSE_CODES.replaced);
    expect(fresh.closed).toBeNull();
  });

  it('forgets the least recently seen offline device past maxDevices', async () => {
    const w = new World({ maxDevices: 2 });
    const d1 = w.connect('bob');
    await d1.hello('d1');
    await d1.disconnect();
    w.now += 10;
    const d2 = w.connect('bob');
    await d2.hello('d2');
    w.now += 10;
    const d3 = w.connect('bob');
    await d3.hello('d3');
    expect(d3.of('welcome')).toHaveLength(1);
    const devices = w.db.prepare(`SELECT device FROM devices WHERE user = 'bob' ORDER BY device`).all();
    expect(devices.map((d) => d['device'])).toEqual(['d2', 'd3']);
    // Both remaining devices are online: a fourth is refused.
    const d4 = w.connect('bob');
    await d4.hello('d4');
    expect(d4.of('error')[0]).toMatchObject({ code: 'too_many_devices' });
  });
});

describe('bounds', () => {
  it('rate limits sends with a retry-after, then lets them through', async () => {
    const w = new World({ ratePerSec: 10, rateBurst: 3 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 4; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(a.of('send_ack')).toHaveLength(3);
    const err = a.of('error')[0];
    expect(err).toMatchObject({ code: 'rate_limited', ref: 'c4' });
    expect(err?.retryAfter).toBeGreaterThan(0);
    w.now += err!.retryAfter!;
    await a.post('bob', 'm4', 'c4');
    expect(a.of('send_ack')).toHaveLength(4);
  });

  it('holds messages for a full inbox, refuses new ones, and delivers all acked ones once drained', async () => {
    const w = new World({ inboxCap: 5, fullRetryMs: 1000 });
    const a = w.connect('alice');
    await a.hello('a1');
    const acked: string[] = [];
    let refused = 0;
    for (let i = 1; i <= 10; i++) {
      await a.post('bob', `m${i}`, `c${i}`);
      const last = a.frames.at(-1)!;
      if (last.t === 'send_ack') acked.push(`m${i}`);
      else if (last.t === 'error') {
        expect(last).toMatchObject({ code: 'inbox_full', ref: `c${i}` });
        expect(last.retryAfter).toBeGreaterThan(0);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(acked.length).toBeGreaterThan(5); // the first one over the cap was acked before the cap was known
    expect(w.count('inbox', 'bob')).toBe(5);
    expect(w.count('outbox', 'alice')).toBe(acked.length - 5);

    const b = w.connect('bob');
    await b.hello('b1');
    await b.ack(5);
    await w.advance(1000);
    await b.ack(b.entries().at(-1)!.seq);
    expect(b.texts()).toEqual(acked);
    expect(w.count('outbox', 'alice')).toBe(0);
  });

  it('counts only unacked entries against the cap, even mid-batch (acked ones are trimmed lazily)', async () => {
    const w = new World({ inboxCap: 5 });
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    for (let i = 1; i <= 4; i++) await a.post('bob', `m${i}`, `c${i}`);
    await b.ack(4);
    const body = new Uint8Array(1);
    const items = [1, 2, 3].map((n) => ({ n, kind: 'message' as const, msg: `carol:${n}`, ts: w.now, body }));
    expect(await w.mailbox('bob').receive({ from: 'carol', items })).toEqual({ acceptedUpTo: 3 });
  });

  it('refuses sends when the outbox is full', async () => {
    const w = new World({ outboxCap: 2 });
    w.failForwards.set('bob', 1_000);
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 1; i <= 3; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(a.of('send_ack')).toHaveLength(2);
    expect(a.of('error')[0]).toMatchObject({ code: 'outbox_full', ref: 'c3' });
  });
});

describe('between shards', () => {
  it('retries a failed forward with backoff and stores it exactly once', async () => {
    const w = new World({ retryBaseMs: 100 });
    w.failForwards.set('bob', 3);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    expect(a.of('send_ack')).toHaveLength(1);
    expect(w.count('inbox', 'bob')).toBe(0);
    expect(w.wakes.get('alice')).toBe(w.now + 100);
    await w.advance(100); // fails again, backs off 200
    expect(w.wakes.get('alice')).toBe(w.now + 200);
    await w.advance(200); // fails again, backs off 400
    await w.advance(400);
    expect(w.count('inbox', 'bob')).toBe(1);
    expect(w.count('outbox', 'alice')).toBe(0);
  });

  it('spreads retries: a step of the backoff waits between half of it and all of it (jitter)', async () => {
    const w = new World({ retryBaseMs: 100 });
    w.random = 0; // the bottom of the range
    w.failForwards.set('bob', 2);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    expect(w.wakes.get('alice')).toBe(w.now + 50);
    w.random = 0.5;
    await w.advance(50);
    expect(w.wakes.get('alice')).toBe(w.now + 150); // step 200: 100 fixed + 0.5 x 100
    await w.advance(150);
    expect(w.count('inbox', 'bob')).toBe(1);
  });

  it('does not retry an overloaded recipient soon: its first retry waits the fifth backoff step', async () => {
    const w = new World({ retryBaseMs: 100, retryMaxMs: 60_000 });
    w.failForwards.set('bob', 1);
    w.overloaded.add('bob');
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    expect(w.wakes.get('alice')).toBe(w.now + 1_600); // 100 x 2^4, not 100
    await w.advance(1_600);
    expect(w.count('inbox', 'bob')).toBe(1);
  });

  it('logs a failed forward through the Logger port, with the error, at warn', async () => {
    const w = new World({ retryBaseMs: 100 });
    w.failForwards.set('bob', 1);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    expect(w.logs).toHaveLength(1);
    expect(w.logs[0]).toMatchObject({ level: 'warn', message: expect.stringContaining('forward alice -> bob failed') });
    expect((w.logs[0]!.error as Error).message).toBe('injected failure forwarding to bob');
  });

  it('a forward repeated after the recipient stored it (lost reply) is not stored twice', async () => {
    const w = new World();
    w.remote.add('bob');
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    const batch = w.forwardCalls[0]!.batch;
    const r = await w.mailbox('bob').receive(batch);
    expect(r.acceptedUpTo).toBe(1);
    expect(w.count('inbox', 'bob')).toBe(1);
  });

  it('nothing acked is lost when the sender shard restarts before forwarding', async () => {
    const w = new World();
    w.failForwards.set('bob', 1);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'survives', 'c1');
    expect(w.count('outbox', 'alice')).toBe(1);
    w.evict('alice');
    await w.advance(60_000);
    expect(w.count('inbox', 'bob')).toBe(1);
  });

  it('keeps per-conversation order with two senders interleaved', async () => {
    const w = new World();
    const a = w.connect('alice');
    const c = w.connect('carol');
    await a.hello('a1');
    await c.hello('c1');
    for (let i = 0; i < 20; i++) {
      await a.post('bob', `a${i}`, `a${i}`);
      await c.post('bob', `c${i}`, `c${i}`);
    }
    const b = w.connect('bob');
    await b.hello('b1', 0);
    let last = 0;
    while (b.texts().length < 40 && b.entries().at(-1)!.seq !== last) {
      last = b.entries().at(-1)!.seq;
      await b.ack(last);
    }
    const texts = b.texts();
    expect(texts.filter((t) => t.startsWith('a'))).toEqual(Array.from({ length: 20 }, (_, i) => `a${i}`));
    expect(texts.filter((t) => t.startsWith('c'))).toEqual(Array.from({ length: 20 }, (_, i) => `c${i}`));
  });
});

describe('presence', () => {
  it('reports online, then last seen after disconnect, and never-seen as 0', async () => {
    const w = new World();
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    await a.frame({ t: 'presence_query', ref: 'q1', users: ['bob', 'zed'] });
    expect(a.of('presence')[0]).toEqual({
      t: 'presence',
      ref: 'q1',
      users: [
        { user: 'bob', online: true, lastSeen: w.now },
        { user: 'zed', online: false, lastSeen: 0 },
      ],
    });
    const leftAt = (w.now += 5000);
    await b.disconnect();
    w.now += 5000;
    await a.frame({ t: 'presence_query', ref: 'q2', users: ['bob'] });
    expect(a.of('presence')[1]?.users).toEqual([{ user: 'bob', online: false, lastSeen: leftAt }]);
    // Asking about someone creates nothing for them.
    expect(w.count('users', 'zed')).toBe(0);
  });

  it('rate limits presence queries from the same bucket as sends', async () => {
    const w = new World({ ratePerSec: 1, rateBurst: 2 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 0; i < 3; i++) await a.frame({ t: 'presence_query', ref: `q${i}`, users: ['bob'] });
    expect(a.of('presence')).toHaveLength(2);
    expect(a.of('error')[0]).toMatchObject({ code: 'rate_limited', ref: 'q2' });
  });
});
