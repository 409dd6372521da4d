import { afterAll, describe, expect, it } from 'vitest';
import { Receiver, verified } from '../push-receiver.js';
import { RawClient, removeDir, scrape, startServer, token, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * Push webhooks on-prem, black box (docs/OPERATIONS.md "Push webhooks"): a real server with IRIS_PUSH_* pointing
 * at a node:http receiver on a free loopback port. A burst for an offline device arrives as one signed call with
 * its count, after a 500 that is retried; a device that is online gets nothing; a receiver that hangs does not
 * hold up the sender's acks; the counters show in /metrics.
 */

const PUSH_SECRET = 'push-test-secret';
const ADMIN = 'push-admin';

const receiver = new Receiver();
let server: { server: ServerProcess; dataDir: string; url: string; port: number } | null = null;

afterAll(async () => {
  if (server) {
    await server.server.stop();
    removeDir(server.dataDir);
  }
  await receiver.close();
}, 60_000);

async function online(url: string, user: string, device: string): Promise<RawClient> {
  const c = await RawClient.open(url, await token(user));
  c.send({ t: 'hello', device, cursor: 0 });
  await c.next('welcome');
  return c;
}

async function connections(port: number, user: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/admin/v1/users/${user}/stats`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return ((await res.json()) as { connections: number }).connections;
}

function sum(m: Map<string, number>, result: string): number {
  let n = 0;
  for (const [k, v] of m) if (k.startsWith('iris_push_total{') && k.includes(`result="${result}"`)) n += v;
  return n;
}

describe('on-prem push webhooks', () => {
  it('one signed call per burst for an offline device, retried after a 500; nothing for an online one; a hung receiver holds up no ack', async () => {
    const pushUrl = await receiver.listen();
    server = await startServer({
      workers: 2,
      env: {
        IRIS_ADMIN_SECRET: ADMIN,
        IRIS_PUSH_URL: pushUrl,
        IRIS_PUSH_SECRET: PUSH_SECRET,
        IRIS_PUSH_COALESCE_MS: '1500',
        IRIS_PUSH_RETRY_BASE_MS: '100',
        IRIS_PUSH_TIMEOUT_MS: '60000',
      },
    });
    const { url, port } = server;
    // Users on different workers: the messages cross the links, as they would in production.
    const [alice] = usersOn(0, 2, 'pa');
    const [bob, dave] = usersOn(1, 2, 'pb', 2);
    // bob registers device b1 and leaves; dave stays online.
    const b = await online(url, bob!, 'b1');
    b.close();
    await waitFor('bob offline', async () => (await connections(port, bob!)) === 0);
    const d = await online(url, dave!, 'd1');
    const a = await online(url, alice!, 'a1');

    receiver.script.push(500);
    // A burst, pipelined: five sends leave before the first ack, well inside the coalescing window.
    for (let i = 0; i < 5; i++) a.send({ t: 'send', id: `b${i}`, to: bob!, body: new TextEncoder().encode(`secret text ${i}`) });
    a.send({ t: 'send', id: 'd0', to: dave!, body: new TextEncoder().encode('hi dave') });
    for (let i = 0; i < 5; i++) await a.next('send_ack', 10_000, (f) => f.id === `b${i}`);
    await d.next('deliver');

    await waitFor('the retried push', () => receiver.got.length >= 2, 20_000);
    const [first, second] = receiver.got;
    expect(first!.status).toBe(500);
    expect(second!.status).toBe(200);
    for (const r of [first!, second!]) {
      expect(verified(r, PUSH_SECRET)).toBe(true);
      expect(verified(r, 'another secret')).toBe(false);
      expect(r.payload).toMatchObject({ user: bob, device: 'b1', sender: alice, conversation: alice, count: 5 });
      expect(r.body).not.toContain('secret text');
    }

    // A receiver that hangs: the call is in flight and unanswered, and sends still get their acks at once.
    receiver.script.push('hang');
    a.send({ t: 'send', id: 'h1', to: bob!, body: new TextEncoder().encode('one more') });
    await a.next('send_ack', 10_000, (f) => f.id === 'h1');
    await waitFor('the hung call', () => receiver.got.length >= 3, 20_000);
    const t0 = Date.now();
    a.send({ t: 'send', id: 'h2', to: bob!, body: new TextEncoder().encode('and another') });
    await a.next('send_ack', 10_000, (f) => f.id === 'h2');
    const ackMs = Date.now() - t0;
    expect(receiver.got[2]!.status).toBe('hung');
    expect(ackMs).toBeLessThan(2_000);

    // dave was online throughout: no call ever named him.
    expect(receiver.got.filter((r) => r.payload.user === dave)).toEqual([]);
    const m = await scrape(port);
    expect(sum(m, 'sent')).toBe(1);
    expect(sum(m, 'failed')).toBe(1);
    expect(sum(m, 'dead_lettered')).toBe(0);
    a.close();
    d.close();
  }, 90_000);
});
