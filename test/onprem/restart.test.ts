import { describe, expect, it } from 'vitest';
import type { IrisClient } from '../../client/index.js';
import { RawClient, freePort, removeDir, sdkClient, sleep, startServer, tempDir, token, usersOn, waitFor } from './helpers.js';

const enc = new TextEncoder();

async function collect(url: string, user: string, n: number, timeoutMs = 20_000): Promise<string[]> {
  const c: IrisClient = sdkClient(url, user, 'phone');
  const got: string[] = [];
  c.on('message', (m) => void got.push(m.text()));
  try {
    await c.connect();
    await waitFor(`${n} messages for ${user}`, () => got.length >= n, timeoutMs);
    await sleep(200);
    return got;
  } finally {
    await c.close();
  }
}

describe('restarts', () => {
  it('keeps offline messages across a clean restart of the whole server', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const [alice, carol] = usersOn(0, 2, 'ra-', 2) as [string, string];
    const [bob] = usersOn(1, 2, 'rb-') as [string];
    try {
      const first = await startServer({ dataDir, port });
      const a = sdkClient(first.url, alice);
      await a.connect();
      for (let i = 0; i < 20; i++) {
        await a.send(bob, `to bob ${i}`); // other worker, offline
        await a.send(carol, `to carol ${i}`); // same worker, offline
      }
      await a.close();
      const stopped = await first.server.stop();
      expect(stopped.code).toBe(0);

      const second = await startServer({ dataDir, port });
      try {
        expect(await collect(second.url, bob, 20)).toEqual(Array.from({ length: 20 }, (_, i) => `to bob ${i}`));
        expect(await collect(second.url, carol, 20)).toEqual(Array.from({ length: 20 }, (_, i) => `to carol ${i}`));
      } finally {
        expect((await second.server.stop()).code).toBe(0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('keeps every acked message when every process is killed with SIGKILL', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const [alice] = usersOn(0, 2, 'ka-') as [string];
    const [bob] = usersOn(1, 2, 'kb-') as [string];
    try {
      const first = await startServer({ dataDir, port });
      const a = await RawClient.open(first.url, await token(alice));
      a.send({ t: 'hello', device: 'd', cursor: 0 });
      await a.next('welcome');
      for (let i = 0; i < 30; i++) a.send({ t: 'send', id: `m${i}`, to: bob, body: enc.encode(`crash ${i}`) });
      await a.next('send_ack', 10_000, (f) => f.id === 'm29');
      // No drain, no flush: the supervisor and both workers die at once, right after the last ack.
      first.server.kill();
      await first.server.exited;
      const acked = a.frames.filter((f) => f.t === 'send_ack').length;
      expect(acked).toBe(30);
      a.close();

      // The stale lock (dead pid) is taken over; worker 0 resumes forwarding its outbox to bob's worker.
      const second = await startServer({ dataDir, port });
      try {
        expect(await collect(second.url, bob, 30)).toEqual(Array.from({ length: 30 }, (_, i) => `crash ${i}`));
      } finally {
        expect((await second.server.stop()).code).toBe(0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('drains on SIGTERM: acks go out before the close, clients see 1001, exit code 0', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const senders = [...usersOn(0, 2, 'ds0-', 3), ...usersOn(1, 2, 'ds1-', 3)];
    const [rcpt] = usersOn(1, 2, 'dr-') as [string];
    try {
      const first = await startServer({ dataDir, port });
      const raws: RawClient[] = [];
      for (const u of senders) {
        const c = await RawClient.open(first.url, await token(u));
        c.send({ t: 'hello', device: 'd', cursor: 0 });
        await c.next('welcome');
        raws.push(c);
      }
      // A burst from every client, and SIGTERM while it is in flight.
      for (const [k, c] of raws.entries()) for (let i = 0; i < 20; i++) c.send({ t: 'send', id: `s${k}-${i}`, to: rcpt, body: enc.encode(`${k}:${i}`) });
      const stopped = first.server.stop();
      const closes = await Promise.all(raws.map((c) => c.waitClose(15_000)));
      expect(closes.map((x) => x.code)).toEqual(raws.map(() => 1001));
      const r = await stopped;
      expect(r.code).toBe(0);
      expect(r.signal).toBeNull();

      // Whatever was acked before the 1001 is durable and is delivered after a restart.
      const acked = new Set<string>();
      for (const [k, c] of raws.entries()) for (const f of c.frames) if (f.t === 'send_ack') acked.add(`${k}:${f.id.split('-')[1]}`);
      const second = await startServer({ dataDir, port });
      try {
        const got = await collect(second.url, rcpt, acked.size);
        for (const x of acked) expect(got).toContain(x);
        expect(new Set(got).size).toBe(got.length);
      } finally {
        expect((await second.server.stop()).code).toBe(0);
      }
    } finally {
      removeDir(dataDir);
    }
  });
});
