import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { FencedError } from '../../cluster/errors.js';
import { connectCluster } from '../../cluster/nats.js';
import { PartitionLog } from '../../cluster/log.js';
import { readSnapshot } from '../../cluster/snapshot.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { CREATE, ClusterFixture, put, rows } from './fixture.js';

/**
 * The cluster Storage adapter (cluster/storage.ts) on a real three-server NATS cluster: commits become log
 * records (SQLite session changesets), a new owner rebuilds the partition from snapshot + tail, a stale owner is
 * fenced by its first append, and losing one NATS server changes nothing visible.
 */

const fx = new ClusterFixture();
const conn = (name: string) => fx.conn(name);
const take = fx.take.bind(fx);

describe('cluster Storage: the partition log as the durable store', () => {
  it('a new owner rebuilds the view from snapshot + tail; the old owner is fenced by its first append', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const p = 7;
    let fenced: unknown = null;
    const sa = await take(a, p, 'a', (e) => (fenced = e));
    await sa.commit(() => void sa.sql.all(CREATE));
    // Many commits in one turn: one log record (group commit), all resolved on its ack.
    await Promise.all(Array.from({ length: 50 }, (_, i) => put(sa, i, `v${i}`)));
    const snap = await sa.snapshot();
    expect(snap.logSeq).toBe(sa.log.lastSeq);
    // The tail after the snapshot: an update, a delete, a new row.
    await put(sa, 1, 'changed');
    await sa.commit(() => void sa.sql.all('DELETE FROM kv WHERE k = 2'));
    await put(sa, 100, 'tail');

    const sb = await take(b, p, 'b');
    const expected = Array.from({ length: 50 }, (_, i) => (i === 1 ? '1=changed' : `${i}=v${i}`)).filter((r) => r !== '2=v2');
    expected.push('100=tail');
    expect(await rows(sb)).toEqual(expected);

    // The old owner's next commit is refused by the log (wrong last sequence): never acked, never seen by b.
    await expect(put(sa, 200, 'stale')).rejects.toBeInstanceOf(FencedError);
    expect(fenced).toBeInstanceOf(FencedError);
    await expect(put(sa, 201, 'later')).rejects.toBeInstanceOf(FencedError);
    await put(sb, 300, 'new owner');
    const sc = await take(a, p, 'a2');
    expect(await rows(sc)).toEqual([...expected, '300=new owner']);
  });

  it('replays a snapshot taken over several chunks', async () => {
    const a = await conn('a');
    const p = 8;
    const sa = await take(a, p, 'a');
    await sa.commit(() => void sa.sql.all(CREATE));
    const big = 'x'.repeat(4000);
    await Promise.all(Array.from({ length: 200 }, (_, i) => put(sa, i, `${i}${big}`))); // ~800 KB: several chunks
    const snap = await sa.snapshot();
    expect(snap.chunks.length).toBeGreaterThan(1);
    await put(sa, 1000, 'tail');
    const sb = await take(a, p, 'b');
    const got = await rows(sb);
    expect(got).toHaveLength(201);
    expect(got.at(-1)).toBe('1000=tail');
  });

  it('a commit that throws leaves nothing in the log', async () => {
    const a = await conn('a');
    const sa = await take(a, 9, 'a');
    await sa.commit(() => void sa.sql.all(CREATE));
    const ok = put(sa, 1, 'kept');
    const bad = expect(
      sa.commit(() => {
        sa.sql.all('INSERT INTO kv (k, v) VALUES (2, ?)', 'rolled back');
        throw new Error('no');
      }),
    ).rejects.toThrow('no');
    await ok;
    await bad;
    const sb = await take(a, 9, 'b');
    expect(await rows(sb)).toEqual(['1=kept']);
  });

  it('kill -9 of one NATS server: commits go on, and the partition is rebuilt from the other two', async () => {
    const a = await conn('a');
    const sa = await take(a, 11, 'a');
    await sa.commit(() => void sa.sql.all(CREATE));
    await put(sa, 1, 'before');
    await fx.nats.kill(0);
    try {
      for (let i = 2; i <= 20; i++) await put(sa, i, 'during');
      const b = await connectCluster(fx.nats.urls(true), undefined, 'b');
      fx.adopt(b);
      const sb = await take(b, 11, 'b');
      const got = await rows(sb);
      expect(got).toHaveLength(20);
      expect(got[0]).toBe('1=before');
    } finally {
      await fx.nats.restart(0);
    }
  });

  it('takes snapshots by itself every N records, so a new owner replays only a short tail', async () => {
    const a = await conn('a');
    const sa = await ClusterStorage.open(a, 13, fx.dir(), { node: 'a', snapshotEvery: 5 });
    fx.keep(sa);
    await sa.commit(() => void sa.sql.all(CREATE));
    for (let i = 0; i < 23; i++) await put(sa, i, `v${i}`); // one record each: sequential commits
    await sa.snapshot().catch(() => undefined); // let an automatic one in progress finish (or take one)
    const snap = await readSnapshot(a, 13, join(fx.dir(), 'probe.sqlite'));
    expect(snap).not.toBeNull();
    let tail = 0;
    await new PartitionLog(a, 13).replay(snap!.logSeq, () => tail++);
    expect(tail).toBeLessThan(5);
    const sb = await take(a, 13, 'b');
    expect(await rows(sb)).toHaveLength(23);
  });

  it('lazy commits are no record of their own: the next record carries them, or one of their own lazyFlushMs later', async () => {
    const a = await conn('a');
    const sa = fx.keep(await ClusterStorage.open(a, 14, fx.dir(), { node: 'a', lazyFlushMs: 50 }));
    await sa.commit(() => void sa.sql.all(CREATE));
    const base = sa.log.lastSeq;
    const lazyPut = (k: number) => sa.commit(() => void sa.sql.all('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)', k, 'lazy'), { lazy: true });
    for (let k = 1; k <= 10; k++) await lazyPut(k);
    // A durable read between them appends nothing either.
    expect(await rows(sa)).toHaveLength(10);
    expect(sa.log.lastSeq).toBe(base);
    await put(sa, 11, 'durable');
    const afterDurable = sa.log.lastSeq;
    expect(await new PartitionLog(a, 14).head()).toBe(afterDurable); // exactly one record for all eleven
    const sb = await take(a, 14, 'b');
    expect(await rows(sb)).toHaveLength(11);

    // Alone, a lazy write is appended by the timer; a takeover after that sees it.
    const sc = fx.keep(await ClusterStorage.open(a, 14, fx.dir(), { node: 'c', lazyFlushMs: 50 }));
    const claimed = sc.log.lastSeq;
    await sc.commit(() => void sc.sql.all('INSERT INTO kv (k, v) VALUES (12, ?)', 'alone'), { lazy: true });
    expect(sc.log.lastSeq).toBe(claimed);
    await vi.waitFor(() => expect(sc.log.lastSeq).toBe(claimed + 1), { timeout: 10_000, interval: 20 });
    const sd = await take(a, 14, 'd');
    expect(await rows(sd)).toHaveLength(12);

    // A crash before any record loses the lazy write (which is what lazy permits), and nothing else.
    const se = fx.keep(await ClusterStorage.open(a, 14, fx.dir(), { node: 'e', lazyFlushMs: 60_000 }));
    await se.commit(() => void se.sql.all('INSERT INTO kv (k, v) VALUES (13, ?)', 'lost'), { lazy: true });
    se.kill();
    const sf = await take(a, 14, 'f');
    expect(await rows(sf)).toHaveLength(12);
  });

  it('a snapshot waits for lazy writes to be appended first (never copies a write the log has not)', async () => {
    const a = await conn('a');
    const sa = fx.keep(await ClusterStorage.open(a, 15, fx.dir(), { node: 'a', lazyFlushMs: 60_000 }));
    await sa.commit(() => void sa.sql.all(CREATE));
    await sa.commit(() => void sa.sql.all('INSERT INTO kv (k, v) VALUES (1, ?)', 'lazy'), { lazy: true });
    const snap = await sa.snapshot();
    expect(snap.logSeq).toBe(sa.log.lastSeq);
    await put(sa, 2, 'after');
    const sb = await take(a, 15, 'b');
    expect(await rows(sb)).toEqual(['1=lazy', '2=after']);
  });

  it('a partition written back to back still takes its snapshots (copied at an append point, not at a quiet moment)', async () => {
    const a = await conn('a');
    const sa = fx.keep(await ClusterStorage.open(a, 16, fx.dir(), { node: 'a', snapshotEvery: 10 }));
    await sa.commit(() => void sa.sql.all(CREATE));
    // Two writers, so that an append is always in flight: the old rule (no snapshot while one is) never took one.
    const writer = async (base: number) => {
      for (let i = 0; i < 150; i++) await put(sa, base + i, 'v');
    };
    await Promise.all([writer(0), writer(1000)]);
    const snap = await readSnapshot(a, 16, join(fx.dir(), 'probe.sqlite'));
    expect(snap).not.toBeNull();
    expect(snap!.logSeq).toBeGreaterThan(0);
    // The tail after the newest snapshot is bounded by snapshotEvery plus what was appended while it was stored.
    let tail = 0;
    await new PartitionLog(a, 16).replay(snap!.logSeq, () => tail++);
    expect(tail).toBeLessThan(100);
    const sb = await take(a, 16, 'b');
    expect(await rows(sb)).toHaveLength(300);
  });
});
