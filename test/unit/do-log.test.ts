import { afterEach, describe, expect, it, vi } from 'vitest';
import { consoleLogger, isOverloaded } from '../../durable-objects/log.js';

describe('Cloudflare logger and overload detection (durable-objects/log.ts)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('writes lines at or above IRIS_LOG, each one JSON object with the error described on it, and drops the rest', () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const info = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    const log = consoleLogger('warn');
    const e = new Error('boom');
    log.log('info', 'not written');
    log.log('warn', 'forward failed', e);
    log.log('error', 'unexpected');
    expect(info).not.toHaveBeenCalled();
    expect(JSON.parse(warn.mock.calls[0]![0] as string)).toMatchObject({ level: 'warn', msg: 'forward failed', profile: 'cloudflare', error: 'Error: boom' });
    expect(warn.mock.calls[0]).toHaveLength(1);
    expect(JSON.parse(err.mock.calls[0]![0] as string)).toMatchObject({ level: 'error', msg: 'unexpected', profile: 'cloudflare' });
  });

  it('tells an overloaded Durable Object error from others', () => {
    expect(isOverloaded(Object.assign(new Error('Durable Object is overloaded'), { overloaded: true }))).toBe(true);
    expect(isOverloaded(Object.assign(new Error('network'), { retryable: true }))).toBe(false);
    expect(isOverloaded('overloaded')).toBe(false);
    expect(isOverloaded(null)).toBe(false);
  });
});
