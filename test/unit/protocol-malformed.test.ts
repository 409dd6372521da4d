import { describe, expect, it } from 'vitest';
import { KEY_FRAMES } from './keys-frames.js';
import {
  ERROR_CODES,
  FRAME_TYPES,
  LIMITS,
  ProtocolError,
  decodeBinary,
  decodeFrame,
  decodeJson,
  encodeBinary,
  encodeJson,
  type ErrorCode,
  type Frame,
} from '../../protocol/index.js';

/**
 * Malformed input: whatever arrives, the decoders either return a frame or throw a ProtocolError with the
 * right code, never anything else (a TypeError or RangeError would take down the handler, not just the frame).
 */

const te = new TextEncoder();
const hexBytes = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

interface Outcome {
  code: ErrorCode | 'accepted' | 'other';
  message?: string;
  ref?: string;
  error?: unknown;
}

function outcome(fn: () => Frame): Outcome {
  try {
    fn();
    return { code: 'accepted' };
  } catch (e) {
    if (e instanceof ProtocolError) {
      const o: Outcome = { code: e.code, message: e.message };
      if (e.ref !== undefined) o.ref = e.ref;
      return o;
    }
    return { code: 'other', error: e };
  }
}

const bin = (b: Uint8Array) => outcome(() => decodeBinary(b));
const json = (s: string) => outcome(() => decodeJson(s));

/** One valid frame of every type, with every optional part present, for truncation and trailing-byte tests. */
const VALID: Frame[] = [
  { t: 'hello', device: 'phone-1', cursor: 300, receipts: 17, reads: 4, features: 31 },
  { t: 'welcome', user: 'alice', device: 'phone-1', cursor: 300, head: 302, time: 1_767_225_600_000 },
  { t: 'send', id: 'c-1', to: 'bob', body: te.encode('hi') },
  { t: 'send', id: 'x'.repeat(50), to: 'bob', body: new Uint8Array(200), ref: { kind: 'reply', msg: 'bob:12' } },
  { t: 'send_ack', id: 'c-1', msg: 'alice:7', ts: 1_767_225_601_234, dup: true },
  {
    t: 'deliver',
    entries: [
      { seq: 301, kind: 'message', msg: 'bob:12', peer: 'bob', ts: 1_767_225_605_000, body: te.encode('hello'), ref: { kind: 'react', msg: 'alice:6' } },
      { seq: 302, kind: 'delivered', msg: 'alice:7', peer: 'bob', ts: 1_767_225_606_000, body: new Uint8Array(0) },
    ],
  },
  { t: 'deliver_ack', seq: 302 },
  { t: 'receipts', upTo: 9, items: [{ peer: 'bob', msg: 'alice:7', ts: 1_767_225_606_000, read: 'alice:6', readTs: 1_767_225_607_000 }, { peer: 'carol', msg: 'alice:8', ts: 1 }] },
  { t: 'read', conv: 'bob', msg: 'bob:12' },
  { t: 'read_state', upTo: 6, items: [{ conv: 'bob', msg: 'bob:12', ts: 1_767_225_608_000 }] },
  { t: 'set_settings', readReceipts: false },
  { t: 'settings', readReceipts: true, presence: 'contacts' },
  { t: 'presence_query', ref: 'q1', users: ['bob', 'carol'] },
  { t: 'presence', ref: 'q1', users: [{ user: 'bob', online: true, lastSeen: 5 }, { user: 'carol', online: false, lastSeen: 0 }] },
  { t: 'ping' },
  { t: 'pong' },
  { t: 'error', code: 'rate_limited', message: 'slow down, €', ref: 'c-9', retryAfter: 120 },
  { t: 'typing', conv: 'bob', on: true },
  { t: 'typing_state', conv: 'alice', from: 'alice', on: true, ttl: 5000 },
  ...KEY_FRAMES.filter(([name]) => !name.endsWith('largest')).map(([, f]) => f),
];

describe('binary: malformed input', () => {
  it('an empty frame is bad_frame', () => {
    expect(bin(new Uint8Array(0))).toEqual({ code: 'bad_frame', message: 'empty frame' });
  });

  it('every unknown type byte is unknown_type', () => {
    const known = new Set<number>(Object.values(FRAME_TYPES));
    for (let b = 0; b < 256; b++) {
      if (known.has(b)) continue;
      expect(bin(Uint8Array.of(b)).code, `type byte ${b}`).toBe('unknown_type');
      expect(bin(Uint8Array.of(b, 1, 2, 3)).code, `type byte ${b} with payload`).toBe('unknown_type');
    }
  });

  it.each(VALID.map((f) => [f.t, f] as const))('%s truncated at every byte offset is bad_frame', (_t, f) => {
    const full = encodeBinary(f);
    expect(decodeBinary(full)).toEqual(f);
    // Optional trailing fields: hello.receipts, hello.reads and hello.features, and the read block of receipts. A frame cut just
    // before one of them is a complete, older frame.
    const complete = new Map<number, Frame>();
    if (f.t === 'hello') {
      const { receipts: _r, reads: _d, features: _f, ...oldest } = f;
      complete.set(encodeBinary(oldest).length, oldest);
      if (f.reads !== undefined) {
        const { reads: _, features: _g, ...older } = f;
        complete.set(encodeBinary(older).length, older);
      }
      if (f.features !== undefined) {
        const { features: _, ...older } = f;
        complete.set(encodeBinary(older).length, older);
      }
    }
    // Message references (PROTOCOL.md 9.9): a send without its ref, a deliver without its block of refs.
    if (f.t === 'send' && f.ref !== undefined) {
      const { ref: _, ...older } = f;
      complete.set(encodeBinary(older).length, older);
    }
    if (f.t === 'deliver') {
      const older: Frame = { ...f, entries: f.entries.map(({ ref: _, ...e }) => e) };
      complete.set(encodeBinary(older).length, older);
    }
    if (f.t === 'settings') {
      const { presence: _p, ...older } = f;
      complete.set(encodeBinary(older).length, older);
    }
    if (f.t === 'receipts') {
      const older: Frame = { ...f, items: f.items.map(({ peer, msg, ts }) => ({ peer, msg, ts })) };
      complete.set(encodeBinary(older).length, older);
    }
    for (let n = 0; n < full.length; n++) {
      const older = complete.get(n);
      if (older !== undefined) {
        expect(decodeBinary(full.slice(0, n))).toEqual(older);
        continue;
      }
      const o = bin(full.slice(0, n));
      expect(o.code, `first ${n} of ${full.length} bytes`).toBe('bad_frame');
      expect(o.message).toMatch(n === 0 ? /^empty frame$/ : /^truncated frame: /);
    }
  });

  // A send without a reference may be followed by one (a byte that is not a reference kind is invalid_field).
  it.each(VALID.filter((f) => f.t !== 'send' || f.ref !== undefined).map((f) => [f.t, f] as const))('%s with trailing bytes is bad_frame', (_t, f) => {
    const full = encodeBinary(f);
    for (const extra of [[0x00], [0xff], [0x01, 0x02], Array.from(full)]) {
      const o = bin(Uint8Array.from([...full, ...extra]));
      expect(o.code).toBe('bad_frame');
      expect(o.message).toMatch(/trailing bytes/);
    }
  });

  it('invalid UTF-8 in any string is bad_frame', () => {
    const bad = ['c3 28', 'ff', 'fe', 'c0 80', 'e0 80 80', 'ed a0 80', 'ed bf bf', 'f4 90 80 80', 'f8 88 80 80 80', 'e2 82', '80', 'c3'];
    for (const seq of bad) {
      const b = hexBytes(seq);
      const len = b.length.toString(16).padStart(2, '0');
      // hello.device, send_ack.msg (any chars allowed, so only UTF-8 can fail it), error.message, error.ref.
      expect(bin(hexBytes(`01 ${len} ${seq} 00`)).code, `hello device ${seq}`).toBe('bad_frame');
      expect(bin(hexBytes(`04 01 63 ${len} ${seq} 00 00`)).code, `send_ack msg ${seq}`).toBe('bad_frame');
      expect(bin(hexBytes(`0b 01 ${len} ${seq} 00 00`)).code, `error message ${seq}`).toBe('bad_frame');
      expect(bin(hexBytes(`0b 01 00 ${len} ${seq} 00`)).code, `error ref ${seq}`).toBe('bad_frame');
    }
    expect(bin(hexBytes('01 02 c3 28 00'))).toEqual({ code: 'bad_frame', message: 'device: invalid UTF-8' });
  });

  it('a bool other than 0 or 1 is bad_frame', () => {
    for (const v of [2, 0x7f, 0x80, 0xff]) {
      const ack = encodeBinary({ t: 'send_ack', id: 'c', msg: 'a:1', ts: 1, dup: false });
      ack[ack.length - 1] = v;
      expect(bin(ack), `dup ${v}`).toEqual({ code: 'bad_frame', message: 'dup: boolean must be 0 or 1' });
      const p = encodeBinary({ t: 'presence', ref: 'q', users: [{ user: 'u', online: true, lastSeen: 0 }] });
      p[p.length - 2] = v;
      expect(bin(p), `online ${v}`).toEqual({ code: 'bad_frame', message: 'online: boolean must be 0 or 1' });
      const ty = encodeBinary({ t: 'typing', conv: 'bob', on: true });
      ty[ty.length - 1] = v;
      expect(bin(ty), `typing.on ${v}`).toEqual({ code: 'bad_frame', message: 'on: boolean must be 0 or 1' });
    }
  });

  it('an unknown entry kind is invalid_field', () => {
    const d = encodeBinary({ t: 'deliver', entries: [{ seq: 1, kind: 'message', msg: 'a:1', peer: 'a', ts: 1, body: new Uint8Array(0) }] });
    // 05 01 | 01 (seq) | 01 (kind) ...
    expect(d[3]).toBe(1);
    for (const k of [0, 4, 5, 0x7f, 0x80, 0xff]) {
      d[3] = k;
      expect(bin(d), `kind ${k}`).toEqual({ code: 'invalid_field', message: 'kind: unknown entry kind' });
    }
  });

  it('an unknown error code is invalid_field', () => {
    const known = new Set<number>(Object.values(ERROR_CODES));
    for (const n of [0, 99, 100, 127, 128, 1000, LIMITS.maxInteger]) {
      expect(known.has(n)).toBe(false);
      const varint: number[] = [];
      for (let x = n; ; x = Math.floor(x / 128)) {
        if (x < 128) {
          varint.push(x);
          break;
        }
        varint.push((x % 128) | 0x80);
      }
      expect(bin(Uint8Array.from([0x0b, ...varint, 0x00, 0x00, 0x00])).code, `code ${n}`).toBe('invalid_field');
    }
  });

  it('a server frame from a client still decodes (refusing it is the session layer\'s job)', () => {
    expect(decodeBinary(Uint8Array.of(0x0a))).toEqual({ t: 'pong' });
  });
});

describe('JSON: malformed input', () => {
  it('text that is not JSON is bad_frame', () => {
    for (const s of ['', ' ', 'hello', '{', '{"t":"ping"', '{"t":"ping",}', "{'t':'ping'}", '{t:"ping"}', '{"t":"ping"} x', '\u0000', 'NaN', '{"t":"ping"}{"t":"ping"}']) {
      expect(json(s), JSON.stringify(s)).toEqual({ code: 'bad_frame', message: 'not valid JSON' });
    }
  });

  it('JSON that is not an object is invalid_field', () => {
    for (const s of ['[]', '[{"t":"ping"}]', '"ping"', '1', '0', 'null', 'true', 'false']) {
      expect(json(s), s).toEqual({ code: 'invalid_field', message: 'frame: expected an object' });
    }
  });

  it('a missing or non-string t is bad_frame', () => {
    for (const s of ['{}', '{"type":"ping"}', '{"t":1}', '{"t":null}', '{"t":["ping"]}', '{"t":{"ping":1}}', '{"t":true}']) {
      expect(json(s), s).toEqual({ code: 'bad_frame', message: 't: missing frame type' });
    }
  });

  it('an unknown t is unknown_type, including inherited property names', () => {
    for (const t of ['hug', '', 'PING', 'Ping', ' ping', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '1', 'x'.repeat(1000)]) {
      const o = json(JSON.stringify({ t }));
      expect(o.code, t).toBe('unknown_type');
      // The echoed type is cut, so an error message cannot be used to amplify input.
      expect((o.message ?? '').length).toBeLessThan(64);
    }
  });

  it('wrong field types are invalid_field', () => {
    const cases: [string, Record<string, unknown>][] = [
      ['hello', { device: 1 }],
      ['hello', { device: 'd', cursor: '1' }],
      ['hello', { device: 'd', cursor: -1 }],
      ['hello', { device: 'd', cursor: null }],
      ['hello', {}],
      ['welcome', { user: 'u', device: 'd', cursor: 0, head: 0 }],
      ['welcome', { user: 'u', device: 'd', cursor: 0, head: 0, time: '0' }],
      ['send', { id: 'c', to: 'b' }],
      ['send', { id: 'c', to: 'b', body: 123 }],
      ['send', { id: 'c', to: 'b', body: [1, 2] }],
      ['send', { id: 'c', to: 'b', body: null }],
      ['send', { id: 7, to: 'b', body: '' }],
      ['send', { id: 'c', to: ['b'], body: '' }],
      ['send_ack', { id: 'c', msg: 'a:1', ts: 1, dup: 1 }],
      ['send_ack', { id: 'c', msg: 'a:1', ts: 1, dup: 'true' }],
      ['send_ack', { id: 'c', msg: 1, ts: 1, dup: true }],
      ['deliver', {}],
      ['deliver', { entries: {} }],
      ['deliver', { entries: 'x' }],
      ['deliver', { entries: [1] }],
      ['deliver', { entries: [null] }],
      ['deliver', { entries: [[]] }],
      ['deliver', { entries: [{ seq: 1, kind: 'message', msg: 'a:1', peer: 'a', ts: 1 }] }],
      ['deliver', { entries: [{ seq: 1, kind: 'read', msg: 'a:1', peer: 'a', ts: 1, body: '' }] }],
      ['deliver', { entries: [{ seq: 1, kind: 1, msg: 'a:1', peer: 'a', ts: 1, body: '' }] }],
      ['deliver', { entries: [{ seq: 1, kind: 'toString', msg: 'a:1', peer: 'a', ts: 1, body: '' }] }],
      ['hello', { device: 'd', cursor: 1, receipts: '2' }],
      ['hello', { device: 'd', cursor: 1, receipts: -2 }],
      ['receipts', { items: [] }],
      ['receipts', { upTo: 1 }],
      ['receipts', { upTo: 1, items: [{ peer: 'a', msg: 'b:1' }] }],
      ['receipts', { upTo: 1, items: [{ peer: 1, msg: 'b:1', ts: 1 }] }],
      ['receipts', { upTo: 1, items: [{ peer: 'a', msg: 'b:1', ts: 1 }, null] }],
      ['deliver_ack', {}],
      ['deliver_ack', { seq: [1] }],
      ['presence_query', { ref: 'q', users: 'bob' }],
      ['presence_query', { ref: 'q', users: [1] }],
      ['presence_query', { ref: 'q' }],
      ['presence_query', { users: [] }],
      ['presence', { ref: 'q', users: [{ user: 'u', online: 'yes', lastSeen: 0 }] }],
      ['presence', { ref: 'q', users: ['u'] }],
      ['error', { code: 'nope', message: 'm' }],
      ['error', { code: 7, message: 'm' }],
      ['error', { code: 'toString', message: 'm' }],
      ['error', { code: 'internal' }],
      ['error', { code: 'internal', message: 5 }],
      ['error', { code: 'internal', message: 'm', ref: null }],
      ['error', { code: 'internal', message: 'm', ref: '' }],
      ['error', { code: 'internal', message: 'm', retryAfter: -5 }],
      ['error', { code: 'internal', message: 'm', retryAfter: '5' }],
    ];
    for (const [t, fields] of cases) {
      const s = JSON.stringify({ t, ...fields });
      expect(json(s).code, s).toBe('invalid_field');
    }
  });

  it('bad base64 is invalid_field, with the send\'s id as ref', () => {
    for (const b64 of ['not base64!', '%%%%', 'a', 'aGk=x', '-_8=', 'aG=k', '====', 'aGk==', '\u00e9\u00e9\u00e9\u00e9']) {
      const s = JSON.stringify({ t: 'send', id: 'c-6', to: 'bob', body: b64 });
      expect(json(s), b64).toEqual({ code: 'invalid_field', message: 'body: invalid base64', ref: 'c-6' });
    }
  });

  it('an oversized base64 body is frame_too_large, before it is decoded', () => {
    const s = JSON.stringify({ t: 'send', id: 'c-7', to: 'bob', body: '!'.repeat(Math.ceil(LIMITS.maxBodyBytes / 3) * 4 + 1) });
    expect(json(s).code).toBe('frame_too_large');
  });

  it('decodeFrame routes text to the JSON decoder and bytes to the binary decoder', () => {
    // The bytes of a JSON frame are not a binary frame ("{" is type byte 0x7b).
    expect(outcome(() => decodeFrame(te.encode('{"t":"ping"}'))).code).toBe('unknown_type');
    expect(outcome(() => decodeFrame('\u0009')).code).toBe('bad_frame');
  });
});

/**
 * validate.ts says both decoders accept exactly the same frames. So the same invalid frame, encoded both
 * ways, must be refused the same way: same code, and the same ref (an error without the ref of the send or
 * query that caused it cannot be matched to it by the client).
 */
describe('both encodings refuse the same frames the same way', () => {
  const cases: [string, Frame][] = [
    ['send with an invalid recipient', { t: 'send', id: 'c-1', to: 'b/b', body: new Uint8Array(0) }],
    ['send with an invalid client id', { t: 'send', id: 'c 1', to: 'bob', body: new Uint8Array(0) }],
    ['send with a body one byte over maxBodyBytes', { t: 'send', id: 'c-2', to: 'bob', body: new Uint8Array(LIMITS.maxBodyBytes + 1) }],
    ['send with a body two bytes over maxBodyBytes', { t: 'send', id: 'c-3', to: 'bob', body: new Uint8Array(LIMITS.maxBodyBytes + 2) }],
    ['presence_query with an invalid user', { t: 'presence_query', ref: 'q1', users: ['ok', 'not ok'] }],
    ['presence_query with one user too many', { t: 'presence_query', ref: 'q2', users: Array.from({ length: LIMITS.maxPresenceUsers + 1 }, (_, i) => `u${i}`) }],
    ['hello with a bad device', { t: 'hello', device: 'é', cursor: 0 }],
    ['deliver with one entry too many', { t: 'deliver', entries: Array.from({ length: LIMITS.maxDeliverBatch + 1 }, (_, i) => ({ seq: i, kind: 'message' as const, msg: 'a:1', peer: 'a', ts: 0, body: new Uint8Array(0) })) }],
    ['error with a message one char over the limit', { t: 'error', code: 'internal', message: 'x'.repeat(LIMITS.maxErrorMessageLength + 1) }],
    ['error with a ref that is not a client id', { t: 'error', code: 'internal', message: 'm', ref: 'a b' }],
    ['error with a non-ASCII ref', { t: 'error', code: 'internal', message: 'm', ref: 'réf' }],
    ['error with a ref one char over the limit', { t: 'error', code: 'internal', message: 'm', ref: 'r'.repeat(LIMITS.maxIdLength + 1) }],
  ];

  it.each(cases)('%s', (_name, f) => {
    const b = bin(encodeBinary(f));
    const j = json(encodeJson(f));
    expect(b.code).not.toBe('accepted');
    expect(b.code).not.toBe('other');
    expect({ code: b.code, ref: b.ref }).toEqual({ code: j.code, ref: j.ref });
  });
});
