import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ClientFrame } from '../../protocol/index.js';
import { IrisError } from '../../client/errors.js';
import { IdGenerator } from '../../client/ids.js';
import { KeyDirectory, type KeysStateInfo } from '../../client/keys.js';

/** The SDK's key directory requests (client/keys.ts): answered by ref, written again on a new connection, refused, timed out. */
describe('client key directory', () => {
  let written: { gen: number; f: ClientFrame }[];
  let low: KeysStateInfo[];
  let gen: number;
  let connected: boolean;
  let k: KeyDirectory;

  beforeEach(() => {
    vi.useFakeTimers();
    written = [];
    low = [];
    gen = 1;
    connected = true;
    k = new KeyDirectory({ current: () => (connected ? { gen, write: (f: ClientFrame) => written.push({ gen, f }) } : null) }, new IdGenerator(), 10_000, (e) => low.push(e));
  });
  afterEach(() => {
    k.rejectAll(new IrisError('closed', 'test over'));
    vi.useRealTimers();
  });

  const refOf = (i: number): string => (written[i]!.f as { ref: string }).ref;

  it('resolves each request with its own answer; an empty-ref keys_state is the keysLow event', async () => {
    const up = k.upload({ identity: new Uint8Array([1]), signed: { id: 1, key: new Uint8Array([2]), sig: new Uint8Array([3]), ts: 4 }, prekeys: [{ id: 9, key: new Uint8Array([5]) }] });
    const fetch = k.fetchBundle('bob');
    const devs = k.devices('bob');
    expect(written.map((w) => w.f.t)).toEqual(['keys_upload', 'keys_fetch', 'devices_query']);
    k.frame({ t: 'devices', ref: refOf(2), user: 'bob', devices: ['d1'] });
    k.frame({ t: 'keys_bundle', ref: refOf(1), user: 'bob', devices: [] });
    k.frame({ t: 'keys_state', ref: refOf(0), device: 'me', count: 1, low: true });
    k.frame({ t: 'keys_state', ref: '', device: 'me', count: 0, low: true });
    expect(await up).toEqual({ device: 'me', count: 1, low: true });
    expect(await fetch).toEqual([]);
    expect(await devs).toEqual(['d1']);
    expect(low).toEqual([{ device: 'me', count: 0, low: true }]);
  });

  it('waits for a connection, is written again on a new one, and is rejected by an error about its ref or a timeout', async () => {
    connected = false;
    const fetch = k.fetchBundle('bob');
    expect(written).toEqual([]);
    connected = true;
    k.rewrite();
    gen = 2;
    k.rewrite();
    k.rewrite();
    expect(written.map((w) => w.gen)).toEqual([1, 2]);
    expect(k.refused(refOf(0), new IrisError('rate_limited', 'slow down', { retryAfter: 5 }))).toBe(true);
    await expect(fetch).rejects.toMatchObject({ code: 'rate_limited', retryAfter: 5 });
    const late = k.devices('carol');
    vi.advanceTimersByTime(10_000);
    await expect(late).rejects.toMatchObject({ code: 'timeout' });
  });
});
