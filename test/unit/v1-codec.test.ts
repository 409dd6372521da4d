import { describe, expect, it } from 'vitest';
import { ACK_ID_BYTES, AUTH_FAILED, LOGIN_OK, V1Decoder, encodeE2eeDelivery, encodeError, encodeRateLimited, encodeReadReceiptRelay, encodeReliable, encodeStatus, encodeTypingRelay, messageId, seqOfId, type Decoded, type V1Packet } from '../../gateway/v1/codec.js';
import { WsDecoder, parseHandshake, wsFrame } from '../../gateway/v1/ws.js';
import { P, parseServer } from '../v1/client.js';

/** The v1 codec (gateway/v1/codec.ts) against the layouts of iris_proto.erl, as the test client writes them. */

const packets = (d: Decoded[]): V1Packet[] => d.map((x) => (x.ok ? x.packet : { op: 'server_only', code: -1 }));
const b = (s: string) => new Uint8Array(Buffer.from(s));

/** One example of every client packet, with what it decodes to. */
const EXAMPLES: [string, Buffer, V1Packet][] = [
  ['SEND', P.send('bob', 'hi'), { op: 'send', target: 'bob', body: b('hi') }],
  ['ACK', P.ack(messageId(42)), { op: 'ack', id: '000000000000002a' }],
  ['BATCH', P.batch('bob', ['a', 'bc']), { op: 'batch', target: 'bob', bodies: [b('a'), b('bc')] }],
  ['GET_STATUS', P.status('bob'), { op: 'get_status', target: 'bob' }],
  ['SEND_SEQ', P.sendSeq('bob', 9, 'x'), { op: 'send_seq', target: 'bob', seq: 9n, body: b('x') }],
  ['CBOR_MSG', P.cbor('bob', Buffer.from([0xa0])), { op: 'cbor_msg', target: 'bob', cbor: new Uint8Array([0xa0]) }],
  ['UPLOAD_PREKEYS', P.uploadPrekeys(Buffer.from([0xa0])), { op: 'upload_prekeys', bundle: new Uint8Array([0xa0]) }],
  ['FETCH_PREKEYS', P.fetchPrekeys('bob'), { op: 'fetch_prekeys', user: 'bob' }],
  ['PREKEY_RESPONSE', P.prekeyResponse(Buffer.from([0xa0])), { op: 'server_only', code: 0x22 }],
  ['E2EE_MSG', P.e2ee('bob', Buffer.from([0xa0]), Buffer.from('c')), { op: 'e2ee_msg', recipient: 'bob', header: new Uint8Array([0xa0]), cipher: b('c') }],
  ['E2EE_DELIVERY', P.e2eeDelivery('bob', Buffer.from([0xa0]), Buffer.from('c')), { op: 'server_only', code: 0x24 }],
  ['GROUP_CREATE', P.groupCreate('g'), { op: 'group_create', name: 'g' }],
  ['GROUP_JOIN', P.groupJoin('g', 'u'), { op: 'server_only', code: 0x31 }],
  ['GROUP_LEAVE', P.groupLeave('g'), { op: 'group_leave', group: 'g' }],
  ['GROUP_MSG', P.groupMsg('g', Buffer.from([0xa0]), Buffer.from('c')), { op: 'group_msg', group: 'g', header: new Uint8Array([0xa0]), cipher: b('c') }],
  ['GROUP_ROSTER', P.groupRoster('g'), { op: 'group_roster', group: 'g' }],
  ['SENDER_KEY', P.senderKey('g', Buffer.from('k')), { op: 'sender_key', group: 'g', key: b('k') }],
  ['TYPING_START', P.typingStart('bob'), { op: 'typing', target: 'bob', on: true }],
  ['TYPING_STOP', P.typingStop('bob'), { op: 'typing', target: 'bob', on: false }],
  ['READ_RECEIPT', P.readReceipt(messageId(7), 'alice'), { op: 'read_receipt', id: messageId(7), sender: 'alice' }],
];

describe('v1 codec: client packets', () => {
  it.each(EXAMPLES)('%s decodes from one read', (_name, bytes, want) => {
    expect(packets(new V1Decoder().push(bytes))).toEqual([want]);
  });

  it.each(EXAMPLES)('%s decodes when split byte by byte across reads', (_name, bytes, want) => {
    const d = new V1Decoder();
    const got: Decoded[] = [];
    for (const x of bytes) got.push(...d.push(new Uint8Array([x])));
    expect(packets(got)).toEqual([want]);
    expect(d.pending).toBe(0);
  });

  it('decodes every packet of one read that holds them all (coalesced), in order', () => {
    const all = Buffer.concat(EXAMPLES.map((e) => e[1]));
    expect(packets(new V1Decoder().push(all))).toEqual(EXAMPLES.map((e) => e[2]));
  });

  it('LOGIN ends at the first byte that cannot be in user:jwt: a SEND in the same segment stays a SEND', () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig-_x';
    expect(packets(new V1Decoder().push(Buffer.concat([P.login('alice', jwt), P.send('bob', 'hi')])))).toEqual([
      { op: 'login', user: 'alice', token: jwt },
      { op: 'send', target: 'bob', body: b('hi') },
    ]);
    expect(packets(new V1Decoder().push(P.login('a.b@c+d=e-f_g')))).toEqual([{ op: 'login', user: 'a.b@c+d=e-f_g' }]);
  });

  it('LOGIN without a terminator ends with its read (the old rule); until-login decoding keeps what follows', () => {
    const d = new V1Decoder();
    const out = d.push(Buffer.concat([P.login('alice'), P.status('bob')]), true);
    expect(packets(out)).toEqual([{ op: 'login', user: 'alice' }]);
    const rest = d.take();
    expect(Buffer.from(rest).equals(P.status('bob'))).toBe(true);
    expect(packets(d.push(rest))).toEqual([{ op: 'get_status', target: 'bob' }]);
  });

  it('ACK is exactly the issued id length, so the packet behind it is read', () => {
    const d = new V1Decoder();
    expect(d.push(Buffer.concat([P.ack(messageId(1)).subarray(0, 5)]))).toEqual([]);
    expect(packets(d.push(Buffer.concat([P.ack(messageId(1)).subarray(5), P.status('x')])))).toEqual([
      { op: 'ack', id: messageId(1) },
      { op: 'get_status', target: 'x' },
    ]);
    expect(ACK_ID_BYTES).toBe(16);
  });

  it('refuses an unknown opcode and oversized lengths with the Erlang names; fatal, nothing after', () => {
    const cases: [Buffer, string][] = [
      [Buffer.from([0x99, 1, 2]), 'unknown_packet'],
      [Buffer.from([0x02, 0x01, 0x01]), 'target_too_long'],
      [Buffer.from([0x04, 0, 1, 0x61, 0x00, 0x20, 0, 0]), 'batch_too_large'],
      [Buffer.from([0x20, 0, 0, 0x40, 0]), 'keybundle_too_large'],
      [Buffer.from([0x23, 0, 1, 0x61, 0x08, 0]), 'e2ee_header_too_large'],
      [Buffer.from([0x74, 0, 65]), 'msgid_too_long'],
      [Buffer.from([0x30, 0x01, 0x01]), 'group_name_too_long'],
    ];
    for (const [bytes, reason] of cases) {
      const d = new V1Decoder();
      expect(d.push(Buffer.concat([bytes, P.status('x')]))).toEqual([{ ok: false, reason, fatal: true }]);
      expect(d.push(P.status('x'))).toEqual([]);
    }
  });

  it('refuses a batch of more than 1000 messages', () => {
    const many = Array.from({ length: 1001 }, () => 'x');
    expect(new V1Decoder().push(P.batch('bob', many))).toEqual([{ ok: false, reason: 'batch_too_large', fatal: true }]);
  });

  it('bounds what it buffers for one packet', () => {
    const d = new V1Decoder(100);
    expect(d.push(Buffer.concat([Buffer.from([0x04, 0, 1, 0x61, 0, 0, 1, 0]), Buffer.alloc(200)]))).toEqual([{ ok: false, reason: 'buffer_overflow', fatal: true }]);
  });

  it('never throws on random input', () => {
    let seed = 1;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let i = 0; i < 2000; i++) {
      const d = new V1Decoder(4096);
      const n = Math.floor(rnd() * 64);
      const buf = new Uint8Array(n).map(() => Math.floor(rnd() * 256));
      expect(() => d.push(buf)).not.toThrow();
    }
  });
});

describe('v1 codec: server packets', () => {
  it('writes the layouts the Erlang server wrote, which the test client reads back', () => {
    expect(Buffer.from(LOGIN_OK).equals(Buffer.from([0x03, ...Buffer.from('LOGIN_OK')]))).toBe(true);
    expect(Buffer.from(AUTH_FAILED).toString()).toBe('AUTH_FAILED');
    const all = Buffer.concat([LOGIN_OK, encodeReliable(messageId(5), b('hey')), encodeStatus('bob', false, 1_700_000_000), encodeTypingRelay('al', true), encodeReadReceiptRelay('al:3', 'bob', 1_700_000_000_123), encodeError('unsupported'), encodeRateLimited(1500)].map((x) => Buffer.from(x)));
    expect(parseServer(all).packets).toEqual([
      { t: 'login_ok' },
      { t: 'msg', id: '0000000000000005', body: Buffer.from('hey') },
      { t: 'status', user: 'bob', online: false, time: 1_700_000_000 },
      { t: 'typing', from: 'al', on: true },
      { t: 'read', id: 'al:3', reader: 'bob', ts: 1_700_000_000_123 },
      { t: 'error', reason: 'unsupported' },
      { t: 'rate_limited', retryAfter: 1500 },
    ]);
    expect(Buffer.from(encodeE2eeDelivery('al', b('h'), b('c'))).equals(P.e2eeDelivery('al', Buffer.from('h'), Buffer.from('c')))).toBe(true);
  });

  it('message ids are the inbox sequence in 16 hex digits, and nothing else is one', () => {
    expect(messageId(255)).toBe('00000000000000ff');
    expect(seqOfId(messageId(123456789))).toBe(123456789);
    for (const bad of ['', 'ff', '00000000000000FF', '000000000000000g', '0000000000000000', 'x'.repeat(16)]) expect(seqOfId(bad)).toBeNull();
  });
});

describe('v1 WebSocket framing', () => {
  it('answers the upgrade with the RFC 6455 accept key, and refuses what is not an upgrade', () => {
    const req = 'GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    expect(parseHandshake(Buffer.from(req.slice(0, 20)))).toBeNull();
    const h = parseHandshake(Buffer.from(req + 'rest'));
    expect(h?.ok).toBe(true);
    expect(h!.response.toString()).toContain('Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    expect(h?.ok && h.rest.toString()).toBe('rest');
    expect(parseHandshake(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))?.ok).toBe(false);
    expect(parseHandshake(Buffer.alloc(9000, 0x61))?.ok).toBe(false);
  });

  const masked = (op: number, payload: Buffer, fin = true) => {
    const key = Buffer.from([1, 2, 3, 4]);
    const body = Buffer.from(payload.map((x, i) => x ^ key[i & 3]!));
    const n = payload.length;
    const len = n < 126 ? Buffer.from([0x80 | n]) : Buffer.from([0x80 | 126, n >> 8, n & 255]);
    return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | op]), len, key, body]);
  };

  it('reads masked and unmasked messages, put together from fragments, split byte by byte', () => {
    const d = new WsDecoder(1 << 20);
    const stream = Buffer.concat([masked(2, Buffer.from('one')), wsFrame(2, Buffer.from('two')), masked(2, Buffer.from('th'), false), masked(0, Buffer.alloc(200, 0x65)), masked(9, Buffer.from('p'))]);
    const events = [];
    for (const x of stream) events.push(...d.push(Buffer.from([x])));
    expect(events).toEqual([
      { t: 'message', data: Buffer.from('one') },
      { t: 'message', data: Buffer.from('two') },
      { t: 'message', data: Buffer.concat([Buffer.from('th'), Buffer.alloc(200, 0x65)]) },
      { t: 'ping', data: Buffer.from('p') },
    ]);
  });

  it('stops at a close, a message over the limit, or an unknown opcode', () => {
    expect(new WsDecoder(100).push(masked(8, Buffer.alloc(0)))).toEqual([{ t: 'close' }]);
    expect(new WsDecoder(100).push(masked(2, Buffer.alloc(200)))).toEqual([{ t: 'error', why: 'message too large' }]);
    expect(new WsDecoder(100).push(masked(5, Buffer.alloc(1)))).toEqual([{ t: 'error', why: 'unknown opcode 5' }]);
    expect(new WsDecoder(100).push(masked(0, Buffer.alloc(1)))).toEqual([{ t: 'error', why: 'continuation without a message' }]);
  });

  it('writes server frames with the three length forms', () => {
    expect([...wsFrame(2, Buffer.alloc(3)).subarray(0, 2)]).toEqual([0x82, 3]);
    expect([...wsFrame(2, Buffer.alloc(300)).subarray(0, 4)]).toEqual([0x82, 126, 1, 44]);
    const big = wsFrame(2, Buffer.alloc(70000));
    expect(big[1]).toBe(127);
    expect(Number(big.readBigUInt64BE(2))).toBe(70000);
  });
});

describe('v1 CBOR (key bundles)', () => {
  it('reads what the test client writes and writes what it reads', async () => {
    const { cborDecode, cborEncode } = await import('../../gateway/v1/cbor.js');
    const { cbor, uncbor } = await import('../v1/client.js');
    const v = { identity_key: Buffer.from('ik'), n: 300, big: 70000, list: [Buffer.from('a'), 'x', null, true], nested: { k: 1 } };
    const decoded = cborDecode(cbor(v)) as Record<string, unknown>;
    expect(decoded['n']).toBe(300);
    expect(decoded['big']).toBe(70000);
    expect(decoded['identity_key']).toEqual(new Uint8Array(Buffer.from('ik')));
    expect(decoded['list']).toEqual([new Uint8Array(Buffer.from('a')), 'x', null, true]);
    expect(decoded['nested']).toEqual({ k: 1 });
    expect(uncbor(Buffer.from(cborEncode({ s: 'ok', n: 2 ** 40, neg: -5, b: new Uint8Array([1]), u: undefined })))[0]).toEqual({ s: 'ok', n: 2 ** 40, neg: -5, b: Buffer.from([1]), u: undefined });
  });

  it('refuses indefinite lengths, truncation and deep nesting without throwing anything but CborError', async () => {
    const { cborDecode, CborError } = await import('../../gateway/v1/cbor.js');
    for (const bad of [[0x5f], [0x42, 1], [...Array(40).fill(0x81), 0]]) expect(() => cborDecode(new Uint8Array(bad))).toThrow(CborError);
  });
});
