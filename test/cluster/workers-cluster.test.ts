import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { partitionOf } from '../../cluster/partition.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { freePort, removeDir, runToExit, scrape, tempDir, waitFor } from '../onprem/helpers.js';
import { NatsCluster } from './nats-harness.js';
import { freePorts } from './ports.js';
import { connectRetrying, launchNode, leaseOwner, type NodeProc, userOn as userOnShared, waitSettled } from './nodes.js';

/**
 * Cluster mode with several workers per node (issue 13): three nats-server processes and two Iris nodes of two
 * workers each, so four cluster members (`<node>.<i>`), each with its own lease session, partitions and pipe port
 * (IRIS_CLUSTER_PIPE_PORT + i). Users of all four members chat (sockets land on any worker of either node and are
 * relayed to the owning member, a sibling worker's like another node's), offline delivery crosses workers and
 * nodes, kill -9 of ONE worker (its supervisor restarts it under the same member id) loses no acked message and
 * duplicates none, and a node stopped by SIGTERM hands every partition of both its workers over.
 */

const PARTITIONS = 16;
const LEASE_MS = 2000;
const WORKERS = 2;
const ADMIN = 'workers-admin-secret';
const IDS = ['w0', 'w1'];
const members = (ids: string[]) => ids.flatMap((id) => Array.from({ length: WORKERS }, (_, i) => `${id}.${i}`));
const ALL = members(IDS);

type Node = NodeProc;

const userOn = (member: string, live: string[], prefix: string): string => userOnShared(member, live, prefix, PARTITIONS);

describe(`cluster mode: 3 NATS servers + 2 Iris nodes of ${WORKERS} workers each`, () => {
  let nats: NatsCluster;
  const nodes: Node[] = [];
  const clients: IrisClient[] = [];
  let probe: ClusterConn;

  const owner = (p: number): Promise<string> => leaseOwner(probe, p);

  const settled = (live: string[]): Promise<void> => waitSettled(probe, live, PARTITIONS);

  const launch = (n: Node): Promise<void> => launchNode(n, { nats: nats.urls(), partitions: PARTITIONS, leaseMs: LEASE_MS, workers: WORKERS, env: { IRIS_ADMIN_SECRET: ADMIN } });

  const connect = (url: string, user: string, inbox?: IrisMessage[], device = 'd1'): Promise<IrisClient> => connectRetrying(clients, url, user, inbox, device);

  beforeAll(async () => {
    nats = await NatsCluster.start(3);
    for (const id of IDS) {
      const port = await freePort();
      nodes.push({ id, port, pipePort: await freePorts(WORKERS), dataDir: tempDir('iris-cluster-workers-'), server: null, url: `ws://127.0.0.1:${port}/v1/connect` });
    }
    await Promise.all(nodes.map((n) => launch(n)));
    probe = await connectCluster(nats.urls());
    await settled(ALL);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await probe?.nc.close().catch(() => undefined);
    for (const n of nodes) {
      n.server?.kill();
      removeDir(n.dataDir);
    }
    nats?.stop();
  });

  it('each worker is a member with its own partitions; users of all four members chat, on sockets accepted by any worker', async () => {
    // Every member holds some partitions: rendezvous over the four members, each worker's lease session its own.
    const held = new Set<string>();
    for (let p = 0; p < PARTITIONS; p++) held.add(await owner(p));
    expect([...held].sort()).toEqual(ALL);
    const users = ALL.map((m, i) => userOn(m, ALL, `u${i}-`));
    const inbox = users.map(() => [] as IrisMessage[]);
    // Four devices per user, one on each node and two more on the owner's node: the kernel spreads sockets over a
    // node's workers (SO_REUSEPORT), so they reach their owner directly, relayed by the sibling worker (half of
    // those on the owner's node, on average) and relayed by the other node.
    const DEVICES = 4;
    const devs: IrisClient[][] = [];
    for (let i = 0; i < users.length; i++) {
      const own = nodes[Math.floor(i / WORKERS)]!.url;
      const urls = [nodes[0]!.url, nodes[1]!.url, own, own];
      const d: IrisClient[] = [];
      for (let k = 0; k < DEVICES; k++) d.push(await connect(urls[k]!, users[i]!, inbox[i], `d${k + 1}`));
      devs.push(d);
    }
    // Sockets whose owner is the accepting worker's sibling were handed over through the supervisor (SCM_RIGHTS),
    // not relayed through the sibling's pipe port; those for the other node's members were relayed (via pipe).
    const opened = async (via: string) => {
      let n = 0;
      for (const node of nodes) for (const [k, v] of await scrape(node.port)) if (k.startsWith('iris_connections_opened_total{') && k.includes(`via="${via}"`)) n += v;
      return n;
    };
    expect(await opened('handoff')).toBeGreaterThan(0);
    expect(await opened('pipe')).toBeGreaterThan(0);
    // A ring: each user sends to the next, from alternating devices; every message reaches all of its devices.
    for (let i = 0; i < users.length; i++) {
      const ack = await devs[i]![i % 2]!.send(users[(i + 1) % users.length]!, `ring ${i}`);
      expect(ack.dup).toBe(false);
    }
    for (let i = 0; i < users.length; i++) {
      const from = (i + users.length - 1) % users.length;
      await waitFor(`${users[i]} gets ring ${from} on every device`, () => inbox[i]!.filter((m) => m.text() === `ring ${from}`).length === DEVICES);
      expect(inbox[i]!.find((m) => m.text() === `ring ${from}`)!.from).toBe(users[from]);
    }

    // Offline delivery across workers of one node and across nodes: both wait in the recipient member's log.
    const off0 = userOn('w0.1', ALL, 'off0-');
    const off1 = userOn('w1.1', ALL, 'off1-');
    await devs[0]![0]!.send(off0, 'to a sibling worker, offline');
    await devs[0]![1]!.send(off1, 'to the other node, offline');
    const at0: IrisMessage[] = [];
    const at1: IrisMessage[] = [];
    const c0 = await connect(nodes[1]!.url, off0, at0);
    const c1 = await connect(nodes[0]!.url, off1, at1);
    await waitFor('the offline messages arrive', () => at0.length === 1 && at1.length === 1);
    expect(at0[0]!.text()).toBe('to a sibling worker, offline');
    expect(at1[0]!.text()).toBe('to the other node, offline');
    await c0.close();
    await c1.close();

    // The admin API: a user of any member is answered from any node, and the stats sum the node's workers.
    for (const n of nodes) {
      for (const u of users) {
        const r = await fetch(`http://127.0.0.1:${n.port}/admin/v1/users/${u}/stats`, { headers: { authorization: `Bearer ${ADMIN}` } });
        expect(r.status).toBe(200);
        expect(((await r.json()) as { user: string }).user).toBe(u);
      }
      const s = (await fetch(`http://127.0.0.1:${n.port}/admin/v1/stats`, { headers: { authorization: `Bearer ${ADMIN}` } }).then((r) => r.json())) as { workers: number; workersAnswering: number };
      expect(s).toMatchObject({ workers: WORKERS, workersAnswering: WORKERS });
    }
  }, 90_000);

  it('kill -9 of ONE worker under load: the supervisor restarts it, its partitions come back, nothing acked is lost or duplicated', async () => {
    // w0.0 is killed: dave's partition is its; erin's is another node's, so their messages cross nodes and workers.
    const n0 = nodes[0]!;
    const victim = n0.server!.workerPids[0]!;
    const dave = userOn('w0.0', ALL, 'dave-');
    const erin = userOn('w1.1', ALL, 'erin-');
    const d = await connect(nodes[1]!.url, dave);
    const e = await connect(n0.url, erin);
    const atDave: IrisMessage[] = [];
    const atErin: IrisMessage[] = [];
    d.on('message', (m) => void atDave.push(m));
    e.on('message', (m) => void atErin.push(m));
    const acked = { d: new Set<string>(), e: new Set<string>() };
    const N = 40;
    let killedAt = 0;
    let firstAckAfterKill = 0;
    const sender = async (from: IrisClient, to: string, tag: 'd' | 'e') => {
      for (let i = 0; i < N; i++) {
        const text = `${tag}-${i}`;
        await from.send(to, text);
        acked[tag].add(text);
        if (killedAt > 0 && tag === 'd' && firstAckAfterKill === 0) firstAckAfterKill = performance.now();
        if (i === 10 && tag === 'd') {
          killedAt = performance.now();
          process.kill(victim, 'SIGKILL');
        }
      }
    };
    await Promise.all([sender(d, erin, 'd'), sender(e, dave, 'e')]);
    console.log(`cluster workers: first ack of a user of the killed worker ${Math.round(firstAckAfterKill - killedAt)} ms after its kill -9 (lease ${LEASE_MS} ms)`);
    await waitFor('every acked message delivered', () => atErin.length >= N && atDave.length >= N, 30_000);
    console.log(`cluster workers: every acked message delivered ${Math.round(performance.now() - killedAt)} ms after the kill -9 (peer timeout 8000 ms)`);
    const got = { d: atErin.map((m) => m.text()), e: atDave.map((m) => m.text()) };
    for (const tag of ['d', 'e'] as const) {
      for (const t of acked[tag]) expect(got[tag]).toContain(t);
      expect(new Set(got[tag]).size).toBe(got[tag].length); // no duplicates
    }
    // The supervisor forked a new worker 0, which came back as member w0.0 and holds its partitions again.
    await waitFor('worker 0 restarted', async () => {
      const pids = await n0.server!.currentWorkerPids();
      return pids.length === WORKERS && !pids.includes(victim);
    });
    await settled(ALL);
    expect(await owner(partitionOf(dave, PARTITIONS))).toBe('w0.0');
  }, 120_000);

  it('a node of two workers stopped by SIGTERM hands every partition over; what waited for its users is delivered by the others', async () => {
    const n1 = nodes[1]!;
    const frank = userOn('w1.0', ALL, 'frank-');
    const gina = userOn('w1.1', ALL, 'gina-');
    const hank = userOn('w0.1', ALL, 'hank-');
    const h = await connect(nodes[0]!.url, hank);
    await h.send(frank, 'for frank, before the stop');
    await h.send(gina, 'for gina, before the stop');
    const exited = await n1.server!.stop();
    n1.server = null;
    expect(exited.code).toBe(0);
    // Handed over, not lapsed: once the node has exited, no partition names one of its members any more.
    for (let p = 0; p < PARTITIONS; p++) expect(await owner(p)).not.toMatch(/^w1\./);
    const live = members(['w0']);
    await settled(live);
    const atFrank: IrisMessage[] = [];
    const atGina: IrisMessage[] = [];
    await connect(nodes[0]!.url, frank, atFrank);
    await connect(nodes[0]!.url, gina, atGina);
    await waitFor('frank and gina get what waited for them', () => atFrank.length === 1 && atGina.length === 1, 30_000);
    expect(atFrank[0]!.text()).toBe('for frank, before the stop');
    expect(atGina[0]!.text()).toBe('for gina, before the stop');
  }, 120_000);
  it('a node whose worker cannot bind its pipe port (base + i) does not start, and says which port and why', async () => {
    const base = await freePorts(WORKERS);
    const taken = createServer();
    await new Promise<void>((r) => taken.listen({ host: '127.0.0.1', port: base + 1, exclusive: true }, () => r()));
    const dir = tempDir('iris-cluster-workers-');
    try {
      const env = { IRIS_CLUSTER_NATS: nats.urls().join(','), IRIS_CLUSTER_NODE: 'wx', IRIS_CLUSTER_PARTITIONS: String(PARTITIONS), IRIS_CLUSTER_PIPE_PORT: String(base) };
      const r = await runToExit(['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', dir, '--workers', String(WORKERS)], env);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${base + 1} (cluster pipe)`);
      expect(r.stderr).toContain(`IRIS_CLUSTER_PIPE_PORT + 1: the ${WORKERS} ports from ${base} must be free`);
    } finally {
      taken.close();
      removeDir(dir);
    }
  }, 60_000);
});
