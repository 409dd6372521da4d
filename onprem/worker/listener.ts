import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { DEV_AUTH_WARNING, TokenVerifier, authorizeUpgrade, identityOf, isRefusal, type Identity, type UpgradeRequest } from '../../auth/index.js';
import { ConnectLimiter, json, refuseSocket, respond, type Refusal } from '../http.js';
import { stopReading, type ToWorker, type UpgradeHead } from '../ipc.js';
import { describeError } from '../log.js';
import { owns, refuse, workerFor, type WorkerContext } from './context.js';
import { send, type SupervisorLink } from './control.js';
import type { PipeRoute } from './pipe.js';
import type { NodeRelay } from './relay.js';
import { destroyOnError, type WebSockets } from './websockets.js';
import { TOKEN_HEADER, claimsHeader, claimsOf } from '../../core/revocation.js';
import { ADMIN_PREFIX } from '../../core/admin.js';
import type { AdminRoute } from './admin.js';
import { serveWebchat } from '../webchat.js';

/**
 * The listener: every worker accepts on the same port (SO_REUSEPORT), answers the HTTP endpoints, and decides
 * each upgrade before a WebSocket exists.
 *
 *   accept (SO_REUSEPORT, any worker) -> auth -> owner?  yes: WebSocket here (worker/websockets.ts)
 *                                                       no: hand the socket to the owner (or pipe bytes, TLS)
 */

export const CONNECT_PATH = '/v1/connect';

function headerGetter(req: IncomingMessage): (n: string) => string | undefined {
  return (n) => {
    const v = req.headers[n.toLowerCase()];
    return Array.isArray(v) ? v.join(', ') : v;
  };
}

export class Listener {
  private readonly verifier: TokenVerifier;
  private readonly limiter: ConnectLimiter;
  private server: HttpServer | null = null;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly supervisor: SupervisorLink,
    private readonly sockets: WebSockets,
    private readonly pipe: PipeRoute,
    private readonly admin?: AdminRoute,
    /** Cluster mode: relays sockets of users whose partition another node serves (relay.ts). */
    private readonly cluster?: NodeRelay,
  ) {
    this.verifier = new TokenVerifier(ctx.cfg.auth);
    this.limiter = new ConnectLimiter(ctx.cfg.connectRatePerMin, ctx.workers);
  }

  /** Node checks header timeouts only this often (its default, 30 s, would stretch a 10 s timeout to 40 s). */
  private checkEveryMs(): number {
    return Math.max(50, Math.min(1000, Math.floor(this.ctx.cfg.headersTimeoutMs / 4)));
  }

  listen(): Promise<void> {
    const { cfg } = this.ctx;
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    let server: HttpServer;
    if (cfg.tls) {
      let cert: Buffer;
      let key: Buffer;
      try {
        cert = readFileSync(cfg.tls.cert);
        key = readFileSync(cfg.tls.key);
      } catch (e) {
        return Promise.reject(new Error(`cannot read TLS certificate or key: ${(e as Error).message}`, { cause: e }));
      }
      server = createHttpsServer({ cert, key, connectionsCheckingInterval: this.checkEveryMs() }, onRequest) as unknown as HttpServer;
    } else {
      server = createHttpServer({ connectionsCheckingInterval: this.checkEveryMs() }, onRequest);
    }
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onUpgrade(req, socket as Socket, head).catch((e: unknown) => {
        this.ctx.log('error', `upgrade failed: ${describeError(e)}`);
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
      refuse(this.ctx, socket, r);
    });
    server.headersTimeout = cfg.headersTimeoutMs;
    // Must be above headersTimeout; a request here is headers only (no bodies), so a little more is plenty.
    server.requestTimeout = cfg.headersTimeoutMs + 5000;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'EADDRINUSE') reject(new Error(`port ${cfg.port} on ${cfg.host} is already in use`, { cause: e }));
        else reject(new Error(`cannot listen on ${cfg.host}:${cfg.port}: ${e.message}`, { cause: e }));
      });
      server.listen({ host: cfg.host, port: cfg.port, reusePort: true, backlog: 4096 }, () => resolve());
    });
  }

  /** Stops accepting; open connections stay (the drain closes them). */
  close(): void {
    this.server?.close();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const { ctx } = this;
    const path = (req.url ?? '/').split('?')[0];
    // Liveness only: this worker process runs and answers. Whether the server can serve is /readyz.
    if (path === '/healthz') return json(res, 200, { ok: true, worker: ctx.id, ...(ctx.cfg.auth.devAuth && { devAuth: true, warning: DEV_AUTH_WARNING }) });
    if (path === '/readyz') {
      // A draining worker answers for itself; otherwise the supervisor's view decides.
      if (ctx.draining) return json(res, 503, { ready: false, draining: true, workers: null, storageFull: [] });
      return this.supervisor.readyz(res);
    }
    if (path === '/metrics') return this.supervisor.metrics(res);
    if (path?.startsWith(ADMIN_PREFIX) && this.admin) return this.admin.handle(req, res);
    if (path !== undefined && serveWebchat(req, res, path, ctx.cfg.auth.devAuth)) return;
    if (path === CONNECT_PATH) {
      // A plain GET gets the same decision as an upgrade (a refused WebSocket cannot see why; this can):
      // the token's 401/403 first, else 426 for the missing upgrade.
      void this.authorize(req, req.socket.remoteAddress ?? 'unknown').then(
        async (v) => {
          let r: Refusal = isRefusal(v) ? v : { status: 426, code: 'upgrade_required', message: 'this endpoint speaks WebSocket only' };
          // The token verified: if it is revoked, that is what the client probing its failed handshake must hear.
          const id = r.code === 'upgrade_required' && this.admin ? await identityOf(this.request(req), this.verifier) : null;
          if (id && this.admin && (await this.admin.isRevoked(id.user, claimsOf(id)).catch(() => false))) {
            r = { status: 401, code: 'token_revoked', message: 'this token was revoked; get a new one' };
          }
          ctx.metrics.refused.inc({ code: r.code });
          respond(res, r);
        },
        () => respond(res, { status: 500, code: 'internal', message: 'internal error' }),
      );
      return;
    }
    respond(res, { status: 404, code: 'not_found', message: 'no such endpoint' });
  }

  private request(req: IncomingMessage): UpgradeRequest {
    return { method: req.method ?? '', url: new URL(req.url ?? '/', 'http://iris.invalid'), header: headerGetter(req), ip: '' };
  }

  /** The pre-upgrade decision shared with the edge (auth/upgrade.ts), with this worker's IP limiter. */
  private authorize(req: IncomingMessage, ip: string): Promise<Identity | Refusal> {
    return authorizeUpgrade(
      { ...this.request(req), ip },
      { verifier: this.verifier, connectLimit: (addr) => this.limiter.take(addr, Date.now()) },
    );
  }

  private async onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const { ctx } = this;
    socket.on('error', destroyOnError);
    const url = new URL(req.url ?? '/', 'http://iris.invalid');
    if (url.pathname !== CONNECT_PATH) return refuse(ctx, socket, { status: 404, code: 'not_found', message: 'no such endpoint' });
    if (ctx.draining) return refuse(ctx, socket, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    const verdict = await this.authorize(req, socket.remoteAddress ?? 'unknown');
    if (isRefusal(verdict)) return refuse(ctx, socket, verdict);
    const user = verdict.user;
    if (socket.destroyed) return;
    // The verified claims travel with the headers to the owner (here, hand-off or pipe), which checks them against
    // the user's revocations; set over whatever the client sent (core/revocation.ts).
    req.headers[TOKEN_HEADER] = claimsHeader(verdict);

    if (this.cluster && !owns(ctx, user)) return this.relayToNode(user, req, socket, head);
    const owner = workerFor(ctx, user);
    if (owner === ctx.id) return this.sockets.accept(req, socket, head, user, 'local');
    return this.handOff(owner, user, req, socket, head);
  }

  /** To the worker `owner` of this process's supervisor: a hand-off (SCM_RIGHTS) or, with IRIS_ROUTE=pipe, its unix pipe. */
  private async handOff(owner: number, user: string, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const { ctx } = this;
    if (!this.supervisor.isUp(owner)) {
      return refuse(ctx, socket, { status: 503, code: 'unavailable', message: 'the shard of this user is restarting; retry', headers: { 'retry-after': '1' } });
    }
    // The owner needs the handshake headers, not the token (already verified; the identity travels as `user`).
    const headers = { ...req.headers };
    delete headers['authorization'];
    const uh: UpgradeHead = { method: req.method ?? 'GET', url: req.url ?? CONNECT_PATH, headers, remote: socket.remoteAddress ?? '' };
    if (ctx.cfg.route === 'pipe') return this.pipe.pipeTo(owner, socket, head, { user, head: uh });
    // Hand the authenticated TCP socket itself to the owner: worker -> supervisor -> owner (SCM_RIGHTS). After
    // this, the socket is the owner's; this process closes its copy when the supervisor acknowledges it.
    // Until then our copy must not read: the owner may already have sent the 101 and the client its hello, and
    // bytes read here would be lost (see stopReading). Anything the stream already buffered travels with
    // `head` (a client sends nothing before the 101, so normally both are empty).
    socket.pause();
    const buffered = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    if (!stopReading(socket) && !socket.destroyed) ctx.warnOnce('stop-reading', 'cannot stop reading a socket before its hand-off (Node internals changed?): clients may lose their hello; use IRIS_ROUTE=pipe');
    const rest = buffered && buffered.length > 0 ? Buffer.concat([head, buffered]) : head;
    try {
      await send({ t: 'handoff', to: owner, user, head: uh, rest: rest.toString('base64'), from: ctx.id }, socket);
    } catch {
      refuse(ctx, socket, { status: 503, code: 'unavailable', message: 'could not reach the shard of this user; retry', headers: { 'retry-after': '1' } });
    }
  }

  /**
   * Cluster mode: the user's partition is served by another node. Its socket's bytes are relayed to that node's
   * pipe port (PipeRoute over TCP); no owner yet (a failover) answers 503 with retry-after.
   */
  private relayToNode(user: string, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    // The token travels: the owning node verifies it again (PipeRoute.listenTcp) rather than trusting `user`.
    const headers = { ...req.headers };
    const uh: UpgradeHead = { method: req.method ?? 'GET', url: req.url ?? CONNECT_PATH, headers, remote: socket.remoteAddress ?? '' };
    return this.cluster!.relay(socket, head, { user, head: uh }, {
      local: () => this.sockets.accept(req, socket, head, user, 'local'),
      // Another worker of this node (its own cluster member) serves it: handed over as on one box, no pipe hop.
      ...(this.ctx.cfg.route !== 'pipe' && {
        sibling: (w: number) => {
          if (!this.supervisor.isUp(w)) return false;
          void this.handOff(w, user, req, socket, head);
          return true;
        },
      }),
      refuse: () => refuse(this.ctx, socket, { status: 503, code: 'unavailable', message: 'the shard of this user is moving; retry', headers: { 'retry-after': '1' } }),
    });
  }

  /** The owning side of a hand-off: a socket for one of this worker's users, authenticated by another worker. */
  onHandoff(m: Extract<ToWorker, { t: 'handoff' }>, socket: Socket | undefined): void {
    const { ctx } = this;
    if (!socket) return;
    socket.on('error', destroyOnError);
    if (ctx.draining) {
      return refuse(ctx, socket, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    }
    if (!owns(ctx, m.user)) {
      // Cluster mode: the partition left this worker between the sibling's look-up and now (a move); the client retries.
      if (ctx.clusterOwns) return refuse(ctx, socket, { status: 503, code: 'unavailable', message: 'the shard of this user is moving; retry', headers: { 'retry-after': '1' } });
      return refuse(ctx, socket, { status: 500, code: 'internal', message: 'connection routed to the wrong worker' });
    }
    const req = new IncomingMessage(socket);
    req.method = m.head.method;
    req.url = m.head.url;
    req.headers = m.head.headers;
    this.sockets.accept(req, socket, Buffer.from(m.rest, 'base64'), m.user, 'handoff');
  }
}
