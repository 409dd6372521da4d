import { describe, expect, it } from 'vitest';
import { decodeBinary, decodeJson, encodeBinary, encodeJson, type Frame, type GroupEntry } from '../../protocol/index.js';

/** Message references in groups on the wire (PROTOCOL.md 7.20, 9.11): trailing and optional, as send.ref is. */

const te = new TextEncoder();

describe('group message references in the protocol', () => {
  const send: Frame = { t: 'group_send', id: 'c', group: 'g', body: te.encode('x') };
  const plain: GroupEntry = { seq: 4, kind: 'message', from: 'bob', subject: '', name: '', ts: 1, body: te.encode('x') };

  it('round-trips group_send.ref and group_deliver entries\' refs in both encodings', () => {
    const withRef: Frame = { ...send, ref: { kind: 'edit', msg: '3' } };
    const deliver: Frame = { t: 'group_deliver', group: 'g', entries: [plain, { ...plain, seq: 5, ref: { kind: 'react', msg: '4' } }] };
    for (const f of [withRef, deliver]) {
      expect(decodeBinary(encodeBinary(f))).toEqual(f);
      expect(decodeJson(encodeJson(f))).toEqual(f);
    }
  });

  it('a frame without references is byte for byte what decoders before them read', () => {
    expect(encodeBinary({ ...send, ref: { kind: 'reply', msg: '3' } }).subarray(0, encodeBinary(send).length)).toEqual(encodeBinary(send));
    const d = encodeBinary({ t: 'group_deliver', group: 'g', entries: [plain] });
    expect(d[d.length - 1]).toBe(0x78); // the body's last byte: no trailing block
  });

  it('a group reference names a seq in decimal: anything else is invalid_field, naming the send', () => {
    for (const msg of ['bob:1', '0', '01', '', 'x']) {
      expect(() => decodeJson(JSON.stringify({ t: 'group_send', id: 'c-1', group: 'g', body: '', ref: { kind: 'reply', msg } }))).toThrow(expect.objectContaining({ code: 'invalid_field', ref: 'c-1' }));
    }
    const b = encodeBinary({ ...send, ref: { kind: 'reply', msg: '3' } });
    b[b.length - 3] = 9; // the kind byte
    expect(() => decodeBinary(b)).toThrow(expect.objectContaining({ code: 'invalid_field', ref: 'c' }));
  });
});
