import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { TestClient } from './helpers.js';

/**
 * The GroupShard's billing counters (durable-objects/group-stats.ts), which scripts/bench/cf-rows.ts --scenarios
 * group reads: checked against what the test knows independently (the calls its frames cause, the pushes to the
 * one online member, the rows of its per-statement tally). Figures per message are the bench's job.
 */

const enc = new TextEncoder();

function groupShard(group: string) {
  return env.GROUPS!.get(env.GROUPS!.idFromName(group));
}

describe('GroupShard.stats()', () => {
  it('counts the calls it receives by op, the pushes it makes, and the rows its statements wrote', async () => {
    const group = 'gst-g';
    const a = await TestClient.connect('gst-alice', 'a1', 0, HELLO_FEATURES.groups);
    const b = await TestClient.connect('gst-bob', 'b1', 0, HELLO_FEATURES.groups);
    a.send({ t: 'group_create', id: 'c0', group, name: 'stats', members: ['gst-bob'] });
    await a.waitFor(() => a.of('group_send_ack').some((f) => f.id === 'c0'));
    await b.waitFor(() => b.of('group_deliver').length > 0);

    const before = await groupShard(group).stats();
    for (let i = 1; i <= 3; i++) a.send({ t: 'group_send', id: `s${i}`, group, body: enc.encode(`m${i}`) });
    await a.waitFor(() => a.of('group_send_ack').length === 4);
    await b.waitFor(() => b.of('group_deliver').flatMap((f) => f.entries).filter((e) => e.kind === 'message').length === 3);
    const after = await groupShard(group).stats();
    // Polling stats() is not a call of its own.
    expect((await groupShard(group).stats()).rpcIn).toEqual(after.rpcIn);

    expect(after.instance).toBe(before.instance);
    expect(after.rpcIn.send - before.rpcIn.send).toBe(3);
    expect(after.rpcIn.change - before.rpcIn.change).toBe(0);
    // Bob is the one online member besides the sender: at least one push reached him, at most one per send
    // (alice's own shard may be pushed too: her other devices get her messages).
    const pushes = after.rpcOut.push - before.rpcOut.push;
    expect(pushes).toBeGreaterThanOrEqual(1);
    expect(pushes).toBeLessThanOrEqual(6);
    // Each accepted send writes its log entry and its dedup row, at least.
    expect(after.sql.rowsWritten - before.sql.rowsWritten).toBeGreaterThanOrEqual(6);
    expect(after.sql.commits - before.sql.commits).toBeGreaterThanOrEqual(3);
    expect(after.databaseBytes).toBeGreaterThan(0);
    // The tally (IRIS_SQL_TALLY) is off in this config: the counters are always on, the tally is not.
    expect(after.statements).toBeUndefined();
  });

  it('answers for a group that never existed without creating storage', async () => {
    const s = await groupShard('gst-none').stats();
    expect(s.sql.statements).toBe(0);
    expect(Object.values(s.rpcIn).every((n) => n === 0)).toBe(true);
  });
});
