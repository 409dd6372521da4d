import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectionState, IrisClient, SendAck } from '../../client/index.js';
import { removeDir, scrape, sdkClient, sleep, startServer, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * kill -9 of one worker in the middle of a bounded stream of sends, in both directions across the two workers:
 *   s0 (worker 0) -> r1 (worker 1, killed)    the recipient's shard dies; the sender's forwards retry
 *   s1 (worker 1, killed) -> r0 (worker 0)    the sender's shard dies; its SDK resends unacked ids
 * Every message that was acked is delivered exactly once and in order after the clients resume, the worker is
 * restarted, and the clients of worker 0 never see their connection drop.
 */
describe('kill -9 of one worker', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let port: number;
  const clients: IrisClient[] = [];

  beforeAll(async () => {
    ({ server, dataDir, url, port } = await startServer({ workers: 2 }));
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('loses no acked message, duplicates none, and leaves the other worker alone', async () => {
    const [s0, r0] = usersOn(0, 2, 'k0-', 2) as [string, string];
    const [s1, r1] = usersOn(1, 2, 'k1-', 2) as [string, string];
    const c = {
      s0: sdkClient(url, s0),
      r0: sdkClient(url, r0),
      s1: sdkClient(url, s1),
      r1: sdkClient(url, r1),
    };
    clients.push(...Object.values(c));
    await Promise.all(Object.values(c).map((x) => x.connect()));

    const states: Record<string, ConnectionState[]> = { s0: [], r0: [], s1: [], r1: [] };
    for (const [k, cl] of Object.entries(c)) cl.on('state', (s) => void states[k]!.push(s));
    const atR1: string[] = [];
    const atR0: string[] = [];
    c.r1.on('message', (m) => void atR1.push(m.text()));
    c.r0.on('message', (m) => void atR0.push(m.text()));

    const N = 200;
    const KILL_AT = 60;
    const ackedA = new Set<string>();
    const ackedB = new Set<string>();
    const sends: Promise<SendAck | void>[] = [];
    const killedPid = server.workerPids[1]!;
    expect(killedPid).toBeGreaterThan(1);
    const t0 = Date.now();
    for (let i = 0; i < N; i++) {
      const a = `a${i}`;
      const b = `b${i}`;
      sends.push(c.s0.send(r1, a).then(() => void ackedA.add(a)));
      sends.push(c.s1.send(r0, b).then(() => void ackedB.add(b)));
      if (i === KILL_AT) process.kill(killedPid, 'SIGKILL');
      await sleep(5);
    }
    // The SDK keeps unacked sends and resends them (same ids) after it reconnects: all of them settle.
    const settled = await Promise.race([Promise.allSettled(sends), sleep(40_000).then(() => null)]);
    expect(settled, 'every send settled within 40 s').not.toBeNull();
    expect(settled!.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(ackedA.size).toBe(N);
    expect(ackedB.size).toBe(N);
    expect(Date.now() - t0).toBeLessThan(50_000);

    await waitFor('r1 has every message s0 got acked', () => [...ackedA].every((t) => atR1.includes(t)), 30_000);
    await waitFor('r0 has every message s1 got acked', () => [...ackedB].every((t) => atR0.includes(t)), 30_000);
    await sleep(300); // anything duplicated would arrive now

    // Exactly once, in send order (per-conversation FIFO).
    expect(atR1).toEqual(Array.from({ length: N }, (_, i) => `a${i}`));
    expect(atR0).toEqual(Array.from({ length: N }, (_, i) => `b${i}`));

    // The killed worker's clients reconnected; worker 0's clients never left 'open'.
    expect(states.r1).toContain('reconnecting');
    expect(states.s1).toContain('reconnecting');
    expect(states.s0).toEqual([]);
    expect(states.r0).toEqual([]);

    // The supervisor restarted worker 1 (a new pid) and counted it.
    const pids = await server.currentWorkerPids();
    expect(pids).toHaveLength(2);
    expect(pids).not.toContain(killedPid);
    const m = await scrape(port);
    expect(m.get('iris_worker_restarts_total{worker="1"}')).toBe(1);
    expect(m.get('iris_workers_ready')).toBe(2);
  });
});
