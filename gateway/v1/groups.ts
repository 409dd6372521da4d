import { randomBytes } from 'node:crypto';
import type { ClientFrame, GroupEntry, ServerFrame } from '../../protocol/index.js';
import { CborError, cborDecode, cborEncode, type CborValue } from './cbor.js';
import { ACK_ID_BYTES, OP, encodeReliable, type V1Packet } from './codec.js';

/**
 * The v1 group packets (0x30-0x36) on this Iris's groups (core/group), for one V1Session. The old server named a
 * group at GROUP_CREATE and answered GROUP_JOIN (0x31) to its creator; a group message (0x33, its CBOR header
 * given a `sender`) or a sender key (0x36) was routed to every other member as that packet inside a RELIABLE_MSG.
 * Here a group is a group of the core: GROUP_CREATE is `group_create` with a generated id and no other member
 * (v1 has no packet to add one; a user of this protocol can add v1 users), 0x33 and 0x36 are `group_send`s whose
 * body is the packet as the old server delivered it, and `group_deliver` entries come back as:
 *
 *   message of another member  -> 0x10 whose body is the 0x33/0x36 packet (an SDK member's body is wrapped in a
 *                                  0x33 with header {sender}) and whose id acks the entry (`group_ack`)
 *   join                       -> 0x31 group user (the old "user joined" notification)
 *   anything else, own messages -> nothing (acked with the entries around them)
 */

type Pending = { kind: 'create' | 'leave' | 'send'; group: string };

/** What the session gives this part. */
export interface GroupDeps {
  readonly user: string;
  write(packet: Uint8Array): void;
  error(reason: string): void;
  frame(f: ClientFrame): void;
  clientId(): string;
}

const enc = new TextEncoder();
const s16 = (s: string | Uint8Array): number[] => {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  return [b.length >> 8, b.length & 255, ...b];
};
const u32 = (n: number): number[] => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];

export function encodeGroupJoin(group: string, user: string): Uint8Array {
  return new Uint8Array([OP.groupJoin, ...s16(group), ...s16(user)]);
}
/** The old answer to GROUP_LEAVE: the opcode and "OK", no length. */
export const GROUP_LEAVE_OK = new Uint8Array([OP.groupLeave, 0x4f, 0x4b]);
export function encodeGroupMsg(group: string, header: Uint8Array, cipher: Uint8Array): Uint8Array {
  return new Uint8Array([OP.groupMsg, ...s16(group), ...s16(header), ...u32(cipher.length), ...cipher]);
}
export function encodeSenderKey(group: string, key: Uint8Array): Uint8Array {
  return new Uint8Array([OP.senderKey, ...s16(group), ...u32(key.length), ...key]);
}
export function encodeRoster(group: string, members: string[]): Uint8Array {
  const cbor = cborEncode(members);
  return new Uint8Array([OP.groupRoster, ...s16(group), ...u32(cbor.length), ...cbor]);
}

/** A body that is already a 0x33 or 0x36 packet of this group (what a v1 member sent). */
function isV1GroupPacket(body: Uint8Array, group: string): boolean {
  if (body.length < 3 || (body[0] !== OP.groupMsg && body[0] !== OP.senderKey)) return false;
  const g = enc.encode(group);
  const n = (body[1]! << 8) | body[2]!;
  return n === g.length && body.length >= 3 + n && g.every((x, i) => body[3 + i] === x);
}

export class V1Groups {
  private readonly pending = new Map<string, Pending>();
  /** Roster pages being put together, by ref. */
  private readonly rosters = new Map<string, string[]>();
  /** Per group: entry seqs written and not acked, the highest seq seen, the highest acked. */
  private readonly cursors = new Map<string, { out: number[]; seen: number; acked: number }>();
  /** ACK ids of group entries: "g" and 15 hex digits of a counter, mapped to their group and seq. */
  private readonly ids = new Map<string, [string, number]>();
  private nextId = 1;
  private nextRef = 1;

  constructor(private readonly d: GroupDeps) {}

  /** A group packet from the client; false when it is not one. */
  packet(p: V1Packet): boolean {
    const { d } = this;
    switch (p.op) {
      case 'group_create': {
        const group = `v1g-${randomBytes(8).toString('hex')}`;
        const id = this.track({ kind: 'create', group });
        d.frame({ t: 'group_create', id, group, name: p.name.slice(0, 128), members: [] });
        return true;
      }
      case 'group_leave':
        d.frame({ t: 'group_leave', id: this.track({ kind: 'leave', group: p.group }), group: p.group });
        return true;
      case 'group_msg': {
        let header: CborValue;
        try {
          header = cborDecode(p.header);
        } catch (e) {
          if (!(e instanceof CborError)) throw e;
          header = null;
        }
        if (typeof header !== 'object' || header === null || header instanceof Uint8Array || Array.isArray(header)) {
          d.error('invalid_group_header');
          return true;
        }
        const body = encodeGroupMsg(p.group, cborEncode({ ...header, sender: d.user }), p.cipher);
        d.frame({ t: 'group_send', id: this.track({ kind: 'send', group: p.group }), group: p.group, body });
        return true;
      }
      case 'sender_key':
        d.frame({ t: 'group_send', id: this.track({ kind: 'send', group: p.group }), group: p.group, body: encodeSenderKey(p.group, p.key) });
        return true;
      case 'group_roster': {
        const ref = `v1r${this.nextRef++}`;
        this.rosters.set(ref, []);
        d.frame({ t: 'group_roster_query', ref, group: p.group });
        return true;
      }
      default:
        return false;
    }
  }

  private track(p: Pending): string {
    const id = this.d.clientId();
    this.pending.set(id, p);
    return id;
  }

  /** A frame from the core; false when it is not a group frame. */
  frame(f: ServerFrame): boolean {
    switch (f.t) {
      case 'group_send_ack': {
        const p = this.pending.get(f.id);
        this.pending.delete(f.id);
        if (p?.kind === 'create') this.d.write(encodeGroupJoin(p.group, this.d.user));
        else if (p?.kind === 'leave') this.d.write(GROUP_LEAVE_OK);
        return true;
      }
      case 'group_roster': {
        const acc = this.rosters.get(f.ref);
        if (!acc) return true;
        acc.push(...f.members.map((m) => m.user));
        if (f.done) {
          this.rosters.delete(f.ref);
          this.d.write(encodeRoster(f.group, acc));
        }
        return true;
      }
      case 'group_deliver':
        this.deliver(f.group, f.entries);
        return true;
      case 'error':
        // A refused group frame: its pending entry goes (the session writes the error frame).
        if (f.ref !== undefined) {
          this.pending.delete(f.ref);
          if (this.rosters.delete(f.ref)) return false;
        }
        return false;
      case 'group_receipts':
      case 'group_read':
        return true;
      default:
        return false;
    }
  }

  private deliver(group: string, entries: readonly GroupEntry[]): void {
    const c = this.cursors.get(group) ?? { out: [], seen: 0, acked: 0 };
    this.cursors.set(group, c);
    for (const e of entries) {
      if (e.seq > c.seen) c.seen = e.seq;
      if (e.kind === 'join') this.d.write(encodeGroupJoin(group, e.subject));
      if (e.kind !== 'message' || e.from === this.d.user) continue;
      const id = `g${(this.nextId++).toString(16).padStart(ACK_ID_BYTES - 1, '0')}`;
      this.ids.set(id, [group, e.seq]);
      c.out.push(e.seq);
      const body = isV1GroupPacket(e.body, group) ? e.body : encodeGroupMsg(group, cborEncode({ sender: e.from }), e.body);
      this.d.write(encodeReliable(id, body));
    }
    if (c.out.length === 0 && c.seen > c.acked) this.ackTo(group, c, c.seen);
  }

  /** An ACK of a group delivery id; false when the id is not one. */
  ack(id: string): boolean {
    const hit = this.ids.get(id);
    if (!hit) return false;
    const [group, seq] = hit;
    // Cumulative: the ids of this group's entries up to seq are done too.
    for (const [k, [g, s]] of this.ids) if (g === group && s <= seq) this.ids.delete(k);
    const c = this.cursors.get(group);
    if (!c) return true;
    c.out = c.out.filter((s) => s > seq);
    this.ackTo(group, c, c.out.length === 0 ? c.seen : seq);
    return true;
  }

  private ackTo(group: string, c: { acked: number }, seq: number): void {
    if (seq <= c.acked) return;
    c.acked = seq;
    this.d.frame({ t: 'group_ack', group, seq });
  }
}
