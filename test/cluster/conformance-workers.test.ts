import { connectCluster } from '../../cluster/nats.js';
import { candidateOwner } from '../../cluster/partition.js';
import { startOnprem } from '../conformance/onprem-target.js';
import { runConformance, type Target } from '../conformance/suite.js';
import { NatsCluster } from './nats-harness.js';
import { freePorts } from './ports.js';

/**
 * The conformance suite against ONE node of a cluster whose nodes run two workers each (issue 13): 3 nats-server
 * + 2 Iris nodes of 2 workers, so four cluster members (`<node>.<i>`). The suite talks to node0 only: its users
 * live on node0's two workers and node1's two, so every feature (messages, presence, typing, groups, keys, the
 * admin API...) runs between sibling workers of one node as well as between nodes, over NATS; sockets are handed
 * to a sibling or relayed to node1. restart() restarts node0 (both its workers hand over, then rejoin).
 */

const PARTITIONS = 12;
const WORKERS = 2;
const IDS = ['node0', 'node1'];
const MEMBERS = IDS.flatMap((id) => Array.from({ length: WORKERS }, (_, i) => `${id}.${i}`));

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
        ok = (e && e.length > 0 ? e.json<{ node: string }>().node : '') === candidateOwner(p, MEMBERS);
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
        IRIS_CLUSTER_PIPE_PORT: String(await freePorts(WORKERS)),
        // As in conformance.test.ts: presence watchers come back at their next renewal after a partition moves.
        IRIS_PRESENCE_LEASE_MS: '4000',
      };
      nodes.push(await startOnprem({ workers: WORKERS, env }));
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

runConformance(`onprem cluster (node0 of 2 nodes x ${WORKERS} workers, 3 NATS servers)`, startCluster);
