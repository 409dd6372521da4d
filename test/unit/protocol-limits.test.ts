import { describe, expect, it } from 'vitest';
import {
  LIMITS,
  ProtocolError,
  decodeBinary,
  decodeJson,
  encodeBinary,
  encodeJson,
  type Entry,
  type ErrorCode,
  type Frame,
} from '../../protocol/index.js';

/**
 * Every limit of protocol v1 at its edge, in both encodings: exactly at the limit is accepted, one over is
 * refused with the documented ProtocolError code.
 */

const te = new TextEncoder();
const MAX = LIMITS.maxInteger;

type Enc = 'binary' | 'json';
const ENCODINGS: Enc[] = ['binary', 'json'];

function roundTrip(f: Frame, enc: Enc): Frame {
  return enc === 'binary' ? decodeBinary(encodeBinary(f)) : decodeJson(encodeJson(f));
}

function refusal(fn: () => unknown): ProtocolError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProtocolError) return e;
    throw new Error(`expected a ProtocolError, got ${String(e)}`);
  }
  throw new Error('expected a ProtocolError, but decoding succeeded');
}

/** f must decode in enc to itself. */
function accepts(f: Frame, enc: Enc): void {
  expect(roundTrip(f, enc)).toEqual(f);
}

const show = (f: Frame): string =>
  JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `<${v.byteLength} bytes>` : v)).slice(0, 160);

/** f must be refused in enc with code. */
function refuses(f: Frame, enc: Enc, code: ErrorCode): void {
  let got: string;
  try {
    roundTrip(f, enc);
    got = 'accepted';
  } catch (e) {
    got = e instanceof ProtocolError ? e.code : `non-ProtocolError ${String(e)}`;
  }
  expect(got, `${enc} decoding of ${show(f)}`).toBe(code);
}

const entry = (over: Partial<Entry> = {}): Entry => ({ seq: 1, kind: 'message', msg: 'a:1', peer: 'a', ts: 1, body: new Uint8Array(0), ...over });

describe('maxFrameBytes', () => {
  /** A deliver frame of exactly n bytes in binary (two entries, bodies sized to fit). */
  function deliverOfBytes(n: number): Frame {
    const make = (a: number, b: number): Frame => ({
      t: 'deliver',
      entries: [entry({ body: new Uint8Array(a) }), entry({ seq: 2, body: new Uint8Array(b) })],
    });
    const base = encodeBinary(make(40_000, 40_000)).byteLength - 80_000;
    const f = make(40_000, n - base - 40_000);
    expect(encodeBinary(f).byteLength).toBe(n);
    return f;
  }

  it(`binary: a frame of exactly ${LIMITS.maxFrameBytes} bytes is accepted, one more byte is frame_too_large`, () => {
    accepts(deliverOfBytes(LIMITS.maxFrameBytes), 'binary');
    refuses(deliverOfBytes(LIMITS.maxFrameBytes + 1), 'binary', 'frame_too_large');
  });

  it('binary: the size is checked before anything else', () => {
    const junk = new Uint8Array(LIMITS.maxFrameBytes + 1).fill(0xff);
    expect(refusal(() => decodeBinary(junk)).code).toBe('frame_too_large');
    expect(refusal(() => decodeBinary(junk.subarray(0, LIMITS.maxFrameBytes))).code).toBe('unknown_type');
  });

  it(`JSON: a text of exactly ${LIMITS.maxFrameBytes} UTF-16 units is accepted, one more is frame_too_large`, () => {
    const head = '{"t":"ping","pad":"';
    const pad = (n: number) => `${head}${'x'.repeat(n - head.length - 2)}"}`;
    expect(pad(LIMITS.maxFrameBytes).length).toBe(LIMITS.maxFrameBytes);
    expect(decodeJson(pad(LIMITS.maxFrameBytes))).toEqual({ t: 'ping' });
    expect(refusal(() => decodeJson(pad(LIMITS.maxFrameBytes + 1))).code).toBe('frame_too_large');
    // Checked before parsing: oversized garbage is frame_too_large, not bad_frame.
    expect(refusal(() => decodeJson('x'.repeat(LIMITS.maxFrameBytes + 1))).code).toBe('frame_too_large');
  });

  it('JSON: the limit counts UTF-16 code units, not UTF-8 bytes', () => {
    const head = '{"t":"ping","pad":"';
    const text = `${head}${'€'.repeat(LIMITS.maxFrameBytes - head.length - 2)}"}`;
    expect(te.encode(text).byteLength).toBeGreaterThan(LIMITS.maxFrameBytes * 2);
    expect(decodeJson(text)).toEqual({ t: 'ping' });
  });

  it('a full body fits in one frame in both encodings', () => {
    const f: Frame = { t: 'send', id: '!'.repeat(64), to: 'u'.repeat(64), body: new Uint8Array(LIMITS.maxBodyBytes) };
    for (const enc of ENCODINGS) accepts(f, enc);
    const d: Frame = { t: 'deliver', entries: [entry({ seq: MAX, ts: MAX, msg: 'm'.repeat(96), peer: 'p'.repeat(64), body: new Uint8Array(LIMITS.maxBodyBytes) })] };
    for (const enc of ENCODINGS) accepts(d, enc);
  });

  it('but two full bodies do not: a sender of deliver frames must cut batches by size, not only by count', () => {
    const two: Frame = { t: 'deliver', entries: [entry({ body: new Uint8Array(LIMITS.maxBodyBytes) }), entry({ seq: 2, body: new Uint8Array(LIMITS.maxBodyBytes) })] };
    for (const enc of ENCODINGS) refuses(two, enc, 'frame_too_large');
  });
});

describe('maxBodyBytes', () => {
  const send = (n: number): Frame => ({ t: 'send', id: 'c-1', to: 'bob', body: new Uint8Array(n).fill(7) });
  const deliver = (n: number): Frame => ({ t: 'deliver', entries: [entry({ body: new Uint8Array(n).fill(7) })] });

  it.each(ENCODINGS)(`%s: send body of exactly ${LIMITS.maxBodyBytes} bytes accepted, one more is frame_too_large`, (enc) => {
    accepts(send(LIMITS.maxBodyBytes), enc);
    refuses(send(LIMITS.maxBodyBytes + 1), enc, 'frame_too_large');
    refuses(send(LIMITS.maxBodyBytes + 2), enc, 'frame_too_large');
  });

  it.each(ENCODINGS)(`%s: deliver entry body of exactly ${LIMITS.maxBodyBytes} bytes accepted, one more is frame_too_large`, (enc) => {
    accepts(deliver(LIMITS.maxBodyBytes), enc);
    refuses(deliver(LIMITS.maxBodyBytes + 1), enc, 'frame_too_large');
  });

  it('binary: a body length prefix over the limit is refused before the body is read', () => {
    // send "c-1" -> "bob", body length 65537 (81 80 04) with no body bytes following.
    const b = Uint8Array.from([0x03, 0x03, 0x63, 0x2d, 0x31, 0x03, 0x62, 0x6f, 0x62, 0x81, 0x80, 0x04]);
    expect(refusal(() => decodeBinary(b)).code).toBe('frame_too_large');
  });

  it('JSON: a base64 body longer than ceil(maxBodyBytes / 3) * 4 chars is refused before decoding', () => {
    const maxChars = Math.ceil(LIMITS.maxBodyBytes / 3) * 4;
    const text = (b64: string) => `{"t":"send","id":"c-1","to":"bob","body":"${b64}"}`;
    expect(refusal(() => decodeJson(text('A'.repeat(maxChars + 4)))).code).toBe('frame_too_large');
    expect(refusal(() => decodeJson(text('A'.repeat(maxChars + 1)))).code).toBe('frame_too_large');
  });
});

describe('ids', () => {
  const userIdSites: [string, (id: string) => Frame][] = [
    ['hello.device', (id) => ({ t: 'hello', device: id, cursor: 0 })],
    ['welcome.user', (id) => ({ t: 'welcome', user: id, device: 'd', cursor: 0, head: 0, time: 0 })],
    ['welcome.device', (id) => ({ t: 'welcome', user: 'u', device: id, cursor: 0, head: 0, time: 0 })],
    ['send.to', (id) => ({ t: 'send', id: 'c', to: id, body: new Uint8Array(0) })],
    ['deliver peer', (id) => ({ t: 'deliver', entries: [entry({ peer: id })] })],
    ['presence_query users[]', (id) => ({ t: 'presence_query', ref: 'q', users: ['ok', id] })],
    ['presence user', (id) => ({ t: 'presence', ref: 'q', users: [{ user: id, online: false, lastSeen: 0 }] })],
    ['typing.conv', (id) => ({ t: 'typing', conv: id, on: true })],
    ['typing_state.conv', (id) => ({ t: 'typing_state', conv: id, from: 'a', on: true, ttl: 1 })],
    ['typing_state.from', (id) => ({ t: 'typing_state', conv: 'a', from: id, on: true, ttl: 1 })],
  ];
  const clientIdSites: [string, (id: string) => Frame][] = [
    ['send.id', (id) => ({ t: 'send', id, to: 'bob', body: new Uint8Array(0) })],
    ['send_ack.id', (id) => ({ t: 'send_ack', id, msg: 'a:1', ts: 0, dup: false })],
    ['presence_query.ref', (id) => ({ t: 'presence_query', ref: id, users: [] })],
    ['presence.ref', (id) => ({ t: 'presence', ref: id, users: [] })],
    ['error.ref', (id) => ({ t: 'error', code: 'internal', message: '', ref: id })],
  ];
  const messageIdSites: [string, (id: string) => Frame][] = [
    ['send_ack.msg', (msg) => ({ t: 'send_ack', id: 'c', msg, ts: 0, dup: false })],
    ['deliver msg', (msg) => ({ t: 'deliver', entries: [entry({ msg })] })],
  ];
  const L = LIMITS.maxIdLength;
  const M = LIMITS.maxMessageIdLength;

  describe.each(ENCODINGS)('%s', (enc) => {
    it.each(userIdSites)(`user id in %s: 1 and ${L} chars of [A-Za-z0-9._@+=-] accepted; ${L + 1}, empty or other chars refused`, (_site, make) => {
      for (const ok of ['a', 'Z', '0', 'u'.repeat(L), 'ABCXYZabcxyz0189._@+=-', 'alice@example.com', 'a.b_c-d+e=f']) accepts(make(ok), enc);
      for (const bad of ['', 'u'.repeat(L + 1), 'a b', 'a/b', 'a:b', 'a#b', 'a,b', 'a\u0000', 'josé', 'ü', '😀', 'a\nb', 'a%20', '*', '~']) {
        refuses(make(bad), enc, 'invalid_field');
      }
    });

    it.each(clientIdSites)(`client id in %s: 1 and ${L} visible ASCII chars accepted; ${L + 1}, empty, space, DEL or non-ASCII refused`, (site, make) => {
      for (const ok of ['!', '~', 'c'.repeat(L), '01J9Z3K5M8QK2ZB6Y0T1V4W7XC', '550e8400-e29b-41d4-a716-446655440000', '"\\<>{}|`^']) accepts(make(ok), enc);
      for (const bad of ['c'.repeat(L + 1), 'a b', ' ', '\x7f', '\x1f', 'é', '😀', '\t']) refuses(make(bad), enc, 'invalid_field');
      // An empty error ref is the binary spelling of "no ref"; elsewhere empty is refused.
      if (site !== 'error.ref') refuses(make(''), enc, 'invalid_field');
    });

    it.each(messageIdSites)(`message id in %s: 1 to ${M} UTF-16 units of anything accepted; empty or ${M + 1} refused`, (_site, make) => {
      for (const ok of ['a', 'alice:1', 'm'.repeat(M), 'é'.repeat(M), '€'.repeat(M), '😀'.repeat(M / 2), 'a b/c#d', '\ufeff']) accepts(make(ok), enc);
      for (const bad of ['', 'm'.repeat(M + 1), 'é'.repeat(M + 1), '😀'.repeat(M / 2) + 'x']) refuses(make(bad), enc, 'invalid_field');
    });
  });

  it('binary: a string length prefix over 3x the char limit is refused before the string is read', () => {
    // hello, device length 193 (c1 01), nothing after it.
    expect(refusal(() => decodeBinary(Uint8Array.from([0x01, 0xc1, 0x01]))).code).toBe('invalid_field');
    // At 3x the limit the bytes are read (here: missing, so truncated).
    expect(refusal(() => decodeBinary(Uint8Array.from([0x01, 0xc0, 0x01]))).code).toBe('bad_frame');
  });
});

describe('counts', () => {
  const P = LIMITS.maxPresenceUsers;
  const D = LIMITS.maxDeliverBatch;
  const users = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`);

  it.each(ENCODINGS)(`%s: presence_query with ${P} users accepted, ${P + 1} refused with invalid_field`, (enc) => {
    accepts({ t: 'presence_query', ref: 'q', users: users(P) }, enc);
    refuses({ t: 'presence_query', ref: 'q', users: users(P + 1) }, enc, 'invalid_field');
  });

  it.each(ENCODINGS)(`%s: presence with ${P} users accepted, ${P + 1} refused with invalid_field`, (enc) => {
    const info = (n: number) => users(n).map((user) => ({ user, online: true, lastSeen: 1 }));
    accepts({ t: 'presence', ref: 'q', users: info(P) }, enc);
    refuses({ t: 'presence', ref: 'q', users: info(P + 1) }, enc, 'invalid_field');
  });

  it.each(ENCODINGS)(`%s: deliver with ${D} entries accepted, ${D + 1} refused with invalid_field`, (enc) => {
    const entries = (n: number) => Array.from({ length: n }, (_, i) => entry({ seq: i + 1 }));
    accepts({ t: 'deliver', entries: entries(D) }, enc);
    refuses({ t: 'deliver', entries: entries(D + 1) }, enc, 'invalid_field');
  });

  it('binary: an over-limit count is refused without reading the items', () => {
    expect(refusal(() => decodeBinary(Uint8Array.from([0x05, D + 1]))).code).toBe('invalid_field');
    expect(refusal(() => decodeBinary(Uint8Array.from([0x07, 0x01, 0x71, P + 1]))).code).toBe('invalid_field');
    expect(refusal(() => decodeBinary(Uint8Array.from([0x08, 0x01, 0x71, P + 1]))).code).toBe('invalid_field');
    // A huge count is an ordinary over-limit count, not an allocation.
    expect(refusal(() => decodeBinary(Uint8Array.from([0x05, 0xff, 0xff, 0xff, 0xff, 0x0f]))).code).toBe('invalid_field');
  });
});

describe('maxErrorMessageLength', () => {
  const E = LIMITS.maxErrorMessageLength;
  const err = (message: string): Frame => ({ t: 'error', code: 'internal', message });

  it.each(ENCODINGS)(`%s: ${E} chars accepted (ASCII, 3-byte and astral)`, (enc) => {
    accepts(err('x'.repeat(E)), enc);
    accepts(err('€'.repeat(E)), enc);
    accepts(err('😀'.repeat(E / 2)), enc);
    accepts(err(''), enc);
  });

  it.each(ENCODINGS)(`%s: ${E + 1} chars refused with invalid_field`, (enc) => {
    refuses(err('x'.repeat(E + 1)), enc, 'invalid_field');
    refuses(err('€'.repeat(E + 1)), enc, 'invalid_field');
  });
});

describe('maxInteger', () => {
  /** Every integer field of every frame, as a frame with that field set to n. */
  const sites: [string, (n: number) => Frame][] = [
    ['hello.cursor', (n) => ({ t: 'hello', device: 'd', cursor: n })],
    ['welcome.cursor', (n) => ({ t: 'welcome', user: 'u', device: 'd', cursor: n, head: 0, time: 0 })],
    ['welcome.head', (n) => ({ t: 'welcome', user: 'u', device: 'd', cursor: 0, head: n, time: 0 })],
    ['welcome.time', (n) => ({ t: 'welcome', user: 'u', device: 'd', cursor: 0, head: 0, time: n })],
    ['send_ack.ts', (n) => ({ t: 'send_ack', id: 'c', msg: 'a:1', ts: n, dup: false })],
    ['deliver seq', (n) => ({ t: 'deliver', entries: [entry({ seq: n })] })],
    ['deliver ts', (n) => ({ t: 'deliver', entries: [entry({ ts: n })] })],
    ['deliver_ack.seq', (n) => ({ t: 'deliver_ack', seq: n })],
    ['presence lastSeen', (n) => ({ t: 'presence', ref: 'q', users: [{ user: 'u', online: false, lastSeen: n }] })],
    ['error.retryAfter', (n) => ({ t: 'error', code: 'rate_limited', message: 'm', retryAfter: n })],
    ['typing_state.ttl', (n) => ({ t: 'typing_state', conv: 'a', from: 'b', on: true, ttl: n })],
  ];

  it.each(sites)('%s: 2^53 - 1 accepted; 2^53 refused (binary bad_frame, JSON invalid_field)', (_site, make) => {
    for (const enc of ENCODINGS) accepts(make(MAX), enc);
    // The encoder writes 2^53 faithfully (8 bytes); the decoder must refuse it.
    refuses(make(MAX + 1), 'binary', 'bad_frame');
    refuses(make(MAX + 1), 'json', 'invalid_field');
    refuses(make(2 ** 55), 'binary', 'bad_frame');
    refuses(make(2 ** 60), 'json', 'invalid_field');
  });

  it.each(sites)('%s: negative, fractional, non-finite numbers and non-numbers refused in JSON', (_site, make) => {
    const text = encodeJson(make(12345));
    for (const bad of ['-1', '1.5', '1e400', '-1e400', '"12345"', 'true', 'null', '[1]', '{}']) {
      expect(refusal(() => decodeJson(text.replace('12345', bad))).code).toBe('invalid_field');
    }
  });

  it('binary: a varint of 9 bytes is refused even when its value is small; 8 bytes is the longest', () => {
    expect(refusal(() => decodeBinary(Uint8Array.from([0x06, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]))).code).toBe('bad_frame');
    expect(refusal(() => decodeBinary(Uint8Array.from([0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]))).code).toBe('bad_frame');
    expect(decodeBinary(Uint8Array.from([0x06, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]))).toEqual({ t: 'deliver_ack', seq: 1 });
    expect(decodeBinary(Uint8Array.from([0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]))).toEqual({ t: 'deliver_ack', seq: MAX });
    // 8 bytes can hold up to 2^56 - 1: everything above 2^53 - 1 is refused.
    for (const top of [0x10, 0x40, 0x7f]) {
      expect(refusal(() => decodeBinary(Uint8Array.from([0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, top]))).code).toBe('bad_frame');
    }
  });

  it('binary: every varint-carried count and length is subject to the same rules', () => {
    // Error code number 2^53 and a string length 2^53.
    expect(refusal(() => decodeBinary(Uint8Array.from([0x0b, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]))).code).toBe('bad_frame');
    expect(refusal(() => decodeBinary(Uint8Array.from([0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]))).code).toBe('bad_frame');
  });
});
