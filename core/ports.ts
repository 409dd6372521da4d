import type { Encoding, ErrorCode, KeyBundleEntry, MessageRef, PresenceInfo } from '../protocol/index.js';
import type { GroupCall, GroupNews, GroupPush, GroupResult } from './group/types.js';
import type { GroupPushNote } from './group/push-notes.js';

/**
 * The two small ports the core runs over. Durable Object `ctx.storage.sql` and `node:sqlite` are both
 * synchronous SQLite, so the core's storage logic is plain synchronous code; only durability and the
 * network are asynchronous.
 */

export type SqlValue = string | number | null | Uint8Array;
export type Row = Record<string, SqlValue>;

export interface Sql {
  /** Runs one statement and returns its rows (empty for writes). Blobs come back as Uint8Array. */
  all<T extends Row = Row>(query: string, ...params: SqlValue[]): T[];
}

/**
 * Storage.commit rejects with this when the disk (or the database) is full. Nothing of fn was kept, nothing
 * was acked; the condition is expected to pass (an operator frees space, recipients drain their inboxes), so
 * callers answer with a retryable error (`unavailable` + retryAfterMs) and keep serving what needs no write.
 */
export class StorageFullError extends Error {
  override readonly name = 'StorageFullError';
  constructor(
    message: string,
    /** When a write is worth trying again. */
    readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface Storage {
  readonly sql: Sql;
  /**
   * Runs fn synchronously and atomically (all of its writes or none), and resolves once those writes — and
   * every write before them — are durable. Anything the core sends after awaiting it (an ack, a forward, a
   * delivery) therefore leaves only after the commit. On Cloudflare the output gate gives this for free;
   * on-prem it is the group commit's fsync. Reads done in fn see only data that is durable by resolution.
   */
  commit<T>(fn: () => T, opts?: CommitOptions): Promise<T>;
}

export interface CommitOptions {
  /**
   * The writes of fn may become durable LATER than the promise resolves: with the next commit of this storage
   * that is not lazy (they are ordered before it: a durable commit makes every earlier lazy one durable too), or
   * within a bounded delay (the adapter's own). A crash may lose them, and only them (never a write that was not
   * lazy, never a lazy write followed by a durable one that resolved). Use it only for writes that what runs
   * after a restart repairs, and that nothing sent on their strength depends on: an outbox delete after the
   * recipient accepted (a resend is dropped by its per-sender dedup), a receipt paid (resent, merged as a
   * maximum), a cursor or `delivered` floor (derived again; the device drops what it saw). Reads in fn may see
   * lazy writes that are not durable yet. Read when fn has returned, so fn may clear it on finding that it wrote
   * something that must be durable before what follows (core/mailbox.ts onAck: a receipt handed over locally).
   *
   * Why: in cluster mode every durable group is one replicated log append (~1 ms of CPU on each side); these
   * bookkeeping writes were a quarter of a message's appends (docs/BENCHMARKS.md, cluster). An adapter may treat
   * a lazy commit as a durable one (Durable Objects do: the output gate already batches).
   */
  lazy?: boolean;
}

/** Per-socket state that must survive hibernation (a Durable Object keeps it in the socket's attachment). */
export interface ConnState {
  device: string;
  /** Highest sequence number pushed on this socket; deliveries continue after it. */
  sent: number;
  /** Encoding the client last spoke; replies use the same. */
  enc: Encoding;
  /** Highest receipt version pushed on this socket (PROTOCOL.md 9.6); receipts continue after it. */
  rsent: number;
  /**
   * Highest seq the device acked on this socket: its send window counts from here. Kept with the socket (and
   * through hibernation) because the device's stored cursor is written lazily (MailboxStore.noteCursor).
   * Absent on sockets accepted by an older version: the stored cursor is used.
   */
  acked?: number;
  /**
   * Highest read version pushed on this socket (PROTOCOL.md 9.8). Undefined when the client's hello had no
   * `reads`: it was written before read receipts, and gets no read_state, settings or read positions.
   */
  rdsent?: number;
  /**
   * The ref of this connection's last `presence_subscribe` (PROTOCOL.md 8.6): presence pushes go, under it, only
   * to connections that subscribed. Undefined: never subscribed (every client written before subscriptions).
   */
  pref?: string;
  /**
   * The client's hello named HELLO_FEATURES.refs: its entries carry their references. Undefined: a client written
   * before them, which gets replies as plain messages and no edit, delete or reaction (core/shown.ts).
   */
  refs?: boolean;
  /** The client's hello named HELLO_FEATURES.typing: it is sent `typing_state` frames (core/typing.ts). */
  typing?: boolean;
  /**
   * The client's hello named HELLO_FEATURES.sync (PROTOCOL.md 9.10): it is sent `sent` entries. Otherwise (a client
   * written before them) they are left out of its stream (core/shown.ts).
   */
  sync?: boolean;
  /**
   * The client's hello named HELLO_FEATURES.groups: it is sent its user's groups (`group_deliver`). Otherwise the
   * connection counts as no device for groups (core/group/member.ts).
   */
  groups?: boolean;
  /** The client's hello named HELLO_FEATURES.keys: it is pushed `keys_state` when its pool runs low (core/keys.ts). */
  keys?: boolean;
  /** The device was new to its user at this hello: its cursor per group starts by the history depth (core/group/member.ts). */
  fresh?: boolean;
  /** On a connection that is not shown every entry (core/shown.ts, partial): the last seq it was shown. */
  vis?: number;
}

/**
 * The claims of the token a connection was opened (or last refreshed) with, as the adapter verified them
 * (auth/verify.ts): what a revocation (core/revocation.ts) and the expiry close look for. Seconds since epoch.
 */
export interface TokenClaims {
  jti?: string;
  iat?: number;
  exp?: number;
}

/**
 * One WebSocket of this user, as the adapter presents it. The adapter must hand the core the same object for
 * the same socket for as long as it lives (the core keys per-socket work on identity).
 */
export interface Conn {
  /** Null until the hello frame has been accepted. */
  readonly state: ConnState | null;
  /** Stores new per-socket state (and persists it where the platform hibernates). */
  setState(state: ConnState): void;
  /** Queues an encoded frame. Never throws for a closed socket. */
  send(data: string | Uint8Array): void;
  /**
   * Bytes handed to send() and not yet taken by the network (WebSocket.bufferedAmount); 0 where the platform
   * cannot tell. The core stops writing to, and closes, a socket whose queue passes Config.maxQueuedBytes.
   */
  readonly queuedBytes: number;
  close(code: number, reason: string): void;
  /**
   * The connection's token claims (core/revocation.ts): kept by the adapter from the upgrade on (on Cloudflare in
   * the socket attachment). Absent on sockets accepted before revocations existed: only a disconnect reaches them.
   */
  readonly token?: TokenClaims | undefined;
  /** A `refresh` frame was accepted (core/refresh.ts): the connection continues under these claims. */
  setToken?(claims: TokenClaims): void;
  /** The connection's trace id (core/log-line.ts traceId), set by the adapter at the upgrade. */
  readonly trace?: string | undefined;
}

/** An item travelling from one user's outbox to another user's inbox. */
export interface ForwardItem {
  /** The sender's outbox number: increasing per sender, the recipient's dedup key. */
  n: number;
  /** `delivered` only for receipts queued before schema migration 4; receipts now travel as ForwardBatch.receipt. */
  kind: 'message' | 'delivered';
  /** Server message id (for a receipt, the id of the message delivered). */
  msg: string;
  ts: number;
  body: Uint8Array;
  /** The message refers to an earlier one (PROTOCOL.md 9.9); checked by the sender's shard before it was accepted. */
  ref?: MessageRef;
}

/** A cumulative delivery receipt: every message up to outbox number n (server id msg) reached a device at ts. */
export interface Receipt {
  n: number;
  msg: string;
  ts: number;
}

export interface ForwardBatch {
  from: string;
  items: ForwardItem[];
  /**
   * The receipt `from` owes the recipient, if any: the recipient's messages to `from` up to receipt.n reached one
   * of `from`'s devices. Never refused; idempotent (receipts only move forward), so a retry may carry it again.
   */
  receipt?: Receipt;
  /**
   * The read receipt `from` owes the recipient, if any: `from` read the recipient's messages to it up to read.n
   * (read implies delivered). Never refused, idempotent like `receipt`; absent while `from` has them turned off.
   */
  read?: Receipt;
  /**
   * The trace id of the connection whose send started this forward (core/log-line.ts), if known: the recipient's
   * shard puts it on the lines it writes about the batch, so one id follows a message from edge to recipient.
   * Diagnostic only; never stored.
   */
  trace?: string;
}

export interface ForwardResult {
  /** Every item with n <= acceptedUpTo is stored (or was already); the sender may drop them. */
  acceptedUpTo: number;
  /** Set when the recipient's inbox is full; the rest must wait at least this long. */
  retryAfter?: number;
}

/** A hand-over done inside the caller's commit (Peers.local). */
export interface HandOver {
  result: ForwardResult;
  /** Run after the caller's commit resolved: pushes what was stored to the recipient's sockets. */
  deliver(): Promise<void>;
  /** Run if the caller's commit failed: the recipient forgets what it cached of the rolled-back writes. */
  rollback(): void;
}

/** The shard of a user that lives in the same Storage as the caller (on-prem: the same worker process). */
export interface LocalShard {
  /**
   * What receive(batch) does, synchronously, inside the CALLER's Storage.commit: the send and its hand-over to
   * the recipient's inbox become durable in one commit (one hop, one commit), and nothing waits for a forward.
   */
  handOver(batch: ForwardBatch): HandOver;
}

/**
 * Thrown by Peers.forward when the recipient's side says it is overloaded (on Cloudflare a Durable Object error
 * with `.overloaded`, which the platform says must not be retried soon). The core then waits at least
 * OVERLOADED_MIN_RETRIES steps of its backoff instead of its first, short one. The platform's error is `cause`.
 */
export class PeerOverloadedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PeerOverloadedError';
  }
}

/** Calls into other users' shards. Implemented by Durable Object RPC or by the on-prem shard router. */
export interface Peers {
  /** Rejects on failure (the core retries with backoff); with PeerOverloadedError when retrying soon would hurt. */
  forward(to: string, batch: ForwardBatch): Promise<ForwardResult>;
  /**
   * `user`'s presence as `asker` may see it (its visibility setting applied; hidden reads as never seen:
   * offline, lastSeen 0). Rejects when the shard cannot be reached.
   */
  presence(user: string, asker: string): Promise<PresenceInfo>;
  /**
   * Presence subscriptions (PROTOCOL.md 8.6). `watcher` registers (on) or drops (off) its interest in `subject`'s
   * changes, held in the subject's memory as a lease of presenceLeaseMs (renewed by calling again). Resolves to
   * the subject's state as the watcher may see it, or undefined when hidden (or off). Idempotent; never writes
   * a row. Rejects when the subject's shard cannot be reached. Optional: without it a subscription gets
   * `unavailable`.
   */
  watch?(subject: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined>;
  /**
   * A subject's state changed: one best-effort push to `watcher`'s shard (never retried, never stored). Resolves
   * false when the watcher no longer wants them (it has no subscribed connection), so the subject drops it.
   * Must not wake a watcher that is asleep only to drop it: the subject calls only watchers that registered
   * and did not unwatch, and a watcher unwatches when its last device goes offline.
   */
  presenceChanged?(watcher: string, info: PresenceInfo): Promise<boolean>;
  /**
   * Typing (PROTOCOL.md 8.8, core/typing.ts): `from` is typing (on) or stopped (off) in conversation `conv`, as
   * `to` names it (1:1: `from` itself; a group: its id); `to`'s shard pushes it to `to`'s connections past hello. Ephemeral: one attempt, never stored, never retried,
   * never queued. Resolves true when `to` has such a connection, false when it has none (nothing was pushed;
   * `to` then remembers `from`, in memory and briefly, to tell it with one call `typing(from, to, to, false)`
   * when its first device comes online). A call is also news that `from` is online. Must not wake or load a
   * shard only to drop it: the caller calls only recipients it does not know to be offline, and an adapter
   * answers false for a shard that has no storage (Cloudflare) or is not in memory (on-prem) without creating
   * it. Rejects when the shard cannot be reached. Optional: without it typing frames are accepted and dropped.
   */
  typing?(to: string, from: string, conv: string, on: boolean): Promise<boolean>;
  /**
   * Groups (docs/ARCHITECTURE.md "Groups"): one call from a user's shard to the shard of `group` (a Durable Object
   * per group; on-prem the worker owning the group id by hash), made for the user `call.from`. Resolves to the
   * group's answer (refusals such as not_member are results, not rejections) after anything it wrote is durable
   * there. Rejects only when the group's shard cannot be reached (the caller answers `unavailable`). Optional:
   * without it group frames get `unavailable`.
   */
  group?(group: string, call: GroupCall): Promise<GroupResult>;
  /**
   * One fan-out round of a group to its online members' shards: the adapter reaches each target once (Cloudflare:
   * one RPC per member shard, at most a few at a time; on-prem one message per worker listing its members), each
   * getting the entries of push.entries inside its ranges. Returns one promise per target, in order: true when
   * the member's shard took it and has a device connected, false when it has none (it is offline: the group stops
   * pushing to it until it watches again); a rejection when it could not be reached (the group marks it behind).
   * Must not wake a member shard that is not running only to learn it has no device (answer false instead).
   */
  groupPush?(push: GroupPush): Promise<boolean>[];
  /**
   * The group tells `user`'s shard its membership range changed (joined; left, 0 while a member). Resolves once
   * the member's shard stored it; rejects when unreachable (the group retries from its wake-up). Idempotent.
   */
  groupNews?(user: string, news: GroupNews): Promise<void>;
  /**
   * Push webhooks for a group (core/group/push-notes.ts): `note.count` messages of the group landed for `user`, a
   * member the group knows to be offline; the member's shard counts them for its offline devices' pushes and
   * resolves once that is stored. Called only while IRIS_PUSH_URL is set, once per member and coalescing window.
   * An adapter must not create storage for a user that never connected (no device: nothing to push). Rejects when
   * unreachable (the group retries from its wake-up). Optional: without it group messages push nothing.
   */
  groupNote?(user: string, note: GroupPushNote): Promise<void>;
  /**
   * Key directory (PROTOCOL.md 8.9, core/keys.ts): `owner`'s bundle for `requester`, one entry per device of
   * `owner`, each with at most one one-time prekey that the owner's shard DELETES in the same Storage.commit that
   * reads it, and answers only after that commit resolved: no two calls ever get the same prekey, and a prekey
   * handed out is never handed out again after a crash. Rate limiting is the requester's shard's business (it
   * calls only within its bucket). The owner's devices are told (keys_state) when a pool falls below the threshold.
   * An owner that never published keys (or never connected) answers no entries, and an adapter must not create
   * storage for it. Rejects when the owner's shard cannot be reached (the requester answers `unavailable`). Not
   * retried by the core: a retry after a lost answer would spend another prekey, which is the lesser harm than a
   * reuse and is what a client's retry would do anyway. Optional: without it a keys_fetch for another user gets
   * `unavailable`.
   */
  fetchKeys?(owner: string, requester: string): Promise<KeyBundleEntry[]>;
  /**
   * The ids of the devices `owner` has published keys for (PROTOCOL.md 8.9), in id order; reads only, writes
   * nothing and creates no storage. Rejects when the owner's shard cannot be reached.
   */
  keyDevices?(owner: string): Promise<string[]>;
  /**
   * The recipient's shard when it shares this Storage (its writes can join the caller's transaction), else
   * undefined. Optional: a Durable Object never shares storage with another user's.
   */
  local?(user: string): LocalShard | undefined;
}

/** The adapter's view of this user's live sockets. */
export interface Sockets {
  list(): Iterable<Conn>;
}

/** Asks the platform to call Mailbox.onWake() at (or soon after) a time. Only the earliest request matters. */
export interface Scheduler {
  wakeAt(ms: number): void;
}

export interface Clock {
  now(): number;
}

export type LogLevel = 'info' | 'warn' | 'error';

/**
 * Where the core's log lines go. The adapter honours its configured level and keeps each entry on one line
 * (on-prem: onprem/log.ts; Cloudflare: the console, which Workers Logs collects). The core logs failures that
 * need an operator (a forward that failed, an unexpected error), never once per message.
 */
export interface Logger {
  /** fields: who and which trace the line is about, where the adapter's own context does not say (core/log-line.ts). */
  log(level: LogLevel, message: string, error?: unknown, fields?: LogFields): void;
}

/** Context of a log line (core/log-line.ts): the user, a shard that is not a user's, the trace id. */
export interface LogFields {
  user?: string;
  shard?: string;
  trace?: string;
}

const LEVEL_RANK: Record<LogLevel, number> = { info: 0, warn: 1, error: 2 };

/** Whether a line of `level` is written when the least severe level written is `least`. */
export function logs(least: LogLevel, level: LogLevel): boolean {
  return LEVEL_RANK[level] >= LEVEL_RANK[least];
}

/** Counters the adapters export (on-prem: Prometheus). All optional; the core calls them on the hot path. */
export interface Metrics {
  accepted?(): void;
  delivered?(entries: number): void;
  acked?(): void;
  error?(code: ErrorCode): void;
  forwardFailed?(): void;
  /** Push webhooks (core/push.ts): a call answered 2xx. */
  pushSent?(): void;
  /** A call that failed (network error, timeout, non-2xx); it is retried unless dead-lettered. */
  pushFailed?(): void;
  /** A push dropped after IRIS_PUSH_MAX_ATTEMPTS failed calls. */
  pushDeadLettered?(): void;
}

/**
 * The HTTP client of push webhooks (core/push.ts): Node's fetch on-prem, the Worker's fetch() on Cloudflare.
 * POSTs `body` with `headers` to `url` and resolves to the response status (the response body is read and
 * dropped). Rejects on a network error, or when no answer came within timeoutMs (the request is aborted).
 * The core never awaits it on the message path; it retries on rejection and on any non-2xx status.
 */
export interface PushHttp {
  post(url: string, body: string, headers: Record<string, string>, timeoutMs: number): Promise<number>;
}
