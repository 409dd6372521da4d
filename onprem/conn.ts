import { WebSocket } from 'ws';
import type { Conn, ConnState } from '../core/ports.js';
import { CLOSE_CODES } from '../protocol/index.js';

/**
 * The core's Conn over a `ws` socket. State lives in memory: unlike a hibernating Durable Object, the worker
 * process holds the socket for its whole life. One object per socket, for as long as it lives.
 *
 * Memory matters here (one of these per connection, 1M+ per box), so nothing per connection is a closure:
 * the socket's event listeners are shared functions that find their WsConn through IrisWebSocket.conn, and
 * the counters are reached through the owner.
 */

/** What a connection needs from the worker that holds it. */
export interface ConnOwner {
  /** Called for every frame sent to the client (a metric). */
  sent(): void;
  /** Called when the server closes a client socket, with the code it sends (a metric). */
  closing(code: number): void;
}

/** The `ws` socket class the worker's WebSocketServer creates (its `WebSocket` option): one extra field. */
export class IrisWebSocket extends WebSocket {
  conn: WsConn | null = null;
}

export class WsConn implements Conn {
  private st: ConnState | null = null;
  /** Set by the worker's heartbeat: false after a ping, true again on the pong. */
  alive = true;
  helloTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly ws: WebSocket,
    /** The user's shard in the worker (onprem/worker.ts). */
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
    this.ws.send(data);
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
