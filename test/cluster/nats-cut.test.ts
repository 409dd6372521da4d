import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { freePort, removeDir, sdkClient, startServer, tempDir, waitFor, type ServerProcess } from '../onprem/helpers.js';
import { NatsCluster } from './nats-harness.js';
import { userOn as userOnShared, waitSettled } from './nodes.js';

/**
 * A node cut off from NATS while it has clients (issue 13: "a node partitioned from the others stops acking
 * rather than diverging"). node2 reaches the three nats-servers only through TCP proxies this test controls; the
 * cut destroys every proxied connection and refuses new ones. node2 then cannot append, renew its lease session
 * or read leases: its clients' sends are not acked there, its partitions are taken by node0/node1 one lease after
 * its last renewal, and its clients (relayed to it by another node) reconnect and go on. When the proxies open again node2
 * rejoins and takes its share back, and every message acked anywhere was delivered exactly once, in order.
 */

const PARTITIONS = 12;
const LEASE_MS = 2000;
const IDS = ['node0', 'node1', 'node2'];

/** A TCP proxy to `port` that can be cut (every connection destroyed, new ones refused) and opened again. */
class CuttableProxy {
  private readonly sockets = new Set<Socket>();
  private cut = false;
  private constructor(
    readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: number): Promise<CuttableProxy> {
    const port = await freePort();
    let self: CuttableProxy | null = null;
    const server = createServer((client) => {
      if (!self || self.cut) return void client.destroy();
      const up = tcpConnect(target, '127.0.0.1');
      for (const s of [client, up]) {
        self.sockets.add(s);
        s.on('close', () => self!.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(up);
      up.pipe(client);
      client.on('close', () => up.destroy());
      up.on('close', () => client.destroy());
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    self = new CuttableProxy(server, port);
    return self;
  }

  sever(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }

  open(): void {
    this.cut = false;
  }

  close(): void {
    this.sever();
    this.server.close();
  }
}

const userOn = (node: string, live: string[], prefix: string): string => userOnShared(node, live, prefix, PARTITIONS);

describe('cluster mode: a node cut off from NATS', () => {
  let nats: NatsCluster;
  let probe: ClusterConn;
  const proxies: CuttableProxy[] = [];
  const servers: { id: string; port: number; dir: string; server: ServerProcess }[] = [];
  const clients: IrisClient[] = [];

  const settled = (live: string[]): Promise<void> => waitSettled(probe, live, PARTITIONS);

  beforeAll(async () => {
    // Without no_advertise, node2's client learns the servers' own addresses and reconnects around the proxies.
    nats = await NatsCluster.start(3, 30_000, { noAdvertise: true });
    const direct = nats.urls();
    for (const u of direct) proxies.push(await CuttableProxy.start(Number(new URL(u).port)));
    for (const id of IDS) {
      const port = await freePort();
      const dir = tempDir('iris-cluster-cut-');
      const urls = id === 'node2' ? proxies.map((p) => `nats://127.0.0.1:${p.port}`) : direct;
      const { server } = await startServer({
        workers: 1,
        port,
        dataDir: dir,
        env: {
          IRIS_CLUSTER_NATS: urls.join(','),
          IRIS_CLUSTER_NODE: id,
          IRIS_CLUSTER_PARTITIONS: String(PARTITIONS),
          IRIS_CLUSTER_LEASE_MS: String(LEASE_MS),
          IRIS_CLUSTER_PIPE_PORT: String(await freePort()),
          IRIS_PEER_TIMEOUT_MS: '8000',
        },
      });
      servers.push({ id, port, dir, server });
    }
    probe = await connectCluster(direct);
    await settled(IDS);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await probe?.nc.close().catch(() => undefined);
    for (const s of servers) {
      s.server.kill();
      removeDir(s.dir);
    }
    for (const p of proxies) p.close();
    nats?.stop();
  });

  it("its clients' sends stop being acked there, its partitions move, nothing acked is lost or doubled, and it rejoins", async () => {
    const url = (i: number) => `ws://127.0.0.1:${servers[i]!.port}/v1/connect`;
    const ann = userOn('node2', IDS, 'cut-ann-');
    const bo = userOn('node0', ['node0', 'node1'], 'cut-bo-');
    const atBo: IrisMessage[] = [];
    // ann connects at node0; her partition's owner is node2, about to be cut off, so her socket is relayed to it.
    const a = sdkClient(url(0), ann);
    const b = sdkClient(url(1), bo);
    clients.push(a, b);
    b.on('message', (m) => void atBo.push(m));
    await Promise.all([a.connect(), b.connect()]);

    const acked: string[] = [];
    const N = 60;
    let cutAt = -1;
    for (let i = 0; i < N; i++) {
      const text = `m-${i}`;
      if (i === 15) {
        cutAt = acked.length;
        for (const p of proxies) p.sever();
      }
      if (i === 45) for (const p of proxies) p.open();
      await a.send(bo, text);
      acked.push(text);
    }
    expect(cutAt).toBe(15);
    await waitFor('every acked message delivered to bo', () => atBo.length >= N, 60_000);
    const got = atBo.map((m) => m.text());
    expect(got).toEqual(acked); // each once, in the order they were acked
    // node2 itself gave its partitions up when it could not renew (it did not keep serving them).
    expect(servers[2]!.server.stderr).toMatch(/partitions? [\d, -]+ lost \((expired|taken|fenced)\)/);
    // node2 took its share back after the proxies opened: nothing of its old view was served in between.
    await settled(IDS);
    await a.send(bo, 'after the rejoin');
    await waitFor('the last one', () => atBo.some((m) => m.text() === 'after the rejoin'), 30_000);
  }, 180_000);
});
