import { connectCluster } from '../../cluster/nats.js';
import { startOnprem } from '../conformance/onprem-target.js';
import type { Target } from '../conformance/suite.js';
import { NatsCluster } from './nats-harness.js';
import { waitServed, waitSettled } from './nodes.js';
import { freePorts } from './ports.js';

/**
 * The conformance suite's Target for cluster mode (test/cluster/conformance*.test.ts): 3 nats-server + the given
 * Iris nodes (each with `workers` workers: members `<node>` or `<node>.<i>`), the suite talking to node0 only, so
 * most of its users live on other members (sockets handed over or relayed, calls over NATS). restart() restarts
 * node0 (its partitions handed over, then taken back) and waits until the assignment has settled again.
 */
export async function clusterTarget(ids: string[], workers: number, partitions = 12): Promise<Target> {
  const nats = await NatsCluster.start(3);
  const probe = await connectCluster(nats.urls());
  const members = workers === 1 ? ids : ids.flatMap((id) => Array.from({ length: workers }, (_, i) => `${id}.${i}`));
  const nodes: Target[] = [];
  // Owner keys first (each partition taken by its candidate), then every partition rebuilt and served.
  const settled = async () => {
    await waitSettled(probe, members, partitions);
    await waitServed(nodes.map((n) => Number(new URL(n.url).port)), partitions);
  };
  try {
    for (const id of ids) {
      const env = {
        IRIS_CLUSTER_NATS: nats.urls().join(','),
        IRIS_CLUSTER_NODE: id,
        IRIS_CLUSTER_PARTITIONS: String(partitions),
        IRIS_CLUSTER_LEASE_MS: '2000',
        IRIS_CLUSTER_PIPE_PORT: String(await freePorts(workers)),
        // Presence subscriptions live in the subject's memory: when its partition moves (restart() hands node0's
        // partitions away and back), a watcher whose own socket stayed gets them back at its next renewal, at half
        // this lease (docs/ARCHITECTURE.md, cluster failure cases). Short here so that comes within the suite's waits.
        IRIS_PRESENCE_LEASE_MS: '4000',
      };
      nodes.push(await startOnprem({ workers, env }));
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
