import type { IrisClient, IrisMessage } from '../../client/index.js';
import type { ClusterConn } from '../../cluster/nats.js';
import { candidateOwner, partitionOf } from '../../cluster/partition.js';
import { scrape, sdkClient, startServer, waitFor, type ServerProcess } from '../onprem/helpers.js';

/**
 * What the end-to-end cluster tests (Iris nodes as processes on a real NATS cluster) share: picking users by the
 * member that owns them, waiting for the assignment to settle, and connecting through a failover.
 */

/** An Iris node process of a test cluster: its ports, data dir and (while it runs) its process. */
export interface NodeProc {
  id: string;
  port: number;
  pipePort: number;
  dataDir: string;
  server: ServerProcess | null;
  url: string;
}

export interface LaunchOptions {
  nats: string[];
  partitions: number;
  leaseMs: number;
  workers?: number;
  timeoutMs?: number;
  /** More settings (admin secret, v1 ports...). */
  env?: Record<string, string>;
}

/** Starts (or restarts) node `n` in cluster mode on its ports and data dir; sets n.server. */
export async function launchNode(n: NodeProc, o: LaunchOptions): Promise<void> {
  const { server } = await startServer({
    workers: o.workers ?? 1,
    port: n.port,
    dataDir: n.dataDir,
    ...(o.timeoutMs !== undefined && { timeoutMs: o.timeoutMs }),
    env: {
      IRIS_CLUSTER_NATS: o.nats.join(','),
      IRIS_CLUSTER_NODE: n.id,
      IRIS_CLUSTER_PARTITIONS: String(o.partitions),
      IRIS_CLUSTER_LEASE_MS: String(o.leaseMs),
      IRIS_CLUSTER_PIPE_PORT: String(n.pipePort),
      IRIS_PEER_TIMEOUT_MS: '8000',
      ...o.env,
    },
  });
  n.server = server;
}

/** The first user id with `prefix` whose partition rendezvous gives to `member` among `live`. */
export function userOn(member: string, live: string[], prefix: string, partitions: number): string {
  for (let i = 0; ; i++) {
    const u = `${prefix}${i}`;
    if (candidateOwner(partitionOf(u, partitions), live) === member) return u;
  }
}

/** The member named by partition p's owner key ('' while none). */
export async function leaseOwner(probe: ClusterConn, p: number): Promise<string> {
  const e = await probe.leases.get(`p.${p}`).catch(() => null);
  return e && e.length > 0 ? e.json<{ node: string }>().node : '';
}

/** Resolves once every partition is held by its rendezvous candidate among `live` (the assignment has settled). */
export async function waitSettled(probe: ClusterConn, live: string[], partitions: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    `partitions held by ${live.join(',')}`,
    async () => {
      for (let p = 0; p < partitions; p++) if ((await leaseOwner(probe, p)) !== candidateOwner(p, live)) return false;
      return true;
    },
    timeoutMs,
    100,
  );
}

/**
 * Resolves once the nodes listening on `ports` serve `partitions` partitions between them (metric
 * iris_cluster_partitions_served): an owner key is written when a partition is taken, before its rebuild, so
 * waitSettled alone may return while a node still answers `unavailable` for some users.
 */
export async function waitServed(ports: number[], partitions: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    `${partitions} partitions served`,
    async () => {
      let sum = 0;
      for (const port of ports) {
        const m = await scrape(port).catch(() => new Map<string, number>());
        for (const [k, v] of m) if (k.startsWith('iris_cluster_partitions_served')) sum += v;
      }
      return sum === partitions;
    },
    timeoutMs,
    100,
  );
}

/**
 * A connected SDK client (pushed to `clients` for the test's cleanup); the first attempt is retried while the user's
 * partition is between owners. Listens before connect(): what waited offline arrives right after the welcome.
 */
export async function connectRetrying(clients: IrisClient[], url: string, user: string, inbox?: IrisMessage[], device = 'd1'): Promise<IrisClient> {
  let c: IrisClient | null = null;
  await waitFor(
    `${user} connects`,
    async () => {
      const attempt = sdkClient(url, user, device);
      if (inbox) attempt.on('message', (m) => void inbox.push(m));
      try {
        await attempt.connect();
        c = attempt;
        return true;
      } catch {
        await attempt.close();
        return false;
      }
    },
    30_000,
    100,
  );
  clients.push(c!);
  return c!;
}
