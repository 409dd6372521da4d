import { connectCluster } from '../../cluster/nats.js';
import { candidateOwner } from '../../cluster/partition.js';
import { freePort } from '../../scripts/lib/net.js';
import { startOnprem } from '../conformance/onprem-target.js';
import { runConformance, type Target } from '../conformance/suite.js';
import { NatsCluster } from './nats-harness.js';

/**
 * The conformance suite against ONE node of a cluster (issue 13): 3 nats-server + 3 Iris nodes (one worker
 * each); the suite talks to node0 only, so most of its users live in partitions of the other nodes (sockets
 * relayed, calls over NATS). restart() restarts node0 (a graceful hand-over and a rejoin).
 */

const PARTITIONS = 12;
const IDS = ['node0', 'node1', 'node2'];

async function startCluster(): Promise<Target> {
  const nats = await NatsCluster.start(3);
  const probe = await connectCluster(nats.urls());
  /** Waits (event by event, bounded) until every partition's lease is held by its rendezvous candidate. */
  const settled = async (): Promise<void> => {
    const end = Date.now() + 60_000;
    for (;;) {
      let ok = true;
      for (let p = 0; p < PARTITIONS && ok; p++) {
        const e = await probe.leases.get(`p.${p}`).catch(() => null);
        ok = (e && e.length > 0 ? e.json<{ node: string }>().node : '') === candidateOwner(p, IDS);
      }
      if (ok) return;
      if (Date.now() > end) throw new Error('cluster partitions did not settle in 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const nodes: Target[] = [];
  try {
    for (const id of IDS) {
      const env = {
        IRIS_CLUSTER_NATS: nats.urls().join(','),
        IRIS_CLUSTER_NODE: id,
        IRIS_CLUSTER_PARTITIONS: String(PARTITIONS),
        IRIS_CLUSTER_LEASE_MS: '2000',
        IRIS_CLUSTER_PIPE_PORT: String(await freePort()),
        // Presence subscriptions live in the subject's memory: when its partition moves (restart() hands node0's
        // partitions away and back), a watcher whose own socket stayed gets them back at its next renewal, at half
        // this lease (docs/ARCHITECTURE.md, cluster failure cases). Short here so that comes within the suite's waits.
        IRIS_PRESENCE_LEASE_MS: '4000',
      };
      nodes.push(await startOnprem({ workers: 1, env }));
    }
    await settled();
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    await probe.nc.close();
    nats.stop();
    throw e;
  }
  const a = nodes[0]!;
  return {
    ...a,
    restart: async () => {
      await a.restart();
      await settled();
    },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      await probe.nc.close().catch(() => undefined);
      nats.stop();
    },
  };
}

runConformance('onprem cluster (node0 of 3 nodes, 3 NATS servers)', startCluster);
