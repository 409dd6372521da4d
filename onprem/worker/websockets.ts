import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type Server as WsServer, type WebSocket } from 'ws';
import { CLOSE_CODES, SUBPROTOCOL } from '../../protocol/index.js';
import { Revocations, TOKEN_HEADER, expiryDeadline, parseClaims } from '../../core/revocation.js';
import type { TokenClaims } from '../../core/ports.js';
import { traceId } from '../../core/log-line.js';
import { IrisWebSocket, WsConn } from '../conn.js';
import { refuse, type WorkerContext } from './context.js';
import type { Shard, Shards } from './shards.js';

/**
 * Client WebSockets of this worker's users: the handshake on a socket the listener (or a hand-off, or the pipe)
 * brought here, the frames in and the close, and the heartbeat. This is the hot path: every listener below is
 * one function shared by all sockets (`this` is the emitter), so a connection costs no closure.
 */

/** How a connection reached its owner (the iris_connections_opened_total label). */
export type Via = 'local' | 'handoff' | 'pipe';

// Listeners shared by every socket (`this` is the emitter): no closure per connection.
export function destroyOnError(this: Duplex): void {
  this.destroy();
}
function ignore(): void {
  // A close event follows.
}
function onWsMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const c = (this as IrisWebSocket).conn;
  if (c) onFrame(c, data, isBinary);
}
function onWsPong(this: WebSocket): void {
  const c = (this as IrisWebSocket).conn;
  if (c) c.alive = true;
}
function onWsClose(this: WebSocket, code: number): void {
  const c = (this as IrisWebSocket).conn;
  if (!c) return;
  (this as IrisWebSocket).conn = null;
  onConnClose(c, code);
}
function helloExpired(conn: WsConn): void {
  conn.helloTimer = null;
  if (conn.state === null) conn.close(CLOSE_CODES.hello_timeout, 'no hello within the hello timeout');
}

/** A WebSocket message from a client (onWsMessage). */
function onFrame(conn: WsConn, data: RawData, isBinary: boolean): void {
  const shard = conn.owner as Shard;
  const shards = shard.host;
  shards.metrics.framesIn.inc();
  const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  shards.track(shard, shard.mailbox.onMessage(conn, isBinary ? buf : buf.toString('utf8')));
}

/** A client WebSocket closed (onWsClose). */
function onConnClose(conn: WsConn, code: number): void {
  if (conn.helloTimer) {
    clearTimeout(conn.helloTimer);
    conn.helloTimer = null;
  }
  const shard = conn.owner as Shard;
  const shards = shard.host;
  shard.remove(conn);
  shards.connCount--;
  shards.metrics.connections.dec();
  shards.metrics.closes.inc({ code: String(code) });
  shards.track(shard, shard.mailbox.onClose(conn)).catch(() => undefined);
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

export class WebSockets {
  private readonly wss: WsServer<typeof IrisWebSocket>;
  private readonly maxConnections: number;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly shards: Shards,
  ) {
    const { cfg } = ctx;
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
  }

  /** Open sockets of this worker. */
  get count(): number {
    return this.shards.connCount;
  }

  /** Finishes the handshake of an authenticated upgrade for `user`, one of this worker's. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer, user: string, via: Via): void {
    if (this.shards.connCount >= this.maxConnections) {
      return refuse(this.ctx, socket, { status: 503, code: 'server_full', message: 'this server holds as many connections as it may; retry later', headers: { 'retry-after': '5' } });
    }
    // The listener (here or in the worker that accepted the connection) verified the token and put its claims in
    // TOKEN_HEADER; the user's revocations are in this worker's file (core/revocation.ts).
    const raw = req.headers[TOKEN_HEADER];
    const tok = parseClaims(Array.isArray(raw) ? raw[0] : raw);
    if (new Revocations(this.shards.storage(user).sql, user).isRevoked(tok)) {
      return refuse(this.ctx, socket, { status: 401, code: 'token_revoked', message: 'this token was revoked; get a new one' });
    }
    let attached = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      attached = true;
      this.attach(ws, socket, user, via, tok, traceId(headerOf(req.headers['traceparent'])));
    });
    // ws completes the handshake synchronously and then has its own error listener on the socket: ours goes
    // (one listener less per connection). If the handshake was refused, ours stays until the socket is gone.
    if (attached) socket.off('error', destroyOnError);
  }

  private attach(ws: IrisWebSocket, socket: Duplex, user: string, via: Via, tok: TokenClaims, trace: string): void {
    if (this.ctx.draining) {
      ws.close(CLOSE_CODES.going_away, 'server shutting down');
      return;
    }
    const shard = this.shards.get(user);
    const conn = new WsConn(ws, socket, shard);
    conn.token = tok;
    conn.trace = trace;
    ws.conn = conn;
    shard.add(conn);
    this.shards.connCount++;
    this.ctx.metrics.connections.inc();
    this.ctx.metrics.connectionsTotal.inc({ via });
    conn.helloTimer = setTimeout(helloExpired, this.ctx.cfg.helloTimeoutMs, conn);
    ws.on('message', onWsMessage);
    ws.on('pong', onWsPong);
    ws.on('error', ignore);
    ws.on('close', onWsClose);
  }

  /**
   * WebSocket ping every IRIS_WS_PING_MS; a socket that did not answer the previous one is dropped. The same pass
   * closes sockets whose token expired more than IRIS_TOKEN_EXPIRY_GRACE_S ago (4006): no timer per connection
   * (a million of them would cost more than the pass), so the close comes within one ping period after the grace.
   */
  heartbeat(): void {
    const { engine } = this.ctx.cfg;
    const graceMs = engine.tokenExpiryClose === 1 ? engine.tokenExpiryGraceS * 1000 : undefined;
    const now = Date.now();
    for (const s of this.shards.all()) {
      for (const c of s.conns) {
        const expires = graceMs === undefined ? undefined : expiryDeadline(c.token, graceMs);
        if (expires !== undefined && expires <= now) {
          c.close(CLOSE_CODES.token_expired, 'token expired and was not refreshed');
          continue;
        }
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

  /** Draining: a close frame to every socket. */
  closeAll(code: number, reason: string): void {
    for (const s of this.shards.all()) for (const c of s.conns) c.close(code, reason);
  }

  /** Draining, after the close frames had their time. */
  terminateAll(): void {
    for (const s of this.shards.all()) for (const c of s.conns) c.ws.terminate();
  }
}

function headerOf(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
