/**
 * Hard limits of protocol v1. Both decoders (binary and JSON) enforce every one of them, on the server and in
 * the SDK alike. docs/PROTOCOL.md carries the same table, and test/protocol checks the two agree.
 */
export const LIMITS = {
  /** Largest WebSocket message (one frame) accepted, in bytes (binary) or UTF-16 code units x 1 (JSON). */
  maxFrameBytes: 96 * 1024,
  /** Largest message body. JSON carries bodies as base64, so a full body still fits in maxFrameBytes. */
  maxBodyBytes: 64 * 1024,
  /** User ids, device ids, client message ids, server message ids and refs. */
  maxIdLength: 64,
  /** Server message ids are `<sender>:<n>`, so they may be longer than a user id. */
  maxMessageIdLength: 96,
  /** Users in one presence query. */
  maxPresenceUsers: 32,
  /** Users in one presence_subscribe (a server may set a lower cap: IRIS_PRESENCE_SUBSCRIPTIONS). */
  maxPresenceSubscriptions: 1000,
  /** Entries in one deliver frame. */
  maxDeliverBatch: 64,
  /** Receipt states in one receipts frame; read positions in one read_state frame. */
  maxReceiptBatch: 64,
  /** Members in one group_create / group_add, and in one group_roster page. */
  maxGroupBatch: 256,
  /** A group's name, in chars. */
  maxGroupNameLength: 128,
  /** A group's metadata (group_update), in bytes. */
  maxGroupMetaBytes: 1024,
  /**
   * Key directory (PROTOCOL.md 8.9). An identity key, a signed prekey or a one-time prekey: Signal's are 33 bytes;
   * room for larger curves, never for a post-quantum key.
   */
  maxKeyBytes: 256,
  /** The last-resort KEM public key: Signal's Kyber-1024 key is 1569 bytes with its type byte. */
  maxKemKeyBytes: 1600,
  /** A signature over a prekey (XEd25519: 64 bytes). */
  maxSignatureBytes: 128,
  /** One-time prekeys in one keys_upload (a server may cap the pool lower: IRIS_KEYS_POOL_CAP). */
  maxPrekeysPerUpload: 100,
  /** Devices of one user with published keys, so that one keys_bundle (all at their largest) fits one frame. */
  maxKeyDevices: 16,
  /** Human-readable text of an error frame. */
  maxErrorMessageLength: 256,
  /** Longest token in a `refresh` frame, in characters (the same bound as at the upgrade, auth/request.ts). */
  maxTokenLength: 8192,
  /** Largest number carried by a frame (sequence numbers, timestamps, cursors). */
  maxInteger: Number.MAX_SAFE_INTEGER,
} as const;

/** WebSocket subprotocol that selects protocol v1. A later version gets a new name; servers may speak several. */
export const SUBPROTOCOL = 'iris.v1';

/**
 * Browsers cannot set an Authorization header on a WebSocket, so they may offer the token as a second
 * subprotocol: `Sec-WebSocket-Protocol: iris.v1, bearer.<jwt>`. The server never echoes it back.
 */
export const TOKEN_SUBPROTOCOL_PREFIX = 'bearer.';

/** User and device ids: a conservative set that is safe in URLs, logs, SQL and `<user>:<n>` message ids. */
export const ID_PATTERN = /^[A-Za-z0-9._@+=-]{1,64}$/;

/** Client message ids and refs: any visible ASCII (so UUIDs, ULIDs and counters all fit). */
export const CLIENT_ID_PATTERN = /^[\x21-\x7e]{1,64}$/;
