import { V1_ERRORS, type V1ErrorReason } from './errors.js';
import { Bad, Cursor, NeedMore, text } from './cursor.js';
import { MAX_LOGIN, loginComplete } from './login.js';

/**
 * The wire format of the Erlang Iris ("v1", src/iris_proto.erl of jdiitm/project_iris), as a streaming decoder of
 * client packets and encoders of server packets. Big-endian lengths throughout. Layouts (docs/IRIS-V1.md has the
 * full table with each opcode's status here):
 *
 *   0x01 LOGIN        user | user:jwt                         (no length: see "LOGIN" below)
 *   0x02 SEND         tlen:16 target mlen:16 msg
 *   0x03 ACK          id                                      (no length: the 16-byte id this gateway issued)
 *   0x04 BATCH        tlen:16 target blen:32 blob             (blob = repeated len:16 msg)
 *   0x05 GET_STATUS   tlen:16 target
 *   0x07 SEND_SEQ     tlen:16 target seq:64 mlen:16 msg
 *   0x10 CBOR_MSG     tlen:16 target clen:32 cbor             (server -> client 0x10 is RELIABLE_MSG)
 *   0x20 UPLOAD_PREKEYS blen:32 cbor      0x21 FETCH_PREKEYS ulen:16 user      0x22 PREKEY_RESPONSE blen:32 cbor
 *   0x23 E2EE_MSG     rlen:16 recipient hlen:16 header clen:32 cipher      (0x24 E2EE_DELIVERY: the same with sender)
 *   0x30 GROUP_CREATE nlen:16 name       0x31 GROUP_JOIN glen:16 g ulen:16 user      0x32 GROUP_LEAVE glen:16 g
 *   0x33 GROUP_MSG    glen:16 g hlen:16 header clen:32 cipher      0x35 GROUP_ROSTER glen:16 g
 *   0x36 SENDER_KEY   glen:16 g klen:32 key
 *   0x70 TYPING_START tlen:16 target     0x71 TYPING_STOP tlen:16 target
 *   0x74 READ_RECEIPT ilen:16 id slen:16 sender
 *
 * LOGIN and ACK carry no length; the Erlang server took "the rest of the read" for them, so a SEND that arrived in
 * the same TCP segment as a LOGIN became part of the user name. Here LOGIN ends at the first byte that cannot be
 * part of `user` or `user:jwt` (ids are [A-Za-z0-9._@+=-], JWTs base64url and dots), or at the end of the read if
 * none comes; ACK is exactly ACK_ID_BYTES long, since every id a client can ack was issued by this gateway at that
 * length. docs/IRIS-V1.md "LOGIN and ACK" says what this means for a client.
 */

export const OP = {
  login: 0x01,
  send: 0x02,
  ack: 0x03,
  batch: 0x04,
  getStatus: 0x05,
  status: 0x06,
  sendSeq: 0x07,
  reliable: 0x10,
  uploadPrekeys: 0x20,
  fetchPrekeys: 0x21,
  prekeyResponse: 0x22,
  e2eeMsg: 0x23,
  e2eeDelivery: 0x24,
  groupCreate: 0x30,
  groupJoin: 0x31,
  groupLeave: 0x32,
  groupMsg: 0x33,
  groupRoster: 0x35,
  senderKey: 0x36,
  typingStart: 0x70,
  typingStop: 0x71,
  typingRelay: 0x72,
  readReceipt: 0x74,
  readReceiptRelay: 0x75,
  error: 0xfe,
  rateLimited: 0xff,
} as const;

/** The Erlang server's limits (iris_proto.erl), kept: a client that worked there fits here. */
export const V1_LIMITS = {
  maxUser: 256,
  maxTarget: 256,
  maxMsg: 65536,
  maxBatch: 1048576,
  maxBatchCount: 1000,
  maxMsgId: 64,
  maxCbor: 262144,
  maxKeyBundle: 8192,
  maxE2eeHeader: 1024,
  maxE2eeCipher: 65536,
} as const;

/** Length of every message id this gateway issues (16 lowercase hex digits of the inbox sequence number). */
export const ACK_ID_BYTES = 16;

export type V1Packet =
  | { op: 'login'; user: string; token?: string }
  | { op: 'send'; target: string; body: Uint8Array }
  | { op: 'ack'; id: string }
  | { op: 'batch'; target: string; bodies: Uint8Array[] }
  | { op: 'get_status'; target: string }
  | { op: 'send_seq'; target: string; seq: bigint; body: Uint8Array }
  | { op: 'cbor_msg'; target: string; cbor: Uint8Array }
  | { op: 'upload_prekeys'; bundle: Uint8Array }
  | { op: 'fetch_prekeys'; user: string }
  | { op: 'e2ee_msg'; recipient: string; header: Uint8Array; cipher: Uint8Array }
  | { op: 'group_create'; name: string }
  | { op: 'group_leave'; group: string }
  | { op: 'group_msg'; group: string; header: Uint8Array; cipher: Uint8Array }
  | { op: 'group_roster'; group: string }
  | { op: 'sender_key'; group: string; key: Uint8Array }
  | { op: 'typing'; target: string; on: boolean }
  | { op: 'read_receipt'; id: string; sender: string }
  /** A packet only a server sends (0x06, 0x22, 0x24, 0x31): well-formed, but not something a client may say. */
  | { op: 'server_only'; code: number };

/** What the decoder yields: a packet, or an error. A fatal error leaves the stream unreadable (no length to skip by). */
export type Decoded = { ok: true; packet: V1Packet } | { ok: false; reason: V1ErrorReason; fatal: boolean };

/** Bytes of `user:jwt` (ID_PATTERN, base64url, dots, the colon): a LOGIN ends at the first byte outside it. */
function isLoginByte(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2e || b === 0x5f || b === 0x40 || b === 0x2b || b === 0x3d || b === 0x2d || b === 0x3a;
}

function unpackBatch(blob: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i + 2 <= blob.length) {
    const n = (blob[i]! << 8) | blob[i + 1]!;
    if (i + 2 + n > blob.length) break; // The Erlang server ignored trailing garbage; so does this.
    if (out.length >= V1_LIMITS.maxBatchCount) throw new Bad('batch_too_large');
    out.push(blob.slice(i + 2, i + 2 + n));
    i += 2 + n;
  }
  return out;
}

/** One length-prefixed packet (every opcode but LOGIN and ACK). */
function lengthPrefixed(c: Cursor, op: number): V1Packet {
  const L = V1_LIMITS;
  switch (op) {
    case OP.send: {
      const target = c.str16(L.maxTarget, 'target_too_long');
      return { op: 'send', target, body: c.bytes16(L.maxMsg, 'message_too_long') };
    }
    case OP.batch: {
      const target = c.str16(L.maxTarget, 'target_too_long');
      return { op: 'batch', target, bodies: unpackBatch(c.bytes32(L.maxBatch, 'batch_too_large')) };
    }
    case OP.getStatus:
      return { op: 'get_status', target: c.str16(L.maxTarget, 'target_too_long') };
    case OP.sendSeq: {
      const target = c.str16(L.maxTarget, 'target_too_long');
      const seq = c.u64();
      return { op: 'send_seq', target, seq, body: c.bytes16(L.maxMsg, 'message_too_long') };
    }
    case OP.reliable: {
      const target = c.str16(L.maxTarget, 'target_too_long');
      return { op: 'cbor_msg', target, cbor: c.bytes32(L.maxCbor, 'cbor_too_large') };
    }
    case OP.uploadPrekeys:
      return { op: 'upload_prekeys', bundle: c.bytes32(L.maxKeyBundle, 'keybundle_too_large') };
    case OP.fetchPrekeys:
      return { op: 'fetch_prekeys', user: c.str16(L.maxUser, 'username_too_long') };
    case OP.prekeyResponse:
      c.bytes32(L.maxKeyBundle, 'keybundle_too_large');
      return { op: 'server_only', code: op };
    case OP.e2eeMsg:
    case OP.e2eeDelivery: {
      const who = c.str16(L.maxTarget, 'recipient_too_long');
      const header = c.bytes16(L.maxE2eeHeader, 'e2ee_header_too_large');
      const cipher = c.bytes32(L.maxE2eeCipher, 'e2ee_ciphertext_too_large');
      return op === OP.e2eeMsg ? { op: 'e2ee_msg', recipient: who, header, cipher } : { op: 'server_only', code: op };
    }
    case OP.groupCreate:
      return { op: 'group_create', name: c.str16(L.maxTarget, 'group_name_too_long') };
    case OP.groupJoin:
      c.str16(L.maxTarget, 'group_id_too_long');
      c.str16(L.maxUser, 'username_too_long');
      return { op: 'server_only', code: op };
    case OP.groupLeave:
      return { op: 'group_leave', group: c.str16(L.maxTarget, 'group_id_too_long') };
    case OP.groupMsg: {
      const group = c.str16(L.maxTarget, 'group_id_too_long');
      const header = c.bytes16(L.maxE2eeHeader, 'group_header_too_large');
      return { op: 'group_msg', group, header, cipher: c.bytes32(L.maxE2eeCipher, 'group_ciphertext_too_large') };
    }
    case OP.groupRoster:
      return { op: 'group_roster', group: c.str16(L.maxTarget, 'group_id_too_long') };
    case OP.senderKey: {
      const group = c.str16(L.maxTarget, 'group_id_too_long');
      return { op: 'sender_key', group, key: c.bytes32(L.maxKeyBundle, 'sender_key_too_large') };
    }
    case OP.typingStart:
    case OP.typingStop:
      return { op: 'typing', target: c.str16(L.maxTarget, 'target_too_long'), on: op === OP.typingStart };
    case OP.readReceipt: {
      const id = c.str16(L.maxMsgId, 'msgid_too_long');
      return { op: 'read_receipt', id, sender: c.str16(L.maxTarget, 'target_too_long') };
    }
    default:
      throw new Bad('unknown_packet');
  }
}

/**
 * Streaming decoder of one connection's client packets. `push(chunk)` takes one read (a TCP 'data' event, or one
 * WebSocket message) and returns every packet it completes, in order; a packet split across reads is kept until
 * it is whole, however many reads it takes. The end of a read matters only to LOGIN (see the file comment).
 * After a fatal error the decoder yields nothing more: the caller answers and closes.
 */
/** The one empty buffer every idle decoder holds (a fresh Uint8Array(0) is ~200 bytes of heap per connection). */
const EMPTY = new Uint8Array(0);

export class V1Decoder {
  private buf: Uint8Array = EMPTY;
  private dead = false;
  /** A LOGIN is held at the end of the buffer, waiting for its end (see `stream`). */
  loginOpen = false;

  constructor(
    private readonly maxBuffered = V1_LIMITS.maxBatch + 1024,
    /**
     * A byte stream (TCP): a LOGIN that reaches the end of a read without a terminating byte is not ended there
     * unless its token is complete (loginComplete); it is held, and ends with the next byte outside user:jwt or
     * with flushLogin (the link calls it when the client has been quiet: the old rule, "the rest of the read", for
     * a client that sent its LOGIN alone). So a LOGIN split across reads is read whole. Without it (one WebSocket
     * message, the unit tests of the old rule) a LOGIN ends with its read.
     */
    private readonly stream = false,
  ) {}

  /** Ends a held LOGIN where the bytes stop (the client went quiet) and decodes on from there. */
  flushLogin(untilLogin = false): Decoded[] {
    if (!this.loginOpen) return [];
    const held = this.buf;
    this.buf = EMPTY;
    this.loginOpen = false;
    return this.push(held, untilLogin, true);
  }

  /** Bytes held for a packet not yet complete. */
  get pending(): number {
    return this.buf.length;
  }

  /** What is held and not decoded (handed to the owner with the socket). */
  take(): Uint8Array {
    const b = this.buf;
    this.buf = EMPTY;
    return b;
  }

  /**
   * Decodes one read. With `untilLogin` (a connection not logged in yet) it stops right after a LOGIN and keeps the
   * bytes behind it undecoded, so that they can travel with the socket to the worker that owns the user.
   */
  push(chunk: Uint8Array, untilLogin = false, endLoginAtRead = !this.stream): Decoded[] {
    if (this.dead) return [];
    this.loginOpen = false;
    let b: Uint8Array;
    if (this.buf.length === 0) b = chunk;
    else {
      b = new Uint8Array(this.buf.length + chunk.length);
      b.set(this.buf);
      b.set(chunk, this.buf.length);
    }
    const out: Decoded[] = [];
    let off = 0;
    while (off < b.length) {
      const op = b[off]!;
      if (op === OP.login) {
        let end = off + 1;
        while (end < b.length && isLoginByte(b[end]!)) end++;
        const data = text(b.subarray(off + 1, end));
        if (end === b.length && !endLoginAtRead && data.length <= MAX_LOGIN && !loginComplete(data)) {
          this.loginOpen = true;
          break;
        }
        off = end;
        if (data.length > MAX_LOGIN) out.push({ ok: false, reason: 'username_too_long', fatal: false });
        else {
          const i = data.indexOf(':');
          out.push({ ok: true, packet: i < 0 ? { op: 'login', user: data } : { op: 'login', user: data.slice(0, i), token: data.slice(i + 1) } });
        }
        if (untilLogin) break;
        continue;
      }
      if (op === OP.ack) {
        if (b.length - off < 1 + ACK_ID_BYTES) break;
        out.push({ ok: true, packet: { op: 'ack', id: text(b.subarray(off + 1, off + 1 + ACK_ID_BYTES)) } });
        off += 1 + ACK_ID_BYTES;
        continue;
      }
      const c = new Cursor(b.subarray(off));
      try {
        const packet = lengthPrefixed(c, op);
        out.push({ ok: true, packet });
        off += c.pos;
      } catch (e) {
        if (e instanceof NeedMore) break;
        if (e instanceof Bad) {
          // A length was refused or the opcode is unknown: nothing says where the next packet starts.
          this.dead = true;
          this.buf = EMPTY;
          out.push({ ok: false, reason: e.reason, fatal: true });
          return out;
        }
        throw e;
      }
    }
    this.buf = off === b.length ? EMPTY : new Uint8Array(b.subarray(off));
    if (this.buf.length > this.maxBuffered) {
      this.dead = true;
      this.buf = EMPTY;
      out.push({ ok: false, reason: 'buffer_overflow', fatal: true });
    }
    return out;
  }
}

// ---- Server -> client packets ----

const enc = new TextEncoder();

function cat(parts: (Uint8Array | number[])[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
const be16 = (n: number) => [(n >>> 8) & 0xff, n & 0xff];
const be32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
function be64(n: number): number[] {
  const hi = Math.floor(n / 2 ** 32);
  return [...be32(hi >>> 0), ...be32(n >>> 0)];
}
const s16 = (s: string | Uint8Array) => {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  return [be16(b.length), b];
};

/** LOGIN_OK: the Erlang server's exact bytes (opcode 3, then the text). */
export const LOGIN_OK = cat([[OP.ack], enc.encode('LOGIN_OK')]);
/** Sent raw (no opcode) before closing, as the Erlang server did. */
export const AUTH_FAILED = enc.encode('AUTH_FAILED');
export const RATE_LIMITED = enc.encode('RATE_LIMITED');

/** The id of the message at inbox sequence `seq`: ACK_ID_BYTES lowercase hex digits. */
export function messageId(seq: number): string {
  return seq.toString(16).padStart(ACK_ID_BYTES, '0');
}

/** The inbox sequence number an id names, or null for an id this gateway did not issue. */
export function seqOfId(id: string): number | null {
  if (id.length !== ACK_ID_BYTES || !/^[0-9a-f]+$/.test(id)) return null;
  const n = parseInt(id, 16);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export function encodeReliable(id: string, body: Uint8Array): Uint8Array {
  return cat([[OP.reliable], ...s16(id), be32(body.length), body]);
}

/** 0x06: state 1 online / 0 offline; time = last seen in seconds since epoch (0 when online or never seen). */
export function encodeStatus(user: string, online: boolean, timeSec: number): Uint8Array {
  return cat([[OP.status], ...s16(user), [online ? 1 : 0], be64(timeSec)]);
}

export function encodeTypingRelay(from: string, on: boolean): Uint8Array {
  return cat([[OP.typingRelay], ...s16(from), [on ? 1 : 0]]);
}

export function encodeReadReceiptRelay(id: string, reader: string, tsMs: number): Uint8Array {
  return cat([[OP.readReceiptRelay], ...s16(id), ...s16(reader), be64(tsMs)]);
}

/** 0x24 as the Erlang server built it for the recipient of a 0x23 (and routed as a message body). */
export function encodeE2eeDelivery(sender: string, header: Uint8Array, cipher: Uint8Array): Uint8Array {
  return cat([[OP.e2eeDelivery], ...s16(sender), ...s16(header), be32(cipher.length), cipher]);
}

/** 0xFE: len:16 reason. The reason is one of V1_ERRORS (or a core error code). */
export function encodeError(reason: string): Uint8Array {
  return cat([[OP.error], ...s16(reason)]);
}

/** 0xFF: retry after, in milliseconds (u32). */
export function encodeRateLimited(retryAfterMs: number): Uint8Array {
  return cat([[OP.rateLimited], be32(Math.max(0, Math.min(0xffffffff, Math.ceil(retryAfterMs))))]);
}

export { V1_ERRORS };
