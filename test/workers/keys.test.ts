import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { TestClient, userShard } from './helpers.js';

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

/**
 * The key directory (core/keys.ts) on the Durable Object adapter, in workerd: a fetch is one RPC to the owner's
 * object, which removes the prekey in its own storage (it stays removed after an eviction), and a user who never
 * connected answers an empty bundle without any storage being created.
 */
describe('key directory through the shards', () => {
  it("takes the prekey in the owner's object, durably; one RPC per fetch", async () => {
    const a = await TestClient.connect('kd-alice', 'a1', 0, HELLO_FEATURES.keys);
    a.send({ t: 'keys_upload', ref: 'u', identity: fill(33, 1), signed: { id: 1, key: fill(33, 2), sig: fill(64, 3), ts: 5 }, prekeys: [{ id: 1, key: fill(33, 4) }, { id: 2, key: fill(33, 5) }] });
    await a.waitFor(() => a.of('keys_state').length === 1);
    const b = await TestClient.connect('kd-bob', 'b1', 0, 0);
    b.send({ t: 'keys_fetch', ref: 'f1', user: 'kd-alice' });
    await b.waitFor(() => b.of('keys_bundle').length === 1);
    expect(b.of('keys_bundle')[0]!.devices.map((d) => d.prekey?.id)).toEqual([1]);
    await evictDurableObject(userShard(env, 'kd-alice'));
    b.send({ t: 'keys_fetch', ref: 'f2', user: 'kd-alice' });
    b.send({ t: 'keys_fetch', ref: 'f3', user: 'kd-alice' });
    await b.waitFor(() => b.of('keys_bundle').length === 3);
    expect(b.of('keys_bundle').map((x) => x.devices[0]!.prekey?.id)).toEqual([1, 2, undefined]);
    expect((await userShard(env, 'kd-bob').stats()).rpcOut.keys).toBe(3);
    a.close();
    b.close();
  });

  it('a user who never connected: an empty bundle and no devices, no storage created', async () => {
    const b = await TestClient.connect('kd-carol', 'b1', 0, 0);
    b.send({ t: 'keys_fetch', ref: 'f', user: 'kd-nobody' });
    b.send({ t: 'devices_query', ref: 'q', user: 'kd-nobody' });
    await b.waitFor(() => b.of('devices').length === 1);
    expect(b.of('keys_bundle')).toEqual([{ t: 'keys_bundle', ref: 'f', user: 'kd-nobody', devices: [] }]);
    expect(b.of('devices')[0]!.devices).toEqual([]);
    const nobody = userShard(env, 'kd-nobody');
    const tables = await runInDurableObject(nobody, (_i, state) => state.storage.sql.exec(`SELECT count(*) AS c FROM sqlite_master WHERE name = 'iris_migrations'`).one()['c']);
    expect(tables).toBe(0);
    b.close();
  });
});
