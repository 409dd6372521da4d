import { describe, expect, it } from 'vitest';
import type { IrisError, KeysInput, KeysStateInfo, Prekey } from '../../../client/index.js';
import { HELLO_FEATURES, encodeJson } from '../../../protocol/index.js';
import { RawSocket, waitFor } from '../helpers.js';
import type { ConformanceContext } from './index.js';

/**
 * The key directory (PROTOCOL.md 8.9), black box, on every profile: bundles with one entry per device and one
 * one-time prekey each, every prekey handed out once however many fetch at the same time, an empty pool answered
 * with the signed and last-resort keys, the low-pool push reaching the owner, the device list, refusals.
 */

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);
const prekeys = (from: number, count: number): Prekey[] => Array.from({ length: count }, (_, i) => ({ id: from + i, key: bytes(33, (from + i) % 256) }));

function keys(identity: number, pre: Prekey[], lastResort = true): KeysInput {
  return {
    identity: bytes(33, identity),
    signed: { id: identity, key: bytes(33, 2), sig: bytes(64, 3), ts: 1_700_000_000_000 },
    ...(lastResort && { lastResort: { id: 1, key: bytes(1569, 4), sig: bytes(64, 5) } }),
    prekeys: pre,
  };
}

export function keysFeature({ online, pool, target }: ConformanceContext): void {
  describe('key directory', () => {
    it('two devices upload; another user gets two entries with one one-time key each; an empty pool says so', async () => {
      const a = await online('a');
      const a2 = pool.make(a.u, { device: 'd2' });
      await a2.connect();
      expect(await a.c.uploadKeys(keys(1, prekeys(1, 3)))).toEqual({ device: 'd1', count: 3, low: true });
      expect(await a2.uploadKeys(keys(2, prekeys(50, 1), false))).toEqual({ device: 'd2', count: 1, low: true });
      const b = await online('b');
      expect(await b.c.devices(a.u)).toEqual(['d1', 'd2']);
      const first = await b.c.fetchBundle(a.u);
      expect(first.map((e) => [e.device, e.prekey?.id])).toEqual([['d1', 1], ['d2', 50]]);
      expect(first[0]!.identity).toEqual(bytes(33, 1));
      expect(first[0]!.signed).toEqual({ id: 1, key: bytes(33, 2), sig: bytes(64, 3), ts: 1_700_000_000_000 });
      expect(first[0]!.lastResort?.key).toEqual(bytes(1569, 4));
      expect(first[1]!.lastResort).toBeUndefined();
      const second = await b.c.fetchBundle(a.u);
      expect(second.map((e) => [e.device, e.prekey?.id])).toEqual([['d1', 2], ['d2', undefined]]);
      expect(second[1]!.signed.id).toBe(2);
      // A user without keys: an empty bundle.
      const c = await online('c');
      expect(await b.c.fetchBundle(c.u)).toEqual([]);
      expect(await b.c.devices(c.u)).toEqual([]);
    }, 60_000);

    it('100 concurrent fetches over several users never see a key twice; keys_low reaches the owner once', async () => {
      const a = await online('a');
      const low: KeysStateInfo[] = [];
      a.c.on('keysLow', (e) => void low.push(e));
      expect((await a.c.uploadKeys(keys(1, prekeys(1000, 100)))).count).toBe(100);
      const fetchers = await Promise.all([0, 1, 2, 3].map((i) => online(`f${i}`)));
      const bundles = await Promise.all(fetchers.flatMap((f) => Array.from({ length: 25 }, () => f.c.fetchBundle(a.u))));
      const ids = bundles.map((b) => b[0]?.prekey?.id);
      expect(ids.every((id) => id !== undefined)).toBe(true);
      expect(new Set(ids).size).toBe(100);
      expect([...ids].sort((x, y) => x! - y!)).toEqual(prekeys(1000, 100).map((k) => k.id));
      // The pool is empty now: signed and last-resort keys only.
      const empty = await fetchers[0]!.c.fetchBundle(a.u);
      expect(empty[0]!.prekey).toBeUndefined();
      expect(empty[0]!.lastResort?.id).toBe(1);
      // The push went to a's socket before any answer that follows it there.
      await a.c.devices(a.u);
      await waitFor(() => low.length === 1, 10_000, 'keys_low');
      expect(low).toEqual([{ device: 'd1', count: 19, low: true }]);
    }, 120_000);

    it('keys_state is pushed only to connections whose hello named the keys feature, and at hello while low', async () => {
      const a = await online('a');
      await a.c.uploadKeys(keys(1, prekeys(1, 1)));
      const raw = await RawSocket.open(target().url, await target().token(a.u));
      raw.send(encodeJson({ t: 'hello', device: 'd1', cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.keys }));
      const st = await raw.next((f) => f.frame.t === 'keys_state');
      expect(st.frame).toEqual({ t: 'keys_state', ref: '', device: 'd1', count: 1, low: true });
      raw.close();
    }, 60_000);

    it('refuses a first upload without identity, and an upload past the pool cap, with invalid_field', async () => {
      const a = await online('a');
      const err = await a.c.uploadKeys({ prekeys: prekeys(1, 1) }).catch((e: IrisError) => e);
      expect((err as IrisError).code).toBe('invalid_field');
      await a.c.uploadKeys(keys(1, prekeys(1, 100)));
      const over = await a.c.uploadKeys({ prekeys: prekeys(500, 1) }).catch((e: IrisError) => e);
      expect((over as IrisError).code).toBe('invalid_field');
    }, 60_000);
  });
}
