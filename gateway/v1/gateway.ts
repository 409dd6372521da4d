import { createServer, type Server, type Socket } from 'node:net';
import { TokenVerifier, type Identity } from '../../auth/index.js';
import { traceId } from '../../core/log-line.js';
import { Revocations, claimsHeader, parseClaims } from '../../core/revocation.js';
import { ID_PATTERN } from '../../protocol/limits.js';
import { stopReading, type ToWorker, type V1Handoff } from '../../onprem/ipc.js';
import { describeError } from '../../onprem/log.js';
import { owns, workerFor, type WorkerContext } from '../../onprem/worker/context.js';
import { send, type SupervisorLink } from '../../onprem/worker/control.js';
import type { Shards } from '../../onprem/worker/shards.js';
import type { V1Relay, V1Relayed } from '../../onprem/worker/pipe.js';
import type { NodeRelay } from '../../onprem/worker/relay.js';
import { AUTH_FAILED, RATE_LIMITED, encodeError, type Decoded } from './codec.js';
import { ConnectLimiter } from '../../onprem/http.js';
import { V1Link, type Transport } from './link.js';
import { V1Session } from './session.js';

/**
 * The v1 gateway of one worker: the Erlang Iris's clients on their own ports (IRIS_V1_TCP_PORT, IRIS_V1_WS_PORT),
 * which every worker accepts on (SO_REUSEPORT), like the WebSocket listener. A connection is read up to its LOGIN
 * where it was accepted; the LOGIN is authenticated there (HS256, iss "iris", sub = the user; or anonymous if
 * configured); then the socket goes to the worker that owns the user, through the supervisor (SCM_RIGHTS) with the
 * bytes read after the LOGIN, exactly as a WebSocket is handed off (onprem/worker/listener.ts), and becomes a
 * V1Session there: an ordinary Conn of the user's mailbox.
 *
 *   accept (any worker) -> LOGIN -> auth -> owner?  yes: V1Session here (session.ts)
 *                                                  no: hand the socket to the owner (v1_handoff)
 *
 * In cluster mode the owner is usually another node: the socket's bytes are relayed to its pipe port like a
 * WebSocket's (onprem/worker/relay.ts), with the LOGIN's token, which the owner verifies again (V1Relayed below).
 */

export class V1Gateway implements V1Relayed {
  private readonly servers: Server[] = [];
  private readonly verifier: TokenVerifier;
  /** LOGINs per minute per client IP (IRIS_CONNECT_RATE, as for WebSocket upgrades). */
  private readonly limiter: ConnectLimiter;
  /** Connections not logged in yet (closed by a drain; the logged-in ones are the shards' conns). */
  private readonly waiting = new Set<V1Link>();

  constructor(
    private readonly ctx: WorkerContext,
    private readonly shards: Shards,
    private readonly supervisor: SupervisorLink,
    /** Cluster mode: relays connections of users whose partition another node serves. */
    private readonly relay?: NodeRelay,
  ) {
    const { cfg } = ctx;
    this.limiter = new ConnectLimiter(cfg.connectRatePerMin, ctx.workers);
    this.verifier = new TokenVerifier({ ...(cfg.v1.secret !== undefined && { secret: cfg.v1.secret }), issuer: 'iris', clockToleranceSec: cfg.auth.clockToleranceSec, devAuth: false });
  }

  get enabled(): boolean {
    return this.ctx.cfg.v1.tcpPort !== null || this.ctx.cfg.v1.wsPort !== null;
  }

  async listen(): Promise<void> {
    const { v1, host } = this.ctx.cfg;
    const ports: [number | null, Transport][] = [
      [v1.tcpPort, 'tcp'],
      [v1.wsPort, 'ws'],
    ];
    for (const [port, transport] of ports) {
      if (port === null) continue;
      const server = createServer({ noDelay: true }, (s) => this.accept(s, transport));
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`v1 gateway: cannot listen on ${host}:${port} (${transport}): ${e.message}`, { cause: e })));
        server.listen({ host, port, reusePort: true, backlog: 4096 }, () => resolve());
      });
    }
  }

  /** Draining: no new connection; those still before their LOGIN are closed (the others close with their shard). */
  close(): void {
    for (const s of this.servers) s.close();
    for (const l of this.waiting) l.destroy();
    this.waiting.clear();
  }

  private accept(socket: Socket, transport: Transport): void {
    if (this.ctx.draining) return void socket.destroy();
    const link = new V1Link(socket, transport);
    link.maxQueuedBytes = this.ctx.cfg.engine.maxQueuedBytes;
    this.waiting.add(link);
    // A connection that never logs in does not hold a socket for long (the hello timeout of WebSockets).
    const timer = setTimeout(() => link.end(1000), this.ctx.cfg.helloTimeoutMs);
    timer.unref();
    link.handler = {
      packets: (items) => this.beforeLogin(link, items, timer),
      closed: () => {
        clearTimeout(timer);
        this.waiting.delete(link);
      },
    };
  }

  private beforeLogin(link: V1Link, items: Decoded[], timer: ReturnType<typeof setTimeout>): void {
    for (const it of items) {
      if (link.closedAlready || link.handler === null) return;
      if (!it.ok) {
        link.error(it.reason, it.fatal);
        continue;
      }
      if (it.packet.op !== 'login') {
        link.error('login_required', false);
        continue;
      }
      const { user, token } = it.packet;
      clearTimeout(timer);
      this.waiting.delete(link);
      // The old server's login rate limit answered the raw text RATE_LIMITED and closed; so does this one.
      if (this.limiter.take(link.socket.remoteAddress ?? 'unknown', Date.now()) > 0) return link.end(1000, RATE_LIMITED);
      // Nothing more is read from this connection until it is logged in (here, or at its owner).
      link.handler = null;
      link.socket.pause();
      this.login(link, user, token).catch((e: unknown) => {
        this.ctx.log('warn', `v1 LOGIN of ${user} failed: ${describeError(e)}`);
        link.end(1000, AUTH_FAILED);
      });
      return;
    }
  }

  /** The claims of a LOGIN that may log in as `user` ('' when anonymous), or null. */
  private async authenticate(user: string, token: string | undefined): Promise<string | null> {
    if (!ID_PATTERN.test(user)) return null;
    if (token === undefined) return this.ctx.cfg.v1.allowAnonymous ? '' : null;
    const id: Identity | null = await this.verifier.verify(token).catch(() => null);
    return id === null || id.user !== user ? null : claimsHeader(id);
  }

  /** Checks the LOGIN, then serves it here or hands it to the owner. AUTH_FAILED and a close otherwise. */
  private async login(link: V1Link, user: string, token: string | undefined): Promise<void> {
    const claims = await this.authenticate(user, token);
    if (claims === null) return link.end(1000, AUTH_FAILED);
    if (link.closedAlready) return;
    const trace = traceId(undefined);
    const rest = link.takeRest();
    if (this.relay && !owns(this.ctx, user)) return this.relayToNode(link, user, token, claims, trace, rest);
    const owner = workerFor(this.ctx, user);
    if (owner === this.ctx.id) return this.serveLink(link, user, claims, trace, rest);
    // Not a refusal of the credentials: 0xFE unavailable and a close, and the client logs in again (the owner is
    // restarting). If the owner dies after this check, the supervisor or the kernel closes the socket instead.
    if (!this.supervisor.isUp(owner)) return link.end(1000, encodeError('unavailable'));
    const { socket } = link;
    // As for a WebSocket hand-off (listener.ts): this copy must not read any more, and what the stream already
    // buffered travels with the message.
    const buffered = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    stopReading(socket);
    const raw = buffered && buffered.length > 0 ? Buffer.concat([rest.raw, buffered]) : Buffer.from(rest.raw);
    const handoff: V1Handoff = { user, transport: link.transport, claims, packets: Buffer.from(rest.packets).toString('base64'), raw: raw.toString('base64'), trace };
    try {
      await send({ t: 'v1_handoff', to: owner, handoff }, socket);
    } catch {
      link.destroy();
    }
  }

  /**
   * Cluster mode: another node serves the user. The bytes already read after the LOGIN go in the relay's header
   * (with the LOGIN's token, not its claims); what the socket still buffers follows through the pipe.
   */
  private relayToNode(link: V1Link, user: string, token: string | undefined, claims: string, trace: string, rest: { packets: Uint8Array; raw: Uint8Array }): Promise<void> {
    const r: V1Relay = { transport: link.transport, packets: Buffer.from(rest.packets).toString('base64'), raw: Buffer.from(rest.raw).toString('base64'), trace, ...(token !== undefined && { token }) };
    return this.relay!.relay(link.socket, Buffer.alloc(0), { user, v1: r }, {
      local: () => this.serveLink(link, user, claims, trace, rest),
      refuse: () => link.end(1000, encodeError('unavailable')),
      // The link decodes nothing more: another node's session reads this socket's bytes now.
      leave: () => void link.socket.removeAllListeners('data'),
    });
  }

  /** The owner's side of a relay from another node: the LOGIN's token verified here, never the header's user. */
  async verify(s: Socket, user: string, r: V1Relay): Promise<string | null> {
    const claims = await this.authenticate(user, r.token);
    if (claims === null) this.refuse(s, r, 'relay_refused');
    return claims;
  }

  /** A relayed connection refused: 0xFE and a close, in its transport (a WebSocket close frame after it). */
  refuse(s: Socket, r: V1Relay, code: string): void {
    if (s.destroyed) return;
    const link = new V1Link(s, r.transport, true);
    link.end(1000, encodeError(code === 'going_away' ? 'unavailable' : code));
  }

  serve(s: Socket, user: string, r: V1Relay, claims: string, rest: Buffer): void {
    const link = new V1Link(s, r.transport, true);
    link.maxQueuedBytes = this.ctx.cfg.engine.maxQueuedBytes;
    this.serveLink(link, user, claims, r.trace, { packets: Buffer.from(r.packets, 'base64'), raw: Buffer.concat([Buffer.from(r.raw, 'base64'), rest]) });
  }

  /** The owning side of a hand-off. */
  onHandoff(m: Extract<ToWorker, { t: 'v1_handoff' }>, socket: Socket | undefined): void {
    if (!socket) return;
    const h = m.handoff;
    if (this.ctx.draining || !owns(this.ctx, h.user)) return void socket.destroy();
    const link = new V1Link(socket, h.transport, true);
    link.maxQueuedBytes = this.ctx.cfg.engine.maxQueuedBytes;
    this.serveLink(link, h.user, h.claims, h.trace, { packets: Buffer.from(h.packets, 'base64'), raw: Buffer.from(h.raw, 'base64') });
  }

  private serveLink(link: V1Link, user: string, claims: string, trace: string, rest: { packets: Uint8Array; raw: Uint8Array }): void {
    const tok = claims === '' ? undefined : parseClaims(claims);
    const max = this.ctx.cfg.maxConnections;
    // IRIS_MAX_CONNECTIONS counts v1 connections with the WebSockets (both are the shards' connections).
    if (max !== null && this.shards.connCount >= max) return link.end(1000, encodeError('server_full'));
    try {
      if (tok && new Revocations(this.shards.storage(user).sql, user).isRevoked(tok)) return link.end(1000, AUTH_FAILED);
      const session = new V1Session(link, this.shards.get(user), user, tok, trace);
      session.start();
      link.socket.resume();
      link.resume(rest);
    } catch (e) {
      // Storage not open yet, or the user not ours (a hand-off that raced a restart): a close, not AUTH_FAILED.
      this.ctx.log('warn', `v1 connection of ${user} refused: ${describeError(e)}`, undefined, { user, trace });
      link.end(1000);
    }
  }
}
