import { afterEach, describe, expect, it, vi } from 'vitest';
import { logLine, traceId } from '../../core/log-line.js';
import { consoleLogger } from '../../durable-objects/log.js';
import { Dec, decodeForward, encodeForward } from '../../onprem/links.js';
import { World } from './core-harness.js';

/** Structured logs (core/log-line.ts) and the trace id that follows a message from its connection to the recipient. */

describe('log lines: one JSON object per line, same shape on both profiles', () => {
  afterEach(() => vi.restoreAllMocks());

  it('writes ts, level, msg, profile and the context, fields in a fixed order, the error on one line', () => {
    const e = new Error('boom\nsecond line', { cause: Object.assign(new Error('disk'), { code: 'ENOSPC' }) });
    const line = logLine({ profile: 'onprem', worker: 2 }, 'warn', 'forward failed', e, { user: 'alice', trace: 'abc' }, Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(line).not.toContain('\n');
    expect(JSON.parse(line)).toEqual({
      ts: '2026-01-02T03:04:05.000Z',
      level: 'warn',
      msg: 'forward failed',
      profile: 'onprem',
      worker: 2,
      user: 'alice',
      trace: 'abc',
      error: 'Error: boom\nsecond line <- cause: Error: disk (ENOSPC)',
    });
    expect(Object.keys(JSON.parse(logLine({ profile: 'cloudflare', user: 'bob' }, 'info', 'x')) as object)).toEqual(['ts', 'level', 'msg', 'profile', 'user']);
  });

  it('the Cloudflare logger writes the same shape, with the object\'s user, filtered by IRIS_LOG', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const info = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const log = consoleLogger('warn', () => ({ user: 'alice' }));
    log.log('info', 'not written');
    log.log('warn', 'forward failed', new Error('down'), { trace: 't1' });
    expect(info).not.toHaveBeenCalled();
    expect(JSON.parse(warn.mock.calls[0]![0] as string)).toMatchObject({ level: 'warn', msg: 'forward failed', profile: 'cloudflare', user: 'alice', trace: 't1', error: 'Error: down' });
  });
});

describe('trace ids', () => {
  it('takes the trace-id of a valid W3C traceparent, otherwise makes a random one of the same format', () => {
    expect(traceId('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    for (const bad of [null, undefined, '', 'garbage', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01']) {
      const t = traceId(bad);
      expect(t).toMatch(/^[0-9a-f]{32}$/);
      expect(t).not.toBe('00000000000000000000000000000000');
    }
    expect(traceId(null)).not.toBe(traceId(null));
  });

  it('the on-prem link carries a batch\'s trace id, and a batch without one', () => {
    const body = new Uint8Array([1, 2]);
    for (const batch of [
      { from: 'alice', items: [{ n: 1, kind: 'message' as const, msg: 'alice:1', ts: 5, body }], trace: '4bf92f3577b34da6a3ce929d0e0e4736' },
      { from: 'alice', items: [], read: { n: 3, msg: 'bob:3', ts: 9 } },
    ]) {
      expect(decodeForward(new Dec(encodeForward(7, 'bob', batch).subarray(4 + 1 + 4)))).toEqual({ to: 'bob', batch });
    }
  });

  it('follows a message from the sender\'s connection into the forward and onto the lines about it', async () => {
    const w = new World({ retryBaseMs: 100 });
    w.failForwards.set('bob', 1);
    const a = w.connect('alice');
    a.trace = 'feedfacefeedfacefeedfacefeedface';
    await a.hello('a1');
    await a.post('bob', 'hi', 'c1');
    expect(w.forwardCalls[0]!.batch.trace).toBe(a.trace);
    // The failed forward's retry line names the trace; no line was written for the message itself.
    expect(w.logs).toEqual([expect.objectContaining({ level: 'warn', fields: { user: 'alice', trace: a.trace } })]);
    await w.advance(100);
    expect(w.count('inbox', 'bob')).toBe(1);
    expect(w.forwardCalls.at(-1)!.batch.trace).toBe(a.trace);
  });

  it('the recipient\'s shard logs a batch it could not store with the batch\'s trace id', async () => {
    const w = new World({}, true);
    const body = new Uint8Array([1]);
    const p = w.mailbox('bob').receive({ from: 'carol', items: [{ n: 1, kind: 'message', msg: 'carol:1', ts: w.now, body }], trace: 'abc' });
    w.failNextFlush(new Error('I/O error'));
    w.flush();
    await expect(p).rejects.toThrow('I/O error');
    expect(w.logs).toEqual([expect.objectContaining({ level: 'warn', message: 'bob: forward from carol not stored', fields: { user: 'bob', trace: 'abc' } })]);
  });
});
