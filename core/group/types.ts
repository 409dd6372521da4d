import type { ErrorCode, GroupEntry, GroupMemberInfo, GroupMemberReceipt, MessageRef } from '../../protocol/index.js';

/**
 * What travels between a user's shard and a group's shard (core/ports.ts Peers.group, groupPush, groupNews). Plain
 * data (strings, numbers, Uint8Array), so Durable Object RPC can carry it as it is and the on-prem links encode
 * it once (core/group/wire.ts).
 */

/** A change of a group, as a member asks for it. */
export type GroupChange =
  | { kind: 'create'; name: string; members: string[] }
  | { kind: 'add'; members: string[] }
  | { kind: 'remove'; member: string }
  | { kind: 'leave' }
  | { kind: 'role'; member: string; admin: boolean }
  | { kind: 'update'; name: string; meta: Uint8Array };

/** A user's shard -> the group's shard. `from` is the user the call is made for (the shard vouches for it). */
export type GroupCall =
  | { op: 'send'; from: string; cid: string; body: Uint8Array; ref?: MessageRef }
  | { op: 'change'; from: string; cid: string; change: GroupChange }
  | { op: 'roster'; from: string }
  /** Entries of `from`'s ranges after `after`, at most `limit`. */
  | { op: 'read'; from: string; after: number; limit: number }
  /** `from` has a device connected (on) or none any more (off): it gets pushes while on. */
  | { op: 'watch'; from: string; on: boolean }
  /** How far `from`'s devices got: delivered to one of them, read on one of them (cumulative; coalesced). */
  | { op: 'mark'; from: string; delivered: number; read: number }
  /** Who received and read entry `seq` (asked by its sender). */
  | { op: 'receipts'; from: string; seq: number }
  /** `from` is typing in the group (on) or stopped: pushed to the online members but `from`, never stored. */
  | { op: 'typing'; from: string; on: boolean };

export type GroupRefusal = { ok: false; code: ErrorCode; message: string };

export type GroupAccepted = { ok: true; seq: number; ts: number; dup: boolean };
export type GroupRosterResult = { ok: true; name: string; meta: Uint8Array; head: number; members: GroupMemberInfo[] };
export type GroupReadResult = {
  ok: true;
  entries: GroupEntry[];
  /** The read covered every entry up to here (entries outside the caller's ranges are skipped, not sent). */
  upTo: number;
  /** The newest seq the caller may see (its range's end, or the group's head while it is a member). */
  head: number;
  /** Set when `after` was behind the oldest entry kept: the read starts at the oldest kept entry instead. */
  gap?: number;
};
export type GroupWatchResult = { ok: true; head: number };

export type GroupReceiptsResult = { ok: true; seq: number; states: GroupMemberReceipt[] };

export type GroupResult = GroupRefusal | GroupAccepted | GroupRosterResult | GroupReadResult | GroupWatchResult | GroupReceiptsResult;

/** Membership ranges [joined, left] (left 0: still a member), as the group shard filters by them. */
export type Ranges = [number, number][];

/** One member shard reached by a push, with the ranges the entries are filtered to. */
export interface PushTarget {
  user: string;
  ranges: Ranges;
}

/**
 * A round of a group's fan-out: every entry in (after, upTo] (entries outside a target's ranges are left out
 * for it). A member shard whose device has everything up to `after` forwards them; any other device pulls.
 */
export interface GroupPush {
  group: string;
  after: number;
  upTo: number;
  entries: GroupEntry[];
  targets: PushTarget[];
}

/** A user's membership of a group changed: it joined at `joined`, and left at `left` (0: still a member). */
export interface GroupNews {
  group: string;
  joined: number;
  left: number;
}

/** Entries visible to a member with these ranges. */
export function visible(entries: GroupEntry[], ranges: Ranges): GroupEntry[] {
  return entries.filter((e) => ranges.some(([lo, hi]) => e.seq >= lo && (hi === 0 || e.seq <= hi)));
}
