import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES, LIMITS, type KeysUpload, type Prekey } from '../../protocol/index.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * The key directory (PROTOCOL.md 8.9, core/keys.ts): uploads replace or top up, a fetch hands each one-time prekey
 * out exactly once (removed in the commit that reads it), an empty pool says so, a pool below the threshold is
 * pushed once per crossing, fetches are rate-limited per requester, and the device list names who has keys.
 */

const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);
const prekeys = (from: number, count: number): Prekey[] => Array.from({ length: count }, (_, i) => ({ id: from + i, key: bytes(33, (from + i) % 256) }));

function upload(ref: string, opts: Partial<KeysUpload> = {}): KeysUpload {
  return {
    t: 'keys_upload',
    ref,
    identity: bytes(33, 1),
    signed: { id: 7, key: bytes(33, 2), sig: bytes(64, 3), ts: 1_700_000_000_000 },
    prekeys: [],
    ...opts,
  };
}

async function online(w: World, user: string, device: string, features: number = HELLO_FEATURES.keys): Promise<FakeConn> {
  const c = w.connect(user);
  await c.frame({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features });
  return c;
}

const fetch = (c: FakeConn, user: string, ref: string) => c.frame({ t: 'keys_fetch', ref, user });
const bundle = (c: FakeConn, ref: string) => c.of('keys_bundle').find((b) => b.ref === ref);
const errorOf = (c: FakeConn, ref: string) => c.of('error').find((e) => e.ref === ref);

describe('key directory', () => {
  it('uploads from two devices; a fetch gets one entry per device with one one-time prekey each, removed', async () => {
    const w = new World();
    const a1 = await online(w, 'alice', 'a1');
    const a2 = await online(w, 'alice', 'a2');
    await a1.frame(upload('u1', { prekeys: prekeys(1, 3), lastResort: { id: 9, key: bytes(1569, 4), sig: bytes(64, 5) } }));
    await a2.frame(upload('u2', { identity: bytes(33, 8), prekeys: prekeys(100, 2) }));
    expect(a1.of('keys_state')).toEqual([{ t: 'keys_state', ref: 'u1', device: 'a1', count: 3, low: true }]);
    const bob = await online(w, 'bob', 'b1');
    await fetch(bob, 'alice', 'f1');
    const b = bundle(bob, 'f1')!;
    expect(b.user).toBe('alice');
    expect(b.devices.map((d) => [d.device, d.prekey?.id])).toEqual([['a1', 1], ['a2', 100]]);
    expect(b.devices[0]!.lastResort?.key.byteLength).toBe(1569);
    expect(b.devices[0]!.signed).toEqual({ id: 7, key: bytes(33, 2), sig: bytes(64, 3), ts: 1_700_000_000_000 });
    expect(b.devices[1]!.lastResort).toBeUndefined();
    await fetch(bob, 'alice', 'f2');
    expect(bundle(bob, 'f2')!.devices.map((d) => d.prekey?.id)).toEqual([2, 101]);
    const left = w.db.prepare(`SELECT device, count(*) AS n FROM one_time_prekeys WHERE user = 'alice' GROUP BY device ORDER BY device`).all();
    expect(left.map((r) => [r['device'], r['n']])).toEqual([['a1', 1]]);
  });

  it('an empty pool says so: the entry carries the signed prekey and the last-resort key only', async () => {
    const w = new World();
    const a1 = await online(w, 'alice', 'a1');
    await a1.frame(upload('u', { prekeys: prekeys(1, 1), lastResort: { id: 9, key: bytes(1000, 4), sig: bytes(64, 5) } }));
    const bob = await online(w, 'bob', 'b1');
    await fetch(bob, 'alice', 'f1');
    await fetch(bob, 'alice', 'f2');
    expect(bundle(bob, 'f1')!.devices[0]!.prekey?.id).toBe(1);
    const e = bundle(bob, 'f2')!.devices[0]!;
    expect(e.prekey).toBeUndefined();
    expect(e.signed.id).toBe(7);
    expect(e.lastResort?.id).toBe(9);
  });

  it('100 concurrent fetchers, over several users: every prekey handed out exactly once', async () => {
    const w = new World({ keysFetchBurst: 100 });
    const a1 = await online(w, 'alice', 'a1');
    await a1.frame(upload('u1', { prekeys: prekeys(1, 100) }));
    await a1.frame(upload('u2', { prekeys: prekeys(101, 0) }));
    const fetchers = await Promise.all(Array.from({ length: 10 }, (_, i) => online(w, `f${i}`, `f${i}-d`)));
    // All 120 fetches enter the core before any of them finishes: the commits run concurrently.
    await Promise.all(fetchers.flatMap((c, i) => Array.from({ length: 12 }, (_, j) => w.mailbox(`f${i}`).onMessage(c, JSON.stringify({ t: 'keys_fetch', ref: `r${j}`, user: 'alice' })))));
    await w.settle();
    const got = fetchers.flatMap((c) => c.of('keys_bundle').map((b) => b.devices[0]!.prekey?.id));
    expect(got).toHaveLength(120);
    const ids = got.filter((x): x is number => x !== undefined);
    expect(ids).toHaveLength(100);
    expect(new Set(ids).size).toBe(100);
    expect([...ids].sort((x, y) => x - y)).toEqual(prekeys(1, 100).map((k) => k.id));
  });

  it('uploads replace identity, signed and last-resort keys and top the pool up; a retried id counts once', async () => {
    const w = new World({ keysPoolCap: 10 });
    const a1 = await online(w, 'alice', 'a1');
    await a1.frame(upload('u1', { prekeys: prekeys(1, 5) }));
    await a1.frame({ t: 'keys_upload', ref: 'u2', identity: new Uint8Array(0), signed: { id: 8, key: bytes(33, 9), sig: bytes(64, 9), ts: 5 }, prekeys: prekeys(4, 4) });
    expect(a1.of('keys_state').at(-1)).toMatchObject({ ref: 'u2', count: 7 });
    // Past the cap: refused whole, nothing stored.
    await a1.frame({ t: 'keys_upload', ref: 'u3', identity: new Uint8Array(0), prekeys: prekeys(20, 4) });
    expect(errorOf(a1, 'u3')?.code).toBe('invalid_field');
    const bob = await online(w, 'bob', 'b1');
    await bob.frame({ t: 'devices_query', ref: 'q', user: 'alice' });
    expect(bob.of('devices')).toEqual([{ t: 'devices', ref: 'q', user: 'alice', devices: ['a1'] }]);
    await fetch(bob, 'alice', 'f');
    expect(bundle(bob, 'f')!.devices[0]!.signed.id).toBe(8);
    expect(bundle(bob, 'f')!.devices[0]!.identity).toEqual(bytes(33, 1));
    // A new identity starts the device over: its old prekeys are gone.
    await a1.frame(upload('u4', { identity: bytes(33, 42), prekeys: prekeys(50, 1) }));
    expect(a1.of('keys_state').at(-1)).toMatchObject({ ref: 'u4', count: 1 });
  });

  it('refuses bad uploads with typed errors: no identity at first, empty keys, duplicate ids, sizes', async () => {
    const w = new World();
    const a1 = await online(w, 'alice', 'a1');
    await a1.frame({ t: 'keys_upload', ref: 'x1', identity: new Uint8Array(0), prekeys: prekeys(1, 1) });
    await a1.frame(upload('x2', { prekeys: [{ id: 1, key: bytes(33, 1) }, { id: 1, key: bytes(33, 2) }] }));
    await a1.frame(upload('x3', { prekeys: [{ id: 1, key: new Uint8Array(0) }] }));
    await a1.frame(upload('x4', { identity: bytes(LIMITS.maxKeyBytes + 1, 1) }));
    await a1.frame(upload('x5', { prekeys: prekeys(1, LIMITS.maxPrekeysPerUpload + 1) }));
    for (const ref of ['x1', 'x2', 'x3']) expect(errorOf(a1, ref)?.code).toBe('invalid_field');
    expect(a1.of('error').map((e) => e.code).slice(3)).toEqual(['invalid_field', 'invalid_field']);
    expect(w.db.prepare('SELECT count(*) AS n FROM device_keys').get()!['n']).toBe(0);
  });

  it('pushes keys_state to the owner once per crossing below the threshold, again after a top-up, and at hello', async () => {
    const w = new World({ keysLowThreshold: 3 });
    const a1 = await online(w, 'alice', 'a1');
    const old = await online(w, 'alice', 'a-old', 0);
    await a1.frame(upload('u', { prekeys: prekeys(1, 5) }));
    const bob = await online(w, 'bob', 'b1');
    const pushes = () => a1.of('keys_state').filter((s) => s.ref === '');
    await fetch(bob, 'alice', 'f1');
    await fetch(bob, 'alice', 'f2');
    expect(pushes()).toEqual([]);
    await fetch(bob, 'alice', 'f3'); // 2 left: crossed
    expect(pushes()).toEqual([{ t: 'keys_state', ref: '', device: 'a1', count: 2, low: true }]);
    await fetch(bob, 'alice', 'f4');
    await fetch(bob, 'alice', 'f5');
    await fetch(bob, 'alice', 'f6'); // empty
    expect(pushes()).toHaveLength(1);
    expect(old.of('keys_state')).toEqual([]); // its hello did not name the feature
    // Still low at the next hello of the device.
    const again = await online(w, 'alice', 'a1');
    expect(again.of('keys_state')).toEqual([{ t: 'keys_state', ref: '', device: 'a1', count: 0, low: true }]);
    // Topped up to the threshold: the next fall below it is a new crossing.
    await again.frame(upload('u2', { prekeys: prekeys(10, 3) }));
    await fetch(bob, 'alice', 'f7');
    expect(again.of('keys_state').filter((s) => s.ref === '')).toHaveLength(2);
  });

  it('rate-limits fetches and device queries per requester, in a bucket of their own', async () => {
    const w = new World({ keysFetchBurst: 3, keysFetchPerSec: 1 });
    const bob = await online(w, 'bob', 'b1');
    for (let i = 0; i < 3; i++) await fetch(bob, 'alice', `f${i}`);
    await bob.frame({ t: 'devices_query', ref: 'q', user: 'alice' });
    const e = errorOf(bob, 'q');
    expect(e?.code).toBe('rate_limited');
    expect(e?.retryAfter).toBeGreaterThan(0);
    // Sends are not touched by it.
    await bob.post('carol', 'hi', 'm1');
    expect(bob.of('send_ack')).toHaveLength(1);
    // Another requester has its own bucket.
    const carol = await online(w, 'carol', 'c1');
    await fetch(carol, 'alice', 'c');
    expect(bundle(carol, 'c')).toBeDefined();
    w.now += 1_000;
    await fetch(bob, 'alice', 'later');
    expect(bundle(bob, 'later')).toBeDefined();
  });

  it('a user without keys (or who does not exist) has an empty bundle and no devices; an own fetch works', async () => {
    const w = new World();
    const bob = await online(w, 'bob', 'b1');
    await fetch(bob, 'nobody', 'f');
    expect(bundle(bob, 'f')).toEqual({ t: 'keys_bundle', ref: 'f', user: 'nobody', devices: [] });
    await bob.frame({ t: 'devices_query', ref: 'q', user: 'nobody' });
    expect(bob.of('devices')[0]!.devices).toEqual([]);
    await bob.frame(upload('u', { prekeys: prekeys(1, 2) }));
    await fetch(bob, 'bob', 'own');
    expect(bundle(bob, 'own')!.devices.map((d) => d.prekey?.id)).toEqual([1]);
  });

  it('a device the mailbox forgets (IRIS_MAX_DEVICES) loses its keys in the same commit', async () => {
    const w = new World({ maxDevices: 2 });
    const a1 = await online(w, 'alice', 'a1');
    await a1.frame(upload('u', { prekeys: prekeys(1, 2) }));
    await a1.disconnect();
    const a2 = await online(w, 'alice', 'a2');
    await a2.frame(upload('u2', { prekeys: prekeys(10, 2) }));
    const bob = await online(w, 'bob', 'b1');
    await bob.frame({ t: 'devices_query', ref: 'q1', user: 'alice' });
    await online(w, 'alice', 'a3'); // a1, offline and least recently seen, is forgotten
    await bob.frame({ t: 'devices_query', ref: 'q2', user: 'alice' });
    expect(bob.of('devices').map((d) => d.devices)).toEqual([['a1', 'a2'], ['a2']]);
    expect(w.db.prepare(`SELECT count(*) AS n FROM one_time_prekeys WHERE device = 'a1'`).get()!['n']).toBe(0);
  });

  it('answers unavailable when the owner\'s shard cannot be reached', async () => {
    const w = new World();
    const bob = await online(w, 'bob', 'b1');
    const m = w.mailbox('alice');
    const take = m.keys.take.bind(m.keys);
    m.keys.take = () => Promise.reject(new Error('down'));
    await fetch(bob, 'alice', 'f');
    expect(errorOf(bob, 'f')).toMatchObject({ code: 'unavailable', retryAfter: 1000 });
    m.keys.take = take;
  });
});
