import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES, REF_KINDS, decodeBinary, decodeJson, encodeBinary, type Frame } from '../../protocol/index.js';
import { code, parseTable } from './doc-tables.js';

/** Message references on the wire (PROTOCOL.md 9.9): the ref-kinds table, and what older peers see. */

const DOC = readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), '../../docs/PROTOCOL.md'), 'utf8');
const te = new TextEncoder();

describe('message references in the protocol', () => {
  it('the ref-kinds table matches REF_KINDS exactly', () => {
    const rows = (parseTable(DOC, 'ref-kinds') ?? []).slice(1);
    const doc = Object.fromEntries(rows.map((r) => [code(r[1]), Number(code(r[0]))]));
    expect(doc).toEqual({ ...REF_KINDS });
  });

  it('the hello feature table matches HELLO_FEATURES', () => {
    for (const [name, bit] of Object.entries(HELLO_FEATURES)) expect(DOC).toContain(`| \`${bit}\` | \`${name}\` |`);
  });

  it('a frame without references is byte for byte what decoders before them read', () => {
    const send: Frame = { t: 'send', id: 'c', to: 'bob', body: te.encode('x') };
    expect(encodeBinary({ ...send, ref: { kind: 'reply', msg: 'bob:1' } }).subarray(0, encodeBinary(send).length)).toEqual(encodeBinary(send));
    const plain = { seq: 1, kind: 'message' as const, msg: 'bob:1', peer: 'bob', ts: 1, body: te.encode('x') };
    const with0 = encodeBinary({ t: 'deliver', entries: [plain] });
    const withRef = encodeBinary({ t: 'deliver', entries: [plain, { ...plain, seq: 2, ref: { kind: 'react', msg: 'bob:1' } }] });
    expect(with0[with0.length - 1]).toBe(0x78); // the body's last byte: no trailing block
    expect(decodeBinary(withRef)).toMatchObject({ entries: [{ seq: 1 }, { seq: 2, ref: { kind: 'react', msg: 'bob:1' } }] });
  });

  it('refuses an unknown or malformed reference with invalid_field, naming the send', () => {
    expect(() => decodeJson('{"t":"send","id":"c-1","to":"bob","body":"","ref":{"kind":"like","msg":"bob:1"}}')).toThrow(expect.objectContaining({ code: 'invalid_field', ref: 'c-1' }));
    expect(() => decodeJson('{"t":"send","id":"c-1","to":"bob","body":"","ref":"bob:1"}')).toThrow(expect.objectContaining({ code: 'invalid_field', ref: 'c-1' }));
    expect(() => decodeJson('{"t":"send","id":"c-1","to":"bob","body":"","ref":{"kind":"edit","msg":""}}')).toThrow(expect.objectContaining({ code: 'invalid_field' }));
    // A deliver's block with an unknown kind, as a client reads it.
    const d = encodeBinary({ t: 'deliver', entries: [{ seq: 1, kind: 'message', msg: 'b:1', peer: 'b', ts: 1, body: new Uint8Array(0), ref: { kind: 'edit', msg: 'b:0' } }] });
    d[d.length - 5] = 9;
    expect(() => decodeBinary(d)).toThrow(expect.objectContaining({ code: 'invalid_field' }));
  });
});
