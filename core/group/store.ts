import { GROUP_ENTRY_KINDS, type GroupEntry, type GroupEntryKind } from '../../protocol/index.js';
import type { Sql } from '../ports.js';
import { refColumns, refFromColumns } from '../refs.js';

/** Every query of groups (core/schema.ts migration 7): the group side (GroupStore) and the member side (MemberGroups). */

const KIND_BY_NUMBER = new Map<number, GroupEntryKind>((Object.entries(GROUP_ENTRY_KINDS) as [GroupEntryKind, number][]).map(([k, n]) => [n, k]));

export interface GroupRow {
  creator: string;
  name: string;
  meta: Uint8Array;
  trimmed: number;
}

export interface MemberRow {
  member: string;
  joined: number;
  left_at: number;
  admin: number;
  online: number;
  told: number;
}

type LogRow = { seq: number; kind: number; sender: string; subject: string; name: string; ts: number; body: Uint8Array; ref_kind: number; ref_msg: string };

function toEntry(r: LogRow): GroupEntry {
  const ref = refFromColumns(r.ref_kind, r.ref_msg);
  return { seq: r.seq, kind: KIND_BY_NUMBER.get(r.kind) ?? 'message', from: r.sender, subject: r.subject, name: r.name, ts: r.ts, body: r.body, ...(ref && { ref }) };
}

export class GroupStore {
  constructor(
    private readonly sql: Sql,
    readonly group: string,
  ) {}

  groupRow(): GroupRow | undefined {
    return this.sql.all<GroupRow & Record<string, never>>(`SELECT creator, name, meta, trimmed FROM groups WHERE grp = ?`, this.group)[0];
  }

  createGroup(creator: string, name: string, now: number): void {
    this.sql.all(`INSERT INTO groups (grp, creator, name, meta, trimmed, created, receipts) VALUES (?, ?, ?, ?, 0, ?, ?)`, this.group, creator, name, new Uint8Array(0), now, new Uint8Array(0));
  }

  setNameMeta(name: string, meta: Uint8Array): void {
    this.sql.all(`UPDATE groups SET name = ?, meta = ? WHERE grp = ?`, name, meta, this.group);
  }

  /**
   * Every member's [delivered, read] seqs, packed in the group's row: one row written per change, however many
   * members changed (docs/ARCHITECTURE.md "Read receipts, aggregated"). JSON: small, and read once per load.
   */
  receipts(): Map<string, [number, number]> {
    const r = this.sql.all<{ receipts: Uint8Array }>(`SELECT receipts FROM groups WHERE grp = ?`, this.group)[0];
    if (!r || r.receipts.byteLength === 0) return new Map();
    return new Map(Object.entries(JSON.parse(new TextDecoder().decode(r.receipts)) as Record<string, [number, number]>));
  }

  setReceipts(all: Map<string, [number, number]>): void {
    this.sql.all(`UPDATE groups SET receipts = ? WHERE grp = ?`, new TextEncoder().encode(JSON.stringify(Object.fromEntries(all))), this.group);
  }

  /** The newest seq (0 for an empty log). */
  head(): number {
    const r = this.sql.all<{ s: number | null }>(`SELECT max(seq) AS s FROM group_log WHERE grp = ?`, this.group)[0];
    return Math.max(r?.s ?? 0, this.groupRow()?.trimmed ?? 0);
  }

  append(e: GroupEntry): void {
    this.sql.all(
      `INSERT INTO group_log (grp, seq, kind, sender, subject, name, ts, body, ref_kind, ref_msg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      this.group, e.seq, GROUP_ENTRY_KINDS[e.kind], e.from, e.subject, e.name, e.ts, e.body, ...refColumns(e.ref),
    );
  }

  /** Entries with after < seq <= upTo, oldest first, at most limit. */
  range(after: number, upTo: number, limit: number): GroupEntry[] {
    return this.sql
      .all<LogRow & Record<string, never>>(
        `SELECT seq, kind, sender, subject, name, ts, body, ref_kind, ref_msg FROM group_log WHERE grp = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
        this.group, after, upTo, limit,
      )
      .map(toEntry);
  }

  /**
   * Deletes the entries accepted before `cutoff` (ts grows with seq, so they are the oldest ones) and moves the
   * trimmed floor past them. Walks only the entries it deletes (in key order, up to the first young one).
   * Returns the new floor (0: nothing deleted).
   */
  trimBefore(cutoff: number, head: number): number {
    const young = this.sql.all<{ seq: number }>(`SELECT seq FROM group_log WHERE grp = ? AND ts >= ? ORDER BY seq LIMIT 1`, this.group, cutoff)[0];
    const floor = young ? young.seq - 1 : head;
    if (floor <= (this.groupRow()?.trimmed ?? 0)) return 0;
    this.sql.all(`DELETE FROM group_log WHERE grp = ? AND seq <= ?`, this.group, floor);
    this.sql.all(`UPDATE groups SET trimmed = ? WHERE grp = ?`, floor, this.group);
    return floor;
  }

  dedup(sender: string, cid: string): { seq: number; ts: number } | undefined {
    return this.sql.all<{ seq: number; ts: number }>(`SELECT seq, ts FROM group_dedup WHERE grp = ? AND sender = ? AND cid = ?`, this.group, sender, cid)[0];
  }

  putDedup(sender: string, cid: string, seq: number, ts: number): void {
    this.sql.all(`INSERT INTO group_dedup (grp, sender, cid, seq, ts) VALUES (?, ?, ?, ?, ?)`, this.group, sender, cid, seq, ts);
  }

  /** Forgets client ids of entries up to seq (the dedup window). */
  pruneDedup(seq: number): void {
    this.sql.all(`DELETE FROM group_dedup WHERE grp = ? AND seq <= ?`, this.group, seq);
  }

  members(): MemberRow[] {
    return this.sql.all<MemberRow & Record<string, never>>(`SELECT member, joined, left_at, admin, online, told FROM group_members WHERE grp = ? ORDER BY member, joined`, this.group);
  }

  putMember(m: MemberRow): void {
    this.sql.all(
      `INSERT OR REPLACE INTO group_members (grp, member, joined, left_at, admin, online, told) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      this.group, m.member, m.joined, m.left_at, m.admin, m.online, m.told,
    );
  }
}

/** The member side: which groups a user is in, and its devices' cursors per group. */
export class MemberGroups {
  constructor(
    private readonly sql: Sql,
    readonly user: string,
  ) {}

  groups(): { grp: string; joined: number; left_at: number }[] {
    return this.sql.all(`SELECT grp, joined, left_at FROM user_groups WHERE user = ?`, this.user);
  }

  membership(group: string): { joined: number; left_at: number } | undefined {
    return this.sql.all<{ joined: number; left_at: number }>(`SELECT joined, left_at FROM user_groups WHERE user = ? AND grp = ?`, this.user, group)[0];
  }

  setMembership(group: string, joined: number, left: number): void {
    // An upsert, not a replace: the row's read position stays.
    this.sql.all(
      `INSERT INTO user_groups (user, grp, joined, left_at) VALUES (?, ?, ?, ?) ON CONFLICT (user, grp) DO UPDATE SET joined = excluded.joined, left_at = excluded.left_at`,
      this.user, group, joined, left,
    );
  }

  /** How far the user read each group (PROTOCOL.md 9.11, `group_read`): the groups with a mark. */
  reads(): { grp: string; read: number }[] {
    return this.sql.all(`SELECT grp, read FROM user_groups WHERE user = ? AND read > 0`, this.user);
  }

  readOf(group: string): number {
    return this.sql.all<{ read: number }>(`SELECT read FROM user_groups WHERE user = ? AND grp = ?`, this.user, group)[0]?.read ?? 0;
  }

  /** Moves the read position forward (never back); false when it was not behind `seq` (or no row). */
  setRead(group: string, seq: number): boolean {
    const row = this.sql.all<{ read: number }>(`SELECT read FROM user_groups WHERE user = ? AND grp = ?`, this.user, group)[0];
    if (row === undefined || row.read >= seq) return false;
    this.sql.all(`UPDATE user_groups SET read = ? WHERE user = ? AND grp = ?`, seq, this.user, group);
    return true;
  }

  /** The user's read-receipt setting (users.read_receipts, PROTOCOL.md 9.8): it covers groups too. */
  readReceiptsOn(): boolean {
    return (this.sql.all<{ r: number }>(`SELECT read_receipts AS r FROM users WHERE user = ?`, this.user)[0]?.r ?? 1) !== 0;
  }

  cursor(group: string, device: string): number | undefined {
    return this.sql.all<{ cursor: number }>(`SELECT cursor FROM group_cursors WHERE user = ? AND grp = ? AND device = ?`, this.user, group, device)[0]?.cursor;
  }

  /** The lowest stored cursor of this user's devices in the group but `device` (undefined: none stored). */
  lowestCursor(group: string, device: string): number | undefined {
    return this.sql.all<{ c: number | null }>(`SELECT MIN(cursor) AS c FROM group_cursors WHERE user = ? AND grp = ? AND device <> ?`, this.user, group, device)[0]?.c ?? undefined;
  }

  setCursor(group: string, device: string, cursor: number): void {
    this.sql.all(`INSERT OR REPLACE INTO group_cursors (user, grp, device, cursor) VALUES (?, ?, ?, ?)`, this.user, group, device, cursor);
  }
}
