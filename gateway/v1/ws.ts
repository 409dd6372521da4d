import { createHash } from 'node:crypto';

/**
 * The WebSocket transport of v1 (the Erlang server's iris_ws_lite.erl): an HTTP upgrade on any path, then one v1
 * packet per binary message. Written over the raw TCP socket rather than with `ws`, so that a v1 WebSocket is a
 * byte stream like the TCP transport and can be handed to the worker that owns its user (SCM_RIGHTS) after the
 * LOGIN, with whatever bytes were read but not decoded (`ws` keeps its parser state inside the process).
 * Server side of RFC 6455 without extensions: fragmented messages are put together (the Erlang server could not),
 * ping is answered, close is echoed, masked and unmasked client frames are both read (the Erlang server did).
 */

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_HEAD = 8192;

export type Handshake = { ok: true; response: Buffer; rest: Buffer } | { ok: false; response: Buffer } | null;

/** Reads the upgrade request from buf: null while incomplete; the 101 (and the bytes after the head), or a 400. */
export function parseHandshake(buf: Buffer): Handshake {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return buf.length > MAX_HEAD ? { ok: false, response: badRequest('request head too large') } : null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  let key: string | undefined;
  let upgrade = false;
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    if (name === 'sec-websocket-key') key = value;
    if (name === 'upgrade' && value.toLowerCase() === 'websocket') upgrade = true;
  }
  if (!lines[0]?.startsWith('GET ') || !key || !upgrade) return { ok: false, response: badRequest('not a WebSocket upgrade') };
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  const response = Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`, 'latin1');
  return { ok: true, response, rest: buf.subarray(end + 4) };
}

function badRequest(why: string): Buffer {
  return Buffer.from(`HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${why.length}\r\n\r\n${why}`, 'latin1');
}

export type WsEvent = { t: 'message'; data: Buffer } | { t: 'ping'; data: Buffer } | { t: 'close' } | { t: 'error'; why: string };

/** Shared by every idle decoder: an empty Buffer of its own would cost each connection ~200 bytes of heap. */
export const EMPTY_BUFFER = Buffer.alloc(0);

/** Streaming decoder of client frames. */
export class WsDecoder {
  private buf: Buffer = EMPTY_BUFFER;
  private parts: Buffer[] = [];
  private partsLen = 0;
  private dead = false;

  constructor(private readonly maxMessage: number) {}

  /** Bytes read and not decoded (handed to the owner with the socket). */
  take(): Buffer {
    const b = this.buf;
    this.buf = EMPTY_BUFFER;
    return b;
  }

  push(chunk: Buffer): WsEvent[] {
    if (this.dead) return [];
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: WsEvent[] = [];
    for (;;) {
      const b = this.buf;
      if (b.length < 2) break;
      const fin = (b[0]! & 0x80) !== 0;
      const op = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let p = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        p = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(this.maxMessage)) return this.fail(out, 'message too large');
        len = Number(big);
        p = 10;
      }
      if (len > this.maxMessage || this.partsLen + len > this.maxMessage) return this.fail(out, 'message too large');
      const maskAt = p;
      if (masked) p += 4;
      if (b.length < p + len) break;
      const payload = Buffer.from(b.subarray(p, p + len));
      if (masked) for (let i = 0; i < len; i++) payload[i]! ^= b[maskAt + (i & 3)]!;
      // Not an empty view of the read when it is all consumed: that would keep the read's memory alive while idle.
      this.buf = b.length === p + len ? EMPTY_BUFFER : b.subarray(p + len);
      if (op === 0x8) {
        this.dead = true;
        out.push({ t: 'close' });
        return out;
      }
      if (op === 0x9) out.push({ t: 'ping', data: payload });
      else if (op === 0xa) continue;
      else if (op === 0x0 || op === 0x1 || op === 0x2) {
        if (op !== 0x0 && this.parts.length > 0) return this.fail(out, 'new message inside a fragmented one');
        if (op === 0x0 && this.parts.length === 0) return this.fail(out, 'continuation without a message');
        if (!fin) {
          this.parts.push(payload);
          this.partsLen += len;
          continue;
        }
        if (this.parts.length > 0) {
          this.parts.push(payload);
          out.push({ t: 'message', data: Buffer.concat(this.parts) });
          this.parts = [];
          this.partsLen = 0;
        } else out.push({ t: 'message', data: payload });
      } else return this.fail(out, `unknown opcode ${op}`);
    }
    return out;
  }

  private fail(out: WsEvent[], why: string): WsEvent[] {
    this.dead = true;
    this.buf = EMPTY_BUFFER;
    out.push({ t: 'error', why });
    return out;
  }
}

/** One unmasked server frame: 0x2 binary, 0x8 close, 0xA pong. */
export function wsFrame(op: number, payload: Uint8Array): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | op, n]) : n < 65536 ? Buffer.from([0x80 | op, 126, n >>> 8, n & 0xff]) : Buffer.alloc(10);
  if (n >= 65536) {
    head[0] = 0x80 | op;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/** A close frame with a status code (1000 normal, 1002 protocol error, 1009 too big). */
export function wsClose(code: number): Buffer {
  return wsFrame(0x8, Buffer.from([code >>> 8, code & 0xff]));
}
