/**
 * The little CBOR (RFC 8949) the v1 key packets need (0x20 UPLOAD_PREKEYS, 0x22 PREKEY_RESPONSE): what the Erlang
 * server's own codec handled (iris_proto.erl cbor_encode / cbor_decode): integers, byte and text strings, arrays,
 * maps, true/false/null/undefined, floats. Definite lengths only (the Erlang codec had no others), nesting bounded.
 * Map keys are read as strings (text keys as they are, others by their JSON text). Throws CborError.
 */

export type CborValue = number | string | Uint8Array | boolean | null | undefined | CborValue[] | { [k: string]: CborValue };

export class CborError extends Error {}

const MAX_DEPTH = 16;
const utf8 = new TextDecoder();
const enc = new TextEncoder();

class Reader {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}
  byte(): number {
    if (this.pos >= this.b.length) throw new CborError('truncated');
    return this.b[this.pos++]!;
  }
  take(n: number): Uint8Array {
    if (n > this.b.length - this.pos) throw new CborError('truncated');
    const v = new Uint8Array(this.b.subarray(this.pos, this.pos + n));
    this.pos += n;
    return v;
  }
  arg(info: number): number {
    if (info < 24) return info;
    const n = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0;
    if (n === 0) throw new CborError('indefinite or reserved length');
    let v = 0;
    for (const x of this.take(n)) v = v * 256 + x;
    if (!Number.isSafeInteger(v)) throw new CborError('integer too large');
    return v;
  }
  value(depth: number): CborValue {
    if (depth > MAX_DEPTH) throw new CborError('nested too deep');
    const ib = this.byte();
    const major = ib >> 5;
    const info = ib & 31;
    switch (major) {
      case 0:
        return this.arg(info);
      case 1:
        return -1 - this.arg(info);
      case 2:
        return this.take(this.arg(info));
      case 3:
        return utf8.decode(this.take(this.arg(info)));
      case 4: {
        const n = this.arg(info);
        if (n > this.b.length) throw new CborError('truncated');
        const out: CborValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
        return out;
      }
      case 5: {
        const n = this.arg(info);
        if (n > this.b.length) throw new CborError('truncated');
        const out: { [k: string]: CborValue } = {};
        for (let i = 0; i < n; i++) {
          const k = this.value(depth + 1);
          out[typeof k === 'string' ? k : JSON.stringify(k)] = this.value(depth + 1);
        }
        return out;
      }
      case 6:
        this.arg(info);
        return this.value(depth + 1);
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 23) return undefined;
        const view = (n: number) => new DataView(this.take(n).buffer);
        if (info === 25) return half(view(2).getUint16(0));
        if (info === 26) return view(4).getFloat32(0);
        if (info === 27) return view(8).getFloat64(0);
        throw new CborError('unsupported simple value');
      }
    }
  }
}

/** One CBOR item; bytes after it are ignored, as the Erlang decoder did. */
export function cborDecode(b: Uint8Array): CborValue {
  return new Reader(b).value(0);
}

function head(major: number, n: number): number[] {
  const m = major << 5;
  if (n < 24) return [m | n];
  if (n < 256) return [m | 24, n];
  if (n < 65536) return [m | 25, n >> 8, n & 255];
  const be32 = (x: number) => [(x >>> 24) & 255, (x >>> 16) & 255, (x >>> 8) & 255, x & 255];
  if (n < 2 ** 32) return [m | 26, ...be32(n)];
  return [m | 27, ...be32(Math.floor(n / 2 ** 32)), ...be32(n >>> 0)];
}

/** IEEE 754 half precision, as iris_proto.erl decode_half_float. */
function half(h: number): number {
  const sign = h >> 15 ? -1 : 1;
  const exp = (h >> 10) & 31;
  const mant = h & 1023;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

export function cborEncode(v: CborValue): Uint8Array {
  const out: number[] = [];
  const put = (x: CborValue): void => {
    if (x === null) out.push(0xf6);
    else if (x === undefined) out.push(0xf7);
    else if (x === true) out.push(0xf5);
    else if (x === false) out.push(0xf4);
    else if (typeof x === 'number') {
      if (Number.isSafeInteger(x)) out.push(...(x >= 0 ? head(0, x) : head(1, -1 - x)));
      else {
        const b = new DataView(new ArrayBuffer(8));
        b.setFloat64(0, x);
        out.push(0xfb, ...new Uint8Array(b.buffer));
      }
    } else if (typeof x === 'string') {
      const b = enc.encode(x);
      out.push(...head(3, b.length), ...b);
    } else if (x instanceof Uint8Array) {
      out.push(...head(2, x.length));
      for (const y of x) out.push(y);
    } else if (Array.isArray(x)) {
      out.push(...head(4, x.length));
      for (const y of x) put(y);
    } else {
      const entries = Object.entries(x);
      out.push(...head(5, entries.length));
      for (const [k, y] of entries) {
        put(k);
        put(y);
      }
    }
  };
  put(v);
  return new Uint8Array(out);
}
