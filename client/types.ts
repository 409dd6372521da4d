import type { PresenceInfo, SendAck, Welcome } from '../protocol/index.js';
import type { BackoffOptions } from './backoff.js';
import type { IrisError } from './errors.js';
import type { WebSocketConstructor } from './socket.js';
import type { ClientStore } from './store.js';

export type { PresenceInfo, SendAck, Welcome };

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** How the token travels: browsers can only use 'subprotocol' or 'query'; 'header' needs Node's global WebSocket. */
export type TokenTransport = 'subprotocol' | 'query' | 'header';

export interface IrisClientOptions {
  /** ws(s)://host/v1/connect */
  url: string;
  /** A JWT, or a function called before every (re)connect so expiring tokens can be refreshed. */
  token: string | (() => string | Promise<string>);
  /** Stable per installation ([A-Za-z0-9._@+=-], 1-64 chars). One live socket per device. */
  device: string;
  /** Frame encoding; default 'binary'. */
  encoding?: 'binary' | 'json';
  /** Default 'subprotocol' (works everywhere). */
  tokenTransport?: TokenTransport;
  /** Cursor and outbox persistence; default an in-memory store. */
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
}

/** A message this user sent reached a device of its recipient. */
export interface IrisReceipt {
  seq: number;
  /** Server message id of the message (as in its SendAck). */
  msg: string;
  /** The recipient. */
  by: string;
  ts: number;
}

/** A send_ack, with the recipient; emitted for every acked send, including ones resumed from the store. */
export interface SentEvent extends SendAck {
  to: string;
}

export interface ClientEvents {
  /** Listeners may return a promise: the entry counts as processed (cursor saved, then acked) once it settles. */
  message: IrisMessage;
  receipt: IrisReceipt;
  state: ConnectionState;
  /** Errors not tied to a send() or presence() call, and connection failures after connect() resolved. */
  error: IrisError;
  ack: SentEvent;
  welcome: Welcome;
}
