import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { candidateOwner, partitionOf } from '../../cluster/partition.js';
import { connect as tcpConnect } from 'node:net';
import { SUBPROTOCOL } from '../../protocol/index.js';
import { freePort, removeDir, tempDir, token, waitFor } from '../onprem/helpers.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { NatsCluster } from './nats-harness.js';
import { connectRetrying, launchNode, type NodeProc, userOn as userOnShared, waitSettled } from './nodes.js';

/**
 * Cluster mode end to end (issue 13): three nats-server processes and three Iris on-prem servers (one worker
 * each, IRIS_CLUSTER_NATS set), all on free loopback ports with their own temp dirs, stopped by pid. Users whose
 * partitions live on different nodes talk through sockets accepted by yet another node (relayed to the owner),
 * offline delivery crosses nodes, a kill -9 of a node under load loses no acked message and duplicates none,
 * and a restarted node rejoins.
 */

const PARTITIONS = 12;
const LEASE_MS = 2000;
const IDS = ['node0', 'node1', 'node2'];

type Node = NodeProc;

const userOn = (node: string, live: string[], prefix: string): string => userOnShared(node, live, prefix, PARTITIONS);

describe('cluster mode: 3 NATS servers + 3 Iris nodes', () => {
  let nats: NatsCluster;
  const nodes: Node[] = [];
  const clients: IrisClient[] = [];
  let probe: ClusterConn;
  let dave = '';
  const atDaveAll: IrisMessage[] = [];

  const settled = (live: string[]): Promise<void> => waitSettled(probe, live, PARTITIONS);

  const launch = (n: Node): Promise<void> => launchNode(n, { nats: nats.urls(), partitions: PARTITIONS, leaseMs: LEASE_MS, env: { IRIS_ADMIN_SECRET: 'cluster-admin' } });

  const connect = (url: string, user: string, inbox?: IrisMessage[]): Promise<IrisClient> => connectRetrying(clients, url, user, inbox);

  beforeAll(async () => {
    nats = await NatsCluster.start(3);
    for (const id of IDS) {
      const port = await freePort();
      nodes.push({ id, port, pipePort: await freePort(), dataDir: tempDir('iris-cluster-node-'), server: null, url: `ws://127.0.0.1:${port}/v1/connect` });
    }
    await Promise.all(nodes.map((n) => launch(n)));
    probe = await connectCluster(nats.urls());
    await settled(IDS);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await probe?.nc.close().catch(() => undefined);
    if (process.env['IRIS_CLUSTER_TEST_LOGS']) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(process.env['IRIS_CLUSTER_TEST_LOGS'], nodes.map((n) => `--- ${n.id}\n${n.server?.stdout ?? ''}\n${n.server?.stderr ?? ''}`).join('\n'));
    }
    for (const n of nodes) {
      n.server?.kill();
      removeDir(n.dataDir);
    }
    nats?.stop();
  });

  it('users on different nodes chat both ways through sockets accepted by a third node; offline delivery crosses nodes', async () => {
    const alice = userOn('node0', IDS, 'alice-');
    const bob = userOn('node1', IDS, 'bob-');
    const carol = userOn('node2', IDS, 'carol-');
    // Every socket lands on a node that does not own its user: the relay to the owner is what is tested.
    const a = await connect(nodes[2]!.url, alice);
    const b = await connect(nodes[0]!.url, bob);
    const atBob: IrisMessage[] = [];
    const atAlice: IrisMessage[] = [];
    b.on('message', (m) => void atBob.push(m));
    a.on('message', (m) => void atAlice.push(m));
    const ack = await a.send(bob, 'hello across nodes');
    expect(ack.dup).toBe(false);
    await waitFor('bob gets it', () => atBob.length === 1);
    expect(atBob[0]!.text()).toBe('hello across nodes');
    expect(atBob[0]!.from).toBe(alice);
    await b.send(alice, 'and back');
    await waitFor('alice gets the answer', () => atAlice.length === 1);
    expect(atAlice[0]!.text()).toBe('and back');

    // carol is offline: the message waits in her partition's log-backed inbox on node2.
    await a.send(carol, 'while you were away');
    const atCarol: IrisMessage[] = [];
    const c = await connect(nodes[1]!.url, carol, atCarol);
    await waitFor('carol gets the offline message', () => atCarol.length === 1);
    expect(atCarol[0]!.text()).toBe('while you were away');
    await c.close();
  });

  /** Speaks the node-to-node relay on `port` directly, as anyone on its network could, and returns the first bytes back. */
  function forgeRelay(port: number, user: string, headers: Record<string, string>): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tcpConnect(port, '127.0.0.1');
      const head = { method: 'GET', url: '/v1/connect', remote: '', headers: { host: 'x', upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': SUBPROTOCOL, 'x-iris-token': '{}', ...headers } };
      const meta = Buffer.from(JSON.stringify({ user, head }));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(meta.length, 0);
      let got = '';
      s.on('data', (d) => void (got += d.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', reject);
      s.write(Buffer.concat([len, meta]));
    });
  }

  it('the admin API of any node answers for a user of another node, from the owner (its live connection counted)', async () => {
    const owner = nodes[1]!;
    const ada = userOn(owner.id, IDS, 'adm-');
    await connect(owner.url, ada);
    for (const n of [nodes[0]!, nodes[2]!, owner]) {
      const res = await fetch(`http://127.0.0.1:${n.port}/admin/v1/users/${ada}/stats`, { headers: { authorization: 'Bearer cluster-admin' } });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ user: ada, connections: 1 });
    }
  }, 60_000);

  it('the relay port between nodes verifies the token again: a relay naming a user without its token is refused', async () => {
    const victim = userOn('node1', IDS, 'victim-');
    const pipe = nodes[1]!.pipePort;
    // No token at all: 401, never a session as the victim.
    expect(await forgeRelay(pipe, victim, {})).toMatch(/^HTTP\/1\.1 401 /);
    // A valid token of another user, relayed under the victim's name: refused as a mismatch.
    const mallory = await token('mallory');
    expect(await forgeRelay(pipe, victim, { authorization: `Bearer ${mallory}` })).toMatch(/^HTTP\/1\.1 403 [^]*user_mismatch/);
    // The genuine relay (a socket accepted by another node) still works.
    const v = await connect(nodes[0]!.url, victim);
    await v.close();
  });

  it('kill -9 of a node under load: nothing acked is lost or duplicated, its partitions are served again', async () => {
    const live = ['node1', 'node2'];
    // dave's partition is on node0 now and moves to node1 or node2; erin stays on node1 or node2 throughout.
    dave = userOn('node0', IDS, 'dave-');
    const erin = userOn(candidateOwner(partitionOf(dave, PARTITIONS), live)!, live, 'erin-');
    const d = await connect(nodes[1]!.url, dave);
    const e = await connect(nodes[2]!.url, erin);
    const atDave = atDaveAll;
    const atErin: IrisMessage[] = [];
    d.on('message', (m) => void atDave.push(m));
    e.on('message', (m) => void atErin.push(m));
    const acked = { d: new Set<string>(), e: new Set<string>() };
    let killedAt = 0;
    let firstAckAfterKill = 0;
    const N = 40;
    const sender = async (from: IrisClient, to: string, tag: 'd' | 'e') => {
      for (let i = 0; i < N; i++) {
        const text = `${tag}-${i}`;
        await from.send(to, text);
        acked[tag].add(text);
        if (killedAt > 0 && tag === 'd' && firstAckAfterKill === 0) firstAckAfterKill = performance.now();
        if (i === 10 && tag === 'd') {
          killedAt = performance.now();
          nodes[0]!.server!.kill();
          nodes[0]!.server = null;
        }
      }
    };
    await Promise.all([sender(d, erin, 'd'), sender(e, dave, 'e')]);
    const failoverMs = Math.round(firstAckAfterKill - killedAt);
    console.log(`cluster failover: first ack of a user of the killed node ${failoverMs} ms after kill -9 (lease ${LEASE_MS} ms)`);
    await waitFor('every acked message delivered', () => atErin.length >= N && atDave.length >= N, 30_000);
    // A measurement, not a limit: forwards already on their way to the killed node are sent again after an attempt
    // of about a lease (cluster/rpc.ts idempotent), not after the whole IRIS_PEER_TIMEOUT_MS.
    console.log(`cluster failover: every acked message delivered ${Math.round(performance.now() - killedAt)} ms after kill -9 (lease ${LEASE_MS} ms, peer timeout 8000 ms)`);
    const got = { d: atErin.map((m) => m.text()), e: atDave.map((m) => m.text()) };
    for (const tag of ['d', 'e'] as const) {
      for (const t of acked[tag]) expect(got[tag]).toContain(t);
      expect(new Set(got[tag]).size).toBe(got[tag].length); // no duplicates
    }
    expect(failoverMs).toBeLessThan(LEASE_MS * 6);
  }, 90_000);

  it('a restarted node rejoins and serves its partitions again', async () => {
    const n0 = nodes[0]!;
    await launch(n0);
    await settled(IDS);
    const frank = userOn('node0', IDS, 'frank-');
    const gina = userOn('node1', IDS, 'gina-');
    // Connected to the restarted node itself: it serves frank's partition again once it has taken it back.
    await waitFor(
      'node0 serves frank again',
      async () => {
        const r = await fetch(`http://127.0.0.1:${n0.port}/metrics`).then((x) => x.text()).catch(() => '');
        return /iris_connections/.test(r);
      },
      30_000,
      100,
    );
    const f = await connect(n0.url, frank);
    const atGina: IrisMessage[] = [];
    const g = await connect(nodes[2]!.url, gina, atGina);
    await f.send(gina, 'back again');
    await waitFor('gina gets it', () => atGina.length === 1, 30_000);
    expect(atGina[0]!.text()).toBe('back again');
    // dave's partition moved back to node0 (a planned hand-over): his socket, connected before, was closed with
    // going_away and reconnected to the new owner, so he still gets what is sent to him now.
    await f.send(dave, 'after the hand-over');
    await waitFor('dave gets it on the node that took his partition back', () => atDaveAll.some((m) => m.text() === 'after the hand-over'), 30_000);
  }, 90_000);

  it('kill -9 of one NATS server: the clients keep talking, nothing acked is lost or duplicated', async () => {
    const hank = userOn('node1', IDS, 'hank-');
    const ivy = userOn('node2', IDS, 'ivy-');
    const atHank: IrisMessage[] = [];
    const atIvy: IrisMessage[] = [];
    const h = await connect(nodes[0]!.url, hank, atHank);
    const v = await connect(nodes[1]!.url, ivy, atIvy);
    const N = 30;
    const sent = { h: [] as string[], v: [] as string[] };
    const t0 = performance.now();
    const sender = async (from: IrisClient, to: string, tag: 'h' | 'v') => {
      for (let i = 0; i < N; i++) {
        if (i === 5 && tag === 'h') await nats.kill(0);
        await from.send(to, `${tag}-${i}`);
        sent[tag].push(`${tag}-${i}`);
      }
    };
    await Promise.all([sender(h, ivy, 'h'), sender(v, hank, 'v')]);
    console.log(`cluster: ${2 * N} sends across a NATS server kill -9 acked in ${Math.round(performance.now() - t0)} ms`);
    await waitFor('every acked message delivered', () => atIvy.length >= N && atHank.length >= N, 30_000);
    expect(atIvy.map((m) => m.text())).toEqual(sent.h);
    expect(atHank.map((m) => m.text())).toEqual(sent.v);
  }, 90_000);

  it('a node frozen past its lease (SIGSTOP, then SIGCONT) acks nothing more: its partitions moved, nothing diverges', async () => {
    // node1 is frozen: its leases lapse and node0/node2 take its partitions; when it wakes, its own clock says its
    // leases are gone, and any append it still tries is refused by the log (a new owner claimed it).
    const live = ['node0', 'node2'];
    const jack = userOn('node1', IDS, 'jack-');
    const kim = userOn(candidateOwner(partitionOf(jack, PARTITIONS), live)!, live, 'kim-');
    const atKim: IrisMessage[] = [];
    const j = await connect(nodes[2]!.url, jack);
    await connect(nodes[0]!.url, kim, atKim);
    const sent: string[] = [];
    const pids = await nodes[1]!.server!.currentWorkerPids();
    const all = [nodes[1]!.server!.pid, ...pids];
    for (let i = 0; i < 20; i++) {
      if (i !== 5) {
        await j.send(kim, `j-${i}`);
        sent.push(`j-${i}`);
        continue;
      }
      // This send reaches the frozen node (its socket is relayed there) and waits in its socket buffer while the
      // others take its partitions; when it wakes it must not ack it: its lease ran out by its own clock, and its
      // append would be refused by the log. The client gets `unavailable` or a close and retries elsewhere.
      for (const pid of all) process.kill(pid, 'SIGSTOP');
      const pending = j.send(kim, `j-${i}`);
      try {
        await settled(live);
      } finally {
        for (const pid of all) process.kill(pid, 'SIGCONT');
      }
      await pending;
      sent.push(`j-${i}`);
    }
    await waitFor('every acked message delivered', () => atKim.length >= sent.length, 30_000);
    const got = atKim.map((m) => m.text());
    expect(got).toEqual(sent);
    // node1 comes back as a member and takes its share again.
    await settled(IDS);
  }, 120_000);
});
