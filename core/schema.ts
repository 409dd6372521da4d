import type { Sql } from './ports.js';

/**
 * The storage schema, one list of migrations applied in order and recorded in iris_migrations. Never edit a
 * migration that has shipped: add the next one.
 *
 * Every table is keyed by user first. On Cloudflare each Durable Object holds one user, so the column is
 * constant; on-prem one SQLite file holds all the users of a worker process, and the same queries serve both.
 * WITHOUT ROWID tables cluster each user's rows together in key order, so reading an inbox is a range scan.
 */
const MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE users (
       user TEXT PRIMARY KEY,
       next_seq INTEGER NOT NULL,   -- next inbox sequence number
       next_n INTEGER NOT NULL,     -- next outbox number (also the numeric part of server message ids)
       trimmed INTEGER NOT NULL,    -- inbox entries up to here were acked by every device and deleted
       delivered INTEGER NOT NULL,  -- highest seq acked by any device: receipts were sent up to here
       last_seen INTEGER NOT NULL
     ) WITHOUT ROWID`,
    `CREATE TABLE inbox (
       user TEXT NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
       msg TEXT NOT NULL, peer TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL,
       PRIMARY KEY (user, seq)
     ) WITHOUT ROWID`,
    `CREATE TABLE outbox (
       user TEXT NOT NULL, n INTEGER NOT NULL, recipient TEXT NOT NULL, kind INTEGER NOT NULL,
       msg TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL,
       PRIMARY KEY (user, n)
     ) WITHOUT ROWID`,
    `CREATE INDEX outbox_by_recipient ON outbox (user, recipient, n)`,
    `CREATE TABLE dedup (
       user TEXT NOT NULL, cid TEXT NOT NULL, n INTEGER NOT NULL, ts INTEGER NOT NULL,
       PRIMARY KEY (user, cid)
     ) WITHOUT ROWID`,
    `CREATE INDEX dedup_by_n ON dedup (user, n)`,
    `CREATE TABLE peers (
       user TEXT NOT NULL, peer TEXT NOT NULL,
       last_n INTEGER NOT NULL,     -- highest outbox number received from peer: the incoming dedup key
       PRIMARY KEY (user, peer)
     ) WITHOUT ROWID`,
    `CREATE TABLE devices (
       user TEXT NOT NULL, device TEXT NOT NULL,
       cursor INTEGER NOT NULL,     -- highest seq this device acked
       last_seen INTEGER NOT NULL,
       PRIMARY KEY (user, device)
     ) WITHOUT ROWID`,
  ],
  // 2: no secondary indexes on the per-message tables. Each index entry is one more row written per insert (a
  // billed row on Cloudflare, a B-tree write on-prem). The outbox is read only per recipient, so it is keyed that
  // way; the dedup window is pruned in bulk every 256 sends by a scan of the user's rows, which is cheap.
  [
    `CREATE TABLE outbox_v2 (
       user TEXT NOT NULL, n INTEGER NOT NULL, recipient TEXT NOT NULL, kind INTEGER NOT NULL,
       msg TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL,
       PRIMARY KEY (user, recipient, n)
     ) WITHOUT ROWID`,
    `INSERT INTO outbox_v2 (user, n, recipient, kind, msg, ts, body) SELECT user, n, recipient, kind, msg, ts, body FROM outbox`,
    `DROP TABLE outbox`,
    `ALTER TABLE outbox_v2 RENAME TO outbox`,
    `DROP INDEX dedup_by_n`,
  ],
  // 3: each inbox entry keeps the sender's outbox number, so the per-sender dedup mark (peers.last_n) need not
  // be rewritten with every batch received: it is the highest number among a sender's entries still stored,
  // and peers.last_n becomes a floor written when the trim deletes entries. Rows written before this carry 0;
  // their marks are in peers, which the old code wrote with every batch.
  [`ALTER TABLE inbox ADD COLUMN n INTEGER NOT NULL DEFAULT 0`],
  // 4: delivery receipts are state, not log entries (PROTOCOL.md 9.6). The recipient's side keeps, per sender, the
  // newest delivered message it still owes a receipt for (one upsert per acknowledgement, deleted when the sender
  // has it); the sender's side keeps, per recipient, how far its messages were delivered, with a per-user version
  // `v` that devices resume from (hello.receipts). No entry, no deliver frame, no ack per receipt.
  [
    `CREATE TABLE receipts_out (
       user TEXT NOT NULL, peer TEXT NOT NULL,
       n INTEGER NOT NULL,          -- peer's outbox number of the newest of its messages delivered here
       msg TEXT NOT NULL, ts INTEGER NOT NULL,
       PRIMARY KEY (user, peer)
     ) WITHOUT ROWID`,
    `CREATE TABLE receipts_in (
       user TEXT NOT NULL, peer TEXT NOT NULL,
       n INTEGER NOT NULL,          -- this user's outbox number: every message to peer up to it was delivered
       msg TEXT NOT NULL, ts INTEGER NOT NULL,
       v INTEGER NOT NULL,          -- receipt version of this user when the row last changed
       PRIMARY KEY (user, peer)
     ) WITHOUT ROWID`,
  ],
  // 5: read receipts, as state like delivery receipts (PROTOCOL.md 9.8). The reader keeps one row per conversation
  // (how far it read, with a per-user read version its devices resume from: hello.reads) and its setting; the
  // sender's receipts_in row gains the read position, so a read mark costs one row at each end and nothing per
  // message. `reads_paid` is a read-version floor: every mark up to it reached its sender, so after a restart
  // only newer marks are sent again. It is written with the users row when that is written anyway.
  [
    `ALTER TABLE users ADD COLUMN read_receipts INTEGER NOT NULL DEFAULT 1`,
    `ALTER TABLE users ADD COLUMN reads_paid INTEGER NOT NULL DEFAULT 0`,
    `CREATE TABLE reads (
       user TEXT NOT NULL, conv TEXT NOT NULL,
       n INTEGER NOT NULL,          -- the conversation's message number read up to (the sender's outbox number in 1:1)
       msg TEXT NOT NULL, ts INTEGER NOT NULL,
       v INTEGER NOT NULL,          -- read version of this user when the row last changed
       PRIMARY KEY (user, conv)
     ) WITHOUT ROWID`,
    `ALTER TABLE receipts_in ADD COLUMN rn INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE receipts_in ADD COLUMN rmsg TEXT NOT NULL DEFAULT ''`,
    `ALTER TABLE receipts_in ADD COLUMN rts INTEGER NOT NULL DEFAULT 0`,
  ],
  // 6: who may see the user's presence (PROTOCOL.md 8.6): 0 everyone, 1 contacts, 2 nobody. Subscriptions
  // themselves are never stored: they are interest of online devices, held in memory at both ends.
  [`ALTER TABLE users ADD COLUMN presence INTEGER NOT NULL DEFAULT 0`],
  // Message references (PROTOCOL.md 9.9): a message may refer to an earlier one (reply, edit, delete, react). The
  // reference is two columns of the message's own outbox and inbox rows (0 / '': none), never a row of its own.
  // The dedup record of a send keeps its recipient, so an edit, a delete or a reaction to one's own message is
  // checked to stay in the conversation it was sent in, and its acceptance time (already there) bounds the edit
  // and delete windows. ADD COLUMN with a constant default rewrites no existing row.
  [
    `ALTER TABLE inbox ADD COLUMN ref_kind INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE inbox ADD COLUMN ref_msg TEXT NOT NULL DEFAULT ''`,
    `ALTER TABLE outbox ADD COLUMN ref_kind INTEGER NOT NULL DEFAULT 0`,
    `ALTER TABLE outbox ADD COLUMN ref_msg TEXT NOT NULL DEFAULT ''`,
    `ALTER TABLE dedup ADD COLUMN peer TEXT NOT NULL DEFAULT ''`,
  ],
  // Groups (docs/ARCHITECTURE.md "Groups"; design B, fan-out on read). The group side: one log per group (messages
  // and membership changes, one order), the accepted client ids, one row per membership range, one row per group.
  // The member side writes nothing per message: which groups the user is in, and each device's cursor per group,
  // written every 64 entries and at close. Keyed by group (or user) first, like every table; no secondary index.
  [
    `CREATE TABLE groups (
       grp TEXT PRIMARY KEY, creator TEXT NOT NULL, name TEXT NOT NULL, meta BLOB NOT NULL,
       trimmed INTEGER NOT NULL,    -- log entries up to here were deleted (a cursor behind it gets history_gap)
       created INTEGER NOT NULL,
       receipts BLOB NOT NULL       -- every member's delivered and read seq, packed in one row (core/group/store.ts)
     ) WITHOUT ROWID`,
    `CREATE TABLE group_log (
       grp TEXT NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL, sender TEXT NOT NULL, subject TEXT NOT NULL,
       name TEXT NOT NULL, ts INTEGER NOT NULL, body BLOB NOT NULL,
       PRIMARY KEY (grp, seq)
     ) WITHOUT ROWID`,
    `CREATE TABLE group_dedup (
       grp TEXT NOT NULL, sender TEXT NOT NULL, cid TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
       PRIMARY KEY (grp, sender, cid)
     ) WITHOUT ROWID`,
    `CREATE TABLE group_members (
       grp TEXT NOT NULL, member TEXT NOT NULL,
       joined INTEGER NOT NULL,     -- seq of the entry that opened this range (create or join)
       left_at INTEGER NOT NULL,    -- seq of the leave entry that closed it; 0 while a member
       admin INTEGER NOT NULL,
       online INTEGER NOT NULL,     -- the member's shard has a device connected: it gets pushes (memory, kept for a restart)
       told INTEGER NOT NULL,       -- the member's shard knows this range up to this seq (joined, then left_at)
       PRIMARY KEY (grp, member, joined)
     ) WITHOUT ROWID`,
    `CREATE TABLE user_groups (
       user TEXT NOT NULL, grp TEXT NOT NULL, joined INTEGER NOT NULL, left_at INTEGER NOT NULL,
       PRIMARY KEY (user, grp)
     ) WITHOUT ROWID`,
    `CREATE TABLE group_cursors (
       user TEXT NOT NULL, grp TEXT NOT NULL, device TEXT NOT NULL, cursor INTEGER NOT NULL,
       PRIMARY KEY (user, grp, device)
     ) WITHOUT ROWID`,
  ],
  // The key directory (PROTOCOL.md 8.9, core/keys.ts): per device of the user, its identity key, signed prekey and
  // optional last-resort KEM prekey (replaced by uploads), and its pool of one-time prekeys (topped up by uploads,
  // each row deleted in the commit that hands it to a fetcher). `low` remembers that the device was told its pool
  // fell below the threshold, so it is told once per crossing. Every read is by (user, device) or (user): the
  // primary keys serve them; no other index.
  [
    `CREATE TABLE device_keys (
       user TEXT NOT NULL, device TEXT NOT NULL,
       identity BLOB NOT NULL,
       spk_id INTEGER NOT NULL, spk BLOB NOT NULL, spk_sig BLOB NOT NULL, spk_ts INTEGER NOT NULL,
       lr_id INTEGER, lr BLOB, lr_sig BLOB,   -- the last-resort KEM prekey; NULL: none
       low INTEGER NOT NULL DEFAULT 0,        -- 1: told that its pool is below the threshold, not topped up since
       ts INTEGER NOT NULL,                   -- last upload
       PRIMARY KEY (user, device)
     ) WITHOUT ROWID`,
    `CREATE TABLE one_time_prekeys (
       user TEXT NOT NULL, device TEXT NOT NULL, id INTEGER NOT NULL, key BLOB NOT NULL,
       PRIMARY KEY (user, device, id)
     ) WITHOUT ROWID`,
  ],
  // Token revocation (core/revocation.ts, PROTOCOL.md 3.4): single tokens by jti, kept until the token's own exp
  // (then pruned lazily), and per user a "log out everywhere" time: tokens issued (iat) before it are refused. In the
  // user's shard, so the upgrade checks them with no extra hop, and they survive restarts.
  [
    `CREATE TABLE revocations (
       user TEXT NOT NULL, jti TEXT NOT NULL,
       exp INTEGER NOT NULL,        -- the token's exp (seconds): the row is useless, and deleted, after it
       PRIMARY KEY (user, jti)
     ) WITHOUT ROWID`,
    `CREATE TABLE revoked_before (
       user TEXT PRIMARY KEY,
       t INTEGER NOT NULL           -- seconds: tokens with iat < t (or without iat) are refused
     ) WITHOUT ROWID`,
  ],
  // A group's read position, per user (PROTOCOL.md 9.11, `group_read`): the user's devices share how far the user
  // read each group, as they share 1:1 read positions (reads). A column of the row the user already has per group.
  [`ALTER TABLE user_groups ADD COLUMN read INTEGER NOT NULL DEFAULT 0`],
  // Message references in groups (PROTOCOL.md 9.11): the same two columns as the inbox's, on the group's log.
  [`ALTER TABLE group_log ADD COLUMN ref_kind INTEGER NOT NULL DEFAULT 0`, `ALTER TABLE group_log ADD COLUMN ref_msg TEXT NOT NULL DEFAULT ''`],
  // Push webhooks that survive a restart (core/push.ts): one row per device of the user with a push waiting or
  // being retried, written when its coalescing window opens (in the commit of the message that opened it), after
  // a failed call, and deleted once the push is sent or dropped; per group, how far its offline members were told.
  // Never written while IRIS_PUSH_URL is unset.
  [
    `CREATE TABLE push_pending (
       user TEXT NOT NULL, device TEXT NOT NULL,
       sender TEXT NOT NULL, conv TEXT NOT NULL, msg TEXT NOT NULL, ts INTEGER NOT NULL,   -- the latest message counted
       count INTEGER NOT NULL,      -- messages counted when the row was last written
       due INTEGER NOT NULL,        -- when the next call may leave (ms)
       attempts INTEGER NOT NULL,   -- calls made so far (the dead-letter bound counts across restarts)
       grp INTEGER NOT NULL,        -- 1: the latest message is a group's (conv is the group id)
       PRIMARY KEY (user, device)
     ) WITHOUT ROWID`,
    // The group side (core/group/push-notes.ts): not the notes, a cursor into the log, one row per group.
    `CREATE TABLE group_push (
       grp TEXT PRIMARY KEY,
       upto INTEGER NOT NULL        -- every message up to this seq was noted to the members offline (or dropped)
     ) WITHOUT ROWID`,
  ],
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Whether migrate() ever ran here: an object that never had a user has no tables, and reading one throws. */
export function hasSchema(sql: Sql): boolean {
  return sql.all(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'iris_migrations'`).length > 0;
}

/**
 * Brings the database up to SCHEMA_VERSION (or to `target`, for tests of a migration on old data). Idempotent;
 * run it inside a transaction.
 */
export function migrate(sql: Sql, now: number, target = MIGRATIONS.length): number {
  sql.all(`CREATE TABLE IF NOT EXISTS iris_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`);
  const row = sql.all<{ v: number | null }>(`SELECT max(version) AS v FROM iris_migrations`)[0];
  const current = row?.v ?? 0;
  for (let v = current; v < target; v++) {
    for (const stmt of MIGRATIONS[v]!) sql.all(stmt);
    sql.all(`INSERT INTO iris_migrations (version, applied_at) VALUES (?, ?)`, v + 1, now);
  }
  return Math.max(current, target);
}
