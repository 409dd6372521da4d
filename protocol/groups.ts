import type { MessageRef } from './frames.js';

/**
 * The group frames of protocol v1 (PROTOCOL.md 7.20, 9.11). A group has one log; every entry (a message or a
 * membership change) has the group's next sequence number, and every member is sent the same entries in the same
 * order, filtered to the time it was a member. Every frame that changes a group carries a client id `id`: the
 * group remembers it, so a retry gets the original `group_ack`-style answer (`group_send_ack`) and changes nothing.
 */

/** What a group log entry is. Numbers are the binary encoding. */
export const GROUP_ENTRY_KINDS = {
  message: 1,
  /** The group was created by `from`, named `name`; `from` is its first member and an admin. */
  create: 2,
  /** `subject` joined (added by `from`). */
  join: 3,
  /** `subject` left the group: by itself (`from` = `subject`) or removed by the admin `from`. */
  leave: 4,
  /** `subject` became an admin (body `01`) or stopped being one (body `00`), by `from`. */
  role: 5,
  /** `from` renamed the group to `name` and set its metadata to `body`. */
  update: 6,
} as const;

export type GroupEntryKind = keyof typeof GROUP_ENTRY_KINDS;

export interface GroupEntry {
  /** The group's sequence number: one order for every member. */
  seq: number;
  kind: GroupEntryKind;
  /** Who sent the message or made the change. */
  from: string;
  /** The member a membership entry is about; "" for a message, create and update. */
  subject: string;
  /** The group's name after a create or update; "" otherwise. */
  name: string;
  /** When the group accepted it, ms since epoch. */
  ts: number;
  /** The message body (opaque), the metadata of an update, the role byte; empty otherwise. */
  body: Uint8Array;
  /**
   * A message that refers to an earlier message of the group (PROTOCOL.md 9.9 and 9.11): `ref.msg` is that
   * message's seq in decimal. Only to connections whose hello named HELLO_FEATURES.refs.
   */
  ref?: MessageRef;
}

/** Client: create group `group` (an id the client picks) named `name`, with `members` besides the sender. */
export interface GroupCreate {
  t: 'group_create';
  id: string;
  group: string;
  name: string;
  members: string[];
}

/** Client (an admin): add members. Members already in the group are left as they are. */
export interface GroupAdd {
  t: 'group_add';
  id: string;
  group: string;
  members: string[];
}

/** Client (an admin): remove one member. */
export interface GroupRemove {
  t: 'group_remove';
  id: string;
  group: string;
  member: string;
}

/** Client: leave the group. */
export interface GroupLeave {
  t: 'group_leave';
  id: string;
  group: string;
}

/** Client (an admin): promote (`admin` true) or demote a member. */
export interface GroupRole {
  t: 'group_role';
  id: string;
  group: string;
  member: string;
  admin: boolean;
}

/** Client (an admin): rename the group and set its small metadata (opaque bytes). */
export interface GroupUpdate {
  t: 'group_update';
  id: string;
  group: string;
  name: string;
  meta: Uint8Array;
}

/** Client (a member): who is in the group. Answered by `group_roster` frames carrying `ref`. */
export interface GroupRosterQuery {
  t: 'group_roster_query';
  ref: string;
  group: string;
}

/** Client (a member): send a message to the group. */
export interface GroupSend {
  t: 'group_send';
  id: string;
  group: string;
  body: Uint8Array;
  /** A reply, edit, delete or reaction: `msg` is the target's seq in decimal (PROTOCOL.md 9.11). */
  ref?: MessageRef;
}

/**
 * Client: this device has processed every entry of `group` up to and including `seq`. Cumulative. `read`: the user
 * read the group up to and including this seq (at most `seq`; optional, binary: a trailing varint).
 */
export interface GroupAck {
  t: 'group_ack';
  group: string;
  seq: number;
  read?: number;
}

/** Client (the sender of entry `seq`): which members received and read it. Answered by `group_receipts`. */
export interface GroupReceiptsQuery {
  t: 'group_receipts_query';
  ref: string;
  group: string;
  seq: number;
}

/** How far one member got with one message. */
export type GroupReceiptState = 'sent' | 'delivered' | 'read';
export const GROUP_RECEIPT_STATES: Record<GroupReceiptState, number> = { sent: 0, delivered: 1, read: 2 };

export interface GroupMemberReceipt {
  user: string;
  state: GroupReceiptState;
}

/** Server: a page (at most maxGroupBatch) of the members who may see entry `seq`, with how far each got. */
export interface GroupReceipts {
  t: 'group_receipts';
  ref: string;
  group: string;
  seq: number;
  members: GroupMemberReceipt[];
  done: boolean;
}

/** Server: the change or message with client id `id` is durable in `group` as entry `seq` (its last, for an add). */
export interface GroupSendAck {
  t: 'group_send_ack';
  id: string;
  group: string;
  seq: number;
  ts: number;
  /** True when this answers a retry of an already accepted frame. */
  dup: boolean;
}

/** Server: entries of one group, in seq order; a device drops any `seq` it already processed. */
export interface GroupDeliver {
  t: 'group_deliver';
  group: string;
  entries: GroupEntry[];
}

export interface GroupMemberInfo {
  user: string;
  admin: boolean;
}

/** Server: a page of a group's roster (pages of at most maxGroupBatch members; the last has `done`). */
export interface GroupRoster {
  t: 'group_roster';
  ref: string;
  group: string;
  name: string;
  meta: Uint8Array;
  /** The group's newest seq when the roster was read. */
  seq: number;
  members: GroupMemberInfo[];
  done: boolean;
}

export type GroupClientFrame = GroupCreate | GroupAdd | GroupRemove | GroupLeave | GroupRole | GroupUpdate | GroupRosterQuery | GroupSend | GroupAck | GroupReceiptsQuery;
/**
 * Server: how far this user read `group` (every entry up to `seq`), to every connection of the user that reads
 * groups: after a `group_ack` with `read` moved it, and after `welcome` for each group with a mark. Not acked.
 */
export interface GroupRead {
  t: 'group_read';
  group: string;
  seq: number;
}

export type GroupServerFrame = GroupSendAck | GroupDeliver | GroupRoster | GroupReceipts | GroupRead;
export type GroupFrame = GroupClientFrame | GroupServerFrame;

/** The client frames of this file, as FRAME_TYPES names them. */
export const GROUP_CLIENT_TYPES = [
  'group_create',
  'group_add',
  'group_remove',
  'group_leave',
  'group_role',
  'group_update',
  'group_roster_query',
  'group_send',
  'group_ack',
  'group_receipts_query',
] as const;
