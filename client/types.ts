import type { GroupAckResult, GroupEvent, GroupMessage } from './groups.js';
import type { KeysStateInfo } from './keys.js';
import type { BackoffOptions } from './backoff.js';
import type { IrisError } from './errors.js';
import type { FetchLike, WebSocketConstructor } from './socket.js';
import type { ClientStore } from './store.js';
import type { PresenceVisibility } from '../protocol/index.js';

/*
 * The SDK's own shapes of what the server says. They carry no wire fields (the frame tag `t`): the wire format
 * may change under the SDK without the app's types changing, and apps cannot come to depend on it.
 */

/** The server accepted the connection: connect() resolves with it, and the 'welcome' event carries it. */
export interface Welcome {
  user: string;
  device: string;
  /** Deliveries on this connection start after this sequence number. */
  cursor: number;
  /** Highest sequence number in the user's inbox right now. */
  head: number;
  /** Server clock, ms since epoch. */
  time: number;
}

/** A send the server has durably accepted: what send() resolves with. */
export interface SendAck {
  /** The client message id (the idempotency key). */
  id: string;
  /** Server message id, unique across the deployment. */
  msg: string;
  /** Server timestamp of acceptance, ms since epoch. */
  ts: number;
  /** True when this answers a retry of an already accepted message. */
  dup: boolean;
}

/** One user's presence, as presence() resolves with it. */
export interface PresenceInfo {
  user: string;
  online: boolean;
  /** ms since epoch of the last disconnect (or now, if online); 0 if never seen. */
  lastSeen: number;
}

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** How the token travels: browsers can only use 'subprotocol' or 'query'; 'header' needs Node's global WebSocket. */
export type TokenTransport = 'subprotocol' | 'query' | 'header';

export interface IrisClientOptions {
  /** ws(s)://host/v1/connect */
  url: string;
  /**
   * A JWT, or a function called before every (re)connect so expiring tokens can be refreshed. After a 401
   * refusal the function is asked again; the client gives up with `auth_failed` after 3 refusals in a row, when
   * it returns the token just refused, when it throws, or at once with a string token. 403 is final too.
   */
  token: string | (() => string | Promise<string>);
  /** Stable per installation ([A-Za-z0-9._@+=-], 1-64 chars). One live socket per device. */
  device: string;
  /** Frame encoding; default 'binary'. */
  encoding?: 'binary' | 'json';
  /** Default 'subprotocol' (works everywhere). */
  tokenTransport?: TokenTransport;
  /**
   * Cursor, handed-out entries and outbox persistence. Default: an IndexedDB store (database `iris-client`,
   * one per device id) where `indexedDB` exists (browsers), else an in-memory store.
   */
  store?: ClientStore;
  reconnect?: BackoffOptions;
  /** WebSocket constructor; default the global one. */
  WebSocket?: WebSocketConstructor;
  /** Heartbeat interval: a ping after this long without sending; reconnect after twice this without receiving. Default 20 s. */
  heartbeatMs?: number;
  /** Time allowed from opening the socket to the welcome frame. Default 15 s. */
  connectTimeoutMs?: number;
  /** Delivery acks: sent after `every` processed entries, or `delayMs` after the last one. Default 32 / 50 ms. */
  ack?: { every?: number; delayMs?: number };
  /** Unacknowledged sends kept locally before send() refuses with outbox_full. Default 1000. */
  maxOutbox?: number;
  /** Timeout of presence queries. Default 10 s. */
  requestTimeoutMs?: number;
  /**
   * Sends refused with rate_limited, inbox_full, outbox_full or unavailable are written again (same id) after
   * the server's retry-after; sends stay pipelined and keep their order per recipient (the server's send
   * barrier, docs/PROTOCOL.md 9.3, and in-order resends); send() resolves once durable.
   * A send rejects with the refusal once waiting longer would exceed `maxWaitMs` since its first refusal
   * (default 120 s). `false`: no retries, all sends pipelined, send() rejects with the first refusal.
   */
  retry?: false | { maxWaitMs?: number };
  /** Learn why a handshake failed with a plain GET of the connect URL (default true, where fetch exists). */
  probeRefusals?: boolean;
  /** fetch for that GET; default the global one. */
  fetch?: FetchLike;
  /** Typing (typing(), typingInput()): least time between two `on` frames per conversation, and typingInput's idle time. Defaults 1500 / 3000 ms. */
  typing?: { renewMs?: number; idleMs?: number };
}

/** An entry an earlier client on the same store handed out whose listeners never finished (see 'recovered'). */
export type RecoveredEntry = { kind: 'message'; message: IrisMessage } | { kind: 'receipt'; receipt: IrisReceipt } | { kind: 'sent'; sent: IrisOutgoing };

/** A send refused with "not now" that the client will write again after retryAfter ms. */
export interface RetryEvent {
  id: string;
  to: string;
  code: string;
  retryAfter: number;
}

/** A message for this user, handed to 'message' listeners in sequence order, exactly once per device. */
export interface IrisMessage {
  seq: number;
  /** Server message id (`<sender>:<n>`), unique across the deployment. */
  msg: string;
  from: string;
  /** ms since epoch when the server accepted it. */
  ts: number;
  body: Uint8Array;
  /** The body as UTF-8 text. */
  text(): string;
  /**
   * This message refers to an earlier one (docs/PROTOCOL.md 9.9): a reply (the body is the reply), an edit (the
   * body replaces `ref.msg`'s), a delete for everyone (`ref.msg` is gone; empty body) or a reaction (the body is
   * the reaction; empty: `from` removed its reaction). The server guarantees that an edit's or a delete's target
   * was sent by `from`; apply it only to a message you have from `from`.
   */
  ref?: IrisRef;
}

/** What a message refers to: how (`kind`) and which earlier message (`msg`, its server message id). */
export interface IrisRef {
  kind: 'reply' | 'edit' | 'delete' | 'react';
  msg: string;
}

/**
 * A message this client's user sent from ANOTHER of its devices (multi-device sync, docs/PROTOCOL.md 9.10), in
 * the user's own order among the messages it received: the 'sent' event, at most once per entry like
 * 'message'. Sends made by this client are not emitted (it has their acks), except after a crash between a
 * send's ack and its entry: the app can tell by `msg`, which its own send_ack carried.
 */
export interface IrisOutgoing {
  seq: number;
  /** Server message id (`<this user>:<n>`), as in the sending device's SendAck. */
  msg: string;
  /** The recipient. */
  to: string;
  /** ms since epoch when the server accepted it. */
  ts: number;
  body: Uint8Array;
  /** The body as UTF-8 text. */
  text(): string;
  /** What it refers to, when it is a reply, an edit, a delete or a reaction (PROTOCOL.md 9.9). */
  ref?: IrisRef;
}

/**
 * A cumulative delivery receipt: every message this client's user sent to `by`, up to and including `msg`, has
 * reached one of `by`'s devices (one receipt covers a whole acknowledged burst; docs/PROTOCOL.md 9.6).
 */
export interface IrisReceipt {
  /** 0 for receipts sent as state (every current server); the inbox seq of a legacy `delivered` entry. */
  seq: number;
  /** Server message id (as in its SendAck) of the newest message covered; every earlier one to `by` is too. */
  msg: string;
  /** The recipient. */
  by: string;
  ts: number;
}

/**
 * A read receipt: `by` has read every message this client's user sent to it, up to and including `msg`
 * (cumulative; docs/PROTOCOL.md 9.8). Read implies delivered: a `receipt` at least as far comes with it.
 */
export interface IrisRead {
  /** Server message id (as in its SendAck) of the newest message read; every earlier one to `by` is read too. */
  msg: string;
  /** The reader. */
  by: string;
  /** When it was marked read, ms since epoch. */
  ts: number;
}

/** How far this client's user has read one conversation, on whichever of its devices (the same on all). */
export interface IrisReadPosition {
  /** The conversation: in a 1:1 conversation, the other user. */
  conv: string;
  /** Every message of `conv` up to and including this server message id is read. */
  msg: string;
  ts: number;
}

/**
 * Someone is typing (on) or stopped (off) in a conversation: in 1:1 `conv` is `from`. An `on` that is not renewed
 * turns into an `off` event by itself after the server's TTL (5 s by default), so a typer that crashed is cleared.
 */
export interface IrisTyping {
  conv: string;
  from: string;
  on: boolean;
}

/** This user's settings, as the server holds them. */
export interface IrisSettings {
  /** Whether senders learn how far this user read their messages (default true). */
  readReceipts: boolean;
  /** Who may see this user's presence and last seen; absent from servers that do not say. */
  presence?: PresenceVisibility;
}

/** A send's acceptance, with the recipient; emitted for every acked send, including ones resumed from the store. */
export interface SentEvent extends SendAck {
  to: string;
}

export interface ClientEvents {
  /**
   * At most once per entry, ever, for a given store: the entry is recorded in the store as handed out before
   * listeners run. Listeners may return a promise: the entry counts as handled (and is acked) once it settles.
   */
  message: IrisMessage;
  /** A message this user sent from another of its devices (IrisOutgoing), in order with 'message' (same rules). */
  sent: IrisOutgoing;
  /**
   * On start, before anything new: entries an earlier client on the same store handed out whose listeners did
   * not finish (crash, kill, page closed). They may have been processed in part or in full: check (e.g. by
   * `msg`). Without a listener they count as handled.
   */
  recovered: RecoveredEntry;
  /** A send was refused for now and will be written again (same id) after retryAfter ms. */
  retry: RetryEvent;
  receipt: IrisReceipt;
  /** The sender's side: a peer read this user's messages up to a point (state: may repeat, never goes back). */
  read: IrisRead;
  /** The reader's side: how far this user read a conversation, from this or another of its devices. */
  readState: IrisReadPosition;
  /** A followed user's presence (subscribePresence): its state at once, then each change. */
  presence: PresenceInfo;
  /** This user's settings: after every welcome, and when a device changed them. */
  settings: IrisSettings;
  /** Another user started or stopped typing to this user (typing indicators; each change once, expiry included). */
  typing: IrisTyping;
  /** A device of this user has few one-time prekeys left (once per crossing, and at connect while low): upload more. */
  keysLow: KeysStateInfo;
  state: ConnectionState;
  /** Errors not tied to a send() or presence() call, and connection failures after connect() resolved. */
  error: IrisError;
  ack: SentEvent;
  welcome: Welcome;
  /** A group message (PROTOCOL.md 9.9), once per device: the SDK drops what its cursor for the group passed. */
  groupMessage: GroupMessage;
  /** A membership change or rename of a group, in the group's order with its messages. */
  groupEvent: GroupEvent;
  /** A group change or send was answered (also one a restarted client resent from its store). */
  groupAck: GroupAckResult & { id: string };
  /**
   * How far this user read a group (every entry up to `seq`), marked on any of its devices (markGroupRead): after
   * each welcome for every group with a mark, and when a device moves it. The unread count is the same everywhere.
   */
  groupRead: { group: string; seq: number };
}
