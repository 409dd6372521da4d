import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { SHARD_DOUBLES, type ShardCounter } from '../../durable-objects/analytics.js';
import type { Env } from '../../durable-objects/env.js';
import { TRACE_HEADER } from '../../durable-objects/log.js';
import type { UserShard } from '../../durable-objects/user-shard.js';
import worker from '../../workers/edge.js';
import { TestClient, token, userShard } from './helpers.js';

/**
 * Workers Analytics Engine (durable-objects/analytics.ts). Locally the METRICS binding drops what it is given,
 * so each test puts a recording dataset in its place: in the shard instance (runInDurableObject) or in the env
 * the edge Worker's fetch is called with.
 */

class Recorder implements AnalyticsEngineDataset {
  readonly points: AnalyticsEngineDataPoint[] = [];
  writeDataPoint(p?: AnalyticsEngineDataPoint): void {
    if (p) this.points.push(p);
  }
  of(kind: string): AnalyticsEngineDataPoint[] {
    return this.points.filter((p) => p.blobs?.[0] === kind);
  }
  /** A `shard` counter summed over every point written. */
  sum(k: ShardCounter): number {
    const i = SHARD_DOUBLES.indexOf(k);
    return this.of('shard').reduce((a, p) => a + p.doubles![i]!, 0);
  }
}

/** Puts a recorder in the user's shard instance, after flushing what it counted so far elsewhere. */
async function record(user: string): Promise<Recorder> {
  const r = new Recorder();
  await runInDurableObject(userShard(env, user), (i: UserShard) => {
    i.analytics.dataset = undefined;
    i.analytics.flush();
    i.analytics.dataset = r;
  });
  return r;
}

const flush = (user: string) => runInDurableObject(userShard(env, user), (i: UserShard) => i.analytics.flush());

describe('Workers Analytics Engine', () => {
  it('the binding is configured (a local no-op that accepts data points)', () => {
    expect(typeof env.METRICS?.writeDataPoint).toBe('function');
    env.METRICS!.writeDataPoint({ indexes: ['test'], blobs: ['shard', ''], doubles: [1] });
  });

  it('shards write the core\'s counters per flush, not per message, and one point per error code', async () => {
    const a = await TestClient.connect('ae-alice', 'a1');
    const b = await TestClient.connect('ae-bob', 'b1');
    const ra = await record('ae-alice');
    const rb = await record('ae-bob');
    const N = 20;
    for (let i = 0; i < N; i++) a.post('ae-bob', `m${i}`, `c${i}`);
    await a.acks(N);
    await b.receive(N);
    a.ws.send(new Uint8Array([0xee, 0x01]));
    a.ws.send(new Uint8Array([0xee, 0x01]));
    await a.waitFor(() => a.of('error').length === 2);
    await flush('ae-alice');
    await flush('ae-bob');

    expect(ra.sum('accepted')).toBe(N);
    expect(ra.sum('framesIn')).toBe(N + 2);
    expect(ra.sum('errors')).toBe(2);
    expect(ra.of('error').map((p) => [p.indexes, p.blobs, p.doubles])).toEqual([[['ae-alice'], ['error', 'unknown_type'], [2]]]);
    expect(rb.sum('delivered')).toBe(N);
    expect(rb.sum('acked')).toBeGreaterThanOrEqual(1);
    expect(rb.sum('rowsWritten')).toBeGreaterThan(0);
    for (const p of [...ra.of('shard'), ...rb.of('shard')]) expect(p.doubles).toHaveLength(SHARD_DOUBLES.length);
    expect(ra.sum('handlers')).toBeGreaterThanOrEqual(N);
    // One flush a second at most: far fewer points than the 20 messages (each shard ran 20+ handlers).
    expect(ra.of('shard').length).toBeLessThan(N / 4);
    expect(rb.of('shard').length).toBeLessThan(N / 4);
    a.close();
    b.close();
  });

  it('flushes by itself within a second of an event, and writes nothing while nothing happens', async () => {
    const a = await TestClient.connect('ae-carol', 'c1');
    const r = await record('ae-carol');
    await flush('ae-carol');
    expect(r.points).toEqual([]);
    a.post('ae-carol', 'note to self', 'n1');
    await a.acks(1);
    await a.waitFor(() => r.of('shard').length > 0, 5000);
    expect(r.sum('accepted')).toBe(1);
    a.close();
  });

  it('the edge writes one point per upgrade request with its outcome, and hands the shard a trace id', async () => {
    const r = new Recorder();
    const handed: Request[] = [];
    const users = { idFromName: (n: string) => n, get: () => ({ fetch: async (req: Request) => (handed.push(req), new Response('handed off')) }) };
    const e = { ...env, USERS: users, METRICS: r } as unknown as Env;
    const upgrade = (headers: Record<string, string>) => worker.fetch(new Request('http://iris.test/v1/connect', { headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', ...headers } }), e);
    await upgrade({ Authorization: `Bearer ${await token('ae-dave')}`, traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });
    await upgrade({ Authorization: `Bearer ${await token('ae-dave')}`, [TRACE_HEADER]: 'spoofed' });
    await upgrade({});
    expect(r.points.map((p) => p.blobs)).toEqual([['edge', 'upgrade'], ['edge', 'upgrade'], ['edge', 'missing_token']]);
    expect(r.points.map((p) => p.doubles![0])).toEqual([1, 1, 1]);
    expect(handed[0]!.headers.get(TRACE_HEADER)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(handed[1]!.headers.get(TRACE_HEADER)).toMatch(/^[0-9a-f]{32}$/);
  });
});
