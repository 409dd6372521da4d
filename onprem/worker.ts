import { readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createConnection, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type Server as WsServer, type WebSocket } from 'ws';
import { DEV_AUTH_WARNING, TokenVerifier, authorizeUpgrade, isRefusal } from '../auth/index.js';
import { Mailbox, type MailboxDeps } from '../core/mailbox.js';
import { MailboxStore, usersToResume } from '../core/store.js';
import { logs, type Clock, type Conn, type ForwardBatch, type ForwardResult, type LocalShard, type Logger, type LogLevel, type Metrics, type Peers, type Scheduler, type Sockets } from '../core/ports.js';
import { CLOSE_CODES, SUBPROTOCOL, type PresenceInfo } from '../protocol/index.js';
import type { OnpremConfig } from './config.js';
import { IrisWebSocket, WsConn, type ConnOwner } from './conn.js';
import { ConnectLimiter, json, refuseSocket, respond, type Refusal } from './http.js';
import { stopReading, type ToSupervisor, type ToWorker, type UpgradeHead } from './ipc.js';
import { IdleTrim } from './memory.js';
import { WorkerMetrics } from './metrics.js';
import { ownerOf } from './owner.js';
import { PeerClient, PeerServer } from './peers.js';
import { GroupCommitStorage } from './storage.js';
import { LogLimiter, describeError, formatArgs, oneLine } from './log.js';

/**
 * One worker process: owns the users whose id hashes to it (ownerOf), their mailboxes and one SQLite file.
 *
 *   accept (SO_REUSEPORT, any worker) -> auth -> owner?  yes: WebSocket here
 *                                                       no: hand the socket to the owner (or pipe bytes, TLS)
 *   mailbox A -> Peers.forward(B) -> same worker: B.receive() directly; other worker: unix socket (peers.ts)
 */

export const CONNECT_PATH = '/v1/connect';
/**
 * One hop, one commit for users of the same worker (Peers.local). IRIS_ONE_HOP=0 turns it off, only to measure
 * the difference (docs/BENCHMARKS.md); every guarantee holds either way.
 */
const ONE_HOP = process.env['IRIS_ONE_HOP'] !== '0';
/**
 * Mailboxes whose pending outbox a starting worker forwards at once (see Worker.recover); the others wait for a
 * turn. IRIS_RECOVER_CONCURRENCY overrides it only for measuring (0 = all at once, the old behaviour).
 */
const RECOVER_CONCURRENCY = (() => {
  const n = Number(process.env['IRIS_RECOVER_CONCURRENCY'] ?? '8');
  return Number.isInteger(n) && n >= 0 ? n : 8;
})();

/** What every mailbox of a worker shares. */
type MailboxEnv = Pick<MailboxDeps, 'storage' | 'peers' | 'clock' | 'config' | 'log' | 'metrics'>;

const NO_CONNS: readonly WsConn[] = Object.freeze([]);
const CLOCK: Clock = { now: () => Date.now() };

/**
 * One user's shard in this worker: the mailbox, its sockets, and the bookkeeping for eviction and wake-ups.
 * It is also the mailbox's Sockets and Scheduler ports and its sockets' owner: prototype methods, so a user
 * costs no closures and their contexts (ARCHITECTURE.onprem.md "Memory").
 */
export class Shard implements Sockets, Scheduler, ConnOwner {
  readonly mailbox: Mailbox;
  /**
   * Open sockets. Replaced, never mutated (copy on write): iterating it is safe while sockets come and go,
   * and one socket costs a one-element array (most users have one or two devices online).
   */
  conns: readonly WsConn[] = NO_CONNS;
  /** Core calls in flight (onMessage, receive, onWake, onClose): a busy mailbox is never evicted. */
  busy = 0;
  wakeAtMs: number | null = null;
  wakeTimer: ReturnType<typeof setTimeout> | null = null;
  lastUsed = Date.now();

  constructor(
    readonly worker: Worker,
    readonly user: string,
    env: MailboxEnv,
  ) {
    // One literal with every field (not a spread plus three): its properties stay in the object itself.
    this.mailbox = new Mailbox({
      user,
      storage: env.storage,
      peers: env.peers,
      sockets: this,
      scheduler: this,
      clock: env.clock,
      config: env.config,
      log: env.log,
      metrics: env.metrics,
    });
  }

  list(): Iterable<Conn> {
    return this.conns;
  }

  wakeAt(ms: number): void {
    this.worker.scheduleWake(this, ms);
  }

  sent(): void {
    this.worker.metrics.framesOut.inc();
  }

  closing(code: number): void {
    this.worker.metrics.serverCloses.inc({ code: String(code) });
  }

  add(c: WsConn): void {
    this.conns = this.conns.length === 0 ? [c] : [...this.conns, c];
  }

  remove(c: WsConn): void {
    const i = this.conns.indexOf(c);
    if (i < 0) return;
    if (this.conns.length === 1) {
      this.conns = NO_CONNS;
      return;
    }
    const next = new Array<WsConn>(this.conns.length - 1);
    for (let j = 0, k = 0; j < this.conns.length; j++) if (j !== i) next[k++] = this.conns[j]!;
    this.conns = next;
  }
}

// Listeners shared by every socket (`this` is the emitter): no closure per connection.
function destroyOnError(this: Duplex): void {
  this.destroy();
}
function ignore(): void {
  // A close event follows.
}
function onWsMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const c = (this as IrisWebSocket).conn;
  if (c) (c.owner as Shard).worker.onFrame(c, data, isBinary);
}
function onWsPong(this: WebSocket): void {
  const c = (this as IrisWebSocket).conn;
  if (c) c.alive = true;
}
function onWsClose(this: WebSocket, code: number): void {
  const c = (this as IrisWebSocket).conn;
  if (!c) return;
  (this as IrisWebSocket).conn = null;
  (c.owner as Shard).worker.onConnClose(c, code);
}
function helloExpired(conn: WsConn): void {
  conn.helloTimer = null;
  if (conn.state === null) conn.close(CLOSE_CODES.hello_timeout, 'no hello within the hello timeout');
}

const limiter = new LogLimiter();

/** Every log line of a worker: one line, prefixed, rate-limited (see onprem/log.ts). */
function writeLog(id: number | string, level: LogLevel, msg: string): void {
  const dropped = limiter.take();
  if (dropped === null) return;
  if (dropped > 0) process.stderr.write(`iris-onprem[w${id}] warn: ${dropped} log line(s) left out (rate limit)\n`);
  process.stderr.write(`iris-onprem[w${id}] ${level}: ${oneLine(msg)}\n`);
}

function send(m: ToSupervisor, handle?: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send || !process.connected) return reject(new Error('no supervisor'));
    const cb = (e: Error | null) => (e ? reject(e) : resolve());
    if (handle) process.send(m, handle, { keepOpen: false }, cb);
    else process.send(m, undefined, undefined, cb);
  });
}

/** Soft open-file limit of this process (Linux), to refuse connections cleanly before accept() fails. */
function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function headerGetter(req: IncomingMessage): (n: string) => string | undefined {
  return (n) => {
    const v = req.headers[n.toLowerCase()];
    return Array.isArray(v) ? v.join(', ') : v;
  };
}

export class Worker implements Logger {
  private storage!: GroupCommitStorage;
  readonly metrics: WorkerMetrics;
  private readonly verifier: TokenVerifier;
  private readonly limiter: ConnectLimiter;
  private readonly wss: WsServer<typeof IrisWebSocket>;
  private server: HttpServer | null = null;
  private peerServer: PeerServer | null = null;
  private pipeServer: NetServer | null = null;
  private readonly clients: (PeerClient | null)[] = [];
  private readonly shards = new Map<string, Shard>();
  private readyMap: boolean[] = [];
  private draining = false;
  private connCount = 0;
  private readonly maxConnections: number;
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private readonly gathers = new Map<number, (text: string | null, contentType: string) => void>();
  private readonly readyzWaiters = new Map<number, (r: Extract<ToWorker, { t: 'readyz_res' }>) => void>();
  private nextGather = 1;
  private readonly peers: Peers;
  /** The core's metrics port, one for all mailboxes. */
  private readonly coreMetrics: Metrics;
  /** What all mailboxes share (set once storage is open). */
  private env: MailboxEnv | null = null;
  private readonly warned = new Set<string>();
  /** Hands the heap a burst of connects grew back once the worker is quiet (onprem/memory.ts). */
  private readonly idleTrim: IdleTrim;

  constructor(
    readonly id: number,
    readonly workers: number,
    readonly cfg: OnpremConfig,
  ) {
    this.metrics = new WorkerMetrics(id);
    this.verifier = new TokenVerifier(cfg.auth);
    this.limiter = new ConnectLimiter(cfg.connectRatePerMin, workers);
    this.maxConnections = cfg.maxConnections ?? Math.max(64, (openFileLimit() ?? 20_000) - 1024);
    this.wss = new WebSocketServer({
      noServer: true,
      WebSocket: IrisWebSocket,
      maxPayload: cfg.maxPayload,
      perMessageDeflate: false,
      clientTracking: false,
      // Select iris.v1; never echo a `bearer.<jwt>` subprotocol back.
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
    });
    this.peers = {
      forward: (to, batch) => this.forwardTo(to, batch),
      presence: (user) => this.presenceOf(user),
      local: (user) => (ONE_HOP && ownerOf(user, this.workers) === this.id ? this.localShard(user) : undefined),
    };
    this.coreMetrics = this.metrics.core();
    this.idleTrim = new IdleTrim(cfg.idleGcMs, (r) => {
      this.metrics.idleGcs.inc();
      this.metrics.idleGcSeconds.inc(r.ms / 1000);
    });
  }

  warnOnce(key: string, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log('warn', msg);
  }

  /** The core's Logger too: one line per entry, the error described on it (onprem/log.ts), rate-limited. */
  log(level: LogLevel, msg: string, error?: unknown): void {
    if (!logs(this.cfg.log, level)) return;
    writeLog(this.id, level, error === undefined ? msg : `${msg}: ${describeError(error)}`);
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

  // ------------------------------------------------------------------ start / stop

  async start(): Promise<void> {
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
    for (let i = 0; i < this.workers; i++) {
      this.clients.push(i === this.id ? null : new PeerClient(i, join(this.cfg.runDir, `peer-${i}.sock`), this.cfg.peerTimeoutMs));
    }
    this.peerServer = new PeerServer(join(this.cfg.runDir, `peer-${this.id}.sock`), {
      forward: (to, batch) => this.receiveFromPeer(to, batch),
      presence: (user) => this.presenceLocal(user),
    });
    try {
      await this.peerServer.listen();
    } catch (e) {
      throw new Error(`cannot listen on ${this.peerServer.path}: ${(e as Error).message}`, { cause: e });
    }
    if (this.cfg.route === 'pipe') await this.listenPipe();
    await this.listen();
    this.timers.push(setInterval(() => this.heartbeat(), this.cfg.pingMs));
    this.timers.push(setInterval(() => this.evictIdle(), Math.max(1000, Math.min(this.cfg.mailboxIdleMs, 30_000))));
    this.recover();
    this.idleTrim.start();
  }

  /** Node checks header timeouts only this often (its default, 30 s, would stretch a 10 s timeout to 40 s). */
  private checkEveryMs(): number {
    return Math.max(50, Math.min(1000, Math.floor(this.cfg.headersTimeoutMs / 4)));
  }

  private listen(): Promise<void> {
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    let server: HttpServer;
    if (this.cfg.tls) {
      let cert: Buffer;
      let key: Buffer;
      try {
        cert = readFileSync(this.cfg.tls.cert);
        key = readFileSync(this.cfg.tls.key);
      } catch (e) {
        return Promise.reject(new Error(`cannot read TLS certificate or key: ${(e as Error).message}`, { cause: e }));
      }
      server = createHttpsServer({ cert, key, connectionsCheckingInterval: this.checkEveryMs() }, onRequest) as unknown as HttpServer;
    } else {
      server = createHttpServer({ connectionsCheckingInterval: this.checkEveryMs() }, onRequest);
    }
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onUpgrade(req, socket as Socket, head).catch((e: unknown) => {
        this.log('error', `upgrade failed: ${describeError(e)}`);
        refuseSocket(socket, { status: 500, code: 'internal', message: 'internal error', cause: e });
      });
    });
    server.on('clientError', (e: NodeJS.ErrnoException, socket: Duplex) => {
      // The same JSON refusal as every other answer, with the status that says what was wrong.
      const r: Refusal =
        e.code === 'HPE_HEADER_OVERFLOW'
          ? { status: 431, code: 'headers_too_large', message: 'request headers are too large', cause: e }
          : e.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? { status: 408, code: 'request_timeout', message: 'request headers did not arrive in time', cause: e }
            : { status: 400, code: 'bad_request', message: 'malformed HTTP request', cause: e };
      this.metrics.refused.inc({ code: r.code });
      refuseSocket(socket, r);
    });
    server.headersTimeout = this.cfg.headersTimeoutMs;
    // Must be above headersTimeout; a request here is headers only (no bodies), so a little more is plenty.
    server.requestTimeout = this.cfg.headersTimeoutMs + 5000;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'EADDRINUSE') reject(new Error(`port ${this.cfg.port} on ${this.cfg.host} is already in use`, { cause: e }));
        else reject(new Error(`cannot listen on ${this.cfg.host}:${this.cfg.port}: ${e.message}`, { cause: e }));
      });
      server.listen({ host: this.cfg.host, port: this.cfg.port, reusePort: true, backlog: 4096 }, () => resolve());
    });
  }

  /** Stops accepting, commits, closes every socket with 1001, waits (bounded) for in-flight work, closes storage. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.readyMap = [];
    this.server?.close();
    this.pipeServer?.close();
    for (const t of this.timers) clearInterval(t);
    this.idleTrim.stop();
    // Everything already promised becomes durable, and its acks go out before the close frames.
    await this.storage.settled();
    await new Promise((r) => setImmediate(r));
    for (const s of this.shards.values()) for (const c of s.conns) c.close(CLOSE_CODES.going_away, 'server shutting down');
    const deadline = Date.now() + Math.min(3000, this.cfg.drainTimeoutMs / 2);
    while (this.connCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.shards.values()) for (const c of s.conns) c.ws.terminate();
    const busyDeadline = Date.now() + 1000;
    while ([...this.shards.values()].some((s) => s.busy > 0) && Date.now() < busyDeadline) {
      this.storage.flush();
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const s of this.shards.values()) if (s.wakeTimer) clearTimeout(s.wakeTimer);
    for (const c of this.clients) c?.close();
    this.peerServer?.close();
    this.storage.close();
  }

  // ------------------------------------------------------------------ supervisor messages

  onSupervisor(m: ToWorker, handle: unknown): void {
    switch (m.t) {
      case 'ready_map':
        this.readyMap = this.draining ? [] : m.ready;
        // The supervisor waits for this before it calls the server (or a restarted worker) ready.
        void send({ t: 'ready_seen', gen: m.gen }).catch(() => undefined);
        break;
      case 'readyz_res': {
        const cb = this.readyzWaiters.get(m.rid);
        this.readyzWaiters.delete(m.rid);
        cb?.(m);
        break;
      }
      case 'handoff':
        this.onHandoff(m, handle as Socket | undefined);
        break;
      case 'metrics_req':
        this.metrics.registry.getMetricsAsJSON().then(
          (metrics) => void send({ t: 'metrics_res', rid: m.rid, metrics }).catch(() => undefined),
          () => void send({ t: 'metrics_res', rid: m.rid, metrics: [] }).catch(() => undefined),
        );
        break;
      case 'gathered': {
        const cb = this.gathers.get(m.rid);
        this.gathers.delete(m.rid);
        cb?.(m.text, m.contentType);
        break;
      }
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ HTTP

  private allReady(): boolean {
    return !this.draining && this.readyMap.length === this.workers && this.readyMap.every(Boolean);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    // Liveness only: this worker process runs and answers. Whether the server can serve is /readyz.
    if (path === '/healthz') return json(res, 200, { ok: true, worker: this.id, ...(this.cfg.auth.devAuth && { devAuth: true, warning: DEV_AUTH_WARNING }) });
    if (path === '/readyz') {
      // The supervisor's view decides (it knows which workers are up and which route to which); a draining
      // worker answers for itself.
      if (this.draining) return json(res, 503, { ready: false, draining: true, workers: null, storageFull: [] });
      const rid = this.nextGather++;
      const timer = setTimeout(() => {
        this.readyzWaiters.delete(rid);
        json(res, 503, { ready: false, draining: false, workers: null, storageFull: [], error: 'supervisor did not answer' });
      }, 2000);
      this.readyzWaiters.set(rid, (r) => {
        clearTimeout(timer);
        const ready = r.ready && !this.draining;
        json(res, ready ? 200 : 503, { ready, draining: this.draining, workers: r.workers, storageFull: r.storageFull });
      });
      send({ t: 'readyz', rid }).catch(() => {
        clearTimeout(timer);
        this.readyzWaiters.delete(rid);
        json(res, 503, { ready: false, draining: this.draining, workers: null, storageFull: [], error: 'supervisor unreachable' });
      });
      return;
    }
    if (path === '/metrics') {
      const rid = this.nextGather++;
      const timer = setTimeout(() => {
        this.gathers.delete(rid);
        respond(res, { status: 503, code: 'unavailable', message: 'metrics gathering timed out' });
      }, 5000);
      this.gathers.set(rid, (text, contentType) => {
        clearTimeout(timer);
        if (text === null) return respond(res, { status: 503, code: 'unavailable', message: 'metrics unavailable' });
        res.writeHead(200, { 'content-type': contentType });
        res.end(text);
      });
      send({ t: 'gather', rid }).catch(() => {
        clearTimeout(timer);
        this.gathers.delete(rid);
        respond(res, { status: 503, code: 'unavailable', message: 'supervisor unreachable' });
      });
      return;
    }
    if (path === CONNECT_PATH) {
      // A plain GET gets the same decision as an upgrade (a refused WebSocket cannot see why; this can):
      // the token's 401/403 first, else 426 for the missing upgrade.
      void this.authorize(req, req.socket.remoteAddress ?? 'unknown').then(
        (v) => {
          const r: Refusal = isRefusal(v) ? v : { status: 426, code: 'upgrade_required', message: 'this endpoint speaks WebSocket only' };
          this.metrics.refused.inc({ code: r.code });
          respond(res, r);
        },
        () => respond(res, { status: 500, code: 'internal', message: 'internal error' }),
      );
      return;
    }
    respond(res, { status: 404, code: 'not_found', message: 'no such endpoint' });
  }

  /** The pre-upgrade decision shared with the edge Worker (auth/upgrade.ts), with this worker's IP limiter. */
  private authorize(req: IncomingMessage, ip: string): Promise<{ user: string } | Refusal> {
    return authorizeUpgrade(
      { method: req.method ?? '', url: new URL(req.url ?? '/', 'http://iris.invalid'), header: headerGetter(req), ip },
      { verifier: this.verifier, connectLimit: (addr) => this.limiter.take(addr, Date.now()) },
    );
  }

  private async onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    socket.on('error', destroyOnError);
    const url = new URL(req.url ?? '/', 'http://iris.invalid');
    if (url.pathname !== CONNECT_PATH) return this.refuse(socket, { status: 404, code: 'not_found', message: 'no such endpoint' });
    if (this.draining) return this.refuse(socket, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    const verdict = await this.authorize(req, socket.remoteAddress ?? 'unknown');
    if (isRefusal(verdict)) return this.refuse(socket, verdict);
    const user = verdict.user;
    if (socket.destroyed) return;

    const owner = ownerOf(user, this.workers);
    if (owner === this.id) return this.acceptLocal(req, socket, head, user, 'local');
    if (this.readyMap[owner] !== true) {
      return this.refuse(socket, { status: 503, code: 'unavailable', message: 'the shard of this user is restarting; retry', headers: { 'retry-after': '1' } });
    }
    // The owner needs the handshake headers, not the token (already verified; the identity travels as `user`).
    const headers = { ...req.headers };
    delete headers['authorization'];
    const uh: UpgradeHead = { method: req.method ?? 'GET', url: req.url ?? CONNECT_PATH, headers, remote: socket.remoteAddress ?? '' };
    if (this.cfg.route === 'pipe') return this.pipeTo(owner, socket, head, user, uh);
    // Hand the authenticated TCP socket itself to the owner: worker -> supervisor -> owner (SCM_RIGHTS). After
    // this, the socket is the owner's; this process closes its copy when the supervisor acknowledges it.
    // Until then our copy must not read: the owner may already have sent the 101 and the client its hello, and
    // bytes read here would be lost (see stopReading). Anything the stream already buffered travels with
    // `head` (a client sends nothing before the 101, so normally both are empty).
    socket.pause();
    const buffered = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    if (!stopReading(socket) && !socket.destroyed) this.warnOnce('stop-reading', 'cannot stop reading a socket before its hand-off (Node internals changed?): clients may lose their hello; use IRIS_ROUTE=pipe');
    const rest = buffered && buffered.length > 0 ? Buffer.concat([head, buffered]) : head;
    try {
      await send({ t: 'handoff', to: owner, user, head: uh, rest: rest.toString('base64'), from: this.id }, socket);
    } catch {
      this.refuse(socket, { status: 503, code: 'unavailable', message: 'could not reach the shard of this user; retry', headers: { 'retry-after': '1' } });
    }
  }

  private refuse(socket: Duplex, r: Refusal): void {
    this.metrics.refused.inc({ code: r.code });
    refuseSocket(socket, r);
  }

  private onHandoff(m: Extract<ToWorker, { t: 'handoff' }>, socket: Socket | undefined): void {
    if (!socket) return;
    socket.on('error', destroyOnError);
    if (this.draining) {
      return this.refuse(socket, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    }
    if (ownerOf(m.user, this.workers) !== this.id) {
      return this.refuse(socket, { status: 500, code: 'internal', message: 'connection routed to the wrong worker' });
    }
    const req = new IncomingMessage(socket);
    req.method = m.head.method;
    req.url = m.head.url;
    req.headers = m.head.headers;
    this.acceptLocal(req, socket, Buffer.from(m.rest, 'base64'), m.user, 'handoff');
  }

  // ---- pipe route (TLS, or IRIS_ROUTE=pipe): the accepting worker relays bytes to the owner over a unix socket

  private pipeTo(owner: number, socket: Socket, head: Buffer, user: string, uh: UpgradeHead): void {
    const uds = createConnection(join(this.cfg.runDir, `pipe-${owner}.sock`));
    const meta = Buffer.from(JSON.stringify({ user, head: uh }));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(meta.length, 0);
    uds.write(Buffer.concat([len, meta, head]));
    let opened = false;
    uds.once('connect', () => {
      opened = true;
      socket.pipe(uds);
      uds.pipe(socket);
    });
    uds.on('error', () => {
      if (!opened) this.refuse(socket, { status: 503, code: 'unavailable', message: 'could not reach the shard of this user; retry', headers: { 'retry-after': '1' } });
      uds.destroy();
    });
    uds.on('close', () => {
      if (opened) socket.destroy();
    });
    socket.on('close', () => uds.destroy());
  }

  private listenPipe(): Promise<void> {
    const path = join(this.cfg.runDir, `pipe-${this.id}.sock`);
    rmSync(path, { force: true }); // left over from a worker that died
    const server = createNetServer((s) => this.acceptPipe(s));
    this.pipeServer = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`cannot listen on ${path}: ${e.message}`, { cause: e })));
      server.listen(path, () => resolve());
    });
  }

  private acceptPipe(s: Socket): void {
    let buf = Buffer.alloc(0);
    s.on('error', destroyOnError);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const n = buf.readUInt32LE(0);
      if (n > 1024 * 1024) return s.destroy();
      if (buf.length < 4 + n) return;
      s.off('data', onData);
      s.pause();
      let meta: { user: string; head: UpgradeHead };
      try {
        meta = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as { user: string; head: UpgradeHead };
      } catch {
        return s.destroy();
      }
      if (this.draining) return this.refuse(s, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
      if (ownerOf(meta.user, this.workers) !== this.id) return this.refuse(s, { status: 500, code: 'internal', message: 'connection routed to the wrong worker' });
      const req = new IncomingMessage(s);
      req.method = meta.head.method;
      req.url = meta.head.url;
      req.headers = meta.head.headers;
      this.acceptLocal(req, s, buf.subarray(4 + n), meta.user, 'pipe');
      // The handshake completed synchronously and ws listens for data now: let it flow again.
      if (!s.destroyed) s.resume();
    };
    s.on('data', onData);
  }

  // ------------------------------------------------------------------ WebSockets

  private acceptLocal(req: IncomingMessage, socket: Duplex, head: Buffer, user: string, via: 'local' | 'handoff' | 'pipe'): void {
    if (this.connCount >= this.maxConnections) {
      return this.refuse(socket, { status: 503, code: 'server_full', message: 'this server holds as many connections as it may; retry later', headers: { 'retry-after': '5' } });
    }
    let attached = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      attached = true;
      this.attach(ws, socket, user, via);
    });
    // ws completes the handshake synchronously and then has its own error listener on the socket: ours goes
    // (one listener less per connection). If the handshake was refused, ours stays until the socket is gone.
    if (attached) socket.off('error', destroyOnError);
  }

  private attach(ws: IrisWebSocket, socket: Duplex, user: string, via: 'local' | 'handoff' | 'pipe'): void {
    if (this.draining) {
      ws.close(CLOSE_CODES.going_away, 'server shutting down');
      return;
    }
    const shard = this.shard(user);
    const conn = new WsConn(ws, socket, shard);
    ws.conn = conn;
    shard.add(conn);
    this.connCount++;
    this.metrics.connections.inc();
    this.metrics.connectionsTotal.inc({ via });
    conn.helloTimer = setTimeout(helloExpired, this.cfg.helloTimeoutMs, conn);
    ws.on('message', onWsMessage);
    ws.on('pong', onWsPong);
    ws.on('error', ignore);
    ws.on('close', onWsClose);
  }

  /** A WebSocket message from a client (onWsMessage). */
  onFrame(conn: WsConn, data: RawData, isBinary: boolean): void {
    this.metrics.framesIn.inc();
    const shard = conn.owner as Shard;
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    this.track(shard, shard.mailbox.onMessage(conn, isBinary ? buf : buf.toString('utf8')));
  }

  /** A client WebSocket closed (onWsClose). */
  onConnClose(conn: WsConn, code: number): void {
    if (conn.helloTimer) {
      clearTimeout(conn.helloTimer);
      conn.helloTimer = null;
    }
    const shard = conn.owner as Shard;
    shard.remove(conn);
    this.connCount--;
    this.metrics.connections.dec();
    this.metrics.closes.inc({ code: String(code) });
    this.track(shard, shard.mailbox.onClose(conn)).catch(() => undefined);
  }

  /** WebSocket ping every IRIS_WS_PING_MS; a socket that did not answer the previous one is dropped. */
  private heartbeat(): void {
    for (const s of this.shards.values()) {
      for (const c of s.conns) {
        if (!c.alive) {
          c.ws.terminate();
          continue;
        }
        c.alive = false;
        try {
          c.ws.ping();
        } catch {
          c.ws.terminate();
        }
      }
    }
  }

  // ------------------------------------------------------------------ mailboxes

  private shard(user: string): Shard {
    let s = this.shards.get(user);
    if (s) return s;
    if (ownerOf(user, this.workers) !== this.id) throw new Error(`user ${user} is not owned by worker ${this.id}`);
    this.env ??= { storage: this.storage, peers: this.peers, clock: CLOCK, config: this.cfg.engine, log: this, metrics: this.coreMetrics };
    const shard = new Shard(this, user, this.env);
    this.shards.set(user, shard);
    this.metrics.mailboxes.set(this.shards.size);
    return shard;
  }

  /**
   * Counts a core call in flight for the shard: a busy mailbox is never evicted. (It used to also run onWake()
   * whenever a shard went idle, to work around a race in Mailbox.forward that the core has since fixed: that was
   * an outbox query and a forward check per client frame.)
   */
  private track<T>(shard: Shard, p: Promise<T>): Promise<T> {
    shard.busy++;
    shard.lastUsed = Date.now();
    const done = () => {
      shard.busy--;
      shard.lastUsed = Date.now();
    };
    p.then(done, done);
    return p;
  }

  /** The Scheduler port of a shard (Shard.wakeAt): one timer per shard, the earliest request wins. */
  scheduleWake(shard: Shard, ms: number): void {
    if (this.draining) return;
    if (shard.wakeAtMs !== null && shard.wakeAtMs <= ms) return;
    if (shard.wakeTimer) clearTimeout(shard.wakeTimer);
    shard.wakeAtMs = ms;
    shard.wakeTimer = setTimeout(() => {
      shard.wakeAtMs = null;
      shard.wakeTimer = null;
      if (this.draining) return;
      this.track(shard, shard.mailbox.onWake()).catch((e: unknown) => this.log('warn', `wake of ${shard.user} failed: ${describeError(e)}`));
    }, Math.max(0, ms - Date.now()));
  }

  /**
   * Forgets mailboxes with no socket, no core call in flight and no wake-up pending, idle for
   * IRIS_MAILBOX_IDLE_MS. Everything a mailbox must not lose is in SQLite; what goes is its rate-limit bucket
   * (a new one starts full) and its memory of full recipients (the next send asks again).
   */
  private evictIdle(): void {
    const cutoff = Date.now() - this.cfg.mailboxIdleMs;
    for (const [user, s] of this.shards) {
      if (s.conns.length === 0 && s.busy === 0 && s.wakeTimer === null && s.lastUsed < cutoff) this.shards.delete(user);
    }
    this.metrics.mailboxes.set(this.shards.size);
  }

  /**
   * After a crash or restart, so nothing acked is stranded: forwards what the outboxes held when the worker stopped: every mailbox with outbox rows is woken, at most
   * RECOVER_CONCURRENCY at a time, the next when one has drained its outbox (onWake resolves then, or when
   * it backs off). All at once, a large backlog (1M pending forwards: docs/BENCHMARKS.md "Recovery") made
   * thousands of forward loops share every commit batch and event-loop turn with the users reconnecting, whose
   * first `welcome` then waited ~4 s; a few at a time keep the disk and the peers just as busy.
   */
  private recover(): void {
    const users = usersToResume(this.storage.sql)
      .filter((user) => {
        if (ownerOf(user, this.workers) === this.id) return true;
        this.log('error', `outbox of ${user} is in worker ${this.id}'s file but ${user} belongs to worker ${ownerOf(user, this.workers)}`);
        return false;
      });
    if (users.length === 0) return;
    this.log('info', `resuming outbox forwarding for ${users.length} user(s)`);
    let next = 0;
    const wakeNext = (): void => {
      const user = users[next++];
      if (user === undefined || this.draining) return;
      let wake: Promise<void>;
      try {
        const s = this.shard(user);
        wake = this.track(s, s.mailbox.onWake());
      } catch (e) {
        wake = Promise.reject(e);
      }
      // Never rejects: a failed resume is logged (its retry is scheduled by the core) and the next one starts.
      void wake.catch((e: unknown) => this.log('warn', `resume of ${user} failed: ${describeError(e)}`)).then(wakeNext);
    };
    const width = RECOVER_CONCURRENCY === 0 ? users.length : Math.min(RECOVER_CONCURRENCY, users.length);
    for (let i = 0; i < width; i++) wakeNext();
  }

  // ------------------------------------------------------------------ shard router (core Peers)

  /** A recipient in this worker's file: its writes join the sender's commit (one hop, one commit). */
  private localShard(user: string): LocalShard {
    const s = this.shard(user);
    return {
      handOver: (batch) => {
        const h = s.mailbox.handOver(batch);
        return { ...h, deliver: () => this.track(s, h.deliver()) };
      },
    };
  }

  private forwardTo(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    const owner = ownerOf(to, this.workers);
    if (owner === this.id) {
      const s = this.shard(to);
      return this.track(s, s.mailbox.receive(batch));
    }
    return this.timed('forward', this.client(owner).forward(to, batch));
  }

  private presenceOf(user: string): Promise<PresenceInfo> {
    const owner = ownerOf(user, this.workers);
    if (owner === this.id) return this.presenceLocal(user);
    return this.timed('presence', this.client(owner).presence(user));
  }

  private client(owner: number): PeerClient {
    const c = this.clients[owner];
    if (!c) throw new Error(`no peer link to worker ${owner}`);
    return c;
  }

  private timed<T>(op: 'forward' | 'presence', p: Promise<T>): Promise<T> {
    const end = this.metrics.peerLatency.startTimer({ op });
    return p.then(
      (v) => {
        end();
        this.metrics.peerCalls.inc({ op, result: 'ok' });
        return v;
      },
      (e: unknown) => {
        this.metrics.peerCalls.inc({ op, result: 'error' });
        throw e;
      },
    );
  }

  private receiveFromPeer(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    if (this.draining) return Promise.reject(new Error('worker is shutting down'));
    if (ownerOf(to, this.workers) !== this.id) return Promise.reject(new Error(`user ${to} is not owned by worker ${this.id}`));
    const s = this.shard(to);
    return this.track(s, s.mailbox.receive(batch));
  }

  private presenceLocal(user: string): Promise<PresenceInfo> {
    if (ownerOf(user, this.workers) !== this.id) return Promise.reject(new Error(`user ${user} is not owned by worker ${this.id}`));
    try {
      const loaded = this.shards.get(user);
      if (loaded) return Promise.resolve(loaded.mailbox.presence());
      // Not in memory means no socket: offline. Read last-seen without loading a mailbox for the asker's
      // sake (presence queries may name users who never connected).
      return Promise.resolve({ user, online: false, lastSeen: new MailboxStore(this.storage.sql, user).lastSeen() });
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** Entry of a worker process: waits for its init message, starts, reports ready (or fatal) to the supervisor. */
export async function runWorker(): Promise<void> {
  const { onpremConfig } = await import('./config.js');
  const { isToWorker } = await import('./ipc.js');
  let worker: Worker | null = null;
  let exiting = false;
  const pending: { m: ToWorker; h: unknown }[] = [];
  // The core logs through its Logger port (Worker.log); libraries may still use console, with Error objects
  // that console prints with multi-line stacks: route it through the one-line, rate-limited worker log too.
  const id = process.env['IRIS_ONPREM_WORKER'] ?? '?';
  const viaLog = (level: LogLevel) => (...args: unknown[]) => {
    if (worker) worker.log(level, formatArgs(args));
    else writeLog(id, level, formatArgs(args));
  };
  console.error = viaLog('error');
  console.warn = viaLog('warn');
  console.info = viaLog('info');
  console.log = viaLog('info');
  // A bug that escapes everything: one line, then die (the supervisor restarts the worker).
  process.on('uncaughtException', (e) => {
    writeLog(id, 'error', `uncaught exception, exiting: ${describeError(e)}`);
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    writeLog(id, 'error', `unhandled rejection, exiting: ${describeError(e)}`);
    process.exit(1);
  });

  const drainAndExit = async (why: string) => {
    if (exiting) return;
    exiting = true;
    if (!worker) process.exit(0);
    worker.log('info', `draining (${why})`);
    const hard = setTimeout(() => process.exit(1), worker.cfg.drainTimeoutMs).unref();
    try {
      await worker.drain();
    } catch (e) {
      worker.log('error', `drain failed: ${describeError(e)}`);
    }
    clearTimeout(hard);
    await send({ t: 'drained' }).catch(() => undefined);
    process.exit(0);
  };

  process.on('message', (m: unknown, handle: unknown) => {
    if (!isToWorker(m)) return;
    if (m.t === 'init') {
      void start(m);
      return;
    }
    if (m.t === 'drain') return void drainAndExit('supervisor asked');
    if (!worker) {
      pending.push({ m, h: handle });
      return;
    }
    worker.onSupervisor(m, handle);
  });
  // The supervisor is gone (killed): never linger holding the port and the data.
  process.on('disconnect', () => void drainAndExit('supervisor disconnected'));
  // Signals go to the supervisor; a worker waits for its drain message (Ctrl-C or a terminal hang-up reaches
  // the whole group; the supervisor drains on both, and a worker killed by SIGHUP's default would not drain).
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  process.on('SIGTERM', () => void drainAndExit('SIGTERM'));

  async function start(init: Extract<ToWorker, { t: 'init' }>): Promise<void> {
    const cfg = onpremConfig(init.settings);
    const w = new Worker(init.id, init.workers, cfg);
    try {
      await w.start();
    } catch (e) {
      await send({ t: 'fatal', message: (e as Error).message }).catch(() => undefined);
      process.exit(1);
    }
    worker = w;
    for (const p of pending.splice(0)) w.onSupervisor(p.m, p.h);
    await send({ t: 'ready' }).catch(() => process.exit(1));
  }
}
