import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinary, type Entry } from '../../protocol/index.js';
import { RawClient, removeDir, scrape, startServer, token, waitFor, type ServerProcess } from './helpers.js';

/**
 * Regression (outside security review): one authenticated client that never reads, while it sends invalid frames
 * or pings, made a worker queue a reply for each without bound (2.9 GB in 60 s; other users' acks delayed by
 * seconds). One worker here, so the abusers and the bystander share it.
 */

const MAX_QUEUED = 256 * 1024;

describe('on-prem: a client that does not read cannot grow the server', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let port: number;

  beforeAll(async () => {
    ({ server, dataDir, url, port } = await startServer({ workers: 1, env: { IRIS_MAX_QUEUED_BYTES: String(MAX_QUEUED), IRIS_MAX_ERRORS_IN_ROW: '20', IRIS_RATE_PER_SEC: '1', IRIS_RATE_BURST: '200', IRIS_CONN_RATE_PER_SEC: '1' } }));
  });
  afterAll(async () => {
    expect((await server.stop()).code).toBe(0);
    removeDir(dataDir);
  });

  const metric = async (name: string): Promise<number> => (await scrape(port)).get(name) ?? 0;

  async function connect(user: string, device = 'd1', cursor = 0): Promise<RawClient> {
    const c = await RawClient.open(url, await token(user));
    c.send({ t: 'hello', device, cursor });
    await c.next('welcome');
    return c;
  }

  /** A bystander keeps working: a send is acked while the abuse goes on. */
  async function bystanderSends(c: RawClient, id: string): Promise<void> {
    c.send({ t: 'send', id, to: 'bystander-peer', body: new TextEncoder().encode(id) });
    await c.next('send_ack', 10_000, (f) => f.id === id);
  }

  it('answers at most maxErrorsInRow invalid frames, then closes with 4002', async () => {
    const bystander = await connect('bystander');
    const flooder = await connect('flooder');
    const errorsBefore = await metric('iris_errors_total{code="unknown_type",worker="0"}');
    flooder.ws.pause();
    const junk = new Uint8Array([0xee, 1, 2, 3]);
    for (let i = 0; i < 2_000; i++) flooder.ws.send(junk);
    await waitFor('a 4002 close', async () => (await metric('iris_server_closes_total{code="4002",worker="0"}')) >= 1);
    expect((await metric('iris_errors_total{code="unknown_type",worker="0"}')) - errorsBefore).toBe(20);
    await bystanderSends(bystander, 'b1');
    flooder.close();
    bystander.close();
  });

  it('rate-limits a ping flood per connection, then closes it with 4002', async () => {
    const bystander = await connect('bystander', 'd2');
    const pinger = await connect('pinger');
    const limitedBefore = await metric('iris_errors_total{code="rate_limited",worker="0"}');
    pinger.ws.pause();
    const ping = encodeBinary({ t: 'ping' });
    for (let i = 0; i < 5_000; i++) pinger.ws.send(ping);
    await waitFor('a second 4002 close', async () => (await metric('iris_server_closes_total{code="4002",worker="0"}')) >= 2);
    // 20 in a row; a token refilled meanwhile (2 per second here) may let a ping through and start the count again.
    const limited = (await metric('iris_errors_total{code="rate_limited",worker="0"}')) - limitedBefore;
    expect(limited).toBeGreaterThanOrEqual(20);
    expect(limited).toBeLessThan(40);
    await bystanderSends(bystander, 'b2');
    pinger.close();
    bystander.close();
  });

  it('closes a socket that does not read (4003) and delivers everything on the next connection', async () => {
    const alice = await connect('alice');
    const bob = await connect('bob');
    bob.ws.pause();
    const body = new Uint8Array(60 * 1024).fill(7);
    const N = 100;
    for (let i = 0; i < N; i++) alice.send({ t: 'send', id: `m${i}`, to: 'bob', body });
    await alice.next('send_ack', 20_000, (f) => f.id === `m${N - 1}`);
    await waitFor('a 4003 close', async () => (await metric('iris_server_closes_total{code="4003",worker="0"}')) >= 1);
    bob.close();

    const bob2 = await connect('bob', 'd1', 0);
    const seen: Entry[] = [];
    await waitFor(`${N} messages on the new connection`, () => {
      seen.length = 0;
      for (const f of bob2.frames) if (f.t === 'deliver') seen.push(...f.entries.filter((e) => e.kind === 'message'));
      return seen.length >= N;
    });
    expect(seen.map((e) => e.seq)).toEqual([...new Set(seen.map((e) => e.seq))]);
    expect(seen).toHaveLength(N);
    alice.close();
    bob2.close();
  });
});
