import { describe, expect, it } from 'vitest';
import {
  LIMITS,
  ProtocolError,
  decodeBinary,
  decodeFrame,
  decodeJson,
  encodeBinary,
  encodeJson,
  isErrorCode,
  type Frame,
} from '../../protocol/index.js';
import { mulberry32 } from '../fixtures/prng.js';
import { KEY_FRAMES } from './keys-frames.js';

/**
 * A small, seeded, bounded fuzz of both decoders: 10,000 binary and 10,000 JSON inputs, random and mutated
 * from valid frames. For every input the decoder must either return a frame that re-encodes (same encoding)
 * and re-decodes to the same frame, or throw a ProtocolError with a known code. Nothing else.
 * The seed is fixed so a failure reproduces; set IRIS_FUZZ_SEED to explore other seeds locally.
 */

const SEED = Number(process.env['IRIS_FUZZ_SEED'] ?? 0x1d15);
const RUNS = 10_000;

const rng = mulberry32;

const te = new TextEncoder();
const MAX = LIMITS.maxInteger;

const CORPUS: Frame[] = [
  { t: 'hello', device: 'phone-1', cursor: 300 },
  { t: 'hello', device: 'd', cursor: 0 },
  { t: 'welcome', user: 'alice', device: 'phone-1', cursor: 300, head: 302, time: 1_767_225_600_000 },
  { t: 'send', id: 'c-1', to: 'bob', body: te.encode('hi') },
  { t: 'send', id: 'x'.repeat(43), to: 'bob', body: new Uint8Array(0) },
  { t: 'send', id: '!~', to: 'b', body: te.encode('héllo 👋') },
  { t: 'send_ack', id: 'c-1', msg: 'alice:7', ts: 1_767_225_601_234, dup: false },
  { t: 'send_ack', id: 'c-1', msg: 'é😀:1', ts: MAX, dup: true },
  {
    t: 'deliver',
    entries: [
      { seq: 301, kind: 'message', msg: 'bob:12', peer: 'bob', ts: 1_767_225_605_000, body: te.encode('hello') },
      { seq: 302, kind: 'delivered', msg: 'alice:7', peer: 'bob', ts: 1_767_225_606_000, body: new Uint8Array(0) },
    ],
  },
  { t: 'deliver', entries: [] },
  { t: 'deliver_ack', seq: 302 },
  { t: 'deliver_ack', seq: MAX },
  { t: 'hello', device: 'phone-1', cursor: 3, receipts: 5 },
  { t: 'receipts', upTo: 5, items: [{ peer: 'bob', msg: 'alice:7', ts: 1_767_225_606_000 }] },
  { t: 'presence_query', ref: 'q1', users: ['bob', 'carol'] },
  { t: 'presence', ref: 'q1', users: [{ user: 'bob', online: true, lastSeen: 5 }, { user: 'carol', online: false, lastSeen: 0 }] },
  { t: 'ping' },
  { t: 'pong' },
  { t: 'error', code: 'rate_limited', message: 'send rate exceeded', ref: 'c-9', retryAfter: 120 },
  { t: 'error', code: 'bad_frame', message: '' },
  { t: 'typing', conv: 'bob', on: true },
  { t: 'typing_state', conv: 'alice', from: 'alice', on: false, ttl: 0 },
  ...KEY_FRAMES.filter(([name]) => !name.endsWith('largest')).map(([, f]) => f),
];
const BIG: Frame[] = [
  { t: 'send', id: 'big', to: 'bob', body: new Uint8Array(LIMITS.maxBodyBytes).fill(0x41) },
  { t: 'presence_query', ref: 'q', users: Array.from({ length: LIMITS.maxPresenceUsers }, (_, i) => `u${i}`) },
];

/** Structural equality: Uint8Array by content, numbers by === (so -0 equals 0), same own keys. */
function same(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  }
  if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return same(ka, kb) && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return a === b;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const show = (f: unknown): string =>
  JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `<${hex(v.subarray(0, 32))}${v.length > 32 ? '...' : ''}>` : v)).slice(0, 300);

// ------------------------------------------------------------------ generators

function binaryInputs(seed: number, n: number): Uint8Array[] {
  const r = rng(seed);
  const int = (k: number) => Math.floor(r() * k);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const SPECIAL = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xc0, 0xc3, 0xed, 0xf4, 0xfe, 0xff];
  const encoded = CORPUS.map((f) => encodeBinary(f));
  const big = BIG.map((f) => encodeBinary(f));
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const mode = r();
    if (mode < 0.15) {
      // Random bytes, usually behind a valid type byte.
      const b = Uint8Array.from({ length: int(40) }, () => (r() < 0.3 ? pick(SPECIAL) : int(256)));
      if (b.length > 0 && r() < 0.8) b[0] = 1 + int(11);
      out.push(b);
      continue;
    }
    const src = r() < 0.01 ? pick(big) : pick(encoded);
    const b = Array.from(src);
    for (let m = 1 + int(4); m > 0; m--) {
      const at = int(b.length + 1);
      switch (int(8)) {
        case 0:
          if (at < b.length) b[at]! ^= 1 << int(8);
          break;
        case 1:
          if (at < b.length) b[at] = int(256);
          break;
        case 2:
          if (at < b.length) b[at] = pick(SPECIAL);
          break;
        case 3:
          b.splice(at, 0, r() < 0.5 ? int(256) : pick(SPECIAL));
          break;
        case 4:
          b.splice(at, 1 + int(3));
          break;
        case 5:
          b.length = Math.min(b.length, at);
          break;
        case 6: {
          const other = pick(encoded);
          const from = int(other.length);
          b.splice(at, 0, ...other.subarray(from, from + 1 + int(8)));
          break;
        }
        case 7:
          if (at < b.length) b[at] = r() < 0.5 ? Math.max(0, b[at]! - 1) : Math.min(255, b[at]! + 1);
          break;
      }
    }
    out.push(Uint8Array.from(b));
  }
  return out;
}

function jsonInputs(seed: number, n: number): string[] {
  const r = rng(seed);
  const int = (k: number) => Math.floor(r() * k);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const texts = CORPUS.map((f) => encodeJson(f));
  const CHARS = '{}[]":,0123456789-.eE+ tfnulrsa\\/\u00e9\u20ac\n';
  const STRINGS = ['', 'a', 'bob', 'phone-1', 'c-1', 'a b', 'é', '😀', 'alice:7', 'x'.repeat(64), 'x'.repeat(65), 'm'.repeat(97), 'aGk=', 'aGk', '!!!!', 'message', 'delivered', 'read', 'bad_frame', 'rate_limited', 'nope', 'ping', 'pong', 'hello', 'send', 'deliver', 'error', '__proto__', 'toString'];
  const NUMBERS = [0, -0, 1, -1, 1.5, 2 ** 31, 2 ** 32, MAX, MAX + 1, 1e308, 7];
  const value = (depth: number): unknown => {
    switch (int(depth > 1 ? 4 : 6)) {
      case 0:
        return pick(STRINGS);
      case 1:
        return pick(NUMBERS);
      case 2:
        return pick([true, false, null]);
      case 3:
        return pick(STRINGS).repeat(1 + int(3));
      case 4:
        return Array.from({ length: int(4) }, () => value(depth + 1));
      default:
        return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(STRINGS), value(depth + 1)]));
    }
  };
  const mutateTree = (x: unknown, depth: number): unknown => {
    if (Array.isArray(x)) {
      const a = [...(x as unknown[])];
      const roll = int(4);
      if (roll === 0 || a.length === 0) a.push(value(depth));
      else if (roll === 1) a.splice(int(a.length), 1);
      else {
        const i = int(a.length);
        a[i] = mutateTree(a[i], depth + 1);
      }
      return a;
    }
    if (typeof x === 'object' && x !== null) {
      const o: Record<string, unknown> = { ...(x as Record<string, unknown>) };
      const keys = Object.keys(o);
      const roll = int(5);
      if (roll === 0 || keys.length === 0) o[pick(STRINGS)] = value(depth);
      else if (roll === 1) delete o[pick(keys)];
      else {
        const k = pick(keys);
        o[k] = mutateTree(o[k], depth + 1);
      }
      return o;
    }
    return r() < 0.8 ? value(depth) : x;
  };
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const src = pick(texts);
    const mode = r();
    if (mode < 0.45) {
      const s = src.split('');
      for (let m = 1 + int(3); m > 0; m--) {
        const at = int(s.length + 1);
        const roll = int(3);
        if (roll === 0) s.splice(at, 0, pick(CHARS.split('')));
        else if (roll === 1) s.splice(at, 1);
        else if (at < s.length) s[at] = pick(CHARS.split(''));
      }
      out.push(s.join(''));
    } else if (mode < 0.95) {
      let tree = JSON.parse(src) as unknown;
      for (let m = 1 + int(3); m > 0; m--) tree = mutateTree(tree, 0);
      out.push(JSON.stringify(tree));
    } else {
      out.push(JSON.stringify(value(0)));
    }
  }
  return out;
}

// ------------------------------------------------------------------ properties

interface Result {
  accepted: Frame[];
  refused: number;
  failures: string[];
}

function fuzzBinary(inputs: Uint8Array[]): Result {
  const res: Result = { accepted: [], refused: 0, failures: [] };
  inputs.forEach((b, i) => {
    let f: Frame;
    try {
      f = i % 2 === 0 ? decodeBinary(b) : decodeFrame(b);
    } catch (e) {
      if (e instanceof ProtocolError && isErrorCode(e.code)) res.refused++;
      else res.failures.push(`input ${hex(b)} threw ${String(e)}`);
      return;
    }
    try {
      const again = decodeBinary(encodeBinary(f));
      if (!same(again, f)) res.failures.push(`input ${hex(b)} decodes to ${show(f)} but re-decodes to ${show(again)}`);
      else res.accepted.push(f);
    } catch (e) {
      res.failures.push(`input ${hex(b)} decodes to ${show(f)}, whose encoding fails to decode: ${String(e)}`);
    }
  });
  return res;
}

function fuzzJson(inputs: string[]): Result {
  const res: Result = { accepted: [], refused: 0, failures: [] };
  inputs.forEach((s, i) => {
    let f: Frame;
    try {
      f = i % 2 === 0 ? decodeJson(s) : decodeFrame(s);
    } catch (e) {
      if (e instanceof ProtocolError && isErrorCode(e.code)) res.refused++;
      else res.failures.push(`input ${JSON.stringify(s)} threw ${String(e)}`);
      return;
    }
    try {
      const again = decodeJson(encodeJson(f));
      if (!same(again, f)) res.failures.push(`input ${JSON.stringify(s)} decodes to ${show(f)} but re-decodes to ${show(again)}`);
      else res.accepted.push(f);
    } catch (e) {
      res.failures.push(`input ${JSON.stringify(s)} decodes to ${show(f)}, whose encoding fails to decode: ${String(e)}`);
    }
  });
  return res;
}

/** A frame accepted in one encoding must survive the other. retryAfter 0 is "no wait", which binary writes as absent. */
function crossFailures(frames: Frame[], to: 'binary' | 'json'): string[] {
  const out: string[] = [];
  for (const f of frames) {
    const want: Frame = f.t === 'error' && f.retryAfter === 0 ? { t: 'error', code: f.code, message: f.message, ...(f.ref === undefined ? {} : { ref: f.ref }) } : f;
    try {
      const got = to === 'binary' ? decodeBinary(encodeBinary(f)) : decodeJson(encodeJson(f));
      if (!same(got, want)) out.push(`${show(f)} becomes ${show(got)} in ${to}`);
    } catch (e) {
      out.push(`${show(f)} is refused in ${to}: ${String(e)}`);
    }
  }
  return out;
}

describe(`protocol fuzz (seed ${SEED})`, () => {
  const binary = fuzzBinary(binaryInputs(SEED, RUNS));
  const json = fuzzJson(jsonInputs(SEED + 1, RUNS));

  it(`binary: ${RUNS} random and mutated inputs either round-trip or throw ProtocolError`, () => {
    expect(binary.failures.slice(0, 10)).toEqual([]);
    // The fuzz must reach both outcomes to mean anything.
    expect(binary.accepted.length).toBeGreaterThan(RUNS / 20);
    expect(binary.refused).toBeGreaterThan(RUNS / 2);
    expect(new Set(binary.accepted.map((f) => f.t)).size).toBeGreaterThanOrEqual(10);
  });

  it(`JSON: ${RUNS} random and mutated inputs either round-trip or throw ProtocolError`, () => {
    expect(json.failures.slice(0, 10)).toEqual([]);
    expect(json.accepted.length).toBeGreaterThan(RUNS / 20);
    expect(json.refused).toBeGreaterThan(RUNS / 5);
    expect(new Set(json.accepted.map((f) => f.t)).size).toBeGreaterThanOrEqual(10);
  });

  it('every frame the binary decoder accepted is accepted, unchanged, by the JSON decoder', () => {
    expect(crossFailures(binary.accepted, 'json').slice(0, 10)).toEqual([]);
  });

  it('every frame the JSON decoder accepted is accepted, unchanged, by the binary decoder', () => {
    expect(crossFailures(json.accepted, 'binary').slice(0, 10)).toEqual([]);
  });
});
