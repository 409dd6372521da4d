import type { GroupEntry, MessageRef } from '../../protocol/index.js';
import type { Config } from '../config.js';
import { checkRef, type RefVerdict } from '../refs.js';
import type { Ranges } from './types.js';

/**
 * Message references in a group (PROTOCOL.md 9.11, ARCHITECTURE.md "Message references"): the rules of
 * core/refs.ts over the group's own facts. A group message's id is its seq in decimal. The target is read from the
 * group's log row: its sender, and its time for the edit and delete windows (the log row, not a dedup record, so
 * the dedup window does not bound them); it exists when it is a message still kept and inside one of the referring
 * member's ranges (a member cannot refer to what it was never shown). Checked in the group's shard, inside the
 * send's commit, before the entry is appended.
 */
export interface GroupRefFacts {
  group: string;
  from: string;
  now: number;
  config: Config;
  /** The referring member's ranges. */
  ranges: Ranges;
  /** Whether `u` was ever a member (every message of the log was sent by one). */
  wasMember(u: string): boolean;
  /** The log entry `seq`, if kept. */
  entry(seq: number): GroupEntry | undefined;
}

export function checkGroupRef(ref: MessageRef, f: GroupRefFacts): RefVerdict {
  return checkRef(ref, {
    user: f.from,
    conv: f.group,
    now: f.now,
    editWindowMs: f.config.editWindowS * 1000,
    deleteWindowMs: f.config.deleteWindowS * 1000,
    participant: (u) => f.wasMember(u),
    target: (msg) => {
      const seq = Number(msg);
      if (!Number.isSafeInteger(seq) || seq <= 0) return undefined;
      const e = f.entry(seq);
      if (!e || e.kind !== 'message') return undefined;
      const shown = f.ranges.some(([lo, hi]) => seq >= lo && (hi === 0 || seq <= hi));
      return { sender: e.from, exists: shown, sent: () => ({ ts: e.ts, conv: f.group }) };
    },
  });
}

/**
 * What a connection whose hello did not name HELLO_FEATURES.refs is given of a group's entries (as core/refs.ts
 * entriesFor for the inbox): a reply as the plain message it also is, no edit, delete or reaction at all.
 */
export function groupEntriesFor(entries: GroupEntry[], refs: boolean | undefined): GroupEntry[] {
  if (refs === true || !entries.some((e) => e.ref !== undefined)) return entries;
  const out: GroupEntry[] = [];
  for (const e of entries) {
    if (e.ref === undefined) out.push(e);
    else if (e.ref.kind === 'reply') out.push({ seq: e.seq, kind: e.kind, from: e.from, subject: e.subject, name: e.name, ts: e.ts, body: e.body });
  }
  return out;
}
