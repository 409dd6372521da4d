import type { Conn, ConnState } from '../core/ports.js';

/**
 * What a hibernatable socket remembers while its Durable Object is evicted (at most 16 KiB): whose it is and
 * the core's per-socket state. Kept small and flat; it is rewritten on every delivery batch.
 */
export interface Attachment {
  user: string;
  state: ConnState | null;
}

/** The core's Conn over a hibernatable WebSocket. */
export class DoConn implements Conn {
  private att: Attachment;

  constructor(readonly ws: WebSocket) {
    this.att = ws.deserializeAttachment() as Attachment;
  }

  get user(): string {
    return this.att.user;
  }

  get state(): ConnState | null {
    return this.att.state;
  }

  setState(state: ConnState): void {
    this.att = { user: this.att.user, state };
    this.ws.serializeAttachment(this.att);
  }

  get queuedBytes(): number {
    // workerd's WebSocket keeps the standard counter; a runtime that does not report it gives 0 (no bound here,
    // the per-connection frame rate still applies).
    return this.ws.bufferedAmount ?? 0;
  }

  send(data: string | Uint8Array): void {
    try {
      this.ws.send(data);
    } catch {
      // Already closing: the close handler takes it from here.
    }
  }

  close(code: number, reason: string): void {
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closed.
    }
  }
}
