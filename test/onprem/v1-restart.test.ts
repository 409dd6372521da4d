import { afterAll, describe, expect, it } from 'vitest';
import { P, V1Client, v1Token } from '../v1/client.js';
import { SECRET, freePort, removeDir, sdkClient, startServer, tempDir, usersOn, type ServerProcess } from './helpers.js';

/**
 * Offline delivery across a server restart: what a v1 client and an SDK client sent to an offline v1 user is
 * stored by the core (acked only once durable), survives the restart, and reaches the v1 user at its LOGIN, once.
 */
describe('v1 gateway: offline messages survive a restart (2 workers)', () => {
  const dataDir = tempDir();
  let server: ServerProcess | null = null;
  const open: V1Client[] = [];

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()));
    if (server) await server.stop();
    removeDir(dataDir);
  });

  it('stores while offline, restarts, delivers at LOGIN', async () => {
    const tcp = await freePort();
    const ws = await freePort();
    const env = { IRIS_V1_TCP_PORT: String(tcp), IRIS_V1_WS_PORT: String(ws) };
    let url: string;
    let port: number;
    ({ server, url, port } = await startServer({ workers: 2, dataDir, env }));
    const [alice] = usersOn(0, 2, 'rs-alice');
    const [bob] = usersOn(1, 2, 'rs-bob');
    const [sam] = usersOn(0, 2, 'rs-sam');

    const a = await V1Client.open('tcp', tcp);
    open.push(a);
    await a.login(alice!, await v1Token(alice!, SECRET));
    for (let i = 0; i < 3; i++) a.write(P.send(bob!, `v1 ${i}`));
    // v1 SEND has no ack: a status answer behind the sends says the gateway decoded them and handed them to the core
    // (in order, on one connection); the SIGTERM drain below commits everything the core accepted before it stops.
    a.write(P.status(bob!));
    expect((await a.next('status')).online).toBe(false);
    const s = sdkClient(url, sam!, 'phone');
    await s.connect();
    await s.send(bob!, 'from the sdk');
    await s.close();
    await a.close();

    const r = await server.stop();
    expect(r.code).toBe(0);
    ({ server } = await startServer({ workers: 2, dataDir, env, port }));

    const b = await V1Client.open('ws', ws);
    open.push(b);
    await b.login(bob!, await v1Token(bob!, SECRET));
    await b.until('four messages', () => b.messages().length === 4);
    const bodies = b.messages().map((m) => m.body);
    expect(bodies.filter((x) => x.startsWith('v1 '))).toEqual(['v1 0', 'v1 1', 'v1 2']);
    expect(bodies).toContain('from the sdk');
    // Acked by the client (auto-ack): the next LOGIN gets nothing again.
    await b.close();
    const b2 = await V1Client.open('tcp', tcp);
    open.push(b2);
    await b2.login(bob!, await v1Token(bob!, SECRET));
    b2.write(P.status(alice!));
    await b2.next('status');
    expect(b2.messages()).toEqual([]);
  });
});
