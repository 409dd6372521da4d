import { createServer } from 'node:net';
import { freePort } from '../../scripts/lib/net.js';

/**
 * A base port whose `n` consecutive ports are free now: a cluster node of n workers binds its pipe ports
 * IRIS_CLUSTER_PIPE_PORT + i (onprem/cluster/config.ts memberConfig).
 */
export async function freePorts(n: number): Promise<number> {
  const bind = (port: number) =>
    new Promise<boolean>((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen({ host: '127.0.0.1', port, exclusive: true }, () => s.close(() => res(true)));
    });
  for (;;) {
    const base = await freePort();
    let ok = base + n < 65536;
    for (let i = 1; ok && i < n; i++) ok = await bind(base + i);
    if (ok) return base;
  }
}
