import { describe, expect, it } from 'vitest';
import { V1Decoder, type Decoded, type V1Packet } from '../../gateway/v1/codec.js';
import { loginComplete } from '../../gateway/v1/login.js';
import { P, v1Token } from '../v1/client.js';

/**
 * A LOGIN on a byte stream (the TCP decoder, `stream`): held across reads until a byte outside user:jwt, a
 * complete token, or flushLogin (the link's quiet timer) ends it. docs/IRIS-V1.md "LOGIN and ACK".
 */

const packets = (d: Decoded[]): V1Packet[] => d.map((x) => (x.ok ? x.packet : { op: 'server_only', code: -1 }));

describe('v1 LOGIN on a byte stream', () => {
  it('a LOGIN split byte by byte, with a SEND in its last segment: one LOGIN, then the SEND', async () => {
    const jwt = await v1Token('alice', 'secret');
    const login = P.login('alice', jwt);
    const send = P.send('bob', 'hi');
    const d = new V1Decoder(undefined, true);
    const got: Decoded[] = [];
    for (const x of login.subarray(0, login.length - 1)) {
      got.push(...d.push(new Uint8Array([x]), true));
      expect(got).toEqual([]);
      expect(d.loginOpen).toBe(true);
    }
    got.push(...d.push(Buffer.concat([login.subarray(login.length - 1), send]), true));
    expect(packets(got)).toEqual([{ op: 'login', user: 'alice', token: jwt }]);
    expect(d.loginOpen).toBe(false);
    expect(packets(d.push(d.take()))).toEqual([{ op: 'send', target: 'bob', body: new Uint8Array(Buffer.from('hi')) }]);
  });

  it('a complete HS256 token ends the LOGIN at the end of its read (no wait)', async () => {
    const jwt = await v1Token('alice', 'secret');
    expect(loginComplete(`alice:${jwt}`)).toBe(true);
    expect(loginComplete(`alice:${jwt.slice(0, -1)}`)).toBe(false);
    expect(loginComplete('alice')).toBe(false);
    expect(loginComplete('alice:not.a.jwt')).toBe(false);
    const d = new V1Decoder(undefined, true);
    expect(packets(d.push(P.login('alice', jwt), true))).toEqual([{ op: 'login', user: 'alice', token: jwt }]);
  });

  it('a LOGIN without a token is held until flushLogin (the client went quiet), then ends there', () => {
    const d = new V1Decoder(undefined, true);
    expect(d.push(P.login('al'), true)).toEqual([]);
    expect(d.push(Buffer.from('ice'), true)).toEqual([]);
    expect(d.loginOpen).toBe(true);
    expect(packets(d.flushLogin(true))).toEqual([{ op: 'login', user: 'alice' }]);
    expect(d.flushLogin(true)).toEqual([]);
  });

  it('garbage before a LOGIN is a framing error; a LOGIN too long is refused, not held forever', () => {
    const d = new V1Decoder(undefined, true);
    const out = d.push(Buffer.from([0x99, 0x01, 0x61]), true);
    expect(out).toEqual([{ ok: false, reason: 'unknown_packet', fatal: true }]);
    const long = new V1Decoder(undefined, true);
    expect(long.push(Buffer.concat([Buffer.from([0x01]), Buffer.alloc(5000, 0x61)]), true)).toEqual([{ ok: false, reason: 'username_too_long', fatal: false }]);
  });
});
