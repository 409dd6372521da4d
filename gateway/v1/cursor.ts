import type { V1ErrorReason } from './errors.js';

/** The reading side of codec.ts's decoder: one packet's fields, big-endian, bounded as the old server bounded them. */

const utf8 = new TextDecoder();
export const text = (b: Uint8Array) => utf8.decode(b);

export class NeedMore extends Error {}
export class Bad extends Error {
  constructor(readonly reason: V1ErrorReason) {
    super(reason);
  }
}

/** Reads one packet from buf at offset 0; throws NeedMore or Bad. Returns the packet and its length. */
export class Cursor {
  pos = 1;
  constructor(private readonly b: Uint8Array) {}
  need(n: number): void {
    if (this.pos + n > this.b.length) throw new NeedMore();
  }
  u8(): number {
    this.need(1);
    return this.b[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = (this.b[this.pos]! << 8) | this.b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = ((this.b[this.pos]! << 24) >>> 0) + ((this.b[this.pos + 1]! << 16) | (this.b[this.pos + 2]! << 8) | this.b[this.pos + 3]!);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const hi = BigInt(this.u32());
    return (hi << 32n) | BigInt(this.u32());
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    // A copy, and a plain Uint8Array even when the read was a Buffer (whose slice is a view of the read).
    const v = new Uint8Array(this.b.subarray(this.pos, this.pos + n));
    this.pos += n;
    return v;
  }
  /** len:16 then that many bytes, refused above max with `reason` as soon as the length is known. */
  str16(max: number, reason: V1ErrorReason): string {
    const n = this.u16();
    if (n > max) throw new Bad(reason);
    return text(this.bytes(n));
  }
  bytes16(max: number, reason: V1ErrorReason): Uint8Array {
    const n = this.u16();
    if (n > max) throw new Bad(reason);
    return this.bytes(n);
  }
  bytes32(max: number, reason: V1ErrorReason): Uint8Array {
    const n = this.u32();
    if (n > max) throw new Bad(reason);
    return this.bytes(n);
  }
}

