import { ProtocolError, isErrorCode } from './errors.js';
import { ENTRY_KINDS, FRAME_TYPES, PRESENCE_VISIBILITY, REF_KINDS, type Entry, type EntryKind, type Frame, type FrameType, type KemPrekey, type KeyBundleEntry, type MessageRef, type Prekey, type SignedPrekey, type PresenceVisibility, type ReceiptState, type RefKind, type Settings } from './frames.js';
import { LIMITS } from './limits.js';
import * as v from './validate.js';
import { decodeGroupJson, groupToJson, isGroupType } from './group-codec.js';

/**
 * JSON encoding: the same frames as text WebSocket messages, for debugging with any WebSocket tool.
 * `t` names the frame type; bodies are standard base64 strings; every other field keeps its binary meaning.
 * Unknown fields are ignored (so a newer client can add optional fields), unknown types are refused.
 */

type Obj = Record<string, unknown>;

export function toBase64(b: Uint8Array): string {
  let s = '';
  // Chunked so String.fromCharCode never sees more arguments than the engine allows.
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(s: unknown, field: string, ref?: string): Uint8Array {
  if (typeof s !== 'string') throw new ProtocolError('invalid_field', `${field}: expected a base64 string`, ref);
  if (s.length > Math.ceil(LIMITS.maxBodyBytes / 3) * 4) {
    throw new ProtocolError('frame_too_large', `${field}: exceeds ${LIMITS.maxBodyBytes} bytes`, ref);
  }
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw new ProtocolError('invalid_field', `${field}: invalid base64`, ref);
  }
  // ceil(max / 3) * 4 base64 chars can still decode to up to 2 bytes more than max.
  if (bin.length > LIMITS.maxBodyBytes) {
    throw new ProtocolError('frame_too_large', `${field}: ${bin.length} bytes exceeds ${LIMITS.maxBodyBytes}`, ref);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function entryToJson(e: Entry): Obj {
  const o: Obj = { seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: toBase64(e.body) };
  if (e.ref) o['ref'] = { kind: e.ref.kind, msg: e.ref.msg };
  return o;
}

/** A message reference (PROTOCOL.md 9.9): `{"kind": "reply" | "edit" | "delete" | "react", "msg": id}`. */
function refFromJson(x: unknown, ref?: string): MessageRef {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ProtocolError('invalid_field', 'ref: expected an object', ref);
  const o = x as Obj;
  const kind = o['kind'];
  if (typeof kind !== 'string' || !Object.hasOwn(REF_KINDS, kind)) throw new ProtocolError('invalid_field', 'ref.kind: expected reply, edit, delete or react', ref);
  return { kind: kind as RefKind, msg: v.messageId(o['msg'], 'ref.msg') };
}

/** Key directory (PROTOCOL.md 8.9): keys travel as base64 strings, like bodies. */
function signedToJson(k: SignedPrekey): Obj {
  return { id: k.id, key: toBase64(k.key), sig: toBase64(k.sig), ts: k.ts };
}

function kemToJson(k: KemPrekey): Obj {
  return { id: k.id, key: toBase64(k.key), sig: toBase64(k.sig) };
}

function prekeyToJson(k: Prekey): Obj {
  return { id: k.id, key: toBase64(k.key) };
}

/** Base64 key bytes bounded by `max` (the bound of fromBase64 is a body's; this one is a key's). */
function keyBytes(x: unknown, field: string, max: number, ref: string): Uint8Array {
  if (typeof x === 'string' && x.length > Math.ceil(max / 3) * 4) throw new ProtocolError('invalid_field', `${field}: exceeds ${max} bytes`, ref);
  const b = fromBase64(x, field, ref);
  if (b.byteLength > max) throw new ProtocolError('invalid_field', `${field}: ${b.byteLength} bytes exceeds ${max}`, ref);
  return b;
}

function signedFromJson(x: unknown, ref: string): SignedPrekey {
  const o = obj(x, 'signed');
  return { id: v.uint(o['id'], 'signed.id', ref), key: keyBytes(o['key'], 'signed.key', LIMITS.maxKeyBytes, ref), sig: keyBytes(o['sig'], 'signed.sig', LIMITS.maxSignatureBytes, ref), ts: v.uint(o['ts'], 'signed.ts', ref) };
}

function kemFromJson(x: unknown, ref: string): KemPrekey {
  const o = obj(x, 'lastResort');
  return { id: v.uint(o['id'], 'lastResort.id', ref), key: keyBytes(o['key'], 'lastResort.key', LIMITS.maxKemKeyBytes, ref), sig: keyBytes(o['sig'], 'lastResort.sig', LIMITS.maxSignatureBytes, ref) };
}

function prekeyFromJson(x: unknown, ref: string): Prekey {
  const o = obj(x, 'prekey');
  return { id: v.uint(o['id'], 'prekey.id', ref), key: keyBytes(o['key'], 'prekey.key', LIMITS.maxKeyBytes, ref) };
}

function bundleEntryToJson(e: KeyBundleEntry): Obj {
  const o: Obj = { device: e.device, identity: toBase64(e.identity), signed: signedToJson(e.signed) };
  if (e.lastResort) o['lastResort'] = kemToJson(e.lastResort);
  if (e.prekey) o['prekey'] = prekeyToJson(e.prekey);
  return o;
}

export function encodeJson(f: Frame): string {
  switch (f.t) {
    case 'keys_upload': {
      const o: Obj = { t: f.t, ref: f.ref, identity: toBase64(f.identity) };
      if (f.signed) o['signed'] = signedToJson(f.signed);
      if (f.lastResort) o['lastResort'] = kemToJson(f.lastResort);
      o['prekeys'] = f.prekeys.map(prekeyToJson);
      return JSON.stringify(o);
    }
    case 'keys_bundle':
      return JSON.stringify({ t: f.t, ref: f.ref, user: f.user, devices: f.devices.map(bundleEntryToJson) });
    case 'send':
      return JSON.stringify(f.ref ? { t: f.t, id: f.id, to: f.to, body: toBase64(f.body), ref: { kind: f.ref.kind, msg: f.ref.msg } } : { t: f.t, id: f.id, to: f.to, body: toBase64(f.body) });
    case 'deliver':
      return JSON.stringify({ t: f.t, entries: f.entries.map(entryToJson) });
    default:
      return JSON.stringify(isGroupType(f.t) ? groupToJson(f as Parameters<typeof groupToJson>[0], toBase64) : f);
  }
}

function obj(x: unknown, field: string): Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) {
    throw new ProtocolError('invalid_field', `${field}: expected an object`);
  }
  return x as Obj;
}

function visibility(x: unknown): PresenceVisibility {
  if (typeof x !== 'string' || !Object.hasOwn(PRESENCE_VISIBILITY, x)) throw new ProtocolError('invalid_field', 'visibility: expected everyone, contacts or nobody');
  return x as PresenceVisibility;
}

function entryKind(x: unknown): EntryKind {
  if (typeof x !== 'string' || !Object.hasOwn(ENTRY_KINDS, x)) throw new ProtocolError('invalid_field', 'kind: unknown entry kind');
  return x as EntryKind;
}

export function decodeJson(text: string): Frame {
  if (text.length > LIMITS.maxFrameBytes) {
    throw new ProtocolError('frame_too_large', `frame of ${text.length} chars exceeds ${LIMITS.maxFrameBytes}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ProtocolError('bad_frame', 'not valid JSON');
  }
  const o = obj(parsed, 'frame');
  const t = o['t'];
  if (typeof t !== 'string') throw new ProtocolError('bad_frame', 't: missing frame type');
  if (!Object.hasOwn(FRAME_TYPES, t)) throw new ProtocolError('unknown_type', `unknown frame type "${t.slice(0, 32)}"`);
  const type = t as FrameType;
  if (isGroupType(type)) return decodeGroupJson(o, type, fromBase64);
  switch (type) {
    case 'hello': {
      const f: Frame = { t: type, device: v.userId(o['device'], 'device'), cursor: o['cursor'] === undefined ? 0 : v.uint(o['cursor'], 'cursor') };
      if (o['receipts'] !== undefined) f.receipts = v.uint(o['receipts'], 'receipts');
      if (o['reads'] !== undefined) f.reads = v.uint(o['reads'], 'reads');
      if (o['features'] !== undefined) f.features = v.uint(o['features'], 'features');
      return f;
    }
    case 'welcome':
      return {
        t: type,
        user: v.userId(o['user'], 'user'),
        device: v.userId(o['device'], 'device'),
        cursor: v.uint(o['cursor'], 'cursor'),
        head: v.uint(o['head'], 'head'),
        time: v.uint(o['time'], 'time'),
      };
    case 'send': {
      const cid = v.clientId(o['id'], 'id');
      const f: Frame = { t: type, id: cid, to: v.userId(o['to'], 'to', cid), body: fromBase64(o['body'], 'body', cid) };
      if (o['ref'] !== undefined) f.ref = refFromJson(o['ref'], cid);
      return f;
    }
    case 'send_ack':
      return {
        t: type,
        id: v.clientId(o['id'], 'id'),
        msg: v.messageId(o['msg'], 'msg'),
        ts: v.uint(o['ts'], 'ts'),
        dup: v.bool(o['dup'], 'dup'),
      };
    case 'deliver':
      return {
        t: type,
        entries: v.list(o['entries'], 'entries', LIMITS.maxDeliverBatch, (x) => {
          const e = obj(x, 'entries[]');
          const entry: Entry = {
            seq: v.uint(e['seq'], 'seq'),
            kind: entryKind(e['kind']),
            msg: v.messageId(e['msg'], 'msg'),
            peer: v.userId(e['peer'], 'peer'),
            ts: v.uint(e['ts'], 'ts'),
            body: fromBase64(e['body'], 'body'),
          };
          if (e['ref'] !== undefined) entry.ref = refFromJson(e['ref']);
          return entry;
        }),
      };
    case 'deliver_ack':
      return { t: type, seq: v.uint(o['seq'], 'seq') };
    case 'receipts':
      return {
        t: type,
        upTo: v.uint(o['upTo'], 'upTo'),
        items: v.list(o['items'], 'items', LIMITS.maxReceiptBatch, (x) => {
          const it = obj(x, 'items[]');
          const r: ReceiptState = { peer: v.userId(it['peer'], 'peer'), msg: v.messageId(it['msg'], 'msg'), ts: v.uint(it['ts'], 'ts') };
          if (it['read'] !== undefined) {
            r.read = v.messageId(it['read'], 'read');
            r.readTs = v.uint(it['readTs'], 'readTs');
          }
          return r;
        }),
      };
    case 'read':
      return { t: type, conv: v.userId(o['conv'], 'conv'), msg: v.messageId(o['msg'], 'msg') };
    case 'read_state':
      return {
        t: type,
        upTo: v.uint(o['upTo'], 'upTo'),
        items: v.list(o['items'], 'items', LIMITS.maxReceiptBatch, (x) => {
          const it = obj(x, 'items[]');
          return { conv: v.userId(it['conv'], 'conv'), msg: v.messageId(it['msg'], 'msg'), ts: v.uint(it['ts'], 'ts') };
        }),
      };
    case 'set_settings':
      return { t: type, readReceipts: v.bool(o['readReceipts'], 'readReceipts') };
    case 'settings': {
      const f: Settings = { t: type, readReceipts: v.bool(o['readReceipts'], 'readReceipts') };
      if (o['presence'] !== undefined) f.presence = visibility(o['presence']);
      return f;
    }
    case 'presence_query':
    case 'presence_subscribe': {
      // The same shape as in binary.ts; a subscription may name more users than a one-off query.
      const max = type === 'presence_query' ? LIMITS.maxPresenceUsers : LIMITS.maxPresenceSubscriptions;
      const ref = v.clientId(o['ref'], 'ref');
      return { t: type, ref, users: v.list(o['users'], 'users', max, (u) => v.userId(u, 'users[]', ref), ref) };
    }
    case 'set_presence': {
      return { t: type, visibility: visibility(o['visibility']) };
    }
    case 'presence':
      return {
        t: type,
        ref: v.clientId(o['ref'], 'ref'),
        users: v.list(o['users'], 'users', LIMITS.maxPresenceUsers, (x) => {
          const u = obj(x, 'users[]');
          return { user: v.userId(u['user'], 'user'), online: v.bool(u['online'], 'online'), lastSeen: v.uint(u['lastSeen'], 'lastSeen') };
        }),
      };
    case 'typing':
      return { t: type, conv: v.userId(o['conv'], 'conv'), on: v.bool(o['on'], 'on') };
    case 'typing_state':
      return { t: type, conv: v.userId(o['conv'], 'conv'), from: v.userId(o['from'], 'from'), on: v.bool(o['on'], 'on'), ttl: v.uint(o['ttl'], 'ttl') };
    case 'keys_upload': {
      const ref = v.clientId(o['ref'], 'ref');
      const identity = o['identity'] === undefined ? new Uint8Array(0) : keyBytes(o['identity'], 'identity', LIMITS.maxKeyBytes, ref);
      const prekeys = o['prekeys'] === undefined ? [] : v.list(o['prekeys'], 'prekeys', LIMITS.maxPrekeysPerUpload, (x) => prekeyFromJson(x, ref), ref);
      return {
        t: type,
        ref,
        identity,
        prekeys,
        ...(o['signed'] !== undefined && { signed: signedFromJson(o['signed'], ref) }),
        ...(o['lastResort'] !== undefined && { lastResort: kemFromJson(o['lastResort'], ref) }),
      };
    }
    case 'keys_state': {
      const ref = o['ref'] === undefined || o['ref'] === '' ? '' : v.clientId(o['ref'], 'ref');
      return { t: type, ref, device: v.userId(o['device'], 'device'), count: v.uint(o['count'], 'count'), low: v.bool(o['low'], 'low') };
    }
    case 'keys_fetch':
    case 'devices_query': {
      const ref = v.clientId(o['ref'], 'ref');
      return { t: type, ref, user: v.userId(o['user'], 'user', ref) };
    }
    case 'keys_bundle': {
      const ref = v.clientId(o['ref'], 'ref');
      return {
        t: type,
        ref,
        user: v.userId(o['user'], 'user'),
        devices: v.list(o['devices'], 'devices', LIMITS.maxKeyDevices, (x) => {
          const e = obj(x, 'devices[]');
          const entry: KeyBundleEntry = { device: v.userId(e['device'], 'device'), identity: keyBytes(e['identity'], 'identity', LIMITS.maxKeyBytes, ref), signed: signedFromJson(e['signed'], ref) };
          if (e['lastResort'] !== undefined) entry.lastResort = kemFromJson(e['lastResort'], ref);
          if (e['prekey'] !== undefined) entry.prekey = prekeyFromJson(e['prekey'], ref);
          return entry;
        }),
      };
    }
    case 'devices':
      return { t: type, ref: v.clientId(o['ref'], 'ref'), user: v.userId(o['user'], 'user'), devices: v.list(o['devices'], 'devices', LIMITS.maxKeyDevices, (d) => v.userId(d, 'devices[]')) };
    case 'refresh':
      return { t: type, token: v.text(o['token'], 'token', LIMITS.maxTokenLength) };
    case 'refreshed':
      return { t: type, exp: v.uint(o['exp'], 'exp') };
    case 'ping':
    case 'pong':
      return { t: type };
    case 'error': {
      const code = o['code'];
      if (typeof code !== 'string' || !isErrorCode(code)) throw new ProtocolError('invalid_field', 'code: unknown error code');
      const f: Frame = { t: type, code, message: v.text(o['message'], 'message', LIMITS.maxErrorMessageLength) };
      if (o['ref'] !== undefined) f.ref = v.clientId(o['ref'], 'ref');
      if (o['retryAfter'] !== undefined) f.retryAfter = v.uint(o['retryAfter'], 'retryAfter');
      return f;
    }
  }
  // Unreachable for a FrameType, but the JSON came from outside: keep the type system honest.
  throw new ProtocolError('unknown_type', `unknown frame type "${String(t)}"`);
}
