// Over 400 lines on purpose: the link codec, its server and its client belong together; every op is encoded
// and decoded here, so the two ends of the wire cannot drift apart.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import type { ForwardBatch, ForwardItem, ForwardResult } from '../core/ports.js';
import { REF_KINDS, decodeBinary, encodeBinary, type KeyBundleEntry, type PresenceInfo, type RefKind } from '../protocol/index.js';

/**
 * Links: the router's wire between worker processes (worker/router.ts). A unix domain socket per worker
 * (<run dir>/peer-<i>.sock: the file keeps its old name, which the supervisor's path-length check also uses),
 * length-prefixed binary frames with request ids, writes batched per event-loop turn into one write().
 *
 *   frame = len:u32 (bytes after it) | op:u8 | rid:u32 | payload
 *   forward      (1): to:str from:str count:u32 { n:f64 kind:u8 msg:str ts:f64 body:bytes [refKind:u8 refMsg:str] }* hasReceipt:u8 [n:f64 msg:str ts:f64]
 *                     hasRead:u8 [n:f64 msg:str ts:f64] hasTrace:u8 [trace:str] (ForwardBatch.trace, for the logs)
 *                     (kind | 0x80: the item carries a message reference, PROTOCOL.md 9.9)
 *   forward_res  (2): acceptedUpTo:f64 hasRetry:u8 retryAfter:f64
 *   presence     (3): user:str asker:str
 *   presence_res (4): user:str online:u8 lastSeen:f64
 *   error        (5): message:str
 *   watch        (6): subject:str watcher:str on:u8             (Peers.watch, presence subscriptions)
 *   watch_res    (7): has:u8 [user:str online:u8 lastSeen:f64]  (has 0: hidden, refused or off)
 *   push         (8): watcher:str user:str online:u8 lastSeen:f64 (Peers.presenceChanged)
 *   push_res     (9): wanted:u8
 *   typing      (10): to:str from:str conv:str on:u8            (Peers.typing, typing indicators)
 *   typing_res  (11): online:u8
 *   group       (12): json:str                                 (Peers.group / groupPush / groupNews: group-link.ts)
 *   group_res   (13): json:str
 *   keys        (14): owner:str requester:str                  (Peers.fetchKeys, the key directory)
 *   keys_res    (15): bundle:bytes (the protocol's binary keys_bundle frame: one codec for the keys, not two)
 *   key_devices (16): owner:str                                (Peers.keyDevices)
 *   key_devices_res (17): count:u32 device:str*
 *   admin       (18): call:str (JSON, core/admin.ts AdminCall)    (the admin API, to the user's owner)
 *   admin_res   (19): answer:str (JSON, AdminAnswer)
 *   str/bytes = len:u32 + bytes (UTF-8). Numbers that may exceed 32 bits travel as f64 (exact to 2^53).
 *
 * Every worker keeps at most one outgoing connection per other worker; requests on it are pipelined and
 * answered in any order. A closed connection fails its outstanding calls (the core retries forwards with
 * backoff; a presence query answers `unavailable`) and the next call reconnects.
 */

const OP_FORWARD = 1;
const OP_FORWARD_RES = 2;
const OP_PRESENCE = 3;
const OP_PRESENCE_RES = 4;
const OP_ERROR = 5;
const OP_WATCH = 6;
const OP_WATCH_RES = 7;
const OP_PUSH = 8;
const OP_PUSH_RES = 9;
/** Set on a forward item's kind byte when a message reference follows its body. */
const REF_FLAG = 0x80;
const REF_BY_NUMBER = new Map<number, RefKind>((Object.entries(REF_KINDS) as [RefKind, number][]).map(([k, n]) => [n, k]));
const OP_TYPING = 10;
const OP_TYPING_RES = 11;
const OP_GROUP = 12;
const OP_GROUP_RES = 13;
const OP_KEYS = 14;
const OP_KEYS_RES = 15;
const OP_KEY_DEVICES = 16;
const OP_KEY_DEVICES_RES = 17;

/** A bundle crosses the link as the protocol's own binary frame (its ref is not used). */
function encodeBundle(owner: string, devices: KeyBundleEntry[]): Uint8Array {
  return encodeBinary({ t: 'keys_bundle', ref: '-', user: owner, devices });
}

function decodeBundle(b: Uint8Array): KeyBundleEntry[] {
  const f = decodeBinary(b);
  if (f.t !== 'keys_bundle') throw new LinkError(`expected a keys_bundle, got ${f.t}`);
  return f.devices;
}

const OP_ADMIN = 18;
const OP_ADMIN_RES = 19;
/** Far above a forward batch (64 items x 64 KiB bodies); anything larger is a broken link. */
const MAX_FRAME = 16 * 1024 * 1024;

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

class Enc {
  buf = Buffer.allocUnsafe(256);
  pos = 4;
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(n: number): this {
    this.room(1);
    this.buf[this.pos++] = n;
    return this;
  }
  u32(n: number): this {
    this.room(4);
    this.buf.writeUInt32LE(n, this.pos);
    this.pos += 4;
    return this;
  }
  f64(n: number): this {
    this.room(8);
    this.buf.writeDoubleLE(n, this.pos);
    this.pos += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.u32(b.byteLength);
    this.room(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
    return this;
  }
  str(s: string): this {
    this.room(4 + s.length * 3);
    const { written } = utf8.encodeInto(s, this.buf.subarray(this.pos + 4));
    this.buf.writeUInt32LE(written, this.pos);
    this.pos += 4 + written;
    return this;
  }
  /** The finished frame, length prefix filled in. */
  done(): Buffer {
    this.buf.writeUInt32LE(this.pos - 4, 0);
    return this.buf.subarray(0, this.pos);
  }
}

export class Dec {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new Error('link frame truncated');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(): Uint8Array {
    const n = this.u32();
    this.need(n);
    // Copied: the frame buffer may be a slice of a larger read buffer.
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }
  str(): string {
    const n = this.u32();
    this.need(n);
    const s = utf8d.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}

function frame(op: number, rid: number): Enc {
  return new Enc().u8(op).u32(rid);
}

export function encodeForward(rid: number, to: string, batch: ForwardBatch): Buffer {
  const e = frame(OP_FORWARD, rid).str(to).str(batch.from).u32(batch.items.length);
  for (const it of batch.items) {
    e.f64(it.n).u8((it.kind === 'delivered' ? 2 : 1) | (it.ref ? REF_FLAG : 0)).str(it.msg).f64(it.ts).bytes(it.body);
    if (it.ref) e.u8(REF_KINDS[it.ref.kind]).str(it.ref.msg);
  }
  for (const r of [batch.receipt, batch.read]) {
    if (r) e.u8(1).f64(r.n).str(r.msg).f64(r.ts);
    else e.u8(0);
  }
  if (batch.trace !== undefined) e.u8(1).str(batch.trace);
  else e.u8(0);
  return e.done();
}

export function decodeForward(d: Dec): { to: string; batch: ForwardBatch } {
  const to = d.str();
  const from = d.str();
  const count = d.u32();
  const items: ForwardItem[] = [];
  for (let i = 0; i < count; i++) {
    const n = d.f64();
    const k = d.u8();
    const item: ForwardItem = { n, kind: (k & ~REF_FLAG) === 2 ? 'delivered' : 'message', msg: d.str(), ts: d.f64(), body: d.bytes() };
    if (k & REF_FLAG) {
      const kind = REF_BY_NUMBER.get(d.u8());
      const msg = d.str();
      // Both ends are the same build: an unknown kind is a broken link, and the item goes without it.
      if (kind) item.ref = { kind, msg };
    }
    items.push(item);
  }
  // Both ends of a link are the same build (one server's workers), so the read receipt follows unconditionally.
  const receipt = d.u8() === 1 ? { n: d.f64(), msg: d.str(), ts: d.f64() } : undefined;
  const read = d.u8() === 1 ? { n: d.f64(), msg: d.str(), ts: d.f64() } : undefined;
  const trace = d.u8() === 1 ? d.str() : undefined;
  return { to, batch: { from, items, ...(receipt && { receipt }), ...(read && { read }), ...(trace !== undefined && { trace }) } };
}

/** Splits a byte stream into frames: calls onFrame(op, rid, body decoder) for each complete one. */
class FrameReader {
  private pending: Buffer[] = [];
  private pendingLen = 0;

  constructor(private readonly onFrame: (op: number, rid: number, d: Dec) => void) {}

  push(chunk: Buffer): void {
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen < 4) return;
    let buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32LE(off);
      if (len < 5 || len > MAX_FRAME) throw new Error(`bad link frame length ${len}`);
      if (buf.length - off - 4 < len) break;
      const body = buf.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      const d = new Dec(body);
      const op = d.u8();
      const rid = d.u32();
      this.onFrame(op, rid, d);
    }
    buf = buf.subarray(off);
    this.pending = buf.length > 0 ? [buf] : [];
    this.pendingLen = buf.length;
  }
}

/** Feeds a link's bytes to its reader; a broken frame or a socket error ends the link (its calls fail). */
function readFrames(socket: Socket, reader: FrameReader): void {
  socket.on('data', (chunk: Buffer) => {
    try {
      reader.push(chunk);
    } catch {
      socket.destroy();
    }
  });
  socket.on('error', () => socket.destroy());
}

/** Queues frames and writes everything queued in one event-loop turn with one write(). */
class BatchWriter {
  private queue: Buffer[] = [];
  private scheduled = false;

  constructor(private readonly socket: Socket) {}

  write(b: Buffer): void {
    this.queue.push(b);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    if (q.length === 0 || this.socket.destroyed) return;
    this.socket.write(q.length === 1 ? q[0]! : Buffer.concat(q));
  }
}

export interface LinkHandler {
  forward(to: string, batch: ForwardBatch): Promise<ForwardResult>;
  presence(user: string, asker: string): Promise<PresenceInfo>;
  watch(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined>;
  presenceChanged(watcher: string, info: PresenceInfo): Promise<boolean>;
  typing(to: string, from: string, conv: string, on: boolean): Promise<boolean>;
  /** A group call, push or news (onprem/group-link.ts), JSON in and out. */
  group?(json: string): Promise<string>;
  fetchKeys(owner: string, requester: string): Promise<KeyBundleEntry[]>;
  keyDevices(owner: string): Promise<string[]>;
  /** The admin API (core/admin.ts): rare, so plain JSON rather than a binary layout. */
  admin?(call: string): Promise<string>;
}

/** Answers other workers' calls on <run dir>/peer-<id>.sock. */
export class LinkServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly handler: LinkHandler,
  ) {}

  listen(): Promise<void> {
    try {
      unlinkSync(this.path); // left over from a worker that died
    } catch {
      // Not there: fine.
    }
    const server = createServer((s) => this.accept(s));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay?.(true);
    const out = new BatchWriter(socket);
    const reader = new FrameReader((op, rid, d) => {
      if (op === OP_FORWARD) {
        const { to, batch } = decodeForward(d);
        this.handler.forward(to, batch).then(
          (r) => out.write(frame(OP_FORWARD_RES, rid).f64(r.acceptedUpTo).u8(r.retryAfter === undefined ? 0 : 1).f64(r.retryAfter ?? 0).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_PRESENCE) {
        const user = d.str();
        const asker = d.str();
        this.handler.presence(user, asker).then(
          (p) => out.write(frame(OP_PRESENCE_RES, rid).str(p.user).u8(p.online ? 1 : 0).f64(p.lastSeen).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_WATCH) {
        const subject = d.str();
        const watcher = d.str();
        const on = d.u8() === 1;
        this.handler.watch(subject, watcher, on).then(
          (p) => out.write(p === undefined ? frame(OP_WATCH_RES, rid).u8(0).done() : frame(OP_WATCH_RES, rid).u8(1).str(p.user).u8(p.online ? 1 : 0).f64(p.lastSeen).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_PUSH) {
        const watcher = d.str();
        const info = { user: d.str(), online: d.u8() === 1, lastSeen: d.f64() };
        this.handler.presenceChanged(watcher, info).then(
          (wanted) => out.write(frame(OP_PUSH_RES, rid).u8(wanted ? 1 : 0).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_TYPING) {
        const to = d.str();
        const from = d.str();
        const conv = d.str();
        this.handler.typing(to, from, conv, d.u8() === 1).then(
          (online) => out.write(frame(OP_TYPING_RES, rid).u8(online ? 1 : 0).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_GROUP) {
        (this.handler.group?.(d.str()) ?? Promise.reject(new Error('groups are not served here'))).then(
          (json) => out.write(frame(OP_GROUP_RES, rid).str(json).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_KEYS) {
        const owner = d.str();
        const requester = d.str();
        this.handler.fetchKeys(owner, requester).then(
          (devices) => out.write(frame(OP_KEYS_RES, rid).bytes(encodeBundle(owner, devices)).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_KEY_DEVICES) {
        this.handler.keyDevices(d.str()).then(
          (devices) => {
            const e = frame(OP_KEY_DEVICES_RES, rid).u32(devices.length);
            for (const dev of devices) e.str(dev);
            out.write(e.done());
          },
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else if (op === OP_ADMIN && this.handler.admin) {
        this.handler.admin(d.str()).then(
          (answer) => out.write(frame(OP_ADMIN_RES, rid).str(answer).done()),
          (e: unknown) => out.write(frame(OP_ERROR, rid).str(String(e instanceof Error ? e.message : e)).done()),
        );
      } else {
        out.write(frame(OP_ERROR, rid).str(`unknown op ${op}`).done());
      }
    });
    readFrames(socket, reader);
    socket.on('close', () => this.sockets.delete(socket));
  }

  close(): void {
    this.server?.close();
    for (const s of this.sockets) s.destroy();
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }
}

interface Pending {
  resolve: (d: Dec, op: number) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class LinkError extends Error {
  override readonly name = 'LinkError';
}

/** One worker's connection to another worker's LinkServer. */
export class LinkClient {
  private socket: Socket | null = null;
  private writer: BatchWriter | null = null;
  private connected = false;
  private nextRid = 1;
  private readonly pending = new Map<number, Pending>();
  private closedForGood = false;

  constructor(
    readonly target: number,
    readonly path: string,
    private readonly timeoutMs: number,
  ) {}

  private ensure(): BatchWriter {
    if (this.writer && this.socket && !this.socket.destroyed) return this.writer;
    const socket = createConnection(this.path);
    this.socket = socket;
    this.connected = false;
    const writer = new BatchWriter(socket);
    this.writer = writer;
    const reader = new FrameReader((op, rid, d) => {
      const p = this.pending.get(rid);
      if (!p) return;
      this.pending.delete(rid);
      clearTimeout(p.timer);
      if (op === OP_ERROR) p.reject(new LinkError(`worker ${this.target}: ${d.str()}`));
      else p.resolve(d, op);
    });
    socket.on('connect', () => {
      this.connected = true;
    });
    readFrames(socket, reader);
    socket.on('close', () => {
      if (this.socket === socket) {
        this.socket = null;
        this.writer = null;
      }
      const why = this.connected ? 'connection closed' : 'not reachable';
      this.failAll(new LinkError(`worker ${this.target}: ${why}`));
    });
    return writer;
  }

  private failAll(e: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(e);
    }
  }

  private call(build: (rid: number) => Buffer): Promise<{ d: Dec; op: number }> {
    if (this.closedForGood) return Promise.reject(new LinkError('links are closed'));
    const writer = this.ensure();
    const rid = this.nextRid;
    this.nextRid = this.nextRid >= 0xffffffff ? 1 : this.nextRid + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new LinkError(`worker ${this.target}: no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(rid, { resolve: (d, op) => resolve({ d, op }), reject, timer });
      writer.write(build(rid));
    });
  }

  async forward(to: string, batch: ForwardBatch): Promise<ForwardResult> {
    const { d, op } = await this.call((rid) => encodeForward(rid, to, batch));
    if (op !== OP_FORWARD_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    const acceptedUpTo = d.f64();
    const hasRetry = d.u8() === 1;
    const retryAfter = d.f64();
    return hasRetry ? { acceptedUpTo, retryAfter } : { acceptedUpTo };
  }

  async presence(user: string, asker: string): Promise<PresenceInfo> {
    const { d, op } = await this.call((rid) => frame(OP_PRESENCE, rid).str(user).str(asker).done());
    if (op !== OP_PRESENCE_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return { user: d.str(), online: d.u8() === 1, lastSeen: d.f64() };
  }

  async watch(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined> {
    const { d, op } = await this.call((rid) => frame(OP_WATCH, rid).str(subject).str(watcher).u8(on ? 1 : 0).done());
    if (op !== OP_WATCH_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    if (d.u8() === 0) return undefined;
    return { user: d.str(), online: d.u8() === 1, lastSeen: d.f64() };
  }

  async presenceChanged(watcher: string, info: PresenceInfo): Promise<boolean> {
    const { d, op } = await this.call((rid) => frame(OP_PUSH, rid).str(watcher).str(info.user).u8(info.online ? 1 : 0).f64(info.lastSeen).done());
    if (op !== OP_PUSH_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return d.u8() === 1;
  }

  async typing(to: string, from: string, conv: string, on: boolean): Promise<boolean> {
    const { d, op } = await this.call((rid) => frame(OP_TYPING, rid).str(to).str(from).str(conv).u8(on ? 1 : 0).done());
    if (op !== OP_TYPING_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return d.u8() === 1;
  }

  async group(json: string): Promise<string> {
    const { d, op } = await this.call((rid) => frame(OP_GROUP, rid).str(json).done());
    if (op !== OP_GROUP_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return d.str();
  }

  async fetchKeys(owner: string, requester: string): Promise<KeyBundleEntry[]> {
    const { d, op } = await this.call((rid) => frame(OP_KEYS, rid).str(owner).str(requester).done());
    if (op !== OP_KEYS_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return decodeBundle(d.bytes());
  }

  async keyDevices(owner: string): Promise<string[]> {
    const { d, op } = await this.call((rid) => frame(OP_KEY_DEVICES, rid).str(owner).done());
    if (op !== OP_KEY_DEVICES_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    const n = d.u32();
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(d.str());
    return out;
  }

  async admin(call: string): Promise<string> {
    const { d, op } = await this.call((rid) => frame(OP_ADMIN, rid).str(call).done());
    if (op !== OP_ADMIN_RES) throw new LinkError(`worker ${this.target}: unexpected answer ${op}`);
    return d.str();
  }

  close(): void {
    this.closedForGood = true;
    this.socket?.destroy();
    this.failAll(new LinkError('links are closed'));
  }
}
