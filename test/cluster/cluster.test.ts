import { describe, expect, it } from 'vitest';
import { FencedError } from '../../cluster/errors.js';
import { Leases, leaseKey, sessionKey, type LostReason } from '../../cluster/lease.js';
import { PartitionLog } from '../../cluster/log.js';
import { ClusterFixture } from './fixture.js';

/**
 * The foundation of cluster mode (issue 13) on a REAL three-server NATS cluster (nats-server 2.9, JetStream,
 * routes on loopback; test/cluster/nats-harness.ts): leases in the KV bucket, the partition log's fencing and
 * idempotency, and a new owner rebuilding a partition from snapshot + tail. Every test uses its own partition
 * numbers, so they share one cluster. Waiting is for events (a lease taken, a callback), never a fixed sleep.
 */

const fx = new ClusterFixture();
const conn = (name: string) => fx.conn(name);
const dir = () => fx.dir();

describe('leases in the KV bucket (R3)', () => {
  it('two nodes race for a free partition: exactly one wins, the other sees it as owner', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const la = new Leases(a.leases, { node: 'a', leaseMs: 2000 });
    const lb = new Leases(b.leases, { node: 'b', leaseMs: 2000 });
    try {
      for (const p of [1, 2, 3, 4, 5]) {
        const [ra, rb] = await Promise.all([la.tryAcquire(p), lb.tryAcquire(p)]);
        expect([ra.won, rb.won].filter(Boolean)).toHaveLength(1);
        const winner = ra.won ? 'a' : 'b';
        const loser = ra.won ? rb : ra;
        expect(loser.won).toBe(false);
        if (!loser.won) expect(loser.owner).toBe(winner);
        expect(JSON.parse((await a.leases.get(leaseKey(p)))!.string()).node).toBe(winner);
        expect(ra.won ? la.holds(p) : lb.holds(p)).toBe(true);
        expect(ra.won ? lb.holds(p) : la.holds(p)).toBe(false);
      }
    } finally {
      la.close();
      lb.close();
    }
  });

  it('renews while alive: a contender does not take over a lease that keeps being renewed', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const la = new Leases(a.leases, { node: 'a', leaseMs: 600 });
    const lb = new Leases(b.leases, { node: 'b', leaseMs: 600 });
    try {
      const held = await la.acquire(10);
      const abort = new AbortController();
      const contender = lb.acquire(10, abort.signal).then(() => 'took', () => 'aborted');
      // Renewals of the holder's session (each a new revision), seen through a KV watch, span more than a lease.
      const w = await a.leases.watch({ key: sessionKey('a') });
      let renewals = 0;
      for await (const e of w) if (e.revision > held.revision && ++renewals === 4) break;
      w.stop();
      abort.abort(new Error('done'));
      expect(await contender).toBe('aborted');
      expect(la.holds(10)).toBe(true);
    } finally {
      la.close();
      lb.close();
    }
  });

  it('a lease that lapses (its holder stopped renewing) is taken over, and only after a whole lease', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const la = new Leases(a.leases, { node: 'a', leaseMs: 800 });
    const lb = new Leases(b.leases, { node: 'b', leaseMs: 800 });
    try {
      const held = await la.acquire(20);
      la.close(); // a crash, as the others see it: no release, no renewal
      const t0 = performance.now();
      const took = await lb.acquire(20);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(800);
      expect(took.revision).toBeGreaterThan(held.revision);
      expect(JSON.parse((await b.leases.get(leaseKey(20)))!.string()).node).toBe('b');
    } finally {
      lb.close();
    }
  });

  it('a released lease is taken at once', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const la = new Leases(a.leases, { node: 'a', leaseMs: 30_000 });
    const lb = new Leases(b.leases, { node: 'b', leaseMs: 30_000 });
    try {
      await la.acquire(30);
      await la.release(30);
      const r = await lb.tryAcquire(30);
      expect(r.won).toBe(true);
    } finally {
      la.close();
      lb.close();
    }
  });

  it('a holder that cannot renew (NATS unreachable) stops serving by itself when its lease runs out', async () => {
    const a = await conn('a');
    const la = new Leases(a.leases, { node: 'a', leaseMs: 800 });
    const lost = new Promise<LostReason>((resolve) => la.onLost((p, reason) => p === 40 && resolve(reason)));
    await la.acquire(40);
    await a.nc.close(); // partitioned away: every renewal now fails
    expect(await lost).toBe('expired');
    expect(la.holds(40)).toBe(false);
    la.close();
  });

  it('a holder whose session was ended by a contender learns it at its next renewal, and loses every partition', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const la = new Leases(a.leases, { node: 'a', leaseMs: 60_000, renewMs: 50 });
    const lost: number[] = [];
    const both = new Promise<LostReason>((resolve) => la.onLost((p, reason) => (lost.push(p), lost.length === 2 && resolve(reason))));
    try {
      await la.acquire(50);
      await la.acquire(51);
      // What a contender does after a whole lease without renewal: a dead mark over the session's revision.
      const e = (await b.leases.get(sessionKey('a')))!;
      await b.leases.update(sessionKey('a'), JSON.stringify({ ...e.json<object>(), dead: true }), e.revision);
      expect(await both).toBe('taken');
      expect(lost.sort()).toEqual([50, 51]);
      expect(la.holds(50) || la.holds(51)).toBe(false);
    } finally {
      la.close();
    }
  });

  it('renewal writes one key per node, whatever the number of partitions held', async () => {
    const a = await conn('a');
    const la = new Leases(a.leases, { node: 'a-many', leaseMs: 900 });
    try {
      for (let p = 200; p < 240; p++) await la.acquire(p);
      const w = await a.leases.watch({ key: '>', include: 'updates' });
      const keys: string[] = [];
      for await (const e of w) if (keys.push(e.key) >= 4) break;
      w.stop();
      // A renewal is every leaseMs/3: four writes span more than a lease of 40 partitions, all of them l.a-many.
      expect(keys).toEqual(Array(4).fill(sessionKey('a-many')));
      for (let p = 200; p < 240; p++) expect(la.holds(p)).toBe(true);
    } finally {
      la.close();
    }
  });

  it('a node restarted under the same id frees the partitions of its earlier run at once', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const first = new Leases(a.leases, { node: 'a-restart', leaseMs: 60_000 });
    const lb = new Leases(b.leases, { node: 'b', leaseMs: 60_000 });
    try {
      await first.acquire(60);
      first.close(); // kill -9
      expect((await lb.tryAcquire(60)).won).toBe(false); // its session still looks alive
      const again = new Leases(a.leases, { node: 'a-restart', leaseMs: 60_000 });
      await again.acquire(61); // the restarted node starts a new session
      again.close();
      const r = await lb.tryAcquire(60);
      expect(r.won).toBe(true);
    } finally {
      lb.close();
    }
  });
});

describe('the partition log (stream R3, one subject per partition)', () => {
  it('fences a stale writer by its first append, and the new writer continues', async () => {
    const [a, b] = [await conn('a'), await conn('b')];
    const p = 100;
    const old = new PartitionLog(a, p);
    await old.replay(0, () => undefined);
    await old.append(new TextEncoder().encode('one'), 'a.1');
    // A new owner replays to the head and claims: the old one's expectation is now stale.
    const neu = new PartitionLog(b, p);
    const seen: string[] = [];
    await neu.replay(0, (r) => seen.push(new TextDecoder().decode(r.data)));
    expect(seen).toEqual(['one']);
    await neu.claim('b', 1);
    await expect(old.append(new TextEncoder().encode('two'), 'a.2')).rejects.toBeInstanceOf(FencedError);
    // Fenced for good, even with a fresh id.
    await expect(old.append(new TextEncoder().encode('three'), 'a.3')).rejects.toBeInstanceOf(FencedError);
    await neu.append(new TextEncoder().encode('four'), 'b.1');
    const all: string[] = [];
    await new PartitionLog(a, p).replay(0, (r) => all.push(`${r.kind}:${r.kind === 'change' ? new TextDecoder().decode(r.data) : ''}`));
    expect(all).toEqual(['change:one', 'claim:', 'change:four']);
  });

  it('a retried append (same Nats-Msg-Id) is written once', async () => {
    const a = await conn('a');
    const log = new PartitionLog(a, 101);
    await log.replay(0, () => undefined);
    const seq = await log.append(new TextEncoder().encode('x'), 'retry.1');
    // The answer was "lost": the writer sends the same record again with the same id and expectation.
    const again = await a.js.publish(log.subject, new TextEncoder().encode('x'), { msgID: 'retry.1', expect: { lastSubjectSequence: 0 } });
    expect(again.duplicate).toBe(true);
    expect(again.seq).toBe(seq);
    let n = 0;
    await new PartitionLog(a, 101).replay(0, () => n++);
    expect(n).toBe(1);
  });
});
