import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { doStorage, sqlCounters, type StatementTally } from '../../durable-objects/storage.js';
import { TestClient, userShard } from './helpers.js';

/**
 * The billing counters of durable-objects/stats.ts (what scripts/bench/cf-rows.ts reads). Checked against what
 * the test itself knows independently: rows it wrote and read, frames it sent and received, calls one shard
 * made and the other received. Figures per message are the bench's job, not this file's.
 */

describe('SQL counters in the storage adapter', () => {
  it('adds each cursor rowsRead / rowsWritten after the cursor is consumed, and per statement text', async () => {
    await runInDurableObject(userShard(env, 'st-sql'), (_instance, state) => {
      const counters = sqlCounters();
      const tally = new Map<string, StatementTally>();
      const { sql, commit } = doStorage(state.storage, counters, tally);
      const insert = `INSERT INTO st_t (k, v) VALUES (?, ?), (?, ?), (?, ?)`;
      const select = `SELECT k, v FROM st_t ORDER BY k`;
      return commit(() => {
        sql.all(`CREATE TABLE st_t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`);
        sql.all(insert, 1, 'a', 2, 'b', 3, 'c');
        expect(sql.all(select)).toHaveLength(3);
      }).then(() => {
        expect(counters.commits).toBe(1);
        expect(counters.statements).toBe(3);
        // What an INSERT counts as read is the runtime's business (workerd says 3 here); what it wrote is not.
        expect(tally.get(insert)).toMatchObject({ calls: 1, rowsWritten: 3 });
        // A cursor read before it is consumed would report 0 here.
        expect(tally.get(select)).toEqual({ calls: 1, rowsRead: 3, rowsWritten: 0 });
        expect(counters.rowsWritten).toBe([...tally.values()].reduce((a, t) => a + t.rowsWritten, 0));
        expect(counters.rowsRead).toBe([...tally.values()].reduce((a, t) => a + t.rowsRead, 0));
      });
    });
  });
});

describe('UserShard.stats()', () => {
  it('accounts for every frame and every RPC call of a 1:1 exchange with its receipts', async () => {
    const a = await TestClient.connect('st-alice', 'a1');
    const b = await TestClient.connect('st-bob', 'b1');
    for (let i = 1; i <= 3; i++) a.post('st-bob', `m${i}`, `c${i}`);
    await a.acks(3);
    await b.waitFor(() => b.texts().length === 3);
    b.send({ t: 'deliver_ack', seq: b.entries().at(-1)!.seq });
    // One ack over all three: one cumulative receipt, naming the third.
    await a.waitFor(() => a.of('receipts').some((r) => r.items.some((it) => it.msg === 'st-alice:3')));
    expect(a.of('receipts')).toHaveLength(1);

    const alice = userShard(env, 'st-alice');
    const bob = userShard(env, 'st-bob');
    // Frames sent by the shards may still be on their way: wait until each client holds what its shard sent.
    let sa = await alice.stats();
    let sb = await bob.stats();
    await a.waitFor(() => a.frames.length >= sa.wsOut);
    await b.waitFor(() => b.frames.length >= sb.wsOut);
    // Receipts are not acked: alice sent hello + 3 sends.
    sb = await bob.stats();

    expect(sa.wsIn).toBe(4);
    expect(sb.wsIn).toBe(2); // hello + 1 ack
    expect(sa.wsOut).toBe(a.frames.length);
    expect(sb.wsOut).toBe(b.frames.length);
    expect(sa.upgrades).toBe(1);
    expect(sb.upgrades).toBe(1);
    // Messages go alice -> bob, receipts bob -> alice: every call made was received.
    expect(sa.rpcOut.forward).toBeGreaterThan(0);
    expect(sb.rpcIn.receive).toBe(sa.rpcOut.forward);
    expect(sb.rpcOut.forward).toBeGreaterThan(0);
    expect(sa.rpcIn.receive).toBe(sb.rpcOut.forward);
    for (const s of [sa, sb]) {
      expect(s.sql.rowsWritten).toBeGreaterThan(0);
      expect(s.sql.rowsRead).toBeGreaterThan(0);
      expect(s.sql.commits).toBeGreaterThan(0);
      expect(s.databaseBytes).toBeGreaterThan(0);
      // The per-statement tally is for measurement runs only (IRIS_SQL_TALLY=1).
      expect(s.statements).toBeUndefined();
    }
    // Reading the counters is not an event they count.
    const again = await bob.stats();
    expect({ ...again, handlerMs: 0, databaseBytes: 0 }).toEqual({ ...sb, handlerMs: 0, databaseBytes: 0 });
    a.close();
    b.close();
  });
});
