import type { Socket } from 'node:net';
import { join } from 'node:path';
import { logs, type Clock, type Logger, type LogFields, type LogLevel, type Metrics } from '../../core/ports.js';
import { fetchPushHttp } from '../../core/push.js';
import { logLine } from '../../core/log-line.js';
import { CLOSE_CODES } from '../../protocol/index.js';
import type { OnpremConfig } from '../config.js';
import type { ToWorker } from '../ipc.js';
import { LogLimiter, describeError, oneLine } from '../log.js';
import { IdleTrim } from '../memory.js';
import { WorkerMetrics } from '../metrics.js';
import { GroupCommitStorage } from '../storage.js';
import type { WorkerContext } from './context.js';
import { SupervisorLink, send } from './control.js';
import { Listener } from './listener.js';
import { PipeRoute } from './pipe.js';
import { NodeRelay } from './relay.js';
import { Router } from './router.js';
import { Shards } from './shards.js';
import { WebSockets } from './websockets.js';
import { AdminRoute } from './admin.js';
import { TokenVerifier, tokenCheck } from '../../auth/index.js';
import { V1Gateway } from '../../gateway/v1/gateway.js';
import type { ClusterHost } from '../cluster/host.js';
import { memberConfig, memberDir, removeStaleViews, siblingOf } from '../cluster/config.js';
import type { Storage } from '../../core/ports.js';

/** Cluster mode's base storage: every user and group has its partition's (Shards.storageFor); this one is never used. */
const NO_STORAGE: Storage = {
  sql: {
    all: () => {
      throw new Error('cluster mode: no worker-wide storage (each partition has its own)');
    },
  },
  commit: () => Promise.reject(new Error('cluster mode: no worker-wide storage (each partition has its own)')),
};

/**
 * One worker: owns the users whose id hashes to it (onprem/owner.ts), their shards and one SQLite file. This
 * class puts the parts together and starts and stops them; each part is one file of this folder:
 *
 *   listener.ts    HTTP endpoints, the upgrade decision, hand-off to the owner (pipe.ts: the TLS route)
 *   websockets.ts  this worker's client sockets: handshake, frames in, close, heartbeat
 *   shards.ts      the users in memory: one Shard each, wake-ups, eviction, recovery after a restart
 *   router.ts      the core's Peers port: another user's shard, here or in another worker
 *   control.ts     the supervisor's control channel (readiness, metrics)
 */

const CLOCK: Clock = { now: () => Date.now() };

const limiter = new LogLimiter();

/**
 * Every log line of a worker: one JSON object per line, the shape the Cloudflare profile writes too
 * (core/log-line.ts, docs/OPERATIONS.md "Logs"), rate-limited (see onprem/log.ts).
 */
export function writeLog(id: number | string, level: LogLevel, msg: string, error?: unknown, fields?: LogFields): void {
  const dropped = limiter.take();
  if (dropped === null) return;
  const base = { profile: 'onprem' as const, ...(typeof id === 'number' && { worker: id }) };
  if (dropped > 0) process.stderr.write(`${logLine(base, 'warn', `${dropped} log line(s) left out (rate limit)`)}\n`);
  process.stderr.write(`${logLine(base, level, oneLine(msg), error, fields)}\n`);
}

export class Worker implements WorkerContext, Logger {
  private storage!: GroupCommitStorage;
  /** Cluster mode (IRIS_CLUSTER_NATS): this node's membership, partitions and calls (onprem/cluster/host.ts). */
  private cluster: ClusterHost | null = null;
  private readonly admin: AdminRoute;
  readonly clusterOwns?: (key: string) => boolean;
  readonly metrics: WorkerMetrics;
  private readonly supervisor: SupervisorLink;
  private readonly shards: Shards;
  private readonly sockets: WebSockets;
  private readonly router: Router;
  private readonly pipe: PipeRoute;
  private readonly listener: Listener;
  /** The Erlang Iris's protocol (gateway/v1/), when a v1 port is configured. */
  private readonly v1: V1Gateway;
  private isDraining = false;
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  /** The core's metrics port, one for all mailboxes. */
  private readonly coreMetrics: Metrics;
  private readonly warned = new Set<string>();
  /** Hands the heap a burst of connects grew back once the worker is quiet (onprem/memory.ts). */
  private readonly idleTrim: IdleTrim;

  constructor(
    readonly id: number,
    readonly workers: number,
    readonly cfg: OnpremConfig,
  ) {
    this.metrics = new WorkerMetrics(id);
    this.supervisor = new SupervisorLink(this);
    this.shards = new Shards(this);
    this.sockets = new WebSockets(this, this.shards);
    this.router = new Router(this, this.shards);
    this.pipe = new PipeRoute(this, this.sockets);
    const admin = new AdminRoute(this, this.shards, (w, c) => this.router.adminCall(w, c));
    this.admin = admin;
    this.router.adminHandler = (c) => admin.fromLink(c);
    if (cfg.cluster) this.clusterOwns = (key) => this.cluster?.owns(key) ?? false;
    const route = cfg.cluster ? new NodeRelay(this, this.pipe, { ownerAddress: (user: string) => this.ownerAddress(user) }) : undefined;
    this.listener = new Listener(this, this.supervisor, this.sockets, this.pipe, admin, route);
    this.v1 = new V1Gateway(this, this.shards, this.supervisor, route);
    // Cluster mode: v1 connections relayed from other nodes (their LOGIN verified again by the gateway).
    if (this.v1.enabled) this.pipe.v1 = this.v1;
    this.coreMetrics = this.metrics.core();
    this.idleTrim = new IdleTrim(cfg.idleGcMs, (r) => {
      this.metrics.idleGcs.inc();
      this.metrics.idleGcSeconds.inc(r.ms / 1000);
    });
  }

  /** Cluster mode: where the owner of `user`'s partition takes relayed sockets, and whether it is a sibling worker. */
  private async ownerAddress(user: string): Promise<{ host: string; port: number; sibling?: number } | null> {
    const a = (await this.cluster?.ownerAddress(user)) ?? null;
    if (!a) return null;
    const sibling = siblingOf(this.cfg.cluster!, a.member, this.id, this.workers);
    return sibling === null ? a : { ...a, sibling };
  }

  get draining(): boolean {
    return this.isDraining;
  }

  warnOnce(key: string, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log('warn', msg);
  }

  /** The core's Logger too: one line per entry, the error described on it (onprem/log.ts), rate-limited. */
  log(level: LogLevel, msg: string, error?: unknown, fields?: LogFields): void {
    if (!logs(this.cfg.log, level)) return;
    writeLog(this.id, level, msg, error === undefined ? undefined : describeError(error), fields);
  }

  /**
   * The disk filled up, or has room again: one log line per change (never one per refused write), the
   * iris_storage_full gauge, and the supervisor's /readyz. Meanwhile senders get `unavailable` with a
   * retry-after, hellos, deliveries and acks keep working (core/mailbox.ts), and nothing acked is lost.
   */
  private storageFull(full: boolean, e: unknown): void {
    this.metrics.storageFull.set(full ? 1 : 0);
    if (full) this.log('error', `storage full (${describeError(e)}): refusing writes, senders get unavailable + retry-after; free disk space`);
    else this.log('warn', 'storage accepts writes again');
    void send({ t: 'storage', full }).catch(() => undefined);
  }

  async start(): Promise<void> {
    if (this.cfg.cluster) return this.startCluster();
    const file = join(this.cfg.dataDir, `worker-${this.id}.sqlite`);
    try {
      this.storage = new GroupCommitStorage(file, {
        windowMs: this.cfg.commitWindowMs,
        maxBatch: this.cfg.commitMaxBatch,
        sync: this.cfg.walSync,
        // What SQLite shows may not be on disk after a failed fsync: start again from what is (the supervisor forks
        // a new worker, whose SQLite recovers from the WAL on disk; clients resume from their cursors).
        onFatal: (e) => {
          this.log('error', `fsync of the WAL failed, exiting: ${describeError(e)}`);
          process.exit(70);
        },
        observer: { ...this.metrics.commitObserver(), full: (full, e) => this.storageFull(full, e) },
      });
    } catch (e) {
      throw new Error(`cannot open ${file}: ${(e as Error).message}`, { cause: e });
    }
    // A `refresh` frame's token is verified by the same code and keys as an upgrade's (auth/refresh.ts).
    const verifier = new TokenVerifier(this.cfg.auth);
    const tokens = tokenCheck(verifier);
    this.shards.open({ storage: this.storage, peers: this.router, clock: CLOCK, config: this.cfg.engine, log: this, metrics: this.coreMetrics, tokens, ...(this.cfg.push.url !== undefined && { push: { settings: this.cfg.push, http: fetchPushHttp } }) });
    await this.router.listen();
    if (this.cfg.route === 'pipe') await this.pipe.listen();
    await this.listener.listen();
    if (this.v1.enabled) await this.v1.listen();
    this.timers.push(setInterval(() => this.sockets.heartbeat(), this.cfg.pingMs));
    this.timers.push(setInterval(() => (this.shards.evictIdle(), this.router.groups.evictIdle()), Math.max(1000, Math.min(this.cfg.mailboxIdleMs, 30_000))));
    this.shards.recover();
    this.router.groups.recover();
    this.idleTrim.start();
  }

  /**
   * Cluster mode: this worker is one cluster member (`<node>.<i>` with N > 1 workers, onprem/cluster/config.ts
   * memberConfig), its users' and groups' storage one ClusterStorage per partition it holds a lease for; calls for
   * other partitions go over NATS (onprem/cluster/peers.ts), sockets of their users are relayed to their member's
   * pipe port, a sibling worker's like another node's. NATS modules are loaded here only.
   */
  private async startCluster(): Promise<void> {
    const cc = memberConfig(this.cfg.cluster!, this.id, this.workers);
    const { ClusterHost } = await import('../cluster/host.js');
    const { ClusterPeers, serveCall } = await import('../cluster/peers.js');
    const { PartitionLines } = await import('../cluster/partition-lines.js');
    const lines = new PartitionLines((level, message) => this.log(level, message));
    const servedHere = new Set<number>();
    const host = () => this.cluster!;
    const peers = new ClusterPeers({ owns: (k) => this.cluster?.owns(k) ?? false, partition: (k) => host().partition(k), call: (k, d, i) => host().call(k, d, i) }, this.router);
    this.shards.storageFor = (k) => host().storageOf(k);
    this.admin.remote = (user, call) => peers.admin(user, call);
    const verifier = new TokenVerifier(this.cfg.auth);
    const tokens = tokenCheck(verifier);
    this.shards.open({ storage: NO_STORAGE, peers, clock: CLOCK, config: this.cfg.engine, log: this, metrics: this.coreMetrics, tokens, ...(this.cfg.push.url !== undefined && { push: { settings: this.cfg.push, http: fetchPushHttp } }) });
    await this.router.listen();
    await this.pipe.listenTcp(cc.pipeHost, cc.pipePort, verifier).catch((e: unknown) => {
      // Worker i needs IRIS_CLUSTER_PIPE_PORT + i: say which setting to change, not only which port was taken.
      throw this.workers === 1 ? e : new Error(`${(e as Error).message} (worker ${this.id} of ${this.workers} listens on IRIS_CLUSTER_PIPE_PORT + ${this.id}: the ${this.workers} ports from ${this.cfg.cluster!.pipePort} must be free)`, { cause: e });
    });
    if (this.id === 0 && this.workers > 1) removeStaleViews(this.cfg.dataDir, this.workers);
    this.cluster = await ClusterHost.start(cc, memberDir(this.cfg.dataDir, this.id, this.workers), this.cfg.linkTimeoutMs, {
      served: (p, s) => {
        lines.add('info', 'served here now', p);
        servedHere.add(p);
        this.metrics.partitionsServed.set(servedHere.size);
        // What the previous owner left pending in the partition's outboxes is forwarded from here now.
        this.shards.recover(s);
        this.router.groups.recover(s);
      },
      lost: (p, reason) => {
        servedHere.delete(p);
        this.metrics.partitionsServed.set(servedHere.size);
        lines.add(reason === 'released' ? 'info' : 'warn', `${reason === 'released' ? 'handed over' : `lost (${reason})`}; their users reconnect to the new owner`, p);
        const inP = (k: string) => host().partition(k) === p;
        this.shards.dropWhere(inP, CLOSE_CODES.going_away);
        this.router.groups.dropWhere(inP);
      },
      handle: (data) => serveCall(this.router, data),
    });
    await this.listener.listen();
    if (this.v1.enabled) await this.v1.listen();
    this.timers.push(setInterval(() => this.sockets.heartbeat(), this.cfg.pingMs));
    this.timers.push(setInterval(() => (this.shards.evictIdle(), this.router.groups.evictIdle()), Math.max(1000, Math.min(this.cfg.mailboxIdleMs, 30_000))));
    this.idleTrim.start();
  }

  /** Stops accepting, commits, closes every socket with 1001, waits (bounded) for in-flight work, closes storage. */
  async drain(): Promise<void> {
    if (this.isDraining) return;
    this.isDraining = true;
    this.supervisor.forget();
    this.listener.close();
    this.v1.close();
    this.pipe.close();
    for (const t of this.timers) clearInterval(t);
    this.idleTrim.stop();
    // Everything already promised becomes durable, and its acks go out before the close frames.
    if (!this.cluster) await this.storage.settled();
    await new Promise((r) => setImmediate(r));
    this.sockets.closeAll(CLOSE_CODES.going_away, 'server shutting down');
    const deadline = Date.now() + Math.min(3000, this.cfg.drainTimeoutMs / 2);
    while (this.sockets.count > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.sockets.terminateAll();
    const busyDeadline = Date.now() + 1000;
    while (this.shards.anyBusy() && Date.now() < busyDeadline) {
      if (!this.cluster) this.storage.flush();
      await new Promise((r) => setTimeout(r, 10));
    }
    this.shards.stopWakes();
    this.router.groups.stopWakes();
    this.router.close();
    // Cluster: every partition's appends awaited, then handed over (released: the others take it at once).
    if (this.cluster) await this.cluster.stop();
    else this.storage.close();
  }

  /** A message from the supervisor (onprem/ipc.ts ToWorker). */
  onSupervisor(m: ToWorker, handle: unknown): void {
    if (m.t === 'handoff') this.listener.onHandoff(m, handle as Socket | undefined);
    else if (m.t === 'v1_handoff') this.v1.onHandoff(m, handle as Socket | undefined);
    else this.supervisor.onMessage(m);
  }
}
