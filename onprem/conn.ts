import { WebSocket } from 'ws';
import type { Conn, ConnState } from '../core/ports.js';

/**
 * The core's Conn over a `ws` socket. State lives in memory: unlike a hibernating Durable Object, the worker
 * process holds the socket for its whole life. One object per socket, for as long as it lives.
 */
export class WsConn implements Conn {
  private st: ConnState | null = null;
  /** Set by the worker's heartbeat: false after a ping, true again on the pong. */
  alive = true;
  helloTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly ws: WebSocket,
    readonly user: string,
    private readonly onSend: () => void,
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

  send(data: string | Uint8Array): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.onSend();
    this.ws.send(data);
  }

  close(code: number, reason: string): void {
    if (this.helloTimer !== null) {
      clearTimeout(this.helloTimer);
      this.helloTimer = null;
    }
    if (this.ws.readyState === WebSocket.CLOSED || this.ws.readyState === WebSocket.CLOSING) return;
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
  }
}
