// Over 400 lines on purpose: one encoder and one decoder for every frame of v1, side by side, so that a field
// added to one is seen missing from the other in the same screen.
import { ERROR_CODES, ProtocolError, errorCodeFromNumber } from './errors.js';
import {
  ENTRY_KINDS,
  FRAME_TYPES,
  PRESENCE_VISIBILITY,
  REF_KINDS,
  type Entry,
  type EntryKind,
  type Frame,
  type KemPrekey,
  type KeyBundleEntry,
  type Prekey,
  type SignedPrekey,
  type FrameType,
  type MessageRef,
  type PresenceVisibility,
  type RefKind,
  type ReceiptState,
} from './frames.js';
import { LIMITS } from './limits.js';
import { decodeGroupBinary, encodeGroupBinary, isGroupType } from './group-codec.js';
import * as v from './validate.js';

/**
 * Binary encoding: `type:u8` followed by the frame's fields in a fixed order.
 *   uint  = unsigned LEB128 varint, at most 8 bytes (53 bits)
 *   str   = uint byte length + UTF-8 bytes (must be valid UTF-8)
 *   bytes = uint byte length + raw bytes
 *   bool  = one byte, 0 or 1
 * A decoder rejects trailing bytes, so a frame is exactly its message.
 */

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const TYPE_BY_BYTE = new Map<number, FrameType>(
  (Object.entries(FRAME_TYPES) as [FrameType, number][]).map(([k, n]) => [n, k]),
);
const VISIBILITY_BY_BYTE = new Map<number, PresenceVisibility>(
  (Object.entries(PRESENCE_VISIBILITY) as [PresenceVisibility, number][]).map(([k, n]) => [n, k]),
);

function visibilityOf(b: number): PresenceVisibility {
  const vis = VISIBILITY_BY_BYTE.get(b);
  if (vis === undefined) throw new ProtocolError('invalid_field', `visibility: unknown value ${b}`);
  return vis;
}

const KIND_BY_BYTE = new Map<number, EntryKind>(
  (Object.entries(ENTRY_KINDS) as [EntryKind, number][]).map(([k, n]) => [n, k]),
);
const REF_BY_BYTE = new Map<number, RefKind>((Object.entries(REF_KINDS) as [RefKind, number][]).map(([k, n]) => [n, k]));

/** How a reference's target is named: a server message id in 1:1, a seq in decimal in a group (group-codec.ts). */
export type RefTarget = (msg: string, ref?: string) => string;

const messageTarget: RefTarget = (msg) => v.messageId(msg, 'ref.msg');

/** A message reference (PROTOCOL.md 9.9): `refKind:u8 msg:str`, its kind byte `b` already read. */
export function readRef(r: Reader, b: number, target: RefTarget, ref?: string): MessageRef {
  const kind = REF_BY_BYTE.get(b);
  if (kind === undefined) throw new ProtocolError('invalid_field', `ref.kind: unknown reference kind ${b}`, ref);
  return { kind, msg: target(r.str('ref.msg', LIMITS.maxMessageIdLength), ref) };
}

/**
 * The references of a deliver's (or a group_deliver's) entries: one trailing block, `refKind:u8 [msg:str]` per
 * entry (0: none), written only when an entry has one, so a frame without any is what clients written before
 * references decode (PROTOCOL.md 9.9).
 */
export function writeRefBlock(w: Writer, entries: readonly { ref?: MessageRef }[]): void {
  if (!entries.some((e) => e.ref !== undefined)) return;
  for (const e of entries) {
    w.u8(e.ref ? REF_KINDS[e.ref.kind] : 0);
    if (e.ref) w.str(e.ref.msg);
  }
}

/** The optional trailing block writeRefBlock writes, read onto the entries already decoded. */
export function readRefBlock(r: Reader, entries: { ref?: MessageRef }[], target: RefTarget): void {
  if (!r.more()) return;
  for (const e of entries) {
    const b = r.u8('ref.kind');
    if (b !== 0) e.ref = readRef(r, b, target);
  }
}

/** Key directory (PROTOCOL.md 8.9): a signed prekey is `id:uint key:bytes sig:bytes ts:uint`. */
function writeSigned(w: Writer, k: SignedPrekey): void {
  w.uint(k.id);
  w.bytes(k.key);
  w.bytes(k.sig);
  w.uint(k.ts);
}

/** `has:u8 [id:uint key:bytes sig:bytes]`: the optional last-resort KEM prekey. */
function writeKem(w: Writer, k: KemPrekey | undefined): void {
  w.bool(k !== undefined);
  if (!k) return;
  w.uint(k.id);
  w.bytes(k.key);
  w.bytes(k.sig);
}

function readSigned(r: Reader, ref: string): SignedPrekey {
  return { id: r.uint('signed.id'), key: r.bytes('signed.key', LIMITS.maxKeyBytes, ref), sig: r.bytes('signed.sig', LIMITS.maxSignatureBytes, ref), ts: r.uint('signed.ts') };
}

function readKem(r: Reader, ref: string): KemPrekey | undefined {
  if (!r.bool('lastResort')) return undefined;
  return { id: r.uint('lastResort.id'), key: r.bytes('lastResort.key', LIMITS.maxKemKeyBytes, ref), sig: r.bytes('lastResort.sig', LIMITS.maxSignatureBytes, ref) };
}

function readPrekey(r: Reader, ref: string): Prekey {
  return { id: r.uint('prekey.id'), key: r.bytes('prekey.key', LIMITS.maxKeyBytes, ref) };
}

export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  pos = 0;
  constructor(size = 64) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(n: number): void {
    this.room(1);
    this.view.setUint8(this.pos++, n);
  }
  uint(n: number): void {
    this.room(8);
    // Arithmetic instead of bit ops: JS bit ops truncate to 32 bits and sequence numbers/timestamps do not fit.
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }
  bytes(b: Uint8Array): void {
    this.uint(b.byteLength);
    this.room(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
  str(s: string): void {
    // ASCII fast path: ids are ASCII, and encodeInto avoids an intermediate allocation for the rest.
    const max = s.length * 3;
    this.room(max + 8);
    const lenPos = this.pos;
    const lenBytes = max < 0x80 ? 1 : max < 0x4000 ? 2 : 3;
    const { written } = utf8.encodeInto(s, this.buf.subarray(lenPos + lenBytes));
    // Write the length in exactly lenBytes bytes (a non-minimal LEB128 is still a valid LEB128).
    let n = written;
    for (let i = 0; i < lenBytes; i++) {
      this.buf[lenPos + i] = (n % 0x80) | (i < lenBytes - 1 ? 0x80 : 0);
      n = Math.floor(n / 0x80);
    }
    this.pos = lenPos + lenBytes + written;
  }
  bool(b: boolean): void {
    this.u8(b ? 1 : 0);
  }
  done(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

export class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array) {}
  private need(n: number, what: string): void {
    if (this.pos + n > this.buf.length) throw new ProtocolError('bad_frame', `truncated frame: ${what}`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }
  uint(what: string): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8(what);
      result += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (result > LIMITS.maxInteger) throw new ProtocolError('bad_frame', `${what}: integer too large`);
        return result;
      }
      scale *= 0x80;
    }
    throw new ProtocolError('bad_frame', `${what}: varint longer than 8 bytes`);
  }
  bytes(what: string, max: number, ref?: string): Uint8Array {
    const n = this.uint(what);
    if (n > max) throw new ProtocolError(what === 'body' ? 'frame_too_large' : 'invalid_field', `${what}: ${n} bytes exceeds ${max}`, ref);
    this.need(n, what);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  str(what: string, max: number): string {
    // max is in chars; UTF-8 needs at most 3 bytes per UTF-16 unit.
    const b = this.bytes(what, max * 3);
    try {
      return utf8Strict.decode(b);
    } catch {
      throw new ProtocolError('bad_frame', `${what}: invalid UTF-8`);
    }
  }
  bool(what: string): boolean {
    const b = this.u8(what);
    if (b > 1) throw new ProtocolError('bad_frame', `${what}: boolean must be 0 or 1`);
    return b === 1;
  }
  /** True while bytes remain: for optional trailing fields. */
  more(): boolean {
    return this.pos < this.buf.length;
  }
  end(): void {
    if (this.pos !== this.buf.length) {
      throw new ProtocolError('bad_frame', `${this.buf.length - this.pos} trailing bytes after frame`);
    }
  }
}

export function encodeBinary(f: Frame): Uint8Array {
  const w = new Writer(f.t === 'send' ? f.body.byteLength + 96 : f.t === 'keys_upload' || f.t === 'keys_bundle' ? 4096 : 64);
  w.u8(FRAME_TYPES[f.t]);
  switch (f.t) {
    case 'hello':
      w.str(f.device);
      w.uint(f.cursor);
      // Trailing fields are positional: `reads` needs `receipts` before it (0 means none).
      if (f.receipts !== undefined || f.reads !== undefined || f.features !== undefined) w.uint(f.receipts ?? 0);
      if (f.reads !== undefined || f.features !== undefined) w.uint(f.reads ?? 0);
      if (f.features !== undefined) w.uint(f.features);
      break;
    case 'welcome':
      w.str(f.user);
      w.str(f.device);
      w.uint(f.cursor);
      w.uint(f.head);
      w.uint(f.time);
      break;
    case 'send':
      w.str(f.id);
      w.str(f.to);
      w.bytes(f.body);
      // Trailing and optional: a send without a reference is byte for byte what servers before them decode.
      if (f.ref) {
        w.u8(REF_KINDS[f.ref.kind]);
        w.str(f.ref.msg);
      }
      break;
    case 'send_ack':
      w.str(f.id);
      w.str(f.msg);
      w.uint(f.ts);
      w.bool(f.dup);
      break;
    case 'deliver':
      w.uint(f.entries.length);
      for (const e of f.entries) {
        w.uint(e.seq);
        w.u8(ENTRY_KINDS[e.kind]);
        w.str(e.msg);
        w.str(e.peer);
        w.uint(e.ts);
        w.bytes(e.body);
      }
      writeRefBlock(w, f.entries);
      break;
    case 'deliver_ack':
      w.uint(f.seq);
      break;
    case 'receipts':
      w.uint(f.upTo);
      w.uint(f.items.length);
      for (const it of f.items) {
        w.str(it.peer);
        w.str(it.msg);
        w.uint(it.ts);
      }
      // Read positions follow as one trailing block, one (read, readTs) per item ("" and 0: none), so a frame
      // without any is byte for byte what clients written before read receipts decode.
      if (f.items.some((it) => it.read !== undefined)) {
        for (const it of f.items) {
          w.str(it.read ?? '');
          w.uint(it.readTs ?? 0);
        }
      }
      break;
    case 'read':
      w.str(f.conv);
      w.str(f.msg);
      break;
    case 'read_state':
      w.uint(f.upTo);
      w.uint(f.items.length);
      for (const it of f.items) {
        w.str(it.conv);
        w.str(it.msg);
        w.uint(it.ts);
      }
      break;
    case 'set_settings':
      w.bool(f.readReceipts);
      break;
    case 'settings':
      w.bool(f.readReceipts);
      if (f.presence !== undefined) w.u8(PRESENCE_VISIBILITY[f.presence]);
      break;
    case 'presence_query':
    case 'presence_subscribe':
      w.str(f.ref);
      w.uint(f.users.length);
      for (const u of f.users) w.str(u);
      break;
    case 'set_presence':
      w.u8(PRESENCE_VISIBILITY[f.visibility]);
      break;
    case 'presence':
      w.str(f.ref);
      w.uint(f.users.length);
      for (const u of f.users) {
        w.str(u.user);
        w.bool(u.online);
        w.uint(u.lastSeen);
      }
      break;
    case 'typing':
      w.str(f.conv);
      w.bool(f.on);
      break;
    case 'typing_state':
      w.str(f.conv);
      w.str(f.from);
      w.bool(f.on);
      w.uint(f.ttl);
      break;
    case 'keys_upload':
      w.str(f.ref);
      w.bytes(f.identity);
      w.bool(f.signed !== undefined);
      if (f.signed) writeSigned(w, f.signed);
      writeKem(w, f.lastResort);
      w.uint(f.prekeys.length);
      for (const k of f.prekeys) {
        w.uint(k.id);
        w.bytes(k.key);
      }
      break;
    case 'keys_state':
      w.str(f.ref);
      w.str(f.device);
      w.uint(f.count);
      w.bool(f.low);
      break;
    case 'keys_fetch':
    case 'devices_query':
      w.str(f.ref);
      w.str(f.user);
      break;
    case 'keys_bundle':
      w.str(f.ref);
      w.str(f.user);
      w.uint(f.devices.length);
      for (const e of f.devices) {
        w.str(e.device);
        w.bytes(e.identity);
        writeSigned(w, e.signed);
        writeKem(w, e.lastResort);
        w.bool(e.prekey !== undefined);
        if (e.prekey) {
          w.uint(e.prekey.id);
          w.bytes(e.prekey.key);
        }
      }
      break;
    case 'devices':
      w.str(f.ref);
      w.str(f.user);
      w.uint(f.devices.length);
      for (const d of f.devices) w.str(d);
      break;
    case 'refresh':
      w.str(f.token);
      break;
    case 'refreshed':
      w.uint(f.exp);
      break;
    case 'ping':
    case 'pong':
      break;
    case 'error':
      w.uint(ERROR_CODES[f.code]);
      w.str(f.message);
      w.str(f.ref ?? '');
      w.uint(f.retryAfter ?? 0);
      break;
    default:
      encodeGroupBinary(w, f);
  }
  return w.done();
}

export function decodeBinary(buf: Uint8Array): Frame {
  if (buf.byteLength === 0) throw new ProtocolError('bad_frame', 'empty frame');
  if (buf.byteLength > LIMITS.maxFrameBytes) {
    throw new ProtocolError('frame_too_large', `frame of ${buf.byteLength} bytes exceeds ${LIMITS.maxFrameBytes}`);
  }
  const r = new Reader(buf);
  const type = TYPE_BY_BYTE.get(r.u8('type'));
  if (type === undefined) throw new ProtocolError('unknown_type', `unknown frame type byte ${buf[0]}`);
  const id = LIMITS.maxIdLength;
  let f: Frame;
  if (isGroupType(type)) {
    f = decodeGroupBinary(r, type);
    r.end();
    return f;
  }
  switch (type) {
    case 'hello':
      f = { t: type, device: v.userId(r.str('device', id), 'device'), cursor: r.uint('cursor') };
      // Optional trailing field (added with receipts as state): older clients end the frame here.
      if (r.more()) f.receipts = r.uint('receipts');
      if (r.more()) f.reads = r.uint('reads');
      if (r.more()) f.features = r.uint('features');
      break;
    case 'welcome':
      f = {
        t: type,
        user: v.userId(r.str('user', id), 'user'),
        device: v.userId(r.str('device', id), 'device'),
        cursor: r.uint('cursor'),
        head: r.uint('head'),
        time: r.uint('time'),
      };
      break;
    case 'send': {
      const cid = v.clientId(r.str('id', id), 'id');
      f = { t: type, id: cid, to: v.userId(r.str('to', id), 'to', cid), body: r.bytes('body', LIMITS.maxBodyBytes, cid) };
      if (r.more()) f.ref = readRef(r, r.u8('ref.kind'), messageTarget, cid);
      break;
    }
    case 'send_ack':
      f = {
        t: type,
        id: v.clientId(r.str('id', id), 'id'),
        msg: v.messageId(r.str('msg', LIMITS.maxMessageIdLength), 'msg'),
        ts: r.uint('ts'),
        dup: r.bool('dup'),
      };
      break;
    case 'deliver': {
      const n = r.uint('entries');
      if (n > LIMITS.maxDeliverBatch) throw new ProtocolError('invalid_field', `entries: at most ${LIMITS.maxDeliverBatch}`);
      const entries: Entry[] = [];
      for (let i = 0; i < n; i++) {
        const seq = r.uint('seq');
        const kind = KIND_BY_BYTE.get(r.u8('kind'));
        if (kind === undefined) throw new ProtocolError('invalid_field', 'kind: unknown entry kind');
        entries.push({
          seq,
          kind,
          msg: v.messageId(r.str('msg', LIMITS.maxMessageIdLength), 'msg'),
          peer: v.userId(r.str('peer', id), 'peer'),
          ts: r.uint('ts'),
          body: r.bytes('body', LIMITS.maxBodyBytes),
        });
      }
      readRefBlock(r, entries, messageTarget);
      f = { t: type, entries };
      break;
    }
    case 'deliver_ack':
      f = { t: type, seq: r.uint('seq') };
      break;
    case 'receipts': {
      const upTo = r.uint('upTo');
      const n = r.uint('items');
      if (n > LIMITS.maxReceiptBatch) throw new ProtocolError('invalid_field', `items: at most ${LIMITS.maxReceiptBatch}`);
      const items: ReceiptState[] = [];
      for (let i = 0; i < n; i++) {
        items.push({ peer: v.userId(r.str('peer', id), 'peer'), msg: v.messageId(r.str('msg', LIMITS.maxMessageIdLength), 'msg'), ts: r.uint('ts') });
      }
      // Optional trailing block of read positions (see the encoder).
      if (r.more()) {
        for (const it of items) {
          const read = r.str('read', LIMITS.maxMessageIdLength);
          const readTs = r.uint('readTs');
          if (read === '') continue;
          it.read = v.messageId(read, 'read');
          it.readTs = readTs;
        }
      }
      f = { t: type, upTo, items };
      break;
    }
    case 'read':
      f = { t: type, conv: v.userId(r.str('conv', id), 'conv'), msg: v.messageId(r.str('msg', LIMITS.maxMessageIdLength), 'msg') };
      break;
    case 'read_state': {
      const upTo = r.uint('upTo');
      const n = r.uint('items');
      if (n > LIMITS.maxReceiptBatch) throw new ProtocolError('invalid_field', `items: at most ${LIMITS.maxReceiptBatch}`);
      const items = [];
      for (let i = 0; i < n; i++) {
        items.push({ conv: v.userId(r.str('conv', id), 'conv'), msg: v.messageId(r.str('msg', LIMITS.maxMessageIdLength), 'msg'), ts: r.uint('ts') });
      }
      f = { t: type, upTo, items };
      break;
    }
    case 'set_settings':
      f = { t: type, readReceipts: r.bool('readReceipts') };
      break;
    case 'settings': {
      f = { t: type, readReceipts: r.bool('readReceipts') };
      // Optional trailing field (added with presence settings); older servers end the frame here.
      if (r.more()) f.presence = visibilityOf(r.u8('presence'));
      break;
    }
    case 'presence_query':
    case 'presence_subscribe': {
      // The same shape; a subscription may name more users than a one-off query.
      const max = type === 'presence_query' ? LIMITS.maxPresenceUsers : LIMITS.maxPresenceSubscriptions;
      const ref = v.clientId(r.str('ref', id), 'ref');
      const n = r.uint('users');
      if (n > max) throw new ProtocolError('invalid_field', `users: at most ${max}`, ref);
      const users: string[] = [];
      for (let i = 0; i < n; i++) users.push(v.userId(r.str('user', id), 'users[]', ref));
      f = { t: type, ref, users };
      break;
    }
    case 'set_presence': {
      f = { t: type, visibility: visibilityOf(r.u8('visibility')) };
      break;
    }
    case 'presence': {
      const ref = v.clientId(r.str('ref', id), 'ref');
      const n = r.uint('users');
      if (n > LIMITS.maxPresenceUsers) throw new ProtocolError('invalid_field', `users: at most ${LIMITS.maxPresenceUsers}`);
      const users = [];
      for (let i = 0; i < n; i++) {
        users.push({ user: v.userId(r.str('user', id), 'user'), online: r.bool('online'), lastSeen: r.uint('lastSeen') });
      }
      f = { t: type, ref, users };
      break;
    }
    case 'typing':
      f = { t: type, conv: v.userId(r.str('conv', id), 'conv'), on: r.bool('on') };
      break;
    case 'typing_state':
      f = { t: type, conv: v.userId(r.str('conv', id), 'conv'), from: v.userId(r.str('from', id), 'from'), on: r.bool('on'), ttl: r.uint('ttl') };
      break;
    case 'keys_upload': {
      const ref = v.clientId(r.str('ref', id), 'ref');
      const identity = r.bytes('identity', LIMITS.maxKeyBytes, ref);
      const signed = r.bool('signed') ? readSigned(r, ref) : undefined;
      const lastResort = readKem(r, ref);
      const n = r.uint('prekeys');
      if (n > LIMITS.maxPrekeysPerUpload) throw new ProtocolError('invalid_field', `prekeys: at most ${LIMITS.maxPrekeysPerUpload}`, ref);
      const prekeys: Prekey[] = [];
      for (let i = 0; i < n; i++) prekeys.push(readPrekey(r, ref));
      f = { t: type, ref, identity, prekeys, ...(signed && { signed }), ...(lastResort && { lastResort }) };
      break;
    }
    case 'keys_state': {
      const ref = r.str('ref', id);
      f = { t: type, ref: ref === '' ? '' : v.clientId(ref, 'ref'), device: v.userId(r.str('device', id), 'device'), count: r.uint('count'), low: r.bool('low') };
      break;
    }
    case 'keys_fetch':
    case 'devices_query': {
      const ref = v.clientId(r.str('ref', id), 'ref');
      f = { t: type, ref, user: v.userId(r.str('user', id), 'user', ref) };
      break;
    }
    case 'keys_bundle': {
      const ref = v.clientId(r.str('ref', id), 'ref');
      const user = v.userId(r.str('user', id), 'user');
      const n = r.uint('devices');
      if (n > LIMITS.maxKeyDevices) throw new ProtocolError('invalid_field', `devices: at most ${LIMITS.maxKeyDevices}`);
      const devices: KeyBundleEntry[] = [];
      for (let i = 0; i < n; i++) {
        const device = v.userId(r.str('device', id), 'device');
        const identity = r.bytes('identity', LIMITS.maxKeyBytes, ref);
        const signed = readSigned(r, ref);
        const lastResort = readKem(r, ref);
        const prekey = r.bool('prekey') ? readPrekey(r, ref) : undefined;
        devices.push({ device, identity, signed, ...(lastResort && { lastResort }), ...(prekey && { prekey }) });
      }
      f = { t: type, ref, user, devices };
      break;
    }
    case 'devices': {
      const ref = v.clientId(r.str('ref', id), 'ref');
      const user = v.userId(r.str('user', id), 'user');
      const n = r.uint('devices');
      if (n > LIMITS.maxKeyDevices) throw new ProtocolError('invalid_field', `devices: at most ${LIMITS.maxKeyDevices}`);
      const devices: string[] = [];
      for (let i = 0; i < n; i++) devices.push(v.userId(r.str('device', id), 'devices[]'));
      f = { t: type, ref, user, devices };
      break;
    }
    case 'refresh':
      f = { t: type, token: r.str('token', LIMITS.maxTokenLength) };
      break;
    case 'refreshed':
      f = { t: type, exp: r.uint('exp') };
      break;
    case 'ping':
    case 'pong':
      f = { t: type };
      break;
    case 'error': {
      const n = r.uint('code');
      const code = errorCodeFromNumber(n);
      if (code === undefined) throw new ProtocolError('invalid_field', `code: unknown error code ${n}`);
      // str() bounds bytes (3 per char); the limit itself is in chars, as in JSON.
      const message = v.text(r.str('message', LIMITS.maxErrorMessageLength), 'message', LIMITS.maxErrorMessageLength);
      const ref = r.str('ref', id);
      const retryAfter = r.uint('retryAfter');
      f = { t: type, code, message };
      if (ref !== '') f.ref = v.clientId(ref, 'ref');
      if (retryAfter > 0) f.retryAfter = retryAfter;
      break;
    }
  }
  r.end();
  return f;
}
