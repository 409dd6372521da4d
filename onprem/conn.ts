import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';
import type { Conn, ConnState, TokenClaims } from '../core/ports.js';
import { CLOSE_CODES } from '../protocol/index.js';

/**
 * The core's Conn over a `ws` socket. State lives in memory: unlike a hibernating Durable Object, the worker
 * process holds the socket for its whole life. One object per socket, for as long as it lives.
 *
 * Memory matters here (one of these per connection, 1M+ per box), so nothing per connection is a closure:
 * the socket's event listeners are shared functions that find their WsConn through IrisWebSocket.conn, and
 * the counters are reached through the owner.
 */

/** What a connection needs from the shard that holds it (onprem/worker/shards.ts Shard). */
export interface ConnOwner {
  /** Called for every frame sent to the client (a metric). */
  sent(): void;
  /** Called when the server closes a client socket, with the code it sends (a metric). */
  closing(code: number): void;
}

/**
 * A connection a Shard holds: a client WebSocket (WsConn), or a connection of the v1 gateway (gateway/v1/session.ts)
 * that the core sees as one more Conn of its user. What the worker's heartbeat, drain and admin calls use of it.
 */
export interface HeldConn extends Conn {
  /** Set by the heartbeat: false after a ping, true again on the pong. */
  alive: boolean;
  token: TokenClaims | undefined;
  /** What the heartbeat, the drain and the admin API do to the transport. */
  readonly ws: { ping(): void; terminate(): void };
}

/** The `ws` socket class the worker's WebSocketServer creates (its `WebSocket` option; onprem/worker/websockets.ts): one extra field. */
export class IrisWebSocket extends WebSocket {
  conn: WsConn | null = null;
}

/**
 * Sockets written to during this event-loop turn. A turn often has several frames for one socket (a hot inbox
 * gets a `deliver` per sender, a sender gets its `send_ack`s and `receipts`); each `ws.send` would be its own
 * writev syscall. Corking the socket at its first frame and uncorking every corked socket once, after the
 * turn's I/O callbacks and commits (setImmediate runs after the group commit's own setImmediate when that was
 * scheduled first), makes them one write. Measured in docs/BENCHMARKS.md ("Frames per socket per turn").
 */
const corked: Duplex[] = [];
let uncorkScheduled = false;
/**
 * A corked socket is written at once when this much waits in it. Corking is for many small frames; without
 * this bound one turn's deliveries (a resumed device pumped its whole window from the inbox) would sit in
 * user space and count against maxQueuedBytes, which is meant for bytes the client did not read.
 */
const CORK_MAX_BYTES = 16 * 1024;

function uncorkAll(): void {
  uncorkScheduled = false;
  // A frame sent while uncorking (a write callback) corks again and schedules the next round. A socket can be
  // listed twice (written at CORK_MAX_BYTES, then corked again); outside ws.send every cork is ours.
  const list = corked.splice(0, corked.length);
  for (const s of list) if (s.writableCorked > 0) s.uncork();
}

export class WsConn implements Conn {
  private st: ConnState | null = null;
  /** Set by the worker's heartbeat (WebSockets.heartbeat): false after a ping, true again on the pong. */
  alive = true;
  helloTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token's claims (core/revocation.ts), set at the upgrade: revocation and the expiry close look here. */
  token: TokenClaims | undefined = undefined;
  /** Trace id (core/log-line.ts), set at the upgrade from its traceparent header or made up. */
  trace: string | undefined = undefined;

  setToken(claims: TokenClaims): void {
    this.token = claims;
  }

  constructor(
    readonly ws: WebSocket,
    /** The socket under `ws` (net.Socket, or the pipe from another worker), corked per turn. */
    private readonly socket: Duplex,
    /** The user's shard in the worker (onprem/worker/shards.ts). */
    readonly owner: ConnOwner,
  ) {}

  get state(): ConnState | null {
    return this.st;
  }

  setState(state: ConnState): void {
    this.st = state;
    if (this.helloTimer !== null) {
      clearTimeout(this.helloTimer);
      this.helloTimer = null;
    }
  }

  get queuedBytes(): number {
    return this.ws.bufferedAmount;
  }

  send(data: string | Uint8Array): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.owner.sent();
    // ws corks around each frame itself, synchronously and balanced: a count above 0 here is ours.
    if (this.socket.writableCorked === 0) {
      this.socket.cork();
      corked.push(this.socket);
      if (!uncorkScheduled) {
        uncorkScheduled = true;
        setImmediate(uncorkAll);
      }
    }
    this.ws.send(data);
    if (this.socket.writableLength >= CORK_MAX_BYTES && this.socket.writableCorked > 0) this.socket.uncork();
  }

  close(code: number, reason: string): void {
    if (this.helloTimer !== null) {
      clearTimeout(this.helloTimer);
      this.helloTimer = null;
    }
    if (this.ws.readyState === WebSocket.CLOSED || this.ws.readyState === WebSocket.CLOSING) return;
    this.owner.closing(code);
    if (code === CLOSE_CODES.slow_consumer) {
      // The close frame would wait behind everything the client is not reading (and `ws` would hold it all for
      // its 30 s close timeout): free it now. The client sees the connection drop.
      this.ws.terminate();
      return;
    }
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
  }
}
