import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { TestClient, userShard } from './helpers.js';

/** Polls an asynchronous condition (a shard's stats) until it holds; fails after 10 s. */
async function until(cond: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in 10 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Typing (core/typing.ts) on the Durable Object adapter, in workerd: one RPC per push, a hibernated recipient
 * still gets it, and a user who never connected is answered "not online" without any storage being created.
 */
describe('typing through the shards', () => {
  it("reaches the peer's sockets, also after its object was evicted (sockets hibernated), one RPC per push", async () => {
    const a = await TestClient.connect('ty-alice', 'a1', 0, HELLO_FEATURES.typing);
    const b = await TestClient.connect('ty-bob', 'b1', 0, HELLO_FEATURES.typing);
    a.send({ t: 'typing', conv: 'ty-bob', on: true });
    await b.waitFor(() => b.of('typing_state').length === 1);
    expect(b.of('typing_state')[0]).toEqual({ t: 'typing_state', conv: 'ty-alice', from: 'ty-alice', on: true, ttl: 5000 });
    // Evicted, bob's object forgot what it showed (memory only); a new one writes the off all the same.
    await evictDurableObject(userShard(env, 'ty-bob'));
    a.send({ t: 'typing', conv: 'ty-bob', on: false });
    await b.waitFor(() => b.of('typing_state').length === 2);
    expect(b.of('typing_state')[1]).toEqual({ t: 'typing_state', conv: 'ty-alice', from: 'ty-alice', on: false, ttl: 0 });
    const sa = await userShard(env, 'ty-alice').stats();
    expect(sa.rpcOut.typing).toBe(2);
    expect(a.of('typing_state')).toEqual([]);
    a.close();
    b.close();
  });

  it('a user who never connected: answered not online, no storage created, not called again', async () => {
    const a = await TestClient.connect('ty-carol', 'a1', 0, HELLO_FEATURES.typing);
    const nobody = userShard(env, 'ty-nobody');
    a.send({ t: 'typing', conv: 'ty-nobody', on: true });
    // Wait for the push to arrive, then for an answer that follows its answer (a presence query to the same object).
    await until(async () => (await nobody.stats()).rpcIn.typing === 1);
    a.send({ t: 'presence_query', ref: 'q1', users: ['ty-nobody'] });
    await a.waitFor(() => a.of('presence').length === 1);
    a.send({ t: 'typing', conv: 'ty-nobody', on: false });
    a.send({ t: 'typing', conv: 'ty-nobody', on: true });
    a.send({ t: 'presence_query', ref: 'q2', users: ['ty-nobody'] });
    await a.waitFor(() => a.of('presence').length === 2);
    const s = await nobody.stats();
    expect(s.rpcIn.typing).toBe(1);
    const tables = await runInDurableObject(nobody, (_i, state) =>
      state.storage.sql.exec(`SELECT count(*) AS c FROM sqlite_master WHERE name = 'iris_migrations'`).one()['c'],
    );
    expect(tables).toBe(0);
    a.close();
  });
});
