import { describe, expect, it } from 'vitest';
import { KEY_FRAMES } from './keys-frames.js';
import {
  ERROR_CODES,
  FRAME_TYPES,
  GROUP_CLIENT_TYPES,
  LIMITS,
  PING_TEXT,
  PONG_TEXT,
  ProtocolError,
  decodeBinary,
  decodeFrame,
  decodeJson,
  encodeBinary,
  encodeFrame,
  encodeJson,
  fromBase64,
  isClientFrame,
  isServerFrame,
  REF_KINDS,
  toBase64,
  type RefKind,
  type Entry,
  type ErrorCode,
  type Frame,
  type FrameType,
} from '../../protocol/index.js';

/** Codec round trips: every frame type, both encodings, from the smallest to the largest legal frame. */

const te = new TextEncoder();
const MAX = LIMITS.maxInteger;

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
const ID64 = 'u'.repeat(LIMITS.maxIdLength);
const USER_CHARS = 'ABCXYZabcxyz0189._@+=-';
const CLIENT_CHARS = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');

function entry(seq: number, over: Partial<Entry> = {}): Entry {
  return { seq, kind: 'message', msg: `bob:${seq}`, peer: 'bob', ts: 1_767_225_600_000 + seq, body: te.encode(`m${seq}`), ...over };
}

/** Frames named by what they exercise. Every frame type appears, most several times. */
function samples(): [string, Frame][] {
  return [
    ['hello', { t: 'hello', device: 'phone-1', cursor: 0 }],
    ['hello with a receipt version', { t: 'hello', device: 'phone-1', cursor: 12, receipts: 300 }],
    ['hello with receipt version 0', { t: 'hello', device: 'phone-1', cursor: 0, receipts: 0 }],
    ['hello, max cursor, max-length device of every allowed char', { t: 'hello', device: USER_CHARS.padEnd(64, 'z'), cursor: MAX }],
    ['welcome', { t: 'welcome', user: 'alice', device: 'phone-1', cursor: 300, head: 302, time: 1_767_225_600_000 }],
    ['welcome, zeros', { t: 'welcome', user: 'a', device: 'd', cursor: 0, head: 0, time: 0 }],
    ['welcome, max integers and ids', { t: 'welcome', user: ID64, device: ID64, cursor: MAX, head: MAX, time: MAX }],
    ['send', { t: 'send', id: 'c-1', to: 'bob', body: te.encode('hi') }],
    ['send, empty body', { t: 'send', id: 'c-2', to: 'bob', body: new Uint8Array(0) }],
    ['send, every byte value', { t: 'send', id: 'c-3', to: 'bob', body: ALL_BYTES }],
    ['send, max body', { t: 'send', id: 'c-4', to: 'bob', body: bytes(LIMITS.maxBodyBytes) }],
    ['send, UTF-8 body', { t: 'send', id: 'c-5', to: 'bob', body: te.encode('héllo 👋 世界') }],
    ['send, 64-char ids of every allowed char', { t: 'send', id: CLIENT_CHARS.slice(0, 64), to: USER_CHARS.padEnd(64, '9'), body: bytes(3) }],
    ['send, the other client id chars', { t: 'send', id: CLIENT_CHARS.slice(64), to: 'bob', body: bytes(1) }],
    ['send, 42- and 43-char ids (1- and 2-byte length prefixes)', { t: 'send', id: 'x'.repeat(43), to: 'y'.repeat(42), body: bytes(2) }],
    ['send_ack', { t: 'send_ack', id: 'c-1', msg: 'alice:7', ts: 1_767_225_601_234, dup: false }],
    ['send_ack, dup', { t: 'send_ack', id: 'c-1', msg: 'alice:7', ts: 1, dup: true }],
    ['send_ack, max-length unicode message id', { t: 'send_ack', id: '~', msg: 'é€'.repeat(LIMITS.maxMessageIdLength / 2), ts: MAX, dup: true }],
    ['send_ack, astral message id', { t: 'send_ack', id: '!', msg: '👋'.repeat(LIMITS.maxMessageIdLength / 2), ts: 0, dup: false }],
    ['deliver, empty', { t: 'deliver', entries: [] }],
    ['deliver, message and receipt', { t: 'deliver', entries: [entry(301), entry(302, { kind: 'delivered', msg: 'alice:7', body: new Uint8Array(0) })] }],
    ['deliver, max batch', { t: 'deliver', entries: Array.from({ length: LIMITS.maxDeliverBatch }, (_, i) => entry(i + 1, { body: bytes(1000, i) })) }],
    ['deliver, max body and max integers', { t: 'deliver', entries: [entry(MAX, { ts: MAX, body: bytes(LIMITS.maxBodyBytes), msg: 'm'.repeat(96), peer: ID64 })] }],
    ['deliver_ack', { t: 'deliver_ack', seq: 302 }],
    ['receipts', { t: 'receipts', upTo: 7, items: [{ peer: 'bob', msg: 'alice:7', ts: 1_767_225_606_000 }, { peer: 'carol', msg: 'alice:9', ts: 1 }] }],
    ['hello with read version', { t: 'hello', device: 'phone-1', cursor: 12, receipts: 0, reads: 9 }],
    ['receipts with read positions', { t: 'receipts', upTo: 8, items: [{ peer: 'bob', msg: 'alice:7', ts: 5, read: 'alice:7', readTs: 6 }, { peer: 'carol', msg: 'alice:9', ts: 1 }] }],
    ['read', { t: 'read', conv: 'bob', msg: 'bob:12' }],
    ['read, longest ids', { t: 'read', conv: ID64, msg: 'm'.repeat(96) }],
    ['read_state', { t: 'read_state', upTo: 3, items: [{ conv: 'bob', msg: 'bob:12', ts: 7 }] }],
    ['read_state, max batch', { t: 'read_state', upTo: MAX, items: Array.from({ length: LIMITS.maxReceiptBatch }, (_, i) => ({ conv: ID64, msg: 'm'.repeat(96), ts: MAX - i })) }],
    ['set_settings', { t: 'set_settings', readReceipts: false }],
    ['settings', { t: 'settings', readReceipts: true }],
    ['settings with presence', { t: 'settings', readReceipts: false, presence: 'nobody' }],
    ['receipts, empty', { t: 'receipts', upTo: 0, items: [] }],
    ['receipts, max batch and integers', { t: 'receipts', upTo: MAX, items: Array.from({ length: LIMITS.maxReceiptBatch }, (_, i) => ({ peer: ID64, msg: 'm'.repeat(96), ts: MAX - i })) }],
    ['deliver_ack, 0', { t: 'deliver_ack', seq: 0 }],
    ['deliver_ack, max', { t: 'deliver_ack', seq: MAX }],
    ['presence_query', { t: 'presence_query', ref: 'q1', users: ['bob', 'carol'] }],
    ['presence_query, empty', { t: 'presence_query', ref: 'q', users: [] }],
    ['presence_subscribe', { t: 'presence_subscribe', ref: 's1', users: ['bob', 'carol'] }],
    ['presence_subscribe, empty', { t: 'presence_subscribe', ref: 's', users: [] }],
    ['presence_subscribe, max users', { t: 'presence_subscribe', ref: 's', users: Array.from({ length: LIMITS.maxPresenceSubscriptions }, (_, i) => `user-${i}`.padEnd(64, '.')) }],
    ['set_presence everyone', { t: 'set_presence', visibility: 'everyone' }],
    ['set_presence contacts', { t: 'set_presence', visibility: 'contacts' }],
    ['set_presence nobody', { t: 'set_presence', visibility: 'nobody' }],
    ['typing on', { t: 'typing', conv: 'bob', on: true }],
    ['typing off, longest id', { t: 'typing', conv: ID64, on: false }],
    ['typing_state on', { t: 'typing_state', conv: 'alice', from: 'alice', on: true, ttl: 5000 }],
    ['typing_state off, longest ids, max ttl', { t: 'typing_state', conv: ID64, from: USER_CHARS.padEnd(64, 'q'), on: false, ttl: MAX }],
    ['refresh', { t: 'refresh', token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig' }],
    ['refresh, longest token', { t: 'refresh', token: 'x'.repeat(LIMITS.maxTokenLength) }],
    ['refreshed', { t: 'refreshed', exp: 1_767_225_600 }],
    ['refreshed, no exp', { t: 'refreshed', exp: 0 }],
    ['presence_query, max users', { t: 'presence_query', ref: CLIENT_CHARS.slice(0, 64), users: Array.from({ length: LIMITS.maxPresenceUsers }, (_, i) => `user-${i}`.padEnd(64, '.')) }],
    ['presence', { t: 'presence', ref: 'q1', users: [{ user: 'bob', online: true, lastSeen: 1_767_225_609_000 }, { user: 'carol', online: false, lastSeen: 0 }] }],
    ['presence, empty', { t: 'presence', ref: 'q', users: [] }],
    ['presence, max users', { t: 'presence', ref: 'r', users: Array.from({ length: LIMITS.maxPresenceUsers }, (_, i) => ({ user: `u${i}`, online: i % 2 === 0, lastSeen: MAX - i })) }],
    ['ping', { t: 'ping' }],
    ['pong', { t: 'pong' }],
    ['error', { t: 'error', code: 'bad_frame', message: 'empty frame' }],
    ['error, ref and retryAfter', { t: 'error', code: 'rate_limited', message: 'send rate exceeded', ref: 'c-9', retryAfter: 120 }],
    ['error, empty message', { t: 'error', code: 'internal', message: '' }],
    ['error, max unicode message, max ref, max retryAfter', { t: 'error', code: 'unavailable', message: '€'.repeat(LIMITS.maxErrorMessageLength), ref: CLIENT_CHARS.slice(30, 94), retryAfter: MAX }],
    ['group_create', { t: 'group_create', id: 'g-1', group: 'team', name: 'The team ☕', members: ['bob', 'carol'] }],
    ['group_create, max members', { t: 'group_create', id: 'g-2', group: ID64, name: 'n'.repeat(LIMITS.maxGroupNameLength), members: Array.from({ length: LIMITS.maxGroupBatch }, (_, i) => `user-${i}`.padEnd(64, '.')) }],
    ['group_add', { t: 'group_add', id: 'g-3', group: 'team', members: ['dave'] }],
    ['group_remove', { t: 'group_remove', id: 'g-4', group: 'team', member: 'dave' }],
    ['group_leave', { t: 'group_leave', id: 'g-5', group: 'team' }],
    ['group_role', { t: 'group_role', id: 'g-6', group: 'team', member: 'bob', admin: true }],
    ['group_update', { t: 'group_update', id: 'g-7', group: 'team', name: '', meta: bytes(LIMITS.maxGroupMetaBytes) }],
    ['group_roster_query', { t: 'group_roster_query', ref: 'r-1', group: 'team' }],
    ['group_send', { t: 'group_send', id: 'g-8', group: 'team', body: ALL_BYTES }],
    ['group_send, max body', { t: 'group_send', id: 'g-9', group: 'team', body: bytes(LIMITS.maxBodyBytes) }],
    ['group_ack', { t: 'group_ack', group: 'team', seq: MAX }],
    ['group_ack with read', { t: 'group_ack', group: 'team', seq: 9, read: 0 }],
    ['group_receipts_query', { t: 'group_receipts_query', ref: 'q', group: 'team', seq: MAX }],
    ['group_receipts', { t: 'group_receipts', ref: 'q', group: 'team', seq: 3, members: [{ user: 'a', state: 'sent' }, { user: 'b', state: 'delivered' }, { user: 'c', state: 'read' }], done: true }],
    ['group_receipts, a full page', { t: 'group_receipts', ref: 'q', group: ID64, seq: 0, members: Array.from({ length: LIMITS.maxGroupBatch }, (_, i) => ({ user: `user-${i}`.padEnd(64, '.'), state: 'read' as const })), done: false }],
    ['group_read', { t: 'group_read', group: 'team', seq: 4 }],
    ['group_send_ack', { t: 'group_send_ack', id: 'g-8', group: 'team', seq: 42, ts: 1_767_225_600_000, dup: true }],
    ['group_deliver', { t: 'group_deliver', group: 'team', entries: [
      { seq: 1, kind: 'create', from: 'alice', subject: 'alice', name: 'The team', ts: 5, body: new Uint8Array(0) },
      { seq: 2, kind: 'join', from: 'alice', subject: 'bob', name: '', ts: 6, body: new Uint8Array(0) },
      { seq: 3, kind: 'message', from: 'bob', subject: '', name: '', ts: 7, body: te.encode('hi') },
      { seq: 4, kind: 'role', from: 'alice', subject: 'bob', name: '', ts: 8, body: Uint8Array.of(1) },
      { seq: 5, kind: 'update', from: 'bob', subject: '', name: 'Team', ts: 9, body: Uint8Array.of(1, 2) },
      { seq: MAX, kind: 'leave', from: 'bob', subject: 'bob', name: '', ts: MAX, body: new Uint8Array(0) },
    ] }],
    ['group_deliver, empty', { t: 'group_deliver', group: 'team', entries: [] }],
    ['group_roster', { t: 'group_roster', ref: 'r-1', group: 'team', name: 'Team', meta: Uint8Array.of(1), seq: 9, members: [{ user: 'alice', admin: true }, { user: 'bob', admin: false }], done: true }],
    ['group_roster, a full page', { t: 'group_roster', ref: 'r-2', group: ID64, name: '', meta: new Uint8Array(0), seq: 0, members: Array.from({ length: LIMITS.maxGroupBatch }, (_, i) => ({ user: `user-${i}`.padEnd(64, '.'), admin: i === 0 })), done: false }],
    ...(Object.keys(ERROR_CODES) as ErrorCode[]).map((code): [string, Frame] => [`error, code ${code}`, { t: 'error', code, message: code }]),
    // Message references (PROTOCOL.md 9.9): hello.features, send.ref, entry refs (a trailing block), every kind.
    ['hello with features', { t: 'hello', device: 'phone-1', cursor: 3, receipts: 0, reads: 0, features: 1 }],
    ...(Object.keys(REF_KINDS) as RefKind[]).map((kind): [string, Frame] => [`send with a ${kind} reference`, { t: 'send', id: `r-${kind}`, to: 'bob', body: te.encode(kind), ref: { kind, msg: 'bob:12' } }]),
    ['send, max body and a max-length unicode reference', { t: 'send', id: 'r', to: 'bob', body: bytes(LIMITS.maxBodyBytes), ref: { kind: 'edit', msg: 'é€'.repeat(LIMITS.maxMessageIdLength / 2) } }],
    ['deliver with references on some entries', { t: 'deliver', entries: [entry(1), entry(2, { ref: { kind: 'react', msg: 'alice:1' } }), entry(3, { ref: { kind: 'delete', msg: 'bob:2' }, body: new Uint8Array(0) }), entry(4)] }],
    // The key directory (PROTOCOL.md 8.9).
    ...KEY_FRAMES,
    ['deliver, max batch, every entry with a reference', { t: 'deliver', entries: Array.from({ length: LIMITS.maxDeliverBatch }, (_, i) => entry(i + 1, { ref: { kind: 'reply', msg: 'm'.repeat(96) } })) }],
  ];
}

describe('codec round trips', () => {
  const all = samples();

  it('covers every frame type', () => {
    const seen = new Set(all.map(([, f]) => f.t));
    expect([...seen].sort()).toEqual((Object.keys(FRAME_TYPES) as FrameType[]).sort());
  });

  it.each(all)('binary: %s', (_name, f) => {
    const b = encodeBinary(f);
    expect(b[0]).toBe(FRAME_TYPES[f.t]);
    expect(b.byteLength).toBeLessThanOrEqual(LIMITS.maxFrameBytes);
    expect(decodeBinary(b)).toEqual(f);
    // A decoded frame encodes to the very same bytes.
    expect(encodeBinary(decodeBinary(b))).toEqual(b);
  });

  it.each(all)('JSON: %s', (_name, f) => {
    const s = encodeJson(f);
    expect(s.length).toBeLessThanOrEqual(LIMITS.maxFrameBytes);
    expect(JSON.parse(s)).toMatchObject({ t: f.t });
    expect(decodeJson(s)).toEqual(f);
    expect(encodeJson(decodeJson(s))).toBe(s);
  });

  it.each(all)('both encodings carry the same frame: %s', (_name, f) => {
    expect(decodeJson(encodeJson(f))).toEqual(decodeBinary(encodeBinary(f)));
    expect(decodeFrame(encodeFrame(f, 'json'))).toEqual(decodeFrame(encodeFrame(f, 'binary')));
  });

  it('encodeFrame picks the encoding, decodeFrame dispatches on the message type', () => {
    const f: Frame = { t: 'deliver_ack', seq: 9 };
    expect(typeof encodeFrame(f, 'json')).toBe('string');
    expect(encodeFrame(f, 'binary')).toBeInstanceOf(Uint8Array);
    const b = encodeBinary(f);
    const ab = new ArrayBuffer(b.byteLength);
    new Uint8Array(ab).set(b);
    expect(decodeFrame(ab)).toEqual(f);
    expect(decodeFrame(Buffer.from(b))).toEqual(f);
    expect(decodeFrame(new DataView(ab))).toEqual(f);
    // A view into the middle of a larger buffer decodes only its own bytes.
    const big = new Uint8Array([0xff, ...b, 0xff]);
    expect(decodeFrame(big.subarray(1, 1 + b.length))).toEqual(f);
    expect(decodeFrame(encodeJson(f))).toEqual(f);
    expect(() => decodeFrame(42 as unknown as string)).toThrow(ProtocolError);
  });

  it('JSON bodies are standard padded base64', () => {
    expect(encodeJson({ t: 'send', id: 'c', to: 'b', body: te.encode('hi') })).toBe('{"t":"send","id":"c","to":"b","body":"aGk="}');
    expect(encodeJson({ t: 'send', id: 'c', to: 'b', body: Uint8Array.from([0xfb, 0xff]) })).toContain('"body":"+/8="');
    for (let n = 0; n <= 20; n++) {
      const b = bytes(n, n + 7);
      expect(toBase64(b)).toBe(Buffer.from(b).toString('base64'));
      expect(fromBase64(toBase64(b), 'body')).toEqual(b);
    }
  });

  it('the exact ping and pong texts are the JSON encoding of ping and pong', () => {
    expect(encodeJson({ t: 'ping' })).toBe(PING_TEXT);
    expect(encodeJson({ t: 'pong' })).toBe(PONG_TEXT);
    expect(decodeJson(PING_TEXT)).toEqual({ t: 'ping' });
    expect(decodeJson(PONG_TEXT)).toEqual({ t: 'pong' });
  });

  it('client and server frames partition the frame types', () => {
    for (const [, f] of all) expect(isClientFrame(f)).toBe(!isServerFrame(f));
    const client = all.filter(([, f]) => isClientFrame(f)).map(([, f]) => f.t);
    expect([...new Set(client)].sort()).toEqual(['deliver_ack', 'devices_query', 'hello', 'keys_fetch', 'keys_upload', 'ping', 'presence_query', 'presence_subscribe', 'read', 'refresh', 'send', 'set_presence', 'set_settings', 'typing', ...GROUP_CLIENT_TYPES].sort());
  });
});

describe('binary details', () => {
  it('writes varints as unsigned LEB128', () => {
    const cases: [number, string][] = [
      [0, '00'],
      [1, '01'],
      [127, '7f'],
      [128, '8001'],
      [300, 'ac02'],
      [16383, 'ff7f'],
      [16384, '808001'],
      [2 ** 32, '8080808010'],
      [MAX, 'ffffffffffffff0f'],
    ];
    for (const [n, hex] of cases) {
      expect(Buffer.from(encodeBinary({ t: 'deliver_ack', seq: n })).toString('hex')).toBe(`06${hex}`);
      expect(decodeBinary(Buffer.from(`06${hex}`, 'hex'))).toEqual({ t: 'deliver_ack', seq: n });
    }
  });

  it('accepts non-minimal varints up to 8 bytes', () => {
    expect(decodeBinary(Buffer.from('068100', 'hex'))).toEqual({ t: 'deliver_ack', seq: 1 });
    expect(decodeBinary(Buffer.from('0680808080808080' + '00', 'hex'))).toEqual({ t: 'deliver_ack', seq: 0 });
    // A 2-byte padded string length, as the reference encoder writes for long strings.
    expect(decodeBinary(Buffer.from('0b01810061' + '00' + '00', 'hex'))).toEqual({ t: 'error', code: 'bad_frame', message: 'a' });
  });

  it('pads the length prefix of strings of 43+ UTF-16 units to 2 bytes', () => {
    const enc = (id: string) => Buffer.from(encodeBinary({ t: 'send', id, to: 'b', body: new Uint8Array(0) })).toString('hex');
    expect(enc('x'.repeat(42)).slice(2, 4)).toBe('2a');
    expect(enc('x'.repeat(43)).slice(2, 6)).toBe('ab00');
  });

  it('the error frame writes absent ref and retryAfter as "" and 0, and reads them back as absent', () => {
    const b = encodeBinary({ t: 'error', code: 'bad_frame', message: 'm' });
    expect(Buffer.from(b).toString('hex')).toBe('0b01016d0000');
    expect(decodeBinary(b)).toEqual({ t: 'error', code: 'bad_frame', message: 'm' });
    expect('ref' in decodeBinary(b)).toBe(false);
    // retryAfter 0 is "no wait" in both encodings; binary cannot tell it from absent.
    expect(decodeBinary(encodeBinary({ t: 'error', code: 'bad_frame', message: 'm', retryAfter: 0 }))).toEqual({ t: 'error', code: 'bad_frame', message: 'm' });
  });

  it('a lone surrogate in a message id or error message reads the same in both encodings', () => {
    // UTF-8 cannot carry a lone surrogate, so binary turns it into U+FFFD; JSON must not keep what binary cannot.
    // (The server can produce one: its error messages cut client input at a UTF-16 length.)
    const frames: Frame[] = [
      { t: 'send_ack', id: 'c', msg: 'a:\ud83d', ts: 1, dup: false },
      { t: 'error', code: 'unknown_type', message: `unknown frame type "${'x'.repeat(31)}\ud83d"` },
    ];
    for (const f of frames) expect(decodeJson(encodeJson(f))).toEqual(decodeBinary(encodeBinary(f)));
  });

  it('keeps a byte order mark inside a string (it is not stripped)', () => {
    const f: Frame = { t: 'send_ack', id: 'c', msg: '\ufeffa:1', ts: 1, dup: false };
    expect(decodeBinary(encodeBinary(f))).toEqual(f);
  });
});

describe('JSON details', () => {
  it('hello.cursor defaults to 0', () => {
    expect(decodeJson('{"t":"hello","device":"web-1"}')).toEqual({ t: 'hello', device: 'web-1', cursor: 0 });
  });

  it('ignores unknown fields and field order', () => {
    expect(decodeJson('{"cursor":5,"x":{"y":[1]},"device":"d","t":"hello","extra":null}')).toEqual({ t: 'hello', device: 'd', cursor: 5 });
    expect(decodeJson('{"t":"deliver","entries":[{"seq":1,"kind":"message","msg":"a:1","peer":"a","ts":2,"body":"","v2":true}]}')).toEqual({
      t: 'deliver',
      entries: [{ seq: 1, kind: 'message', msg: 'a:1', peer: 'a', ts: 2, body: new Uint8Array(0) }],
    });
  });

  it('accepts whitespace around the frame and integers written as 1.0 or 1e2', () => {
    expect(decodeJson(' \n{ "t" : "deliver_ack" , "seq" : 1.0 }\t')).toEqual({ t: 'deliver_ack', seq: 1 });
    expect(decodeJson('{"t":"deliver_ack","seq":1e2}')).toEqual({ t: 'deliver_ack', seq: 100 });
  });

  it('decodes forgiving base64: whitespace ignored, padding optional', () => {
    const hi = te.encode('hi');
    for (const b64 of ['aGk=', 'aGk', ' aG k= ', 'aG\nk=']) {
      expect(decodeJson(JSON.stringify({ t: 'send', id: 'c', to: 'b', body: b64 }))).toEqual({ t: 'send', id: 'c', to: 'b', body: hi });
    }
  });

  it('optional error fields are absent when not given, kept when given', () => {
    expect(decodeJson('{"t":"error","code":"internal","message":"x"}')).toEqual({ t: 'error', code: 'internal', message: 'x' });
    expect(decodeJson('{"t":"error","code":"internal","message":"x","ref":"r","retryAfter":0}')).toEqual({
      t: 'error',
      code: 'internal',
      message: 'x',
      ref: 'r',
      retryAfter: 0,
    });
  });
});
