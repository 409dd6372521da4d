import { describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/index.js';
import { World } from './core-harness.js';

/**
 * Regression (outside security review): a client that never reads while it sends invalid frames or pings got
 * an error frame or a pong for each, queued without bound. Every per-connection cost is bounded now: frames by
 * a per-connection rate, refusals in a row by a 4002 close, queued bytes by a 4003 close.
 */

describe('per-connection bounds', () => {
  it('closes a connection with 4002 after maxErrorsInRow invalid frames, one error frame each', async () => {
    const w = new World({ maxErrorsInRow: 5 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 0; i < 20 && !a.closed; i++) await a.raw(new Uint8Array([0xee, 1, 2]));
    expect(a.closed?.code).toBe(CLOSE_CODES.too_many_errors);
    expect(a.of('error').map((e) => e.code)).toEqual(['unknown_type', 'unknown_type', 'unknown_type', 'unknown_type', 'unknown_type']);
  });

  it('counts errors in a row: a clean frame in between starts the count again', async () => {
    const w = new World({ maxErrorsInRow: 3 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 0; i < 10; i++) {
      await a.raw('{"t":"send"}');
      await a.raw('{"t":"send"}');
      await a.frame({ t: 'ping' });
    }
    expect(a.closed).toBeNull();
    expect(a.of('error')).toHaveLength(20);
    expect(a.of('pong')).toHaveLength(10);
  });

  it('does not count back-pressure (the user send rate) as errors', async () => {
    const w = new World({ maxErrorsInRow: 3, rateBurst: 2, ratePerSec: 1 });
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 0; i < 10; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(a.closed).toBeNull();
    expect(a.of('error').filter((e) => e.code === 'rate_limited')).toHaveLength(8);
  });

  it('rate-limits frames per connection (pings included), with retryAfter, and closes a client that ignores it', async () => {
    const w = new World({ connFrameBurst: 4, connFramesPerSec: 2, rateBurst: 1, ratePerSec: 1, maxErrorsInRow: 3 });
    const a = w.connect('alice');
    const b = w.connect('alice');
    await a.hello('a1');
    await b.hello('a2');
    for (let i = 0; i < 3; i++) await a.frame({ t: 'ping' });
    await a.frame({ t: 'ping' }); // the fifth frame of this connection (hello was the first)
    const limited = a.of('error');
    expect(limited).toHaveLength(1);
    expect(limited[0]).toMatchObject({ code: 'rate_limited', retryAfter: 500 });
    expect(a.of('pong')).toHaveLength(3);
    // Another connection of the same user has its own budget.
    await b.frame({ t: 'ping' });
    expect(b.of('pong')).toHaveLength(1);
    // After retryAfter the connection may talk again.
    w.now += 500;
    await a.frame({ t: 'ping' });
    expect(a.of('pong')).toHaveLength(4);
    expect(a.closed).toBeNull();
    expect(b.closed).toBeNull();
  });

  it('closes a connection that keeps flooding past its frame rate (4002), even when the refill lets some frames through', async () => {
    const flood = async (gapMs: number, perRound: number, rounds: number) => {
      const w = new World({ connFrameBurst: 4, connFramesPerSec: 2, rateBurst: 1, ratePerSec: 1, maxErrorsInRow: 3 });
      const a = w.connect('alice');
      await a.hello('a1');
      for (let i = 0; i < 3; i++) await a.frame({ t: 'ping' }); // the burst is spent
      for (let i = 0; i < rounds && !a.closed; i++) {
        w.now += gapMs; // the refill gives one frame back every 500 ms
        for (let j = 0; j < perRound; j++) await a.frame({ t: 'ping' });
      }
      return a;
    };
    // Two frames every 500 ms against 2 per second: one refused each round, less than a second apart.
    const flooder = await flood(500, 2, 10);
    expect(flooder.closed?.code).toBe(CLOSE_CODES.too_many_errors);
    expect(flooder.of('error').filter((e) => e.code === 'rate_limited')).toHaveLength(3);
    // One frame over every second: refused each round, but a second apart, so the count starts again.
    const bursty = await flood(1_000, 3, 10);
    expect(bursty.of('error').filter((e) => e.code === 'rate_limited')).toHaveLength(10);
    expect(bursty.closed).toBeNull();
  });

  it('closes a socket that stopped reading (4003) instead of queueing more; the entries wait for the next connection', async () => {
    const w = new World({ maxQueuedBytes: 10_000 });
    const a = w.connect('alice');
    const bob = w.connect('bob');
    await a.hello('a1');
    await bob.hello('b1');
    await a.post('bob', 'one', 'c1');
    expect(bob.texts()).toEqual(['one']);
    bob.queuedBytes = 9_990; // the client has not read what it was sent
    await a.post('bob', 'two', 'c2');
    await a.post('bob', 'three', 'c3');
    expect(bob.closed?.code).toBe(CLOSE_CODES.slow_consumer);
    expect(bob.texts()).toEqual(['one']);
    await w.mailbox('bob').onClose(bob);
    // Replies are bounded the same way: a ping into a full queue gets no pong, the socket is closed.
    a.queuedBytes = 10_000;
    await a.frame({ t: 'ping' });
    expect(a.of('pong')).toHaveLength(0);
    expect(a.closed?.code).toBe(CLOSE_CODES.slow_consumer);

    const bob2 = w.connect('bob');
    await bob2.hello('b1', 0);
    expect(bob2.texts()).toEqual(['one', 'two', 'three']);
  });
});
