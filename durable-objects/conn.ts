import type { Conn, ConnState, TokenClaims } from '../core/ports.js';

/**
 * What a hibernatable socket remembers while its Durable Object is evicted (at most 16 KiB): whose it is, the
 * core's per-socket state, and what the liveness sweep (UserShard.sweep) needs. Kept small and flat.
 */
export interface Attachment {
  user: string;
  state: ConnState | null;
  /** When the upgrade was accepted (ms): the hello timeout counts from here. */
  opened: number;
  /**
   * When a message last reached the object from this socket (ms), coarsely (see ACTIVE_GRANULARITY_MS).
   * Heartbeats answered by the runtime are not counted here: getWebSocketAutoResponseTimestamp has them.
   */
  active: number;
  /** The server closed this socket: it no longer counts as online and gets nothing more. */
  closed?: true;
  /** Mailbox.onClose ran for it (presence updated); a later close event must not run it again. */
  released?: true;
  /** The token's claims (core/revocation.ts): revocation and the expiry close find the socket by them. */
  tok?: TokenClaims;
  /** The connection's trace id (X-Iris-Trace from the edge, core/log-line.ts). */
  tr?: string;
}

/**
 * Activity is written to the attachment at most this often per socket: a flood of frames costs one
 * serializeAttachment per second, not one per frame. The idle timeout (2 x IRIS_WS_PING_MS) is far coarser.
 */
const ACTIVE_GRANULARITY_MS = 1_000;

/** The core's Conn over a hibernatable WebSocket. */
export class DoConn implements Conn {
  private att: Attachment;

  constructor(
    readonly ws: WebSocket,
    /** Where frames sent are counted (UserShard's stats); a fresh counter when not given. */
    private readonly counts: { wsOut: number } = { wsOut: 0 },
  ) {
    const att = ws.deserializeAttachment() as Partial<Attachment> & { user: string };
    // A socket accepted by an older version has no timestamps: start counting now rather than close it early.
    const now = Date.now();
    // A socket accepted before receipts were state has no receipt position: it gets every receipt once.
    const state = att.state ? { ...att.state, rsent: att.state.rsent ?? 0 } : null;
    this.att = { ...att, state, opened: att.opened ?? now, active: att.active ?? now };
  }

  get user(): string {
    return this.att.user;
  }

  get state(): ConnState | null {
    return this.att.state;
  }

  get token(): TokenClaims | undefined {
    return this.att.tok;
  }

  get trace(): string | undefined {
    return this.att.tr;
  }

  setToken(tok: TokenClaims): void {
    this.write({ ...this.att, tok });
  }

  get opened(): number {
    return this.att.opened;
  }

  /** Closed by the server: excluded from the core's socket list. */
  get closed(): boolean {
    return this.att.closed === true;
  }

  get released(): boolean {
    return this.att.released === true;
  }

  /** Last time anything arrived from the client: a message, or a heartbeat the runtime answered. */
  lastHeard(autoResponse: Date | null): number {
    return Math.max(this.att.active, autoResponse?.getTime() ?? 0);
  }

  /** A message arrived from the client. */
  touch(now: number): void {
    if (now - this.att.active >= ACTIVE_GRANULARITY_MS) this.write({ ...this.att, active: now });
  }

  markReleased(): void {
    this.write({ ...this.att, released: true });
  }

  setState(state: ConnState): void {
    this.write({ ...this.att, state });
  }

  get queuedBytes(): number {
    // workerd's WebSocket keeps the standard counter; a runtime that does not report it gives 0 (no bound here,
    // the per-connection frame rate still applies).
    return this.ws.bufferedAmount ?? 0;
  }

  send(data: string | Uint8Array): void {
    this.counts.wsOut++;
    try {
      this.ws.send(data);
    } catch {
      // Already closing: the close handler takes it from here.
    }
  }

  close(code: number, reason: string): void {
    if (!this.closed) this.write({ ...this.att, closed: true });
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closed.
    }
  }

  private write(att: Attachment): void {
    this.att = att;
    try {
      this.ws.serializeAttachment(att);
    } catch {
      // The socket is already gone; the in-memory copy is all that is left to keep.
    }
  }
}
