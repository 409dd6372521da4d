import type { ErrorCode } from './errors.js';
import { GROUP_CLIENT_TYPES, type GroupClientFrame, type GroupServerFrame } from './groups.js';
import type { Devices, DevicesQuery, KeysBundle, KeysFetch, KeysState, KeysUpload } from './keys.js';

export type * from './keys.js';

/**
 * The frames of protocol v1. One WebSocket message carries exactly one frame; the WebSocket layer already
 * delimits messages, and every variable-length field inside a frame is length-prefixed, so two frames can
 * never bleed into each other (the seed's LOGIN/ACK bug).
 */

/** Binary type byte of each frame. Stable forever within v1. */
export const FRAME_TYPES = {
  hello: 1,
  welcome: 2,
  send: 3,
  send_ack: 4,
  deliver: 5,
  deliver_ack: 6,
  presence_query: 7,
  presence: 8,
  ping: 9,
  pong: 10,
  error: 11,
  receipts: 12,
  read: 13,
  read_state: 14,
  set_settings: 15,
  settings: 16,
  presence_subscribe: 17,
  set_presence: 18,
  // Groups (PROTOCOL.md 7.20, 9.11).
  group_create: 19,
  group_add: 20,
  group_remove: 21,
  group_leave: 22,
  group_role: 23,
  group_update: 24,
  group_roster_query: 25,
  group_send: 26,
  group_ack: 27,
  group_send_ack: 28,
  group_deliver: 29,
  group_roster: 30,
  group_receipts_query: 31,
  group_receipts: 32,
  // A group's read position, shared by the user's devices (PROTOCOL.md 9.11). Numbered apart from other features'.
  group_read: 52,
  typing: 35,
  typing_state: 36,
  // The key directory (PROTOCOL.md 8.9). Numbered apart from the frames other features add meanwhile.
  keys_upload: 43,
  keys_state: 44,
  keys_fetch: 45,
  keys_bundle: 46,
  devices_query: 47,
  devices: 48,
  refresh: 49,
  refreshed: 51,
} as const;

export type FrameType = keyof typeof FRAME_TYPES;

/** First frame of a connection: which device this is and where it wants to resume. */
export interface Hello {
  t: 'hello';
  /** Stable per installation; one live socket per device. */
  device: string;
  /** Highest sequence number this device has processed (0 if none); the server resumes after max(this, its own record). */
  cursor: number;
  /**
   * The `upTo` of the last `receipts` frame this device processed (0 or absent: none). The server sends every
   * receipt that changed after it. Optional on the wire (binary: a trailing varint).
   */
  receipts?: number;
  /**
   * The `upTo` of the last `read_state` frame this device processed (0: none). Present only from clients that
   * speak read receipts: the server sends `read_state` and `settings` frames, and read positions inside
   * `receipts`, only to a connection whose hello carried it. Optional on the wire (binary: a second trailing
   * varint, after `receipts`).
   */
  reads?: number;
  /**
   * Optional protocol features this client understands, a bitmask of HELLO_FEATURES (0 or absent: none). The
   * server sends a feature's fields and entries only to a connection whose hello named it. Optional on the wire
   * (binary: a third trailing varint, after `reads`).
   */
  features?: number;
}

/** Bits of `hello.features`. Each names something a client written before it could not decode. */
export const HELLO_FEATURES = {
  /** Message references (PROTOCOL.md 9.11): `deliver` entries may carry `ref`. */
  refs: 1,
  /** Typing indicators (PROTOCOL.md 8.8): the server may send `typing_state`. */
  typing: 2,
  /** Multi-device sync (PROTOCOL.md 9.10): `deliver` may carry entries of kind `sent`. */
  sync: 4,
  /** Groups (PROTOCOL.md 9.11): the server may send `group_deliver` and `group_receipts`. */
  groups: 8,
  /** The key directory (PROTOCOL.md 8.9): the server may push `keys_state` when this device's one-time prekeys run low. */
  keys: 16,
} as const;

export interface Welcome {
  t: 'welcome';
  user: string;
  device: string;
  /** Deliveries on this connection start after this sequence number. */
  cursor: number;
  /** Highest sequence number in the user's inbox right now. */
  head: number;
  /** Server clock, ms since epoch. */
  time: number;
}

export interface Send {
  t: 'send';
  /** Client message id: the idempotency key. A retry with the same id returns the original ack. */
  id: string;
  to: string;
  body: Uint8Array;
  /** This message refers to an earlier one: a reply, an edit, a delete for everyone or a reaction (PROTOCOL.md 9.11). */
  ref?: MessageRef;
}

/**
 * What a message refers to, and how (PROTOCOL.md 9.11). Numbers are the binary encoding. The body of the referring
 * message stays opaque: a reply's or an edit's text, a reaction (empty: the reaction is removed), nothing for a
 * delete.
 */
export const REF_KINDS = {
  reply: 1,
  edit: 2,
  delete: 3,
  react: 4,
} as const;

export type RefKind = keyof typeof REF_KINDS;

export interface MessageRef {
  kind: RefKind;
  /** Server message id of the message referred to (`<sender>:<n>` on the reference server). */
  msg: string;
}

export interface SendAck {
  t: 'send_ack';
  /** The client message id being acknowledged. */
  id: string;
  /** Server message id, unique across the deployment. */
  msg: string;
  /** Server timestamp of acceptance, ms since epoch. */
  ts: number;
  /** True when this answers a retry of an already accepted message. */
  dup: boolean;
}

/**
 * What an inbox entry is. Servers now send delivery receipts as `receipts` frames (state, not log entries);
 * kind `delivered` stays decodable for clients that stored such entries, and is no longer sent.
 */
export const ENTRY_KINDS = {
  message: 1,
  /** Legacy: a message this user sent reached a device of its recipient (see the `receipts` frame). */
  delivered: 2,
  /**
   * A message this user sent, from any of its devices (multi-device sync, PROTOCOL.md 9.11): `peer` is the
   * RECIPIENT, `msg` the server id its send_ack carried, `body` the body. In the user's own order.
   */
  sent: 3,
} as const;

export type EntryKind = keyof typeof ENTRY_KINDS;

export interface Entry {
  /**
   * Per-user sequence number: strictly increasing, no gaps within one connection's stream (except `sent`
   * entries left out for a client that did not say hello.sync, PROTOCOL.md 9.11).
   */
  seq: number;
  kind: EntryKind;
  /** Server message id (for a receipt: the id of the message it is about). */
  msg: string;
  /** For a message: the sender. For a receipt: the recipient whose device got it. For `sent`: the recipient. */
  peer: string;
  /** ms since epoch: when the server accepted the message / when it was delivered. */
  ts: number;
  /** Message body; empty for receipts. */
  body: Uint8Array;
  /** The message refers to an earlier one (PROTOCOL.md 9.11); only to connections whose hello named HELLO_FEATURES.refs. */
  ref?: MessageRef;
}

export interface Deliver {
  t: 'deliver';
  entries: Entry[];
}

/** Cumulative: this device has processed every entry up to and including seq. */
export interface DeliverAck {
  t: 'deliver_ack';
  seq: number;
}

/**
 * Delivery state, per conversation: every message this user sent to `peer`, up to and including `msg`, has
 * reached one of `peer`'s devices (at `ts`).
 */
export interface ReceiptState {
  peer: string;
  msg: string;
  ts: number;
  /**
   * Every message this user sent to `peer` up to and including this one was read by `peer` (cumulative; never
   * behind `msg`, since read implies delivered). Absent: nothing read yet, or `peer` does not send read receipts.
   */
  read?: string;
  /** When `read` was marked, ms since epoch; present exactly when `read` is. */
  readTs?: number;
}

/**
 * Receipts that changed, oldest change first. `upTo` is the user's receipt version this frame brings the device
 * to: a device that processed it sends it as `hello.receipts` and is sent only later changes. Not acked.
 */
export interface Receipts {
  t: 'receipts';
  upTo: number;
  items: ReceiptState[];
}

/**
 * Client: every message in conversation `conv` up to and including `msg` is read on this device. Cumulative;
 * an older mark than the one stored changes nothing. For a 1:1 conversation `conv` is the other user's id and
 * `msg` the id of a message that user sent here (group conversations will use their group id).
 */
export interface Read {
  t: 'read';
  conv: string;
  msg: string;
}

/** How far this user has read one conversation (the state the user's devices share). */
export interface ReadPosition {
  conv: string;
  msg: string;
  /** When the mark was made, ms since epoch. */
  ts: number;
}

/**
 * Read positions of this user's conversations that changed, oldest change first. `upTo` is the user's read
 * version this brings the device to: the device sends it as `hello.reads`. Not acked.
 */
export interface ReadState {
  t: 'read_state';
  upTo: number;
  items: ReadPosition[];
}

/** Client: change this user's settings. Answered by `settings` (to every connection of the user that reads it). */
export interface SetSettings {
  t: 'set_settings';
  /** Whether senders learn how far this user read their messages (delivery receipts are not affected). */
  readReceipts: boolean;
}

/** Server: this user's settings, after `welcome` and whenever they change. */
export interface Settings {
  t: 'settings';
  readReceipts: boolean;
  /**
   * Who may see this user's presence (`set_presence`), so that every device shows the same setting. Optional on
   * the wire (binary: a trailing u8): servers before it did not send it, and `set_settings` never carries it.
   */
  presence?: PresenceVisibility;
}

export interface PresenceQuery {
  t: 'presence_query';
  ref: string;
  users: string[];
}

/**
 * Client: replace this user's presence subscriptions with `users` (empty: none). Answered with `presence` frames
 * carrying `ref` (the subjects' current state, at most maxPresenceUsers per frame); later changes come as
 * `presence` frames with the same ref, to every connection of the user that subscribed. Opt-in by sending it:
 * a client that never does never gets an unasked `presence` frame.
 */
export interface PresenceSubscribe {
  t: 'presence_subscribe';
  ref: string;
  users: string[];
}

/** Who may see this user's presence (online, last seen): everyone, its contacts, or nobody. */
export type PresenceVisibility = 'everyone' | 'contacts' | 'nobody';
export const PRESENCE_VISIBILITY: Record<PresenceVisibility, number> = { everyone: 0, contacts: 1, nobody: 2 };

/** Client: set who may see this user's presence. Not answered (the setting is idempotent). */
export interface SetPresence {
  t: 'set_presence';
  visibility: PresenceVisibility;
}

/**
 * Client: this user is typing (on) or stopped (off) in conversation `conv` (1:1: the other user's id). Ephemeral:
 * never stored, never answered, never queued for an offline peer (PROTOCOL.md 8.8). An `on` holds for the server's
 * typing TTL; a client renews it while the user keeps typing.
 */
export interface Typing {
  t: 'typing';
  conv: string;
  on: boolean;
}

/**
 * Server: `from` is typing (on) or stopped (off) in conversation `conv` (1:1: `from` itself; a group: its id). An
 * `on` expires by itself after `ttl` ms unless renewed; an `off` has ttl 0.
 */
export interface TypingState {
  t: 'typing_state';
  conv: string;
  from: string;
  on: boolean;
  ttl: number;
}

export interface PresenceInfo {
  user: string;
  online: boolean;
  /** ms since epoch of the last disconnect (or now, if online); 0 if never seen. */
  lastSeen: number;
}

export interface Presence {
  t: 'presence';
  ref: string;
  users: PresenceInfo[];
}

export interface Ping {
  t: 'ping';
}

export interface Pong {
  t: 'pong';
}

export interface ErrorFrame {
  t: 'error';
  code: ErrorCode;
  message: string;
  /** Client message id or ref of the frame that caused it, when known. */
  ref?: string;
  /** Milliseconds to wait before retrying, where that applies. */
  retryAfter?: number;
}

/**
 * Client: a new token for the same user, before the connection's token expires (PROTOCOL.md 3.4). Verified like the
 * token of an upgrade; on success the connection continues under it (answered with `refreshed`), otherwise an
 * error frame (token_invalid, token_revoked, token_mismatch) and the connection keeps its old token.
 */
export interface Refresh {
  t: 'refresh';
  token: string;
}

/** Server: the refresh was accepted; the connection's token now expires at `exp` (seconds since epoch; 0: never). */
export interface Refreshed {
  t: 'refreshed';
  exp: number;
}

export type ClientFrame = Hello | Send | DeliverAck | PresenceQuery | Ping | Read | SetSettings | PresenceSubscribe | SetPresence | Typing | KeysUpload | KeysFetch | DevicesQuery | Refresh | GroupClientFrame;
export type ServerFrame = Welcome | SendAck | Deliver | Receipts | ReadState | Settings | Presence | Pong | ErrorFrame | TypingState | KeysState | KeysBundle | Devices | Refreshed | GroupServerFrame;
export type Frame = ClientFrame | ServerFrame;

const CLIENT_TYPES: ReadonlySet<FrameType> = new Set(['hello', 'send', 'deliver_ack', 'presence_query', 'ping', 'read', 'set_settings', 'presence_subscribe', 'set_presence', 'typing', 'keys_upload', 'keys_fetch', 'devices_query', 'refresh', ...GROUP_CLIENT_TYPES]);

export function isClientFrame(f: Frame): f is ClientFrame {
  return CLIENT_TYPES.has(f.t);
}

export function isServerFrame(f: Frame): f is ServerFrame {
  return !CLIENT_TYPES.has(f.t);
}

/**
 * The exact text of the application ping/pong. The Cloudflare runtime answers this ping itself
 * (setWebSocketAutoResponse compares strings byte for byte), so a heartbeat never wakes a hibernated shard.
 */
export const PING_TEXT = '{"t":"ping"}';
export const PONG_TEXT = '{"t":"pong"}';
