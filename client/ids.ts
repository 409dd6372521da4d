/**
 * Client message ids and request refs: a random per-instance prefix plus a counter, so ids are unique across
 * processes that share a device (and across restarts) without coordination, and cheap to make.
 * Always visible ASCII and well under the 64-char limit of protocol v1.
 */
export class IdGenerator {
  private readonly prefix: string;
  private n = 0;

  constructor() {
    const bytes = new Uint8Array(10);
    crypto.getRandomValues(bytes);
    let s = '';
    for (const b of bytes) s += (b % 36).toString(36);
    this.prefix = s;
  }

  next(kind = 'm'): string {
    this.n++;
    return `${kind}${this.prefix}.${this.n.toString(36)}`;
  }
}
