import { connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { SECRET, freePort, removeDir, sdkClient, tempDir, waitFor } from '../onprem/helpers.js';
import { P, V1Client, parseServer, v1Token, type ServerPacket } from '../v1/client.js';
import { ClusterFixture } from './fixture.js';
import { launchNode, type NodeProc, userOn as userOnShared, waitSettled } from './nodes.js';

/**
 * The v1 gateway (old Erlang Iris clients) in cluster mode: three nats-server processes (the shared fixture) and
 * three Iris nodes with v1 TCP and WebSocket ports. A v1 connection accepted by a node that does not serve its
 * user's partition is relayed as bytes to the owner's pipe port, whose own verifier checks the LOGIN's token
 * again; a forged relay is refused with 0xFE and a close.
 */

const PARTITIONS = 12;
const LEASE_MS = 2000;
const IDS = ['node0', 'node1', 'node2'];

interface Node extends NodeProc {
  v1Tcp: number;
  v1Ws: number;
}

const userOn = (node: string, prefix: string): string => userOnShared(node, IDS, prefix, PARTITIONS);

describe('v1 gateway in cluster mode: 3 NATS servers + 3 Iris nodes', () => {
  const fx = new ClusterFixture();
  const nodes: Node[] = [];
  const open: { close(): Promise<void> }[] = [];
  let probe: ClusterConn;

  const settled = (live = IDS): Promise<void> => waitSettled(probe, live, PARTITIONS);

  const launch = (n: Node): Promise<void> =>
    // Generous timeout: the first node to start creates the replicated streams and buckets, slow on a loaded box.
    launchNode(n, { nats: fx.nats.urls(), partitions: PARTITIONS, leaseMs: LEASE_MS, timeoutMs: 90_000, env: { IRIS_V1_TCP_PORT: String(n.v1Tcp), IRIS_V1_WS_PORT: String(n.v1Ws) } });

  /**
   * One LOGIN attempt at `node`, waited for until its answer: LOGIN_OK (the client is returned), or what came
   * before the close (a failover: 0xFE unavailable). Never a hang: `until` fails the test after 15 s.
   */
  async function attempt(node: Node, user: string): Promise<V1Client | ServerPacket[]> {
    const c = await V1Client.open('tcp', node.v1Tcp);
    open.push(c);
    c.write(P.login(user, await v1Token(user, SECRET)));
    await c.until(`an answer to ${user}'s LOGIN`, () => c.closed || c.got.some((p) => p.t === 'login_ok'), 15_000);
    return c.got.some((p) => p.t === 'login_ok') ? c : c.got;
  }

  /** A v1 client logged in as `user` at `node` (its LOGIN retried while a partition is between owners). */
  async function v1(node: Node, user: string, transport: 'tcp' | 'ws' = 'tcp'): Promise<V1Client> {
    const c = await V1Client.open(transport, transport === 'tcp' ? node.v1Tcp : node.v1Ws);
    open.push(c);
    await c.login(user, await v1Token(user, SECRET));
    return c;
  }

  async function sdk(node: Node, user: string, inbox: IrisMessage[]): Promise<IrisClient> {
    const c = sdkClient(node.url, user);
    c.on('message', (m) => void inbox.push(m));
    await c.connect();
    open.push(c);
    return c;
  }

  beforeAll(async () => {
    for (const id of IDS) {
      const port = await freePort();
      nodes.push({ id, port, pipePort: await freePort(), v1Tcp: await freePort(), v1Ws: await freePort(), dataDir: tempDir('iris-v1-cluster-'), server: null, url: `ws://127.0.0.1:${port}/v1/connect` });
    }
    await Promise.all(nodes.map((n) => launch(n)));
    probe = await fx.conn('v1-cluster-probe');
    await settled();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => undefined)));
    if (process.env['IRIS_CLUSTER_TEST_LOGS']) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(process.env['IRIS_CLUSTER_TEST_LOGS'], nodes.map((n) => `--- ${n.id}\n${n.server?.stdout ?? ''}\n${n.server?.stderr ?? ''}`).join('\n'));
    }
    for (const n of nodes) {
      n.server?.kill();
      removeDir(n.dataDir);
    }
  });

  it('a v1 client at node0 whose user node1 serves chats both ways with an SDK user at node2', async () => {
    const vic = userOn('node1', 'v1-victor-');
    const sam = userOn('node2', 'sdk-sam-');
    const v = await v1(nodes[0]!, vic);
    const atSam: IrisMessage[] = [];
    const s = await sdk(nodes[2]!, sam, atSam);
    v.write(P.send(sam, 'hello from v1'));
    await waitFor('sam gets the v1 message', () => atSam.length === 1);
    expect(atSam[0]!.text()).toBe('hello from v1');
    expect(atSam[0]!.from).toBe(vic);
    await s.send(vic, 'hello from the SDK');
    await v.until('the SDK message', () => v.messages().length === 1);
    expect(v.messages()[0]!.body).toBe('hello from the SDK');
    // The session is at its owner: presence of the v1 user is seen online by the SDK user's node.
    v.write(P.status(sam));
    expect((await v.next('status')).online).toBe(true);
  });

  it('offline delivery to a v1 user across nodes: sent while offline, LOGIN at a third node, once and in order', async () => {
    const wen = userOn('node2', 'v1-wendy-');
    const ann = userOn('node0', 'sdk-ann-');
    const atAnn: IrisMessage[] = [];
    const a = await sdk(nodes[1]!, ann, atAnn);
    for (let i = 0; i < 5; i++) await a.send(wen, `offline ${i}`);
    // wendy's partition is on node2, ann's on node0; wendy logs in at node1.
    const w = await v1(nodes[1]!, wen);
    await w.until('five messages', () => w.messages().length === 5);
    expect(w.messages().map((m) => m.body)).toEqual([0, 1, 2, 3, 4].map((i) => `offline ${i}`));
    // Acked (auto-ack): a later LOGIN, at yet another node, gets nothing again.
    w.write(P.status(ann));
    await w.next('status');
    await w.close();
    const w2 = await v1(nodes[0]!, wen);
    w2.write(P.status(ann));
    await w2.next('status');
    expect(w2.messages()).toEqual([]);
  });

  it('a v1 WebSocket client through a non-owner node works, both ways', async () => {
    const wally = userOn('node0', 'v1ws-wally-');
    const sue = userOn('node1', 'sdk-sue-');
    const atSue: IrisMessage[] = [];
    const s = await sdk(nodes[0]!, sue, atSue);
    const w = await v1(nodes[2]!, wally, 'ws');
    w.write(P.send(sue, 'over a relayed v1 WebSocket'));
    await waitFor('sue gets it', () => atSue.length === 1);
    expect(atSue[0]!.text()).toBe('over a relayed v1 WebSocket');
    await s.send(wally, 'back over it');
    await w.until('the answer', () => w.messages().length === 1);
    expect(w.messages()[0]!.body).toBe('back over it');
  });

  it('measures the relay: round trips of a v1 message to oneself, logged in at the owner and at another node', async () => {
    const me = userOn('node1', 'v1-rtt-');
    const medians: number[] = [];
    for (const at of [nodes[1]!, nodes[0]!]) {
      const c = await v1(at, me);
      const ms: number[] = [];
      for (let i = 0; i < 100; i++) {
        const t0 = performance.now();
        c.write(P.send(me, `rtt ${i}`));
        await c.until(`rtt ${i}`, () => c.messages().length === i + 1);
        ms.push(performance.now() - t0);
      }
      expect(c.messages().map((m) => m.body)).toEqual([...Array(100).keys()].map((i) => `rtt ${i}`));
      await c.close();
      ms.sort((a, b) => a - b);
      medians.push(ms[50]!);
    }
    console.log(`v1 cluster: SEND to oneself -> RELIABLE_MSG, median of 100: ${medians[0]!.toFixed(2)} ms at the owner, ${medians[1]!.toFixed(2)} ms relayed from another node`);
  });

  /** Speaks the node-to-node relay with a v1 header on `port`, as anyone on its network could: the packets back. */
  function forgeV1Relay(port: number, user: string, token: string | undefined): Promise<{ packets: ServerPacket[]; closed: boolean }> {
    return new Promise((resolve, reject) => {
      const s = tcpConnect(port, '127.0.0.1');
      const meta = Buffer.from(JSON.stringify({ user, v1: { transport: 'tcp', packets: '', raw: '', trace: 'forged', ...(token !== undefined && { token }) } }));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(meta.length, 0);
      let got = Buffer.alloc(0);
      s.on('data', (d: Buffer) => void (got = Buffer.concat([got, d])));
      s.on('close', () => resolve({ packets: parseServer(got).packets, closed: true }));
      s.on('error', reject);
      // A packet after the header: a forged session would send it as the victim.
      s.write(Buffer.concat([len, meta, P.send('anyone', 'as the victim')]));
    });
  }

  it('a forged v1 relay to the pipe port is refused with 0xFE and a close (token of another user, bad token, none)', async () => {
    const victim = userOn('node1', 'v1-victim-');
    const pipe = nodes[1]!.pipePort;
    const refused = [{ t: 'error', reason: 'relay_refused' }];
    expect(await forgeV1Relay(pipe, victim, await v1Token('mallory', SECRET))).toEqual({ packets: refused, closed: true });
    expect(await forgeV1Relay(pipe, victim, await v1Token(victim, 'wrong-secret'))).toEqual({ packets: refused, closed: true });
    expect(await forgeV1Relay(pipe, victim, 'not.a.jwt')).toEqual({ packets: refused, closed: true });
    expect(await forgeV1Relay(pipe, victim, undefined)).toEqual({ packets: refused, closed: true });
    // A genuine LOGIN relayed to a node that does not serve the user (its partition moved meanwhile): after the
    // wait for a partition being rebuilt there, 0xFE unavailable and a close; the client logs in again.
    const elsewhere = await forgeV1Relay(nodes[0]!.pipePort, victim, await v1Token(victim, SECRET));
    expect(elsewhere).toEqual({ packets: [{ t: 'error', reason: 'unavailable' }], closed: true });
    // The genuine relay (the victim's own LOGIN accepted by another node) still works.
    const v = await v1(nodes[2]!, victim);
    v.write(P.status(victim));
    await v.next('status');
  });

  it('kill -9 of the owner: its v1 sockets close, LOGINs get 0xFE unavailable (never a hang) until the new owner serves; a rejoin moves them back', async () => {
    const fay = userOn('node2', 'v1-fay-');
    const live = ['node0', 'node1'];
    const ned = userOn('node0', 'sdk-ned-');
    const atNed: IrisMessage[] = [];
    const n = await sdk(nodes[1]!, ned, atNed);
    const f = await v1(nodes[0]!, fay);
    nodes[2]!.server!.kill();
    // The relayed socket ends with its owner (the pipe closes), whatever node accepted it.
    await f.until('the close after the owner died', () => f.closed, 15_000);
    // The client logs in again at once after each refusal, as the old clients did: every attempt gets an answer.
    const t0 = Date.now();
    const refusals: ServerPacket[][] = [];
    let f2: V1Client | null = null;
    while (!f2) {
      expect(Date.now() - t0).toBeLessThan(30_000);
      const r = await attempt(nodes[0]!, fay);
      if (Array.isArray(r)) refusals.push(r);
      else f2 = r;
    }
    for (const r of refusals) expect(r).toEqual([{ t: 'error', reason: 'unavailable' }]);
    console.log(`v1 cluster failover: LOGIN_OK ${Date.now() - t0} ms after the owner's kill -9 was seen (lease ${LEASE_MS} ms), ${refusals.length} LOGIN(s) refused with 0xFE unavailable before`);
    await n.send(fay, 'after the failover');
    await f2.until('the message', () => f2!.messages().length === 1);
    expect(f2.messages()[0]!.body).toBe('after the failover');
    await settled(live);

    // node2 rejoins: fay's partition moves back, the node that served it meanwhile closes her v1 socket.
    await launch(nodes[2]!);
    await f2.until('the close when the partition moved back', () => f2!.closed, 60_000);
    await settled();
    const f3 = await v1(nodes[1]!, fay);
    await n.send(fay, 'after the rejoin');
    await f3.until('the message', () => f3.messages().some((m) => m.body === 'after the rejoin'));
    // What fay acked before the move is not delivered again: the hand-over writes the devices' cursors before it
    // releases the partition (Mailbox.parting), which their closes, coming after the release, could not.
    expect(f3.messages().map((m) => m.body)).toEqual(['after the rejoin']);
  }, 120_000);
});
