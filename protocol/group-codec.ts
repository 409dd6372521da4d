import { ProtocolError } from './errors.js';
import { GROUP_ENTRY_KINDS, GROUP_RECEIPT_STATES, type GroupEntry, type GroupEntryKind, type GroupFrame, type GroupMemberInfo, type GroupMemberReceipt, type GroupReceiptState } from './groups.js';
import { readRef, readRefBlock, writeRefBlock, type Reader, type Writer } from './binary.js';
import { REF_KINDS, type MessageRef, type RefKind } from './frames.js';
import { LIMITS } from './limits.js';
import * as v from './validate.js';

/**
 * Both encodings of the group frames (protocol/groups.ts), beside binary.ts and json.ts so the group frames are
 * one screen: each field is written and read in the order PROTOCOL.md 7.20 lists it.
 */

const KIND_BY_BYTE = new Map<number, GroupEntryKind>((Object.entries(GROUP_ENTRY_KINDS) as [GroupEntryKind, number][]).map(([k, n]) => [n, k]));
const STATE_BY_BYTE = new Map<number, GroupReceiptState>((Object.entries(GROUP_RECEIPT_STATES) as [GroupReceiptState, number][]).map(([k, n]) => [n, k]));
const ID = LIMITS.maxIdLength;

/** A group message id: the target entry's seq, in decimal without leading zeros. */
function groupMsg(x: unknown, ref?: string): string {
  if (typeof x !== 'string' || !/^[1-9][0-9]{0,15}$/.test(x)) throw new ProtocolError('invalid_field', 'ref.msg: expected a group seq in decimal', ref);
  return x;
}

function refFromJson(x: unknown, ref?: string): MessageRef {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ProtocolError('invalid_field', 'ref: expected an object', ref);
  const o = x as Obj;
  const kind = o['kind'];
  if (typeof kind !== 'string' || !Object.hasOwn(REF_KINDS, kind)) throw new ProtocolError('invalid_field', 'ref.kind: expected reply, edit, delete or react', ref);
  return { kind: kind as RefKind, msg: groupMsg(o['msg'], ref) };
}

type Obj = Record<string, unknown>;

export function encodeGroupBinary(w: Writer, f: GroupFrame): void {
  switch (f.t) {
    case 'group_create':
      w.str(f.id);
      w.str(f.group);
      w.str(f.name);
      w.uint(f.members.length);
      for (const m of f.members) w.str(m);
      return;
    case 'group_add':
      w.str(f.id);
      w.str(f.group);
      w.uint(f.members.length);
      for (const m of f.members) w.str(m);
      return;
    case 'group_remove':
      w.str(f.id);
      w.str(f.group);
      w.str(f.member);
      return;
    case 'group_leave':
      w.str(f.id);
      w.str(f.group);
      return;
    case 'group_role':
      w.str(f.id);
      w.str(f.group);
      w.str(f.member);
      w.bool(f.admin);
      return;
    case 'group_update':
      w.str(f.id);
      w.str(f.group);
      w.str(f.name);
      w.bytes(f.meta);
      return;
    case 'group_roster_query':
      w.str(f.ref);
      w.str(f.group);
      return;
    case 'group_send':
      w.str(f.id);
      w.str(f.group);
      w.bytes(f.body);
      // Trailing and optional, as send.ref: a group_send without one is what servers before references decode.
      if (f.ref) {
        w.u8(REF_KINDS[f.ref.kind]);
        w.str(f.ref.msg);
      }
      return;
    case 'group_ack':
      w.str(f.group);
      w.uint(f.seq);
      if (f.read !== undefined) w.uint(f.read);
      return;
    case 'group_receipts_query':
      w.str(f.ref);
      w.str(f.group);
      w.uint(f.seq);
      return;
    case 'group_read':
      w.str(f.group);
      w.uint(f.seq);
      return;
    case 'group_receipts':
      w.str(f.ref);
      w.str(f.group);
      w.uint(f.seq);
      w.uint(f.members.length);
      for (const m of f.members) {
        w.str(m.user);
        w.u8(GROUP_RECEIPT_STATES[m.state]);
      }
      w.bool(f.done);
      return;
    case 'group_send_ack':
      w.str(f.id);
      w.str(f.group);
      w.uint(f.seq);
      w.uint(f.ts);
      w.bool(f.dup);
      return;
    case 'group_deliver':
      w.str(f.group);
      w.uint(f.entries.length);
      for (const e of f.entries) {
        w.uint(e.seq);
        w.u8(GROUP_ENTRY_KINDS[e.kind]);
        w.str(e.from);
        w.str(e.subject);
        w.str(e.name);
        w.uint(e.ts);
        w.bytes(e.body);
      }
      // References as deliver's: a frame without any is what clients written before group references decode.
      writeRefBlock(w, f.entries);
      return;
    case 'group_roster':
      w.str(f.ref);
      w.str(f.group);
      w.str(f.name);
      w.bytes(f.meta);
      w.uint(f.seq);
      w.uint(f.members.length);
      for (const m of f.members) {
        w.str(m.user);
        w.bool(m.admin);
      }
      w.bool(f.done);
      return;
  }
}

function members(r: Reader, ref: string): string[] {
  const n = r.uint('members');
  if (n > LIMITS.maxGroupBatch) throw new ProtocolError('invalid_field', `members: at most ${LIMITS.maxGroupBatch}`, ref);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(v.userId(r.str('member', ID), 'members[]', ref));
  return out;
}

function name(s: unknown, ref?: string): string {
  if (typeof s !== 'string' || s.length > LIMITS.maxGroupNameLength) throw new ProtocolError('invalid_field', `name: at most ${LIMITS.maxGroupNameLength} chars`, ref);
  return v.text(s, 'name', LIMITS.maxGroupNameLength);
}

export function decodeGroupBinary(r: Reader, t: GroupFrame['t']): GroupFrame {
  switch (t) {
    case 'group_create': {
      const id = v.clientId(r.str('id', ID), 'id');
      return { t, id, group: v.userId(r.str('group', ID), 'group', id), name: name(r.str('name', LIMITS.maxGroupNameLength), id), members: members(r, id) };
    }
    case 'group_add': {
      const id = v.clientId(r.str('id', ID), 'id');
      return { t, id, group: v.userId(r.str('group', ID), 'group', id), members: members(r, id) };
    }
    case 'group_remove': {
      const id = v.clientId(r.str('id', ID), 'id');
      return { t, id, group: v.userId(r.str('group', ID), 'group', id), member: v.userId(r.str('member', ID), 'member', id) };
    }
    case 'group_leave': {
      const id = v.clientId(r.str('id', ID), 'id');
      return { t, id, group: v.userId(r.str('group', ID), 'group', id) };
    }
    case 'group_role': {
      const id = v.clientId(r.str('id', ID), 'id');
      return { t, id, group: v.userId(r.str('group', ID), 'group', id), member: v.userId(r.str('member', ID), 'member', id), admin: r.bool('admin') };
    }
    case 'group_update': {
      const id = v.clientId(r.str('id', ID), 'id');
      const group = v.userId(r.str('group', ID), 'group', id);
      return { t, id, group, name: name(r.str('name', LIMITS.maxGroupNameLength), id), meta: r.bytes('meta', LIMITS.maxGroupMetaBytes, id) };
    }
    case 'group_roster_query': {
      const ref = v.clientId(r.str('ref', ID), 'ref');
      return { t, ref, group: v.userId(r.str('group', ID), 'group', ref) };
    }
    case 'group_send': {
      const id = v.clientId(r.str('id', ID), 'id');
      const f: GroupFrame = { t, id, group: v.userId(r.str('group', ID), 'group', id), body: r.bytes('body', LIMITS.maxBodyBytes, id) };
      if (r.more()) f.ref = readRef(r, r.u8('ref.kind'), groupMsg, id);
      return f;
    }
    case 'group_ack': {
      const f: GroupFrame = { t, group: v.userId(r.str('group', ID), 'group'), seq: r.uint('seq') };
      // Optional trailing field: an ack that also marks the group read.
      if (r.more()) f.read = r.uint('read');
      return f;
    }
    case 'group_receipts_query': {
      const ref = v.clientId(r.str('ref', ID), 'ref');
      return { t, ref, group: v.userId(r.str('group', ID), 'group', ref), seq: r.uint('seq') };
    }
    case 'group_read':
      return { t, group: v.userId(r.str('group', ID), 'group'), seq: r.uint('seq') };
    case 'group_receipts': {
      const ref = v.clientId(r.str('ref', ID), 'ref');
      const group = v.userId(r.str('group', ID), 'group');
      const seq = r.uint('seq');
      const n = r.uint('members');
      if (n > LIMITS.maxGroupBatch) throw new ProtocolError('invalid_field', `members: at most ${LIMITS.maxGroupBatch}`);
      const list: GroupMemberReceipt[] = [];
      for (let i = 0; i < n; i++) {
        const user = v.userId(r.str('user', ID), 'user');
        const state = STATE_BY_BYTE.get(r.u8('state'));
        if (state === undefined) throw new ProtocolError('invalid_field', 'state: unknown receipt state');
        list.push({ user, state });
      }
      return { t, ref, group, seq, members: list, done: r.bool('done') };
    }
    case 'group_send_ack':
      return { t, id: v.clientId(r.str('id', ID), 'id'), group: v.userId(r.str('group', ID), 'group'), seq: r.uint('seq'), ts: r.uint('ts'), dup: r.bool('dup') };
    case 'group_deliver': {
      const group = v.userId(r.str('group', ID), 'group');
      const n = r.uint('entries');
      if (n > LIMITS.maxDeliverBatch) throw new ProtocolError('invalid_field', `entries: at most ${LIMITS.maxDeliverBatch}`);
      const entries: GroupEntry[] = [];
      for (let i = 0; i < n; i++) {
        const seq = r.uint('seq');
        const kind = KIND_BY_BYTE.get(r.u8('kind'));
        if (kind === undefined) throw new ProtocolError('invalid_field', 'kind: unknown group entry kind');
        const from = v.userId(r.str('from', ID), 'from');
        const subject = r.str('subject', ID);
        entries.push({ seq, kind, from, subject: subject === '' ? '' : v.userId(subject, 'subject'), name: name(r.str('name', LIMITS.maxGroupNameLength)), ts: r.uint('ts'), body: r.bytes('body', LIMITS.maxBodyBytes) });
      }
      readRefBlock(r, entries, groupMsg);
      return { t, group, entries };
    }
    case 'group_roster': {
      const ref = v.clientId(r.str('ref', ID), 'ref');
      const group = v.userId(r.str('group', ID), 'group');
      const nm = name(r.str('name', LIMITS.maxGroupNameLength));
      const meta = r.bytes('meta', LIMITS.maxGroupMetaBytes);
      const seq = r.uint('seq');
      const n = r.uint('members');
      if (n > LIMITS.maxGroupBatch) throw new ProtocolError('invalid_field', `members: at most ${LIMITS.maxGroupBatch}`);
      const list: GroupMemberInfo[] = [];
      for (let i = 0; i < n; i++) list.push({ user: v.userId(r.str('user', ID), 'user'), admin: r.bool('admin') });
      return { t, ref, group, name: nm, meta, seq, members: list, done: r.bool('done') };
    }
  }
}

// ------------------------------------------------------------------ JSON

/** JSON form of a group frame: bytes fields (body, meta) as base64, the rest as they are. */
export function groupToJson(f: GroupFrame, b64: (b: Uint8Array) => string): Obj {
  switch (f.t) {
    case 'group_update':
      return { ...f, meta: b64(f.meta) };
    case 'group_send':
      return { ...f, body: b64(f.body) };
    case 'group_roster':
      return { ...f, meta: b64(f.meta) };
    case 'group_deliver':
      return { t: f.t, group: f.group, entries: f.entries.map((e) => ({ ...e, body: b64(e.body) })) };
    default:
      return f as unknown as Obj;
  }
}

function obj(x: unknown, field: string): Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ProtocolError('invalid_field', `${field}: expected an object`);
  return x as Obj;
}

export function decodeGroupJson(o: Obj, t: GroupFrame['t'], bytes: (s: unknown, field: string, ref?: string) => Uint8Array): GroupFrame {
  const ids = (x: unknown, ref: string) => v.list(x, 'members', LIMITS.maxGroupBatch, (u) => v.userId(u, 'members[]', ref), ref);
  const meta = (x: unknown, ref?: string) => {
    const b = bytes(x, 'meta', ref);
    if (b.byteLength > LIMITS.maxGroupMetaBytes) throw new ProtocolError('invalid_field', `meta: ${b.byteLength} bytes exceeds ${LIMITS.maxGroupMetaBytes}`, ref);
    return b;
  };
  switch (t) {
    case 'group_create': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id), name: name(o['name'], id), members: ids(o['members'], id) };
    }
    case 'group_add': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id), members: ids(o['members'], id) };
    }
    case 'group_remove': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id), member: v.userId(o['member'], 'member', id) };
    }
    case 'group_leave': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id) };
    }
    case 'group_role': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id), member: v.userId(o['member'], 'member', id), admin: v.bool(o['admin'], 'admin') };
    }
    case 'group_update': {
      const id = v.clientId(o['id'], 'id');
      return { t, id, group: v.userId(o['group'], 'group', id), name: name(o['name'], id), meta: meta(o['meta'], id) };
    }
    case 'group_roster_query': {
      const ref = v.clientId(o['ref'], 'ref');
      return { t, ref, group: v.userId(o['group'], 'group', ref) };
    }
    case 'group_send': {
      const id = v.clientId(o['id'], 'id');
      const f: GroupFrame = { t, id, group: v.userId(o['group'], 'group', id), body: bytes(o['body'], 'body', id) };
      if (o['ref'] !== undefined) f.ref = refFromJson(o['ref'], id);
      return f;
    }
    case 'group_ack': {
      const f: GroupFrame = { t, group: v.userId(o['group'], 'group'), seq: v.uint(o['seq'], 'seq') };
      if (o['read'] !== undefined) f.read = v.uint(o['read'], 'read');
      return f;
    }
    case 'group_receipts_query': {
      const ref = v.clientId(o['ref'], 'ref');
      return { t, ref, group: v.userId(o['group'], 'group', ref), seq: v.uint(o['seq'], 'seq') };
    }
    case 'group_read':
      return { t, group: v.userId(o['group'], 'group'), seq: v.uint(o['seq'], 'seq') };
    case 'group_receipts':
      return {
        t,
        ref: v.clientId(o['ref'], 'ref'),
        group: v.userId(o['group'], 'group'),
        seq: v.uint(o['seq'], 'seq'),
        members: v.list(o['members'], 'members', LIMITS.maxGroupBatch, (x) => {
          const m = obj(x, 'members[]');
          const state = m['state'];
          if (typeof state !== 'string' || !Object.hasOwn(GROUP_RECEIPT_STATES, state)) throw new ProtocolError('invalid_field', 'state: expected sent, delivered or read');
          return { user: v.userId(m['user'], 'user'), state: state as GroupReceiptState };
        }),
        done: v.bool(o['done'], 'done'),
      };
    case 'group_send_ack':
      return { t, id: v.clientId(o['id'], 'id'), group: v.userId(o['group'], 'group'), seq: v.uint(o['seq'], 'seq'), ts: v.uint(o['ts'], 'ts'), dup: v.bool(o['dup'], 'dup') };
    case 'group_deliver':
      return {
        t,
        group: v.userId(o['group'], 'group'),
        entries: v.list(o['entries'], 'entries', LIMITS.maxDeliverBatch, (x) => {
          const e = obj(x, 'entries[]');
          const kind = e['kind'];
          if (typeof kind !== 'string' || !Object.hasOwn(GROUP_ENTRY_KINDS, kind)) throw new ProtocolError('invalid_field', 'kind: unknown group entry kind');
          const subject = e['subject'];
          return {
            seq: v.uint(e['seq'], 'seq'),
            kind: kind as GroupEntryKind,
            from: v.userId(e['from'], 'from'),
            subject: subject === '' ? '' : v.userId(subject, 'subject'),
            name: name(e['name']),
            ts: v.uint(e['ts'], 'ts'),
            body: bytes(e['body'], 'body'),
            ...(e['ref'] !== undefined && { ref: refFromJson(e['ref']) }),
          };
        }),
      };
    case 'group_roster':
      return {
        t,
        ref: v.clientId(o['ref'], 'ref'),
        group: v.userId(o['group'], 'group'),
        name: name(o['name']),
        meta: meta(o['meta']),
        seq: v.uint(o['seq'], 'seq'),
        members: v.list(o['members'], 'members', LIMITS.maxGroupBatch, (x) => {
          const m = obj(x, 'members[]');
          return { user: v.userId(m['user'], 'user'), admin: v.bool(m['admin'], 'admin') };
        }),
        done: v.bool(o['done'], 'done'),
      };
  }
}

const GROUP_TYPES: ReadonlySet<string> = new Set(['group_create', 'group_add', 'group_remove', 'group_leave', 'group_role', 'group_update', 'group_roster_query', 'group_send', 'group_ack', 'group_send_ack', 'group_deliver', 'group_roster', 'group_receipts_query', 'group_receipts', 'group_read']);

export function isGroupType(t: string): t is GroupFrame['t'] {
  return GROUP_TYPES.has(t);
}
