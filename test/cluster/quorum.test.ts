import { describe, expect, it } from 'vitest';
import { CREATE, ClusterFixture, put, rows } from './fixture.js';

/**
 * The cluster Storage adapter (cluster/storage.ts) when the NATS cluster loses its quorum (two of three servers
 * killed, then restarted): its own file, because the servers' recovery takes most of its time.
 */

const fx = new ClusterFixture();
const conn = (name: string) => fx.conn(name);
const take = fx.take.bind(fx);

describe('cluster Storage without a NATS quorum', () => {
  it('two of three NATS servers lost: nothing is acked, the partition stops; with the quorum back a new owner has every acked commit', async () => {
    const a = await conn('a');
    let fenced: unknown = null;
    const sa = await take(a, 12, 'a', (e) => (fenced = e), 1500);
    await sa.commit(() => void sa.sql.all(CREATE));
    await put(sa, 1, 'acked');
    await Promise.all([fx.nats.kill(1), fx.nats.kill(2)]);
    try {
      // No quorum: the append cannot be committed, so the commit is never acked; its outcome is unknown.
      await expect(put(sa, 2, 'unknown')).rejects.toThrow();
      expect(fenced).not.toBeNull();
      await expect(put(sa, 3, 'refused')).rejects.toThrow();
    } finally {
      await Promise.all([fx.nats.restart(1), fx.nats.restart(2)]);
    }
    const b = await conn('b');
    const sb = await take(b, 12, 'b');
    const got = await rows(sb);
    // The acked row is there; the unknown one may be (a leader may still commit it once followers return); the
    // one refused after the partition stopped never is.
    expect(got[0]).toBe('1=acked');
    expect(got.filter((r) => r !== '1=acked' && r !== '2=unknown')).toEqual([]);
    await put(sb, 4, 'after');
  });
});
