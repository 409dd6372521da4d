import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Assigner } from '../../cluster/assign.js';
import { Membership } from '../../cluster/membership.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { ClusterNode } from '../../cluster/node.js';
import { candidateOwner } from '../../cluster/partition.js';
import { NatsCluster } from './nats-harness.js';

/**
 * Nodes serving the partitions rendezvous hashing gives them (cluster/assign.ts, cluster/membership.ts) on a real
 * three-server NATS cluster, with 12 partitions: three nodes split them, a crashed node's partitions move to the
 * others after its heartbeat and leases lapse, a joining node takes its share by planned hand-over. Every wait is
 * for the nodes' own ticks.
 */

const PARTITIONS = 12;
let nats: NatsCluster;
const conns: ClusterConn[] = [];
const dirs: string[] = [];
interface Member {
  name: string;
  node: ClusterNode;
  membership: Membership;
  assigner: Assigner;
}
const members: Member[] = [];

async function join_(name: string): Promise<Member> {
  const c = await connectCluster(nats.urls(), undefined, name);
  conns.push(c);
  const d = mkdtempSync(join(tmpdir(), 'iris-cluster-assign-'));
  dirs.push(d);
  const node = new ClusterNode(c, { node: name, dir: d, leaseMs: 1000 });
  const membership = new Membership(c, { node: name, heartbeatMs: 150 });
  await membership.start();
  const assigner = new Assigner(node, membership, { partitions: PARTITIONS, tickMs: 150 });
  assigner.start();
  const m = { name, node, membership, assigner };
  members.push(m);
  return m;
}

function crash(m: Member): void {
  m.assigner.stop();
  void m.membership.stop(false);
  m.node.crash();
  members.splice(members.indexOf(m), 1);
}

/** Who serves each partition now (names; several if more than one claims to). */
function servers(): string[][] {
  return Array.from({ length: PARTITIONS }, (_, p) => members.filter((m) => m.node.storage(p) !== undefined).map((m) => m.name));
}

/** Resolves once, after some node's tick, every partition is served by exactly its candidate among `names`. */
function settled(names: string[], timeoutMs = 20_000): Promise<void> {
  const want = Array.from({ length: PARTITIONS }, (_, p) => [candidateOwner(p, names)!]);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not settled on ${names.join(',')}: ${JSON.stringify(servers())}`)), timeoutMs);
    const check = () => {
      if (JSON.stringify(servers()) === JSON.stringify(want)) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (const m of members) m.assigner.onTick(check);
    check();
  });
}

beforeAll(async () => {
  nats = await NatsCluster.start(3);
});

afterAll(async () => {
  for (const m of [...members]) crash(m);
  for (const c of conns) await c.nc.close().catch(() => undefined);
  nats?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('partition assignment over the live nodes', () => {
  it('three nodes split the partitions, each served once, by its rendezvous candidate', async () => {
    await Promise.all(['a', 'b', 'c'].map((n) => join_(n)));
    await settled(['a', 'b', 'c']);
    for (const m of members) expect(m.node.served().length).toBeGreaterThan(0);
  });

  it("a crashed node's partitions are served by the others after the lapse", async () => {
    const c = members.find((m) => m.name === 'c')!;
    const t0 = performance.now();
    crash(c);
    await settled(['a', 'b']);
    // Heartbeats declare it dead after 450 ms, its leases lapse after 1000 ms: about a second and a half.
    expect(performance.now() - t0).toBeLessThan(10_000);
  });

  it('a node that joins takes its share by planned hand-over', async () => {
    await join_('d');
    await settled(['a', 'b', 'd']);
  });

  it('a restarted node (the same id, a new process, an empty disk) rejoins and gets its partitions back', async () => {
    await join_('c');
    await settled(['a', 'b', 'c', 'd']);
  });
});
