import { connect, type Socket } from 'node:net';
import { WebSocket } from 'ws';

/**
 * A v1 client for the tests, written from the Erlang Iris's byte layouts (docs/IRIS-V1.md), not from the gateway's
 * code: it builds client packets by hand and parses what the server sends, over TCP or WebSocket (one packet per
 * binary message). Every packet the server sends is kept in `got`, in order; `next` waits for one.
 */

export type ServerPacket =
  | { t: 'login_ok' }
  | { t: 'auth_failed' }
  | { t: 'rate_limited_login' }
  | { t: 'msg'; id: string; body: Buffer }
  | { t: 'status'; user: string; online: boolean; time: number }
  | { t: 'typing'; from: string; on: boolean }
  | { t: 'read'; id: string; reader: string; ts: number }
  | { t: 'error'; reason: string }
  | { t: 'rate_limited'; retryAfter: number }
  | { t: 'prekeys'; map: Record<string, unknown> }
  | { t: 'group_join'; group: string; user: string }
  | { t: 'group_left' }
  | { t: 'roster'; group: string; members: unknown };

type CborIn = number | string | boolean | null | Buffer | CborIn[] | { [k: string]: CborIn };

/** A small CBOR writer (RFC 8949 definite lengths) for the key bundles of 0x20. */
export function cbor(v: CborIn): Buffer {
  const head = (major: number, n: number): Buffer => {
    if (n < 24) return Buffer.from([(major << 5) | n]);
    if (n < 256) return Buffer.from([(major << 5) | 24, n]);
    if (n < 65536) return Buffer.from([(major << 5) | 25, n >> 8, n & 255]);
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  };
  if (v === null) return Buffer.from([0xf6]);
  if (v === true || v === false) return Buffer.from([v ? 0xf5 : 0xf4]);
  if (typeof v === 'number') return head(0, v);
  if (typeof v === 'string') return Buffer.concat([head(3, Buffer.byteLength(v)), Buffer.from(v)]);
  if (v instanceof Uint8Array) {
    const x = v as Buffer;
    return Buffer.concat([head(2, x.byteLength), x]);
  }
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(cbor)]);
  const e = Object.entries(v);
  return Buffer.concat([head(5, e.length), ...e.flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}

/** The matching reader (what a 0x22 answer holds): [value, bytes used]. */
export function uncbor(b: Buffer, o = 0): [unknown, number] {
  const ib = b[o]!;
  const major = ib >> 5;
  const info = ib & 31;
  let n = info;
  let p = o + 1;
  if (info === 24) (n = b[p]!), (p += 1);
  else if (info === 25) (n = b.readUInt16BE(p)), (p += 2);
  else if (info === 26) (n = b.readUInt32BE(p)), (p += 4);
  else if (info === 27) (n = Number(b.readBigUInt64BE(p))), (p += 8);
  if (major === 0) return [n, p];
  if (major === 1) return [-1 - n, p];
  if (major === 2) return [Buffer.from(b.subarray(p, p + n)), p + n];
  if (major === 3) return [b.subarray(p, p + n).toString(), p + n];
  if (major === 4 || major === 5) {
    const arr: unknown[] = [];
    const obj: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const [k, q] = uncbor(b, p);
      p = q;
      if (major === 4) arr.push(k);
      else {
        const [x, r] = uncbor(b, p);
        p = r;
        obj[String(k)] = x;
      }
    }
    return [major === 4 ? arr : obj, p];
  }
  return [{ 20: false, 21: true, 22: null, 23: undefined }[info], p];
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const s16 = (s: string | Buffer) => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u16(b.length), b]);
};

/** Client packets, as bytes. */
export const P = {
  login: (user: string, token?: string) => Buffer.concat([Buffer.from([0x01]), Buffer.from(token ? `${user}:${token}` : user)]),
  send: (to: string, body: string | Buffer) => Buffer.concat([Buffer.from([0x02]), s16(to), s16(Buffer.from(body))]),
  ack: (id: string) => Buffer.concat([Buffer.from([0x03]), Buffer.from(id)]),
  batch: (to: string, bodies: string[]) => {
    const blob = Buffer.concat(bodies.map((b) => s16(b)));
    return Buffer.concat([Buffer.from([0x04]), s16(to), u32(blob.length), blob]);
  },
  status: (user: string) => Buffer.concat([Buffer.from([0x05]), s16(user)]),
  sendSeq: (to: string, seq: number, body: string) => Buffer.concat([Buffer.from([0x07]), s16(to), u32(0), u32(seq), s16(body)]),
  cbor: (to: string, cbor: Buffer) => Buffer.concat([Buffer.from([0x10]), s16(to), u32(cbor.length), cbor]),
  uploadPrekeys: (cbor: Buffer) => Buffer.concat([Buffer.from([0x20]), u32(cbor.length), cbor]),
  fetchPrekeys: (user: string) => Buffer.concat([Buffer.from([0x21]), s16(user)]),
  prekeyResponse: (cbor: Buffer) => Buffer.concat([Buffer.from([0x22]), u32(cbor.length), cbor]),
  e2ee: (to: string, header: Buffer, cipher: Buffer) => Buffer.concat([Buffer.from([0x23]), s16(to), s16(header), u32(cipher.length), cipher]),
  e2eeDelivery: (from: string, header: Buffer, cipher: Buffer) => Buffer.concat([Buffer.from([0x24]), s16(from), s16(header), u32(cipher.length), cipher]),
  groupCreate: (name: string) => Buffer.concat([Buffer.from([0x30]), s16(name)]),
  groupJoin: (g: string, user: string) => Buffer.concat([Buffer.from([0x31]), s16(g), s16(user)]),
  groupLeave: (g: string) => Buffer.concat([Buffer.from([0x32]), s16(g)]),
  groupMsg: (g: string, header: Buffer, cipher: Buffer) => Buffer.concat([Buffer.from([0x33]), s16(g), s16(header), u32(cipher.length), cipher]),
  groupRoster: (g: string) => Buffer.concat([Buffer.from([0x35]), s16(g)]),
  senderKey: (g: string, key: Buffer) => Buffer.concat([Buffer.from([0x36]), s16(g), u32(key.length), key]),
  typingStart: (to: string) => Buffer.concat([Buffer.from([0x70]), s16(to)]),
  typingStop: (to: string) => Buffer.concat([Buffer.from([0x71]), s16(to)]),
  readReceipt: (id: string, sender: string) => Buffer.concat([Buffer.from([0x74]), s16(id), s16(sender)]),
};

/** A 0x33 GROUP_MSG or 0x36 SENDER_KEY_DIST packet (what a group delivery's body holds). */
export function parseGroupPacket(b: Buffer): { op: number; group: string; header?: Record<string, unknown>; data: Buffer } {
  const gl = b.readUInt16BE(1);
  const group = b.subarray(3, 3 + gl).toString();
  if (b[0] === 0x36) return { op: 0x36, group, data: Buffer.from(b.subarray(7 + gl, 7 + gl + b.readUInt32BE(3 + gl))) };
  const hl = b.readUInt16BE(3 + gl);
  const header = uncbor(Buffer.from(b.subarray(5 + gl, 5 + gl + hl)))[0] as Record<string, unknown>;
  const cl = b.readUInt32BE(5 + gl + hl);
  return { op: 0x33, group, header, data: Buffer.from(b.subarray(9 + gl + hl, 9 + gl + hl + cl)) };
}

/** Parses server packets off the front of buf; returns them and the bytes left. */
export function parseServer(buf: Buffer): { packets: ServerPacket[]; rest: Buffer } {
  const out: ServerPacket[] = [];
  let o = 0;
  for (;;) {
    const b = buf.subarray(o);
    if (b.length === 0) break;
    const op = b[0]!;
    if (op === 0x03) {
      if (b.length < 9) break;
      out.push({ t: 'login_ok' });
      o += 9;
    } else if (op === 0x52) {
      if (b.length < 12) break;
      out.push({ t: 'rate_limited_login' });
      o += 12;
    } else if (op === 0x41) {
      if (b.length < 11) break;
      out.push({ t: 'auth_failed' });
      o += 11;
    } else if (op === 0x10) {
      if (b.length < 3) break;
      const il = b.readUInt16BE(1);
      if (b.length < 3 + il + 4) break;
      const ml = b.readUInt32BE(3 + il);
      if (b.length < 7 + il + ml) break;
      out.push({ t: 'msg', id: b.subarray(3, 3 + il).toString(), body: Buffer.from(b.subarray(7 + il, 7 + il + ml)) });
      o += 7 + il + ml;
    } else if (op === 0x06) {
      if (b.length < 3) break;
      const ul = b.readUInt16BE(1);
      if (b.length < 3 + ul + 9) break;
      out.push({ t: 'status', user: b.subarray(3, 3 + ul).toString(), online: b[3 + ul] === 1, time: Number(b.readBigUInt64BE(4 + ul)) });
      o += 12 + ul;
    } else if (op === 0x72) {
      if (b.length < 3) break;
      const l = b.readUInt16BE(1);
      if (b.length < 4 + l) break;
      out.push({ t: 'typing', from: b.subarray(3, 3 + l).toString(), on: b[3 + l] === 1 });
      o += 4 + l;
    } else if (op === 0x75) {
      if (b.length < 3) break;
      const il = b.readUInt16BE(1);
      if (b.length < 5 + il) break;
      const rl = b.readUInt16BE(3 + il);
      if (b.length < 5 + il + rl + 8) break;
      out.push({ t: 'read', id: b.subarray(3, 3 + il).toString(), reader: b.subarray(5 + il, 5 + il + rl).toString(), ts: Number(b.readBigUInt64BE(5 + il + rl)) });
      o += 13 + il + rl;
    } else if (op === 0x22) {
      if (b.length < 5) break;
      const l = b.readUInt32BE(1);
      if (b.length < 5 + l) break;
      out.push({ t: 'prekeys', map: uncbor(Buffer.from(b.subarray(5, 5 + l)))[0] as Record<string, unknown> });
      o += 5 + l;
    } else if (op === 0x31) {
      if (b.length < 3) break;
      const gl = b.readUInt16BE(1);
      if (b.length < 5 + gl) break;
      const ul = b.readUInt16BE(3 + gl);
      if (b.length < 5 + gl + ul) break;
      out.push({ t: 'group_join', group: b.subarray(3, 3 + gl).toString(), user: b.subarray(5 + gl, 5 + gl + ul).toString() });
      o += 5 + gl + ul;
    } else if (op === 0x32) {
      if (b.length < 3) break;
      out.push({ t: 'group_left' });
      o += 3;
    } else if (op === 0x35) {
      if (b.length < 3) break;
      const gl = b.readUInt16BE(1);
      if (b.length < 7 + gl) break;
      const rl = b.readUInt32BE(3 + gl);
      if (b.length < 7 + gl + rl) break;
      out.push({ t: 'roster', group: b.subarray(3, 3 + gl).toString(), members: uncbor(Buffer.from(b.subarray(7 + gl, 7 + gl + rl)))[0] });
      o += 7 + gl + rl;
    } else if (op === 0xfe) {
      if (b.length < 3) break;
      const l = b.readUInt16BE(1);
      if (b.length < 3 + l) break;
      out.push({ t: 'error', reason: b.subarray(3, 3 + l).toString() });
      o += 3 + l;
    } else if (op === 0xff) {
      if (b.length < 5) break;
      out.push({ t: 'rate_limited', retryAfter: b.readUInt32BE(1) });
      o += 5;
    } else throw new Error(`unexpected server byte 0x${op.toString(16)} in ${b.toString('hex')}`);
  }
  return { packets: out, rest: Buffer.from(buf.subarray(o)) };
}

export class V1Client {
  readonly got: ServerPacket[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private tcp: Socket | null = null;
  private ws: WebSocket | null = null;
  /** ACK every message as it arrives (what the Erlang clients did). */
  autoAck = true;

  private constructor(readonly transport: 'tcp' | 'ws') {}

  static async open(transport: 'tcp' | 'ws', port: number): Promise<V1Client> {
    const c = new V1Client(transport);
    if (transport === 'tcp') {
      const s = connect({ host: '127.0.0.1', port, noDelay: true });
      c.tcp = s;
      s.on('data', (d: Buffer) => c.onBytes(d));
      s.on('close', () => c.onClose());
      s.on('error', () => undefined);
      await new Promise<void>((res, rej) => {
        s.once('connect', () => res());
        s.once('error', rej);
      });
    } else {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      c.ws = ws;
      ws.on('message', (d: Buffer) => c.onBytes(Buffer.from(d)));
      ws.on('close', () => c.onClose());
      ws.on('error', () => undefined);
      await new Promise<void>((res, rej) => {
        ws.once('open', () => res());
        ws.once('error', rej);
      });
    }
    return c;
  }

  private onBytes(d: Buffer): void {
    const { packets, rest } = parseServer(Buffer.concat([this.buf, d]));
    this.buf = rest;
    for (const p of packets) {
      this.got.push(p);
      if (p.t === 'msg' && this.autoAck) this.write(P.ack(p.id));
    }
    this.wake();
  }

  private onClose(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** TCP: stop reading (a slow client: what the server writes piles up in the kernel, then in the server). */
  pause(): void {
    this.tcp!.pause();
  }

  resume(): void {
    this.tcp!.resume();
  }

  /** TCP: drop the connection at once (no FIN handshake wait), e.g. in the middle of a packet. */
  destroy(): void {
    this.tcp?.destroy();
    this.ws?.terminate();
  }

  /** Raw bytes: one TCP write, or one WebSocket binary message. */
  write(bytes: Buffer): void {
    if (this.tcp) this.tcp.write(bytes);
    else this.ws!.send(bytes, { binary: true });
  }

  /** Waits until cond holds on what was received; rejects after timeoutMs with what was received. */
  async until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.got.map((p) => (p.t === 'msg' ? { ...p, body: p.body.toString() } : p)))}${this.closed ? ' (closed)' : ''}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** The first packet of kind t at or after index `from` of `got`. */
  async next<T extends ServerPacket['t']>(t: T, from = 0, timeoutMs?: number): Promise<Extract<ServerPacket, { t: T }>> {
    let found: ServerPacket | undefined;
    await this.until(t, () => (found = this.got.slice(from).find((p) => p.t === t)) !== undefined, timeoutMs);
    return found as Extract<ServerPacket, { t: T }>;
  }

  messages(): { id: string; body: string }[] {
    return this.got.flatMap((p) => (p.t === 'msg' ? [{ id: p.id, body: p.body.toString() }] : []));
  }

  errors(): string[] {
    return this.got.flatMap((p) => (p.t === 'error' ? [p.reason] : []));
  }

  async login(user: string, token?: string): Promise<void> {
    const from = this.got.length;
    this.write(P.login(user, token));
    await this.until(`LOGIN_OK for ${user}`, () => this.got.slice(from).some((p) => p.t === 'login_ok' || p.t === 'auth_failed'));
    if (this.got.slice(from).some((p) => p.t === 'auth_failed')) throw new Error(`AUTH_FAILED for ${user}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const done = new Promise<void>((r) => this.waiters.push(() => this.closed && r()));
    if (this.tcp) this.tcp.end();
    else this.ws!.close();
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    this.tcp?.destroy();
    this.ws?.terminate();
  }
}

/** A token as the Erlang server's iris_auth made them: HS256, iss "iris", sub = the user. */
export async function v1Token(user: string, secret: string, opts: { issuer?: string; sub?: string } = {}): Promise<string> {
  const { SignJWT } = await import('jose');
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(opts.sub ?? user)
    .setIssuer(opts.issuer ?? 'iris')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(secret));
}
