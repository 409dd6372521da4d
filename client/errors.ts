import type { ErrorCode, ErrorFrame } from '../protocol/index.js';

/**
 * Every failure the SDK reports. `code` is either a protocol error code (what the server said, see
 * protocol/errors.ts) or one of the SDK's own:
 *   connection_refused  the WebSocket could not be opened (bad/expired token, server down, wrong URL)
 *   closed              the client was closed, or the server closed for good (4001: replaced by a newer
 *                       connection of the same device)
 *   timeout             no answer in time (welcome, presence)
 *   outbox_full         the local outbox holds maxOutbox unacknowledged sends (also a server code)
 *   auth_failed         the server refused the token (HTTP 401 with no usable new token from the token
 *                       callback, or 403): the client stops reconnecting; `reason` says why (token_expired,
 *                       invalid_signature, claim_invalid, ...), `status` is the HTTP status
 */
export type IrisErrorCode = ErrorCode | 'connection_refused' | 'closed' | 'timeout' | 'outbox_full' | 'auth_failed';

export interface IrisErrorDetails {
  /** Milliseconds to wait before retrying, when the server said so. */
  retryAfter?: number;
  /** Client message id or request ref the error refers to. */
  ref?: string;
  /** HTTP status of a refused upgrade, when it could be learnt (401: get a new token, 403: not allowed). */
  status?: number;
  /** WebSocket close code that ended the connection, when that is the cause. */
  closeCode?: number;
  /** The server's code for a refused handshake (the `error` field of its JSON body), e.g. token_expired. */
  reason?: string;
}

export class IrisError extends Error {
  override readonly name = 'IrisError';
  readonly code: IrisErrorCode;
  readonly retryAfter?: number;
  readonly ref?: string;
  readonly status?: number;
  readonly closeCode?: number;
  readonly reason?: string;

  constructor(code: IrisErrorCode, message: string, details: IrisErrorDetails = {}) {
    super(message);
    this.code = code;
    if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
    if (details.ref !== undefined) this.ref = details.ref;
    if (details.status !== undefined) this.status = details.status;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.reason !== undefined) this.reason = details.reason;
  }

  /** The same error about one request (a send's client id, a presence query's ref). */
  withRef(ref: string): IrisError {
    const d: IrisErrorDetails = { ref };
    if (this.retryAfter !== undefined) d.retryAfter = this.retryAfter;
    if (this.status !== undefined) d.status = this.status;
    if (this.closeCode !== undefined) d.closeCode = this.closeCode;
    if (this.reason !== undefined) d.reason = this.reason;
    return new IrisError(this.code, this.message, d);
  }
}

export function isIrisError(e: unknown): e is IrisError {
  return e instanceof IrisError;
}

/** The SDK error for a server error frame (internal: not exported by client/index.ts). */
export function errorOfFrame(f: ErrorFrame): IrisError {
  const details = { ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}), ...(f.ref !== undefined ? { ref: f.ref } : {}) };
  return new IrisError(f.code, f.message, details);
}

/** The message of anything thrown (internal). */
export function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
