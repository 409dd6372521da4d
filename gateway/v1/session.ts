import { randomBytes } from 'node:crypto';
import { decodeBinary, encodeBinary, HELLO_FEATURES, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import type { ConnState, TokenClaims } from '../../core/ports.js';
import type { HeldConn } from '../../onprem/conn.js';
import type { Shard } from '../../onprem/worker/shards.js';
import { LOGIN_OK, encodeE2eeDelivery, encodeError, encodeRateLimited, encodeReadReceiptRelay, encodeReliable, encodeStatus, encodeTypingRelay, messageId, seqOfId, type Decoded, type V1Packet } from './codec.js';
import type { V1Link } from './link.js';
import { bundleMapOf, encodePrekeyResponse, uploadOf } from './keys.js';
import { V1Groups } from './groups.js';

/**
 * A logged-in v1 connection, in the worker that owns its user: one more `Conn` of the user's Mailbox. Packets in
 * become this Iris's client frames, handed to the mailbox like a WebSocket's; frames the core sends become v1
 * packets. Offline delivery, order, dedup, presence, rate limits and ack-after-durable stay the core's.
 *
 *   SEND 0x02 / BATCH 0x04 / SEND_SEQ 0x07 / E2EE 0x23  -> send         (0x23: the 0x24 packet is the body)
 *   ACK 0x03 (id = inbox seq)                           -> deliver_ack  (cumulative)
 *   GET_STATUS 0x05                                     -> presence_query -> 0x06
 *   TYPING 0x70/0x71                                    -> typing          typing_state -> 0x72
 *   READ_RECEIPT 0x74                                   -> read            receipts.read -> 0x75
 *   deliver (messages)                                  -> RELIABLE_MSG 0x10
 *   error rate_limited                                  -> 0xFF;  any other error -> 0xFE with the core's code
 */

/** The device every v1 connection of a user is: one at a time, as in the Erlang server (the last LOGIN wins). */
export const V1_DEVICE = 'v1';
/** Refs of the key frames this gateway sends for 0x20 / 0x21: their answers become 0x22. */
const KEYS_REF = 'v1k';
/** Delivered ids remembered for read receipts (0x74 names one); older ones answer unknown_msg_id. */
const REMEMBERED = 1024;

export class V1Session implements HeldConn {
  private st: ConnState | null = null;
  alive = true;
  token: TokenClaims | undefined;
  readonly trace: string;
  /** Client ids of the sends made for this connection: made at the first send (an idle connection has none). */
  private prefix: string | null = null;
  private nextId = 1;
  private nextRef = 1;
  private loggedIn = false;
  /** Inside send(): frames made now wait for a microtask (see frame). */
  private inSend = 0;
  private deferred: [ClientFrame, () => void][] = [];
  /** Packets that came before the welcome. */
  private early: Decoded[] = [];
  /** Until the hello is through: the receipts pushed meanwhile are the state so far, not news. */
  private catchingUp = true;
  /** Message seqs written to the client and not acked, in order; entries it is not shown are acked with them. */
  private outstanding: number[] = [];
  private highestSeen = 0;
  private acked = 0;
  /** A deliver_ack is scheduled for the ACKs of this read (see ack). */
  private ackDue = false;
  /** seq -> [server message id, sender], for read receipts. Made when first needed, like `reads` and the group part: */
  private delivered: Map<number, [string, string]> | null = null;
  /** Per peer, the read position last seen (0x75 goes out when it moves). */
  private reads: Map<string, string> | null = null;
  /** The group packets (groups.ts); null until the connection has a group packet or frame. */
  private groupPart: V1Groups | null = null;

  constructor(
    private readonly link: V1Link,
    private readonly shard: Shard,
    readonly user: string,
    token: TokenClaims | undefined,
    trace: string,
  ) {
    this.token = token;
    this.trace = trace;
  }

  /**
   * An idle connection holds as little as it can (docs/IRIS-V1.md "Memory per idle connection": every empty Map,
   * closure and context is paid once per connection, 10,000s of times): the parts below are made on first use.
   */
  private get groups(): V1Groups {
    return (this.groupPart ??= new V1Groups({
      user: this.user,
      write: (p) => this.link.write(p),
      error: (r) => this.link.error(r, false),
      frame: (f) => void this.frame(f),
      clientId: () => this.clientId(),
    }));
  }

  private clientId(): string {
    this.prefix ??= `v1.${randomBytes(6).toString('hex')}.`;
    return this.prefix + this.nextId++;
  }

  /** What the heartbeat, the drain and the admin API call (HeldConn.ws): this session itself, no object of its own. */
  get ws(): { ping(): void; terminate(): void } {
    return this;
  }

  /** The heartbeat pings WebSockets; a v1 connection has no ping (TCP keepalive is on): it answers at once. */
  ping(): void {
    this.alive = true;
  }

  terminate(): void {
    this.link.destroy();
  }

  get state(): ConnState | null {
    return this.st;
  }

  setState(state: ConnState): void {
    this.st = state;
  }

  get queuedBytes(): number {
    return this.link.queuedBytes;
  }

  /** Joins the user's shard and says hello as device V1_DEVICE; LOGIN_OK goes out with the welcome. */
  start(): void {
    const { shard } = this;
    shard.add(this);
    shard.host.connCount++;
    shard.host.metrics.connections.inc();
    this.link.handler = this;
    // features: typing and groups (no references or sync: v1 has no packet for them); reads so that read
    // receipts come with the receipts the core pushes.
    void this.frame({ t: 'hello', device: V1_DEVICE, cursor: 0, reads: 0, features: HELLO_FEATURES.typing | HELLO_FEATURES.groups }).then(() => {
      this.catchingUp = false;
    });
  }

  /**
   * Never rejects: the mailbox answers every failure with an error frame (translated in send). A frame made while
   * the core is writing to this connection (an ack of entries the client is not shown, the packets that waited
   * for the welcome) is handed over once the core's synchronous work is done: the core updates what it sent right
   * after the write, and an ack arriving inside the write would be beyond it (bad_ack).
   */
  private frame(f: ClientFrame): Promise<void> {
    if (this.inSend === 0) return this.frameNow(f);
    return new Promise((resolve) => {
      this.deferred.push([f, resolve]);
      if (this.deferred.length === 1) queueMicrotask(() => this.flushDeferred());
    });
  }

  private flushDeferred(): void {
    const list = this.deferred;
    this.deferred = [];
    for (const [f, resolve] of list) void this.frameNow(f).then(resolve);
  }

  private frameNow(f: ClientFrame): Promise<void> {
    let bytes: Uint8Array;
    try {
      bytes = encodeBinary(f);
    } catch {
      // Not expected (the mailbox's decoder checks every field and answers invalid_field), but a packet must never
      // throw out of the socket's data handler.
      this.link.error('invalid_field', false);
      return Promise.resolve();
    }
    const p = this.shard.mailbox.onMessage(this, bytes);
    return this.shard.host.track(this.shard, p).catch(() => undefined);
  }

  closed(): void {
    const { shard } = this;
    shard.remove(this);
    shard.host.connCount--;
    shard.host.metrics.connections.dec();
    void shard.host.track(shard, shard.mailbox.onClose(this)).catch(() => undefined);
  }

  close(_code: number, _reason: string): void {
    this.link.end(1000);
  }

  packets(items: Decoded[]): void {
    // Until LOGIN_OK (the welcome) the core has no state for this connection: what the client sent behind its
    // LOGIN waits, in order, instead of being refused with hello_required.
    if (!this.loggedIn) {
      this.early.push(...items);
      return;
    }
    for (const it of items) {
      if (this.link.closedAlready) return;
      if (!it.ok) this.link.error(it.reason, it.fatal);
      else this.packet(it.packet);
    }
  }

  private sendMessage(to: string, body: Uint8Array): void {
    void this.frame({ t: 'send', id: this.clientId(), to, body });
  }

  private packet(p: V1Packet): void {
    if ((p.op.startsWith('group_') || p.op === 'sender_key') && this.groups.packet(p)) return;
    switch (p.op) {
      case 'login':
        return this.link.error('already_logged_in', false);
      case 'send':
      case 'send_seq':
        return this.sendMessage(p.target, p.body);
      case 'batch':
        for (const b of p.bodies) this.sendMessage(p.target, b);
        return;
      case 'e2ee_msg':
        // As the Erlang server did: the recipient is delivered the 0x24 packet, inside an ordinary message.
        return this.sendMessage(p.recipient, encodeE2eeDelivery(this.user, p.header, p.cipher));
      case 'ack':
        return this.ack(p.id);
      case 'get_status':
        return void this.frame({ t: 'presence_query', ref: `v1s${this.nextRef++}`, users: [p.target] });
      case 'typing':
        return void this.frame({ t: 'typing', conv: p.target, on: p.on });
      case 'read_receipt': {
        const seq = seqOfId(p.id);
        const d = seq === null ? undefined : this.delivered?.get(seq);
        if (!d) return this.link.error('unknown_msg_id', false);
        return void this.frame({ t: 'read', conv: d[1], msg: d[0] });
      }
      case 'upload_prekeys': {
        const up = uploadOf(p.bundle, `${KEYS_REF}${this.nextRef++}`, Date.now());
        if ('error' in up) return this.link.write(encodePrekeyResponse({ status: 'error', reason: up.error }));
        return void this.frame(up);
      }
      case 'fetch_prekeys':
        return void this.frame({ t: 'keys_fetch', ref: `${KEYS_REF}${this.nextRef++}`, user: p.user });
      case 'server_only':
        return this.link.error('server_only', false);
      default:
        // cbor_msg: the old server had no handler for it (docs/IRIS-V1.md).
        return this.link.error('unsupported', false);
    }
  }

  /** ACK of one id: cumulative here (TCP is ordered: the client has every packet written before this one). */
  private ack(id: string): void {
    if (this.groupPart?.ack(id)) return;
    const seq = seqOfId(id);
    if (seq === null || seq > this.highestSeen) return this.link.error('unknown_msg_id', false);
    let i = 0;
    while (i < this.outstanding.length && this.outstanding[i]! <= seq) i++;
    this.outstanding = this.outstanding.slice(i);
    // Nothing left unacked: entries the client is not shown (after its last message) are acked with it.
    const upTo = this.outstanding.length === 0 ? this.highestSeen : seq;
    if (upTo <= this.acked) return;
    this.acked = upTo;
    // A v1 client acks every message; the core's ack is cumulative: the ACKs of one read become one deliver_ack
    // (measured: docs/IRIS-V1.md "Measured").
    if (this.ackDue) return;
    this.ackDue = true;
    queueMicrotask(() => {
      this.ackDue = false;
      void this.frame({ t: 'deliver_ack', seq: this.acked });
    });
  }

  /** A frame from the core, re-encoded as v1 packets. */
  send(data: string | Uint8Array): void {
    this.inSend++;
    try {
      this.translate(data);
    } finally {
      this.inSend--;
    }
  }

  private translate(data: string | Uint8Array): void {
    if (typeof data === 'string') return; // The hello was binary: the core answers in binary.
    let f: ServerFrame;
    try {
      f = decodeBinary(data) as ServerFrame;
    } catch {
      return;
    }
    this.shard.sent();
    if (this.groupPart ? this.groupPart.frame(f) : f.t.startsWith('group_') && this.groups.frame(f)) return;
    switch (f.t) {
      case 'welcome':
        if (!this.loggedIn) {
          this.loggedIn = true;
          this.link.write(LOGIN_OK);
          const early = this.early;
          this.early = [];
          this.packets(early);
        }
        return;
      case 'deliver':
        return this.deliver(f.entries);
      case 'presence':
        for (const u of f.users) this.link.write(encodeStatus(u.user, u.online, u.online ? 0 : Math.floor(u.lastSeen / 1000)));
        return;
      case 'typing_state':
        if (f.conv === f.from) this.link.write(encodeTypingRelay(f.from, f.on));
        return;
      case 'receipts':
        for (const r of f.items) {
          if (r.read === undefined || this.reads?.get(r.peer) === r.read) continue;
          (this.reads ??= new Map()).set(r.peer, r.read);
          // The receipts pushed with the welcome are the state so far (told on an earlier connection): only changes
          // go out, as 0x75 did when a receipt was relayed live.
          if (!this.catchingUp) this.link.write(encodeReadReceiptRelay(r.read, r.peer, r.readTs ?? 0));
        }
        return;
      case 'keys_state':
        // The answer to an upload (a push without ref, pool running low, is not asked for: hello has no keys feature).
        if (f.ref.startsWith(KEYS_REF)) this.link.write(encodePrekeyResponse({ status: 'ok', prekeys_remaining: f.count }));
        return;
      case 'keys_bundle':
        if (f.ref.startsWith(KEYS_REF)) this.link.write(encodePrekeyResponse(bundleMapOf(f, V1_DEVICE)));
        return;
      case 'error':
        // A refused key packet is answered the old way: 0x22 with status "error" (rate limits stay 0xFF).
        if (f.ref?.startsWith(KEYS_REF) && f.code !== 'rate_limited') this.link.write(encodePrekeyResponse({ status: 'error', reason: f.code }));
        else if (f.code === 'rate_limited') this.link.write(encodeRateLimited(f.retryAfter ?? 1000));
        else this.link.write(encodeError(f.code));
        // At hello: every device slot of the user is connected; the connection cannot be served.
        if (f.code === 'too_many_devices' && !this.loggedIn) this.link.end(1000);
        return;
      default:
        // send_ack (v1 has no send ack), read_state, settings, pong, devices: nothing to say in v1.
        return;
    }
  }

  private deliver(entries: readonly { seq: number; kind: string; msg: string; peer: string; body: Uint8Array }[]): void {
    for (const e of entries) {
      if (e.seq > this.highestSeen) this.highestSeen = e.seq;
      if (e.kind !== 'message') continue;
      this.outstanding.push(e.seq);
      const delivered = (this.delivered ??= new Map());
      delivered.set(e.seq, [e.msg, e.peer]);
      if (delivered.size > REMEMBERED) delivered.delete(delivered.keys().next().value!);
      this.link.write(encodeReliable(messageId(e.seq), e.body));
    }
    // Entries the client is not shown, with nothing unacked before them: acked for it, or its cursor would stop.
    if (this.outstanding.length === 0 && this.highestSeen > this.acked) {
      this.acked = this.highestSeen;
      void this.frame({ t: 'deliver_ack', seq: this.highestSeen });
    }
  }
}
