import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../scripts/lib/net.js';

/**
 * A real NATS cluster for tests and benchmarks (issue 13): `size` nats-server processes (Debian's package, 2.9.x)
 * with JetStream, joined by routes, on free loopback ports, each with its own temporary store directory. Every
 * process is started here and stopped here by its pid; nothing else is touched. Readiness is read from the
 * servers' own log lines (each says "Server is ready", one of them that it became the JetStream metadata leader),
 * never from a timer.
 */

export const NATS_BIN = process.env['IRIS_NATS_SERVER'] ?? 'nats-server';

/** Throws a message that says what to install when nats-server is missing (CI installs it in .ci/run). */
export function natsServerVersion(): string {
  const r = spawnSync(NATS_BIN, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`nats-server not found (${NATS_BIN}); install it: apt-get install -y nats-server`);
  return r.stdout.trim();
}

export interface NatsNode {
  name: string;
  /** Client port (nats://127.0.0.1:port). */
  port: number;
  /** Route port (cluster traffic). */
  routePort: number;
  storeDir: string;
  child: ChildProcess | null;
  log: string;
}

export class NatsCluster {
  readonly nodes: NatsNode[] = [];
  private readonly base: string;

  private constructor(readonly size: number) {
    this.base = mkdtempSync(join(tmpdir(), 'iris-nats-'));
  }

  /** Starts `size` servers and resolves once all are ready and JetStream has a metadata leader. */
  /**
   * noAdvertise: the servers do not tell clients the other servers' addresses (`cluster.no_advertise`), so a client
   * reaches only the URLs it was given (a client behind a proxy stays behind it when the proxy cuts it off).
   */
  static async start(size = 3, timeoutMs = 30_000, opts: { noAdvertise?: boolean } = {}): Promise<NatsCluster> {
    natsServerVersion();
    const c = new NatsCluster(size);
    c.noAdvertise = opts.noAdvertise === true;
    for (let i = 0; i < size; i++) {
      c.nodes.push({ name: `n${i + 1}`, port: await freePort(), routePort: await freePort(), storeDir: join(c.base, `n${i + 1}`), child: null, log: '' });
    }
    try {
      await Promise.all([...c.nodes.map((n) => c.launch(n, timeoutMs)), c.metaLeader(timeoutMs)]);
    } catch (e) {
      c.stop();
      throw e;
    }
    return c;
  }

  /** Client URLs of the servers (all of them, or the ones still running). */
  urls(running = false): string[] {
    return this.nodes.filter((n) => !running || n.child !== null).map((n) => `nats://127.0.0.1:${n.port}`);
  }

  private noAdvertise = false;

  private config(n: NatsNode): string {
    const routes = this.nodes.filter((o) => o !== n).map((o) => `nats-route://127.0.0.1:${o.routePort}`);
    const file = join(this.base, `${n.name}.conf`);
    writeFileSync(
      file,
      [
        `server_name: ${n.name}`,
        `listen: 127.0.0.1:${n.port}`,
        `jetstream { store_dir: "${n.storeDir}", max_memory_store: 64MB, max_file_store: 2GB }`,
        `cluster { name: iris, listen: 127.0.0.1:${n.routePort}, routes: [${routes.join(', ')}]${this.noAdvertise ? ', no_advertise: true' : ''} }`,
      ].join('\n') + '\n',
    );
    return file;
  }

  private waiters: { test: (n: NatsNode) => boolean; resolve: () => void }[] = [];

  /** Resolves when some server's log satisfies test (checked on every new line). */
  private waitLog(test: (n: NatsNode) => boolean, timeoutMs: number, what: string): Promise<void> {
    if (this.nodes.some(test)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nats cluster: timed out waiting for ${what}\n${this.nodes.map((n) => `--- ${n.name}\n${n.log.slice(-2000)}`).join('\n')}`)), timeoutMs);
      this.waiters.push({ test, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  private launch(n: NatsNode, timeoutMs: number): Promise<void> {
    n.log = '';
    const child = spawn(NATS_BIN, ['-c', this.config(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
    n.child = child;
    const onData = (d: string) => {
      n.log += d;
      this.waiters = this.waiters.filter((w) => (this.nodes.some(w.test) ? (w.resolve(), false) : true));
    };
    child.stdout!.setEncoding('utf8').on('data', onData);
    child.stderr!.setEncoding('utf8').on('data', onData);
    child.once('exit', () => {
      if (n.child === child) n.child = null;
    });
    return this.waitLog((m) => m === n && /Server is ready/.test(m.log), timeoutMs, `${n.name} ready`);
  }

  private metaLeader(timeoutMs: number): Promise<void> {
    return this.waitLog((m) => /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(m.log), timeoutMs, 'a JetStream metadata leader');
  }

  /** kill -9 of one server (its store stays, so restart() brings it back with its data). */
  kill(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.nodes[i]!;
    const child = n.child;
    if (!child) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      process.kill(child.pid!, signal);
    });
  }

  /** Starts a stopped server again on the same ports and store. */
  restart(i: number, timeoutMs = 30_000): Promise<void> {
    return this.launch(this.nodes[i]!, timeoutMs);
  }

  /** Stops every server this harness started (by pid) and removes the store directories. */
  stop(): void {
    for (const n of this.nodes) {
      if (n.child?.pid !== undefined) {
        try {
          process.kill(n.child.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
        n.child = null;
      }
    }
    rmSync(this.base, { recursive: true, force: true });
  }
}
