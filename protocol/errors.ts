/**
 * Error codes carried by error frames, and WebSocket close codes. Numbers are the binary encoding and never
 * change meaning; names are the JSON encoding and what the SDK exposes.
 */
export const ERROR_CODES = {
  bad_frame: 1,
  frame_too_large: 2,
  unknown_type: 3,
  invalid_field: 4,
  hello_required: 5,
  bad_state: 6,
  rate_limited: 7,
  inbox_full: 8,
  outbox_full: 9,
  invalid_recipient: 10,
  bad_ack: 11,
  too_many_devices: 12,
  internal: 13,
  unavailable: 14,
  not_member: 15,
  group_full: 16,
  history_gap: 17,
  not_admin: 18,
  // Message references (PROTOCOL.md 9.9). Numbered apart from the codes other features add meanwhile.
  bad_ref: 40,
  ref_not_allowed: 41,
  ref_expired: 42,
  // Token refresh on a live connection (PROTOCOL.md 3.4): the connection keeps its old token.
  /** The refresh token does not verify (malformed, bad signature, expired, not yet valid, a claim refused). */
  token_invalid: 53,
  /** The refresh token verifies but is revoked. */
  token_revoked: 54,
  /** The refresh token names another user than the connection's. */
  token_mismatch: 55,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

const BY_NUMBER = new Map<number, ErrorCode>(
  (Object.entries(ERROR_CODES) as [ErrorCode, number][]).map(([name, n]) => [n, name]),
);

export function errorCodeFromNumber(n: number): ErrorCode | undefined {
  return BY_NUMBER.get(n);
}

export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(ERROR_CODES, s);
}

/** Close codes. 1000-1015 are RFC 6455; 4000-4999 are ours. */
export const CLOSE_CODES = {
  normal: 1000,
  /** Server is shutting down or the shard moved; reconnect with backoff. */
  going_away: 1001,
  /** The peer broke the protocol badly enough that the connection cannot continue. */
  protocol_error: 1002,
  /** A text message that is not valid UTF-8 (RFC 6455 "invalid frame payload data"). */
  invalid_payload: 1007,
  /** Transport-level size cap exceeded (far above maxFrameBytes); the runtime closes the socket. */
  too_big: 1009,
  internal_error: 1011,
  /** No hello within the hello timeout. */
  hello_timeout: 4000,
  /** The same device connected again; the older socket is closed. Do not reconnect automatically. */
  replaced: 4001,
  /** Too many invalid frames in a row (or frames past the per-connection rate, ignoring retryAfter). */
  too_many_errors: 4002,
  /** The client did not read: what the server queued for this socket passed its bound. Reconnect and resume. */
  slow_consumer: 4003,
  /** Nothing (no frame, no heartbeat) arrived from the client for 2 x the ping interval (Cloudflare profile). */
  idle_timeout: 4004,
  /** The token this connection was opened (or last refreshed) with was revoked. Get a NEW token before reconnecting. */
  token_revoked: 4005,
  /** The connection's token expired and was not refreshed within the grace period (IRIS_TOKEN_EXPIRY_GRACE_S). */
  token_expired: 4006,
  /** An operator disconnected this user or device (admin API). Reconnecting is allowed (with backoff). */
  disconnected_by_admin: 4007,
} as const;

export type CloseCode = (typeof CLOSE_CODES)[keyof typeof CLOSE_CODES];

/** Thrown by the codec; carries the code the server puts in the error frame it answers with. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The offending frame's client id or ref, when it could be read. */
    readonly ref?: string,
  ) {
    super(message);
  }
}
