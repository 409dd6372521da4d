import type { Socket } from 'node:net';
import { V1Decoder, encodeError, type Decoded } from './codec.js';
import { EMPTY_BUFFER, WsDecoder, parseHandshake, wsClose, wsFrame } from './ws.js';

/**
 * One v1 client connection as a stream of packets, over TCP or over the v1 WebSocket framing (ws.ts): reads are
 * decoded into packets (codec.ts), packets written are framed for the transport. The same object serves the
 * connection before its LOGIN (in whichever worker accepted it) and after (in the worker owning the user), so that
 * a malformed packet is handled one way everywhere: an error frame, and on TCP a close, of this connection only.
 */

export type Transport = 'tcp' | 'ws';

export interface LinkHandler {
  packets(items: Decoded[]): void;
  closed(): void;
}

/**
 * A LOGIN that stops at the end of a read with no byte after it and no complete token (an anonymous LOGIN, a token
 * still arriving) ends after this much quiet: long enough for the next segment of a split LOGIN on any network a
 * client waits on, short beside the round trip of the LOGIN_OK it waits for.
 */
export const LOGIN_QUIET_MS = 100;

/** Largest WebSocket message read: the largest v1 packet (a 1 MiB batch) and its header. */
const MAX_WS_MESSAGE = 1024 * 1024 + 64;

/** An error on a link's socket ends it (one function for every socket: Node calls it with the socket as this). */
function destroySocket(this: Socket): void {
  this.destroy();
}

export class V1Link {
  /** A byte stream: a LOGIN split across reads is held until whole (V1Decoder's `stream`). */
  private readonly tcp: V1Decoder | null;
  /** Ends a held LOGIN once the client is quiet for LOGIN_QUIET_MS (the old "rest of the read"). */
  private loginTimer: ReturnType<typeof setTimeout> | null = null;
  /** Most bytes a client that does not read may have waiting here (IRIS_MAX_QUEUED_BYTES); then it is dropped. */
  maxQueuedBytes = Infinity;
  private readonly wsd: WsDecoder | null;
  /** A WebSocket that has not finished its HTTP upgrade yet. */
  private head: Buffer | null;
  handler: LinkHandler | null = null;
  /** Before the LOGIN: decoding stops right after it (V1Decoder.push untilLogin). */
  untilLogin = true;
  private ended = false;

  constructor(
    readonly socket: Socket,
    readonly transport: Transport,
    /** The WebSocket upgrade is already done (a socket handed over after its LOGIN). */
    upgraded = false,
  ) {
    // One decoder per transport (a WebSocket message is decoded on its own, in message()).
    this.tcp = transport === 'tcp' ? new V1Decoder(undefined, true) : null;
    this.wsd = transport === 'ws' ? new WsDecoder(MAX_WS_MESSAGE) : null;
    this.head = transport === 'ws' && !upgraded ? EMPTY_BUFFER : null;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.on('data', (d: Buffer) => this.read(d));
    socket.on('close', () => this.onClosed());
    socket.on('error', destroySocket);
  }

  get closedAlready(): boolean {
    return this.ended;
  }

  /** Bytes written and not yet taken by the network (Conn.queuedBytes). */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  /** Feeds bytes as if read from the socket (what came with a hand-over). */
  read(d: Buffer): void {
    if (this.ended) return;
    if (this.head !== null) {
      const buf = this.head.length === 0 ? d : Buffer.concat([this.head, d]);
      const h = parseHandshake(buf);
      if (h === null) {
        this.head = buf;
        return;
      }
      this.head = null;
      if (!h.ok) {
        this.socket.end(h.response);
        this.ended = true;
        return;
      }
      this.socket.write(h.response);
      if (h.rest.length === 0) return;
      d = h.rest;
    }
    const tcp = this.tcp;
    if (tcp !== null) {
      if (this.loginTimer !== null) clearTimeout(this.loginTimer);
      this.loginTimer = null;
      this.deliver(tcp.push(d, this.untilLogin));
      if (tcp.loginOpen && !this.ended) {
        this.loginTimer = setTimeout(() => {
          this.loginTimer = null;
          if (!this.ended) this.deliver(tcp.flushLogin(this.untilLogin));
        }, LOGIN_QUIET_MS);
        this.loginTimer.unref();
      }
      return;
    }
    for (const ev of this.wsd!.push(d)) {
      if (this.ended) return;
      if (ev.t === 'message') this.message(ev.data);
      else if (ev.t === 'ping') this.pong(ev.data);
      else if (ev.t === 'close') this.end(1000);
      else this.end(ev.why === 'message too large' ? 1009 : 1002);
    }
  }

  /**
   * One WebSocket message: its own packets, complete. An incomplete packet at its end is an error frame; the
   * connection goes on (the next message starts afresh), unlike TCP where no length says where to resume.
   */
  private message(data: Buffer): void {
    const dec = new V1Decoder();
    const items = dec.push(data, this.untilLogin);
    const rest = dec.pending;
    for (const it of items) if (!it.ok) it.fatal = false;
    if (this.untilLogin && items.some((i) => i.ok && i.packet.op === 'login')) {
      // What followed the LOGIN in its message is kept to be decoded once logged in (here or at the owner).
      this.afterLogin = dec.take();
    } else if (rest > 0) items.push({ ok: false, reason: 'incomplete_packet', fatal: false });
    this.deliver(items);
  }

  /** WebSocket: packet bytes that followed the LOGIN in its message. */
  private afterLogin: Uint8Array | null = null;

  private deliver(items: Decoded[]): void {
    if (items.length === 0) return;
    try {
      this.handler?.packets(items);
    } catch {
      // A bug in handling one packet must not become an uncaught exception in the socket's data handler (it would
      // take the worker, and every connection of its users, down): this connection ends, nothing else.
      this.error('internal', true);
    }
  }

  /**
   * Logged in: from now on packets are decoded through. Returns the bytes read after the LOGIN and not decoded:
   * `packets` (v1 bytes) and `raw` (socket bytes of the WebSocket framing), for a hand-over to the owner.
   */
  takeRest(): { packets: Uint8Array; raw: Uint8Array } {
    this.untilLogin = false;
    if (this.tcp !== null) return { packets: this.tcp.take(), raw: new Uint8Array(0) };
    const packets = this.afterLogin ?? new Uint8Array(0);
    this.afterLogin = null;
    return { packets, raw: this.wsd!.take() };
  }

  /** Logged in here: decodes what takeRest returned (or what came with the hand-over). */
  resume(rest: { packets: Uint8Array; raw: Uint8Array }): void {
    this.untilLogin = false;
    if (rest.packets.length > 0) {
      if (this.tcp !== null) this.deliver(this.tcp.push(rest.packets));
      else this.message(Buffer.from(rest.packets));
    }
    if (rest.raw.length > 0) this.read(Buffer.from(rest.raw));
  }

  write(packet: Uint8Array): void {
    if (this.ended || this.socket.destroyed) return;
    // What the core writes is bounded by the core (delivery.ts closes past maxQueuedBytes, 4003); this bounds what
    // the gateway says on its own (error frames for a flood of bad packets, pongs) to a client that does not read.
    if (this.socket.writableLength + packet.length > this.maxQueuedBytes) return this.destroy();
    this.socket.write(this.wsd ? wsFrame(0x2, packet) : packet);
  }

  private pong(data: Buffer): void {
    if (this.socket.writableLength + data.length > this.maxQueuedBytes) return this.destroy();
    this.socket.write(wsFrame(0xa, data));
  }

  /** An error frame, and on TCP (or when `close`) the end of the connection. */
  error(reason: string, close: boolean): void {
    this.write(encodeError(reason));
    if (close) this.end(1002);
  }

  /** Closes after what was written: a WebSocket close frame first. */
  end(wsCode = 1000, last?: Uint8Array): void {
    if (this.ended) return;
    if (last) this.write(last);
    this.ended = true;
    if (this.wsd && !this.socket.destroyed) this.socket.write(wsClose(wsCode));
    this.socket.end();
    // A client that never reads must not hold the socket open.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.ended = true;
    this.socket.destroy();
  }

  private onClosed(): void {
    this.ended = true;
    if (this.loginTimer !== null) clearTimeout(this.loginTimer);
    const h = this.handler;
    this.handler = null;
    h?.closed();
  }
}
