/**
 * Iris client SDK: browsers, Node >= 22 and Workers (standard WebSocket, no platform imports).
 * The Node-only file store is in ./node-store.js and is not exported here.
 */
export { IrisClient } from './client.js';
export type { GroupAckResult, GroupEvent, GroupMessage, GroupReceiptsResult, RosterResult } from './groups.js';
export { IrisError, isIrisError, type IrisErrorCode, type IrisErrorDetails } from './errors.js';
export { MemoryStore, type ClientStore, type PendingGroupFrame, type PendingSend, type StoredEntry, type StoredState } from './store.js';
export { IndexedDbStore, type HistoryRow, type IdbFactoryLike, type IndexedDbStoreOptions } from './idb-store.js';
export type { KemPrekey, KeyBundleEntry, KeysInput, KeysStateInfo, Prekey, SignedPrekey } from './keys.js';
export { backoffDelay, type BackoffOptions } from './backoff.js';
export type { FetchLike, ProbeResult, SocketEvent, SocketInit, WebSocketConstructor, WebSocketLike } from './socket.js';
export type {
  ClientEvents,
  ConnectionState,
  IrisClientOptions,
  IrisMessage,
  IrisOutgoing,
  IrisReceipt,
  IrisRead,
  IrisReadPosition,
  IrisRef,
  IrisSettings,
  IrisTyping,
  PresenceInfo,
  RecoveredEntry,
  RetryEvent,
  SendAck,
  SentEvent,
  TokenTransport,
  Welcome,
} from './types.js';
