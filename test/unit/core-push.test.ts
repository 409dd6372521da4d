import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { pushSettingsFromEnv, type PushPayload, type PushSettings } from '../../core/push.js';
import type { PushHttp } from '../../core/ports.js';
import { World } from './core-harness.js';

/**
 * Push webhooks (core/push.ts) over the core harness: a fake PushHttp port records each call and answers the
 * statuses a test queues; the harness clock drives the coalescing window and the retries (Mailbox.onWake).
 */

const SECRET = 'push-secret';

interface Call {
  payload: PushPayload;
  body: string;
  headers: Record<string, string>;
}

function fakeHttp(statuses: number[] = []): PushHttp & { calls: Call[]; hang: boolean } {
  const calls: Call[] = [];
  const http = {
    calls,
    hang: false,
    post(_url: string, body: string, headers: Record<string, string>): Promise<number> {
      calls.push({ payload: JSON.parse(body) as PushPayload, body, headers });
      if (http.hang) return new Promise<number>(() => undefined);
      return Promise.resolve(statuses.shift() ?? 200);
    },
  };
  return http;
}

function world(http: PushHttp, over: Partial<PushSettings> = {}): { w: World; counts: { sent: number; failed: number; dead: number } } {
  const w = new World();
  const counts = { sent: 0, failed: 0, dead: 0 };
  const settings = { ...pushSettingsFromEnv({ IRIS_PUSH_URL: 'http://127.0.0.1:1/push', IRIS_PUSH_SECRET: SECRET }), ...over };
  w.push = { settings, http };
  w.metrics = { pushSent: () => counts.sent++, pushFailed: () => counts.failed++, pushDeadLettered: () => counts.dead++ };
  return { w, counts };
}

/**
 * Waits until `ok()` holds: the signature is computed by WebCrypto on the thread pool, so a call leaves some
 * event-loop turns after the wake that started it (the harness's settle() does not cover those).
 */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !ok(); i++) await new Promise((r) => setImmediate(r));
  if (!ok()) throw new Error('condition never held');
}

/** bob registers device b1 (one hello), then goes offline. */
async function offlineBob(w: World): Promise<void> {
  const b = w.connect('bob');
  await b.hello('b1');
  await b.disconnect();
}

describe('push webhooks', () => {
  it('coalesces a burst for an offline device into one signed call with its count', async () => {
    const http = fakeHttp();
    const { w, counts } = world(http);
    await offlineBob(w);
    const a = w.connect('alice');
    await a.hello('a1');
    for (let i = 0; i < 5; i++) await a.post('bob', `m${i}`, `c${i}`);
    expect(http.calls).toEqual([]); // nothing leaves before the coalescing window ends
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    expect(http.calls.length).toBe(1);
    const { payload, body, headers } = http.calls[0]!;
    expect(payload).toMatchObject({ user: 'bob', device: 'b1', sender: 'alice', conversation: 'alice', count: 5 });
    expect(body).not.toContain('m4');
    const ts = headers['X-Iris-Timestamp']!;
    const want = createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex');
    expect(headers['X-Iris-Signature']).toBe(`sha256=${want}`);
    await w.advance(10_000);
    expect(http.calls.length).toBe(1);
    expect(counts).toEqual({ sent: 1, failed: 0, dead: 0 });
  });

  it('sends nothing for a device that is online, nor one that connects within the window', async () => {
    const http = fakeHttp();
    const { w } = world(http);
    const b = w.connect('bob');
    await b.hello('b1');
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    await w.advance(5_000);
    expect(http.calls).toEqual([]);
    await b.disconnect();
    await a.post('bob', 'hi again', 'c2');
    const b2 = w.connect('bob');
    await b2.hello('b1');
    await w.advance(5_000);
    // A positive control: once offline for good, the next message is pushed, and it is the only call ever made
    // (a wrongly made earlier call would have left first).
    await b2.disconnect();
    await a.post('bob', 'third', 'c3');
    await w.advance(1_000);
    await until(() => http.calls.length === 1);
    expect(http.calls[0]!.payload).toMatchObject({ msg: 'alice:3', count: 1 });
  });

  it('retries a 500 with backoff, then succeeds; messages during the retry join its count', async () => {
    const http = fakeHttp([500]);
    const { w, counts } = world(http, { retryBaseMs: 2_000 });
    await offlineBob(w);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'one', 'c1');
    await w.advance(1_000);
    await until(() => counts.failed === 1);
    expect(http.calls.length).toBe(1);
    await a.post('bob', 'two', 'c2');
    await w.advance(1_000);
    expect(http.calls.length).toBe(1); // the retry waits its backoff (random = 1: the full step)
    await w.advance(1_000);
    await until(() => counts.sent === 1);
    expect(http.calls.length).toBe(2);
    expect(http.calls[1]!.payload.count).toBe(2);
    expect(counts).toEqual({ sent: 1, failed: 1, dead: 0 });
  });

  it('dead-letters a push after the last attempt', async () => {
    const http = fakeHttp([500, 502, 503]);
    const { w, counts } = world(http, { retryBaseMs: 100, maxAttempts: 3 });
    await offlineBob(w);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'one', 'c1');
    for (let i = 0; i < 3; i++) {
      await w.advance(1_000);
      await until(() => counts.failed === i + 1);
    }
    await w.advance(10_000);
    expect(http.calls.length).toBe(3);
    expect(counts).toEqual({ sent: 0, failed: 3, dead: 1 });
  });

  it('a receiver that hangs does not hold up the send or its ack', async () => {
    const http = fakeHttp();
    http.hang = true;
    const { w } = world(http);
    await offlineBob(w);
    const a = w.connect('alice');
    await a.hello('a1');
    await a.post('bob', 'one', 'c1');
    await w.advance(1_000);
    await until(() => http.calls.length === 1);
    await a.post('bob', 'two', 'c2');
    expect(a.of('send_ack').length).toBe(2);
  });
});
