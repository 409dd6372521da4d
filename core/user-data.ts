import type { Row, Sql } from './ports.js';
import { toBase64 } from '../protocol/index.js';

/**
 * Everything a user's shard stores about the user, as a list of per-feature parts: what the admin API's erase
 * deletes and its export returns (core/admin.ts). A feature that adds a table keyed by `user` adds its part here
 * (test/unit/user-data.test.ts fails while a table with a `user` column is in no part).
 *
 * Only the user's OWN rows (user = <the user>) are in these tables. What other users' shards hold about the user
 * stays there: the messages this user sent, already in their recipients' inboxes (inbox rows with peer = user),
 * their dedup marks for this user (peers), the receipts and read positions they keep for conversations with this
 * user (receipts_in, receipts_out, reads with conv = user). Those are the other users' data (their copy of a
 * conversation), not this user's mailbox; docs/OPERATIONS.md "Admin API" says so. Likewise a group's shard keeps
 * its roster and log (keyed by group, not user): the user's messages to a group stay in its log until its
 * retention, and the user stays on its roster until an admin removes it; erase forgets the user's side only
 * (which groups it is in, its devices' cursors).
 */
export interface UserDataPart {
  name: string;
  /** Tables with a `user` column whose rows with user = <the user> are the user's. */
  tables: readonly string[];
}

export const USER_DATA_PARTS: UserDataPart[] = [
  /** Counters, last seen, read-receipt and presence settings. */
  { name: 'account', tables: ['users'] },
  /** The inbox (messages received, and sent entries), the outbox (accepted, not yet handed over), send dedup, per-sender marks. */
  { name: 'messages', tables: ['inbox', 'outbox', 'dedup', 'peers'] },
  { name: 'devices', tables: ['devices'] },
  /** Delivery receipts owed and received, read positions. */
  { name: 'receipts', tables: ['receipts_out', 'receipts_in', 'reads'] },
  /** Token revocations (core/revocation.ts). */
  { name: 'tokens', tables: ['revocations', 'revoked_before'] },
  /** The key directory: each device's published keys and its pool of one-time prekeys (core/keys.ts). */
  { name: 'keys', tables: ['device_keys', 'one_time_prekeys'] },
  /** The member side of groups: which groups the user is in, each device's cursor per group (core/group/member.ts). */
  { name: 'groups', tables: ['user_groups', 'group_cursors'] },
  /** Push webhooks waiting or being retried for the user's devices (core/push.ts). */
  { name: 'push', tables: ['push_pending'] },
];

/** Tables of the parts that exist in this database (a part added by a feature whose migration has not run is skipped). */
function present(sql: Sql, part: UserDataPart): string[] {
  const have = new Set(sql.all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table'`).map((r) => r.name));
  return part.tables.filter((t) => have.has(t));
}

/** A row as JSON: blobs (message bodies) as base64. */
function jsonRow(r: Row): Record<string, string | number | null> {
  const o: Record<string, string | number | null> = {};
  for (const [k, v] of Object.entries(r)) o[k] = v instanceof Uint8Array ? toBase64(v) : v;
  return o;
}

/** Every stored row of the user, by part and table. Read only. */
export function exportUser(sql: Sql, user: string): Record<string, Record<string, Record<string, string | number | null>[]>> {
  const out: Record<string, Record<string, Record<string, string | number | null>[]>> = {};
  for (const part of USER_DATA_PARTS) {
    const tables: Record<string, Record<string, string | number | null>[]> = {};
    // Table names come from the list above, never from a request.
    for (const t of present(sql, part)) tables[t] = sql.all(`SELECT * FROM ${t} WHERE user = ?`, user).map(jsonRow);
    out[part.name] = tables;
  }
  return out;
}

/** Deletes every stored row of the user (run inside Storage.commit). Returns rows deleted per table. */
export function eraseUser(sql: Sql, user: string): Record<string, number> {
  const deleted: Record<string, number> = {};
  for (const part of USER_DATA_PARTS) {
    for (const t of present(sql, part)) {
      deleted[t] = sql.all<{ n: number }>(`SELECT count(*) AS n FROM ${t} WHERE user = ?`, user)[0]?.n ?? 0;
      sql.all(`DELETE FROM ${t} WHERE user = ?`, user);
    }
  }
  return deleted;
}
