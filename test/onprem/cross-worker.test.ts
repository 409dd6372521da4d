import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage, IrisReceipt } from '../../client/index.js';
import { ownerOf } from '../../onprem/owner.js';
import { RawClient, removeDir, scrape, sdkClient, startServer, token, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * A user owned by worker 0 and a user owned by worker 1 talk both ways, through the SDK: messages, receipts
 * and presence cross the process boundary (links.ts), and every connection ends up on its owner whichever
 * worker the kernel gave it to. Run once per routing mode (socket hand-off, byte pipe).
 */
describe.each(['handoff', 'pipe'] as const)('cross-worker messaging (route %s)', (route) => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let port: number;
  const clients: IrisClient[] = [];
  const [alice] = usersOn(0, 2, `alice-${route}-`);
  const [bob] = usersOn(1, 2, `bob-${route}-`);

  beforeAll(async () => {
    ({ server, dataDir, url, port } = await startServer({ workers: 2, env: { IRIS_ROUTE: route } }));
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('places the two users on different workers', async () => {
    expect(ownerOf(alice!, 2)).toBe(0);
    expect(ownerOf(bob!, 2)).toBe(1);
    const a = sdkClient(url, alice!);
    const b = sdkClient(url, bob!);
    clients.push(a, b);
    await Promise.all([a.connect(), b.connect()]);
    // Seen from the server: one socket on each worker, whichever worker accepted the TCP connection.
    const m = await scrape(port);
    expect(m.get('iris_connections{worker="0"}')).toBe(1);
    expect(m.get('iris_connections{worker="1"}')).toBe(1);
  });

  it('delivers worker 0 -> worker 1 and back, with receipts and presence', async () => {
    const [a, b] = clients as [IrisClient, IrisClient];
    const atBob: IrisMessage[] = [];
    const atAlice: IrisMessage[] = [];
    const receipts: IrisReceipt[] = [];
    b.on('message', (m) => void atBob.push(m));
    a.on('message', (m) => void atAlice.push(m));
    a.on('receipt', (r) => void receipts.push(r));

    const ack = await a.send(bob!, 'hello from worker 0');
    expect(ack.dup).toBe(false);
    await waitFor('bob gets the message', () => atBob.length === 1);
    expect(atBob[0]!.from).toBe(alice);
    expect(atBob[0]!.text()).toBe('hello from worker 0');
    expect(atBob[0]!.msg).toBe(ack.msg);

    await b.send(alice!, 'and back from worker 1');
    await waitFor('alice gets the answer', () => atAlice.length === 1);
    expect(atAlice[0]!.from).toBe(bob);
    expect(atAlice[0]!.text()).toBe('and back from worker 1');

    // Bob's device acked alice's message: the delivery receipt travels worker 1 -> worker 0.
    await waitFor('alice gets the receipt', () => receipts.length === 1);
    expect(receipts[0]!.msg).toBe(ack.msg);
    expect(receipts[0]!.by).toBe(bob);

    const [p] = await a.presence([bob!]);
    expect(p).toMatchObject({ user: bob, online: true });
    const [q] = await b.presence([alice!]);
    expect(q).toMatchObject({ user: alice, online: true });

    // A burst keeps per-conversation order across the process boundary.
    const n = 50;
    await Promise.all(Array.from({ length: n }, (_, i) => a.send(bob!, `burst ${i}`)));
    await waitFor('the burst arrives', () => atBob.length === 1 + n);
    expect(atBob.slice(1).map((m) => m.text())).toEqual(Array.from({ length: n }, (_, i) => `burst ${i}`));

    // Bob marks the whole conversation read: ONE read receipt crosses worker 1 -> worker 0 (ForwardBatch.read
    // through the link codec), covering the burst.
    const reads: string[] = [];
    a.on('read', (r) => void reads.push(`${r.by} ${r.msg}`));
    const last = atBob[atBob.length - 1]!.msg;
    b.markRead(alice!, last);
    await waitFor('alice learns bob read the burst', () => reads.includes(`${bob} ${last}`));
    expect(reads).toEqual([`${bob} ${last}`]);
  });

  it('carries typing on and off worker 0 -> worker 1 over a link', async () => {
    const [a, b] = clients as [IrisClient, IrisClient];
    const seen: string[] = [];
    b.on('typing', (t) => void seen.push(`${t.from} ${t.on}`));
    a.typing(bob!);
    await waitFor('bob sees alice typing', () => seen.length === 1);
    a.typing(bob!, false);
    await waitFor('bob sees alice stop', () => seen.length === 2);
    expect(seen).toEqual([`${alice} true`, `${alice} false`]);
    const m = await scrape(port);
    expect(m.get('iris_peer_calls_total{op="typing",result="ok",worker="0"}')).toBe(2);
  });

  it('moves every connection to its owner (some arrive on the other worker)', async () => {
    const raws: RawClient[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const c = await RawClient.open(url, await token(bob!));
        c.send({ t: 'hello', device: `raw${i}`, cursor: 0 });
        await c.next('welcome');
        raws.push(c);
      }
      const m = await scrape(port);
      expect(m.get('iris_connections{worker="1"}')).toBe(17);
      expect(m.get('iris_connections{worker="0"}')).toBe(1);
      const moved = (m.get(`iris_connections_opened_total{via="${route}",worker="1"}`) ?? 0);
      // With 17 connections spread by the kernel, P(none accepted by worker 0) = 2^-17.
      expect(moved).toBeGreaterThan(0);
    } finally {
      for (const c of raws) c.close();
    }
  });
});
